use super::Context;
use crate::error::CliError;
use crate::{daemon, launcher};
use memvisor_guest::image;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let config = launcher::read_config(&args.file)?;
    let image = image::current(&cx.cache_dir)?;
    Ok(daemon::run(config, cx.dir.clone(), image).await?)
}
