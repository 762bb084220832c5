use super::Context;
use crate::error::CliError;
use crate::output::{self, opt};
use memvisor_core::api::AttachRequest;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    name: String,
    /// The path given to QEMU's -qmp unix:PATH,server=on option.
    #[arg(long)]
    qmp: PathBuf,
    /// Print the VM's state as the daemon accepted it, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let qmp = std::path::absolute(&args.qmp).unwrap_or(args.qmp);
    let request = AttachRequest {
        name: args.name,
        qmp,
    };
    let status = cx.client.attach(&request).await?;
    output::print_accepted(args.json, &status, |s| {
        format!(
            "{}: attached (pid {}, {} MiB)",
            request.name,
            opt(s.pid),
            s.memory_mib
        )
    });
    Ok(())
}
