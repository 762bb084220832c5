use super::Context;
use crate::error::CliError;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// How many of the last lines.
    #[arg(short = 'n', long, default_value_t = 200)]
    lines: usize,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    print!("{}", cx.client.logs(&args.vm, args.lines).await?);
    Ok(())
}
