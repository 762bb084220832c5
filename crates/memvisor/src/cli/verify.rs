use super::{Context, VmArgs};
use crate::error::CliError;
use crate::output;

pub async fn run(args: VmArgs, cx: &Context) -> Result<(), CliError> {
    let reply = cx.client.verify(&args.vm).await?;
    if args.json {
        output::print_json(&reply);
    } else {
        println!(
            "{}: {} pages verified, {} corrupt",
            args.vm, reply.pages, reply.corrupt
        );
    }
    if reply.corrupt != 0 {
        return Err(CliError::Corrupt {
            vm: args.vm,
            corrupt: reply.corrupt,
        });
    }
    Ok(())
}
