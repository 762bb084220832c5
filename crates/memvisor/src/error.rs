//! What a command run from the shell can fail with, each with what to do about it.

use crate::bench::BenchError;
use crate::client::ClientError;
use crate::daemon::DaemonError;
use crate::launcher::LauncherError;
use memvisor_guest::image::ImageError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Launcher(#[from] LauncherError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Debian(#[from] memvisor_guest::debian::DebianError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// Arguments the command cannot use: the message says which and what to give instead.
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find memvisor's own path ({0}); pass --agent")]
    OwnPath(std::io::Error),
    #[error("the terminal failed: {0}")]
    Terminal(std::io::Error),
    #[error("{vm}: {corrupt} corrupt pages")]
    Corrupt { vm: String, corrupt: u64 },
}
