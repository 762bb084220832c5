use super::Context;
use crate::error::CliError;
use crate::output;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// Print the VM's state as the daemon accepted it, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.stop(&args.vm).await?;
    output::print_accepted(args.json, &status, |s| format!("{}: {}", args.vm, s.state));
    Ok(())
}
