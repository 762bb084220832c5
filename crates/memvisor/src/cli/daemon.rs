use super::Context;
use crate::error::CliError;
use crate::{daemon, launcher};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML file: [host], [[vm]], [[attach]], [discover] (see examples/ and `memvisor up --help`).
    #[arg(short = 'f', long = "file", default_value = launcher::DEFAULT_CONFIG)]
    file: PathBuf,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let config = launcher::read_config(&args.file)?;
    let image = launcher::image_for(&config, &cx.cache_dir)?;
    Ok(daemon::run(config, cx.dir.clone(), image).await?)
}
