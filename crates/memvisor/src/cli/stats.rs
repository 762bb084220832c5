use super::Context;
use crate::error::CliError;
use crate::output;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.vm(&args.vm).await?;
    if args.json {
        output::print_json(&status);
    } else {
        output::print_stats(&status);
    }
    Ok(())
}
