use super::Context;
use crate::error::CliError;
use crate::output;
use memvisor_core::workload::Workload;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    workload: Workload,
    /// Print the VM's state as the daemon accepted it, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let status = cx.client.workload(&args.vm, &args.workload).await?;
    output::print_accepted(args.json, &status, |s| {
        format!(
            "{}: workload {}",
            args.vm,
            s.workload.as_deref().unwrap_or_default()
        )
    });
    Ok(())
}
