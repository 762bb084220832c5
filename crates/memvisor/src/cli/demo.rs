use super::Context;
use crate::error::CliError;

pub async fn run(cx: &Context) -> Result<(), CliError> {
    crate::demo::run(&cx.dir, &cx.cache_dir).await
}
