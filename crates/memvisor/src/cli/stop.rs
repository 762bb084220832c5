use super::{Context, VmArgs};
use crate::error::CliError;
use crate::output;

pub async fn run(args: VmArgs, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.stop(&args.vm).await?;
    output::print_accepted(args.json, &status, |s| format!("{}: {}", args.vm, s.state));
    Ok(())
}
