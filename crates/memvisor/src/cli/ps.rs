use super::Context;
use crate::error::CliError;
use crate::output;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print every VM's full status as a JSON array, the fields of `stats --json`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let vms = cx.client.vms().await?;
    if args.json {
        output::print_json(&vms);
    } else {
        output::print_table(&vms);
    }
    Ok(())
}
