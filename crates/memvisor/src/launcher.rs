//! Starting the daemon in the background and stopping it: what `up`, `down`, the demo and the
//! bench share.

use crate::client::{Client, ClientError};
use memvisor_core::config::{Config, ConfigError};
use memvisor_core::status::{VmState, VmStatus};
use memvisor_guest::image::{self, Image, ImageError};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The config a service reads, and `up`, `daemon` and `check` without -f.
pub const DEFAULT_CONFIG: &str = "/etc/memvisor/memvisor.toml";
/// How long `down` waits for the daemon to stop its VMs and go.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("a memvisor daemon already runs with --dir {0}; 'memvisor down' first, or use another --dir")]
    AlreadyRunning(PathBuf),
    #[error("cannot start the daemon ({0}): memvisor cannot run its own binary")]
    Spawn(std::io::Error),
    #[error("the daemon exited ({status}):\n{log}")]
    Exited { status: String, log: String },
    #[error("some VMs did not start:\n  {}", .0.join("\n  "))]
    VmsFailed(Vec<String>),
    #[error("VMs still booting after {timeout:?}; see 'memvisor ps' and {log} (a VM with a disk counts as booted once its guest's virtio_balloon driver reports)")]
    BootTimeout { timeout: Duration, log: PathBuf },
    #[error("the daemon did not stop within {timeout:?}; see {log}")]
    StopTimeout { timeout: Duration, log: PathBuf },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LauncherError {
    let path = path.to_path_buf();
    move |source| LauncherError::Io {
        action,
        path,
        source,
    }
}

/// The config in `path`, checked whole: with `budget = "auto"`, against this machine's memory.
pub fn read_config(path: &Path) -> Result<Config, LauncherError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    let refused = |source| LauncherError::Config {
        path: path.into(),
        source,
    };
    let config = Config::parse(&text).map_err(refused)?;
    let meminfo = Path::new("/proc/meminfo");
    let machine = memvisor_host::meminfo::read().map_err(|e| LauncherError::Io {
        action: "read",
        path: meminfo.into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    config.budget_on(machine.total).map_err(refused)?;
    let disk_problems: Vec<String> = config
        .vms
        .iter()
        .filter_map(|vm| {
            let disk = vm.disk.as_ref()?;
            let problem =
                memvisor_qemu::disk::format(disk, vm.format, vm.kernel.is_some()).err()?;
            Some(format!("vm {}: {problem}", vm.name))
        })
        .collect();
    if !disk_problems.is_empty() {
        return Err(refused(ConfigError::Invalid(disk_problems)));
    }
    Ok(config)
}

/// memvisor's guest image, which `config`'s VMs without a disk boot: required if there is one,
/// the built one if any otherwise (it also tells KVM apart from TCG).
pub fn image_for(config: &Config, cache_dir: &Path) -> Result<Option<Image>, LauncherError> {
    if config.vms.iter().any(|vm| vm.disk.is_none()) {
        Ok(Some(image::current(cache_dir)?))
    } else {
        Ok(image::current(cache_dir).ok())
    }
}

/// Starts `memvisor daemon` detached and waits until every VM runs; returns the daemon's pid.
/// With `losses_counted`, a VM whose QEMU the host ended while it booted is an outcome to count
/// (the bench), not an error.
pub async fn up(
    dir: &Path,
    cache_dir: &Path,
    file: &Path,
    timeout: Duration,
    losses_counted: bool,
) -> Result<u32, LauncherError> {
    let config = read_config(file)?;
    image_for(&config, cache_dir)?;
    let client = Client::new(dir);
    if client.answers().await {
        return Err(LauncherError::AlreadyRunning(dir.into()));
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).map_err(io("create", &log_path))?;
    let log_too = log.try_clone().map_err(io("open", &log_path))?;
    let exe = std::env::current_exe().map_err(LauncherError::Spawn)?;
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let mut daemon = tokio::process::Command::new(exe)
        .arg("--dir")
        .arg(dir)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("daemon")
        .arg("-f")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log_too)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(LauncherError::Spawn)?;

    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(LauncherError::Exited {
                status: status.to_string(),
                log: log.trim().to_string(),
            });
        }
        if let Ok(vms) = client.vms().await {
            if let Some(outcome) = booted(&vms, config.vms.len(), losses_counted) {
                outcome?;
                return daemon.id().ok_or(LauncherError::Exited {
                    status: "gone".into(),
                    log: String::new(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(LauncherError::BootTimeout {
                timeout,
                log: log_path,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// None while VMs still boot; then whether every one of the `expected` VMs runs.
fn booted(
    vms: &[VmStatus],
    expected: usize,
    losses_counted: bool,
) -> Option<Result<(), LauncherError>> {
    let waiting = vms.iter().any(|v| {
        v.state == VmState::Starting || (v.state == VmState::Stopped && v.last_error.is_none())
    });
    if waiting || vms.len() < expected {
        return None;
    }
    let failed: Vec<String> = vms
        .iter()
        .filter(|v| v.state != VmState::Running && !(losses_counted && v.state == VmState::Lost))
        .map(|v| format!("{}: {}", v.name, v.last_error.clone().unwrap_or_default()))
        .collect();
    Some(if failed.is_empty() {
        Ok(())
    } else {
        Err(LauncherError::VmsFailed(failed))
    })
}

/// Asks the daemon to stop its launched VMs and exit, and waits until it has.
pub async fn down(dir: &Path) -> Result<(), LauncherError> {
    Client::new(dir).shutdown().await?;
    let socket = dir.join(memvisor_core::api::SOCKET_NAME);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if socket.exists() {
        return Err(LauncherError::StopTimeout {
            timeout: STOP_TIMEOUT,
            log: dir.join("daemon.log"),
        });
    }
    Ok(())
}
