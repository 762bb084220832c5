use super::Context;
use crate::error::CliError;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    command: String,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    print!("{}", cx.client.monitor(&args.vm, &args.command).await?);
    Ok(())
}
