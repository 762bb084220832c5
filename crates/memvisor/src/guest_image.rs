//! Building the guest image for the CLI and the demo: with the agent beside this binary, on a
//! blocking thread (it reads packages and writes a cpio archive).

use crate::error::CliError;
use memvisor_guest::image::{self, BuildOptions};
use std::path::PathBuf;

/// The guest agent beside this memvisor binary, where the build puts it.
pub fn default_agent() -> Result<PathBuf, CliError> {
    Ok(std::env::current_exe()
        .map_err(CliError::OwnPath)?
        .with_file_name("memvisor-agent"))
}

/// Builds the image, or finds it cached.
pub async fn build(options: BuildOptions) -> Result<image::BuildReport, CliError> {
    Ok(tokio::task::spawn_blocking(move || image::build(&options))
        .await
        .expect("the image build does not panic")?)
}
