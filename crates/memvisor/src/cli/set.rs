use super::Context;
use crate::error::CliError;
use crate::output;
use memvisor_core::api::Change;
use memvisor_core::Size;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// Memory never taken from the VM, e.g. 256M.
    #[arg(long)]
    reserve: Option<Size>,
    /// Memory never given to the VM beyond, e.g. 768M.
    #[arg(long)]
    limit: Option<Size>,
    /// Relative claim on contended memory (default 1000; 2000 counts double).
    #[arg(long)]
    shares: Option<u32>,
    /// The VM's size now: the balloon below its boot size, virtio-mem above it (needs max).
    #[arg(long)]
    memory: Option<Size>,
    /// Print the VM's state as the daemon accepted it, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let change = Change {
        reservation: args.reserve,
        limit: args.limit,
        shares: args.shares,
        memory: args.memory,
    };
    if change.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give --reserve, --limit, --shares or --memory".into(),
        ));
    }
    let status = cx.client.set(&args.vm, &change).await?;
    output::print_accepted(args.json, &status, |s| {
        format!(
            "{}: memory {} MiB, reservation {} MiB, limit {} MiB, shares {}",
            args.vm, s.memory_mib, s.reservation_mib, s.limit_mib, s.shares
        )
    });
    Ok(())
}
