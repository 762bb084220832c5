use super::Context;
use crate::error::CliError;
use crate::output;
use memvisor_core::translation::GuestAddress;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// held:N (page N of the agent's workload memory), a guest virtual address (the
    /// agent's own, or a kernel address such as 0xfffffe0000000000, resolved by QEMU), or
    /// gpa:ADDRESS for a guest physical one.
    address: GuestAddress,
    /// Print the translation as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let t = cx.client.translate(&args.vm, &args.address).await?;
    if args.json {
        output::print_json(&t);
    } else {
        output::print_translation(&args.address.to_string(), &t);
    }
    Ok(())
}
