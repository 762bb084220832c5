use super::Context;
use crate::error::CliError;
use crate::{launcher, output};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML file: [host] budget, and [[vm]] tables (see examples/seed.toml).
    #[arg(short = 'f', long = "file", default_value = launcher::DEFAULT_CONFIG)]
    file: PathBuf,
    /// Seconds to wait for every VM to boot.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let timeout = Duration::from_secs(args.timeout);
    launcher::up(&cx.dir, &cx.cache_dir, &args.file, timeout, false).await?;
    output::print_table(&cx.client.vms().await?);
    Ok(())
}
