use super::Context;
use crate::error::CliError;

pub async fn run(cx: &Context) -> Result<(), CliError> {
    print!("{}", cx.client.metrics().await?);
    Ok(())
}
