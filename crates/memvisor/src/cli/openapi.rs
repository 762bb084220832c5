use crate::error::CliError;

pub fn run() -> Result<(), CliError> {
    let spec = crate::daemon::api::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    println!("{spec}");
    Ok(())
}
