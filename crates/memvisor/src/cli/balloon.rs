use super::Context;
use crate::error::CliError;
use crate::output::{self, opt};
use memvisor_core::Size;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// What the guest keeps, e.g. 512M.
    #[arg(allow_hyphen_values = true)]
    size: Size,
    /// Print the VM's state as the daemon accepted it, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.balloon(&args.vm, args.size).await?;
    output::print_accepted(args.json, &status, |s| {
        format!(
            "{}: balloon target {} MiB (now {} MiB)",
            args.vm,
            opt(s.balloon_target_mib),
            opt(s.balloon_actual_mib)
        )
    });
    Ok(())
}
