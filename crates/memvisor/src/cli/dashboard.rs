use super::Context;
use crate::error::CliError;
use memvisor_core::api::TOKEN_FILE;

pub async fn run(cx: &Context) -> Result<(), CliError> {
    let addr = cx.client.host().await?.api_listen.ok_or_else(|| {
        CliError::Usage(
            "the daemon serves no dashboard: add [api] listen = \"127.0.0.1:8680\" to its config and restart it".into(),
        )
    })?;
    let path = cx.dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    println!("http://{addr}/?token={}", token.trim());
    Ok(())
}
