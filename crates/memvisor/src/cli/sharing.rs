use super::Context;
use crate::error::CliError;
use crate::output;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the sharing matrix as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let m = cx.client.sharing().await?;
    if args.json {
        output::print_json(&m);
    } else {
        output::print_sharing(&m);
    }
    Ok(())
}
