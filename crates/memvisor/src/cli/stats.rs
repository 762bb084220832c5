use super::{Context, VmArgs};
use crate::error::CliError;
use crate::output;

pub async fn run(args: VmArgs, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.vm(&args.vm).await?;
    if args.json {
        output::print_json(&status);
    } else {
        output::print_stats(&status);
    }
    Ok(())
}
