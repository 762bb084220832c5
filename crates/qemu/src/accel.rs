//! KVM or TCG. `/dev/kvm` existing is not enough: a nested, paravirtual KVM may open fine and
//! then fail to set the vCPU's MSRs, or start a guest whose kernel then hangs before it prints a
//! line (seen here: SeaBIOS ran, the kernel never got past decompression). So the probe boots
//! the guest kernel under KVM and waits for its banner. The verdict holds until the host
//! reboots, so it is kept per boot and later daemons do not wait for it again.

use crate::QEMU_BINARY;
use memvisor_core::config::Accel;
use memvisor_core::status::Accelerator;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// A kernel under working KVM prints its banner well within a second.
const BANNER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("accel = \"kvm\" was asked for, but KVM cannot run a guest here: {0}; use accel = \"auto\" or \"tcg\"")]
    KvmUnusable(String),
}

/// Why KVM cannot run a guest here, or `None` when it can. `kernel` is what the probe boots:
/// without one, KVM is not trusted (a working monitor is not enough, see above).
pub async fn kvm_problem(kernel: Option<&Path>) -> Option<String> {
    let cache = verdict_file();
    if let Some(known) = cache.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        return (!known.is_empty()).then_some(known);
    }
    let Some(kernel) = kernel.map(Path::to_path_buf).or_else(host_kernel) else {
        return Some("there is no kernel to test KVM with (no guest image, no /boot/vmlinuz of the running kernel); 'memvisor image build' makes one".into());
    };
    let problem = match monitor_problem().await {
        Some(problem) => Some(problem),
        None => boot_problem(&kernel).await,
    };
    if let Some(file) = cache {
        // Unwritable: the next daemon probes again, which costs time, not correctness.
        let _ = std::fs::write(file, problem.as_deref().unwrap_or(""));
    }
    problem
}

/// Where this boot's verdict is kept: it names the boot and the QEMU binary it was made with.
fn verdict_file() -> Option<PathBuf> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let qemu = which(QEMU_BINARY)?;
    let modified = std::fs::metadata(&qemu).ok()?.modified().ok()?;
    let stamp = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(std::env::temp_dir().join(format!("memvisor-kvm-{}-{stamp}", boot.trim())))
}

/// The running kernel's image, where the distribution keeps it.
fn host_kernel() -> Option<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    // One this process cannot read would look like a KVM that boots nothing.
    Some(PathBuf::from(format!("/boot/vmlinuz-{}", release.trim())))
        .filter(|p| std::fs::File::open(p).is_ok())
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| p.is_file())
}

/// Boots `kernel` under KVM and waits for its banner on the serial line.
async fn boot_problem(kernel: &Path) -> Option<String> {
    let child = Command::new(QEMU_BINARY)
        .args(["-accel", "kvm", "-cpu", "host", "-m", "128M", "-kernel"])
        .arg(kernel)
        .args([
            "-append",
            "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Some(format!("{QEMU_BINARY} cannot be run: {e}")),
    };
    let stdout = child.stdout.take()?;
    let banner = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Linux version") {
                return true;
            }
        }
        false
    };
    let seen = tokio::time::timeout(BANNER_TIMEOUT, banner).await;
    let _ = child.kill().await;
    match seen {
        Ok(true) => None,
        _ => Some(format!(
            "a guest kernel started under KVM printed nothing within {} s (a nested KVM that cannot run a stock guest)",
            BANNER_TIMEOUT.as_secs()
        )),
    }
}

/// Starts a paused QEMU under KVM and sees whether it reaches its monitor.
async fn monitor_problem() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm cannot be opened: {e}"));
    }
    let child = Command::new(QEMU_BINARY)
        .args([
            "-accel",
            "kvm",
            "-machine",
            "pc",
            "-cpu",
            "host",
            "-display",
            "none",
            "-nodefaults",
            "-S",
            "-qmp",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Some(format!("{QEMU_BINARY} cannot be run: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n")
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Err(_) => Some("a KVM probe did not finish within 20 s".into()),
        Ok(Err(e)) => Some(format!("the KVM probe failed: {e}")),
        Ok(Ok(out)) if out.status.success() => None,
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Some(
                stderr
                    .lines()
                    .next()
                    .unwrap_or("QEMU exited with an error")
                    .trim()
                    .to_string(),
            )
        }
    }
}

/// Resolves the configured choice against what this host can do.
pub async fn resolve(
    wanted: Accel,
    kernel: Option<&Path>,
) -> Result<(Accelerator, Option<String>), AccelError> {
    match wanted {
        Accel::Tcg => Ok((Accelerator::Tcg, None)),
        Accel::Kvm => match kvm_problem(kernel).await {
            None => Ok((Accelerator::Kvm, None)),
            Some(problem) => Err(AccelError::KvmUnusable(problem)),
        },
        Accel::Auto => Ok(match kvm_problem(kernel).await {
            None => (Accelerator::Kvm, None),
            Some(problem) => (Accelerator::Tcg, Some(problem)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_guest_that_prints_no_banner_makes_kvm_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_kernel = dir.path().join("vmlinuz");
        std::fs::write(&not_a_kernel, b"not a kernel").unwrap();
        let problem = boot_problem(&not_a_kernel).await.expect("no banner");
        assert!(problem.contains("printed nothing"), "{problem}");
    }
}
