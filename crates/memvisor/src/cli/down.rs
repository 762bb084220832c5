use super::Context;
use crate::error::CliError;
use crate::launcher;

pub async fn run(cx: &Context) -> Result<(), CliError> {
    Ok(launcher::down(&cx.dir).await?)
}
