//! KVM or TCG. `/dev/kvm` existing is not enough: a nested, paravirtual KVM may open fine and
//! then fail to set the vCPU's MSRs, so the probe starts a paused QEMU under KVM and sees
//! whether it reaches its monitor.

use crate::QEMU_BINARY;
use memvisor_core::config::Accel;
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("accel = \"kvm\" was asked for, but KVM cannot run a guest here: {0}; use accel = \"auto\" or \"tcg\"")]
    KvmUnusable(String),
}

/// Why KVM cannot run a guest here, or `None` when it can.
pub async fn kvm_problem() -> Option<String> {
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
pub async fn resolve(wanted: Accel) -> Result<(Accelerator, Option<String>), AccelError> {
    match wanted {
        Accel::Tcg => Ok((Accelerator::Tcg, None)),
        Accel::Kvm => match kvm_problem().await {
            None => Ok((Accelerator::Kvm, None)),
            Some(problem) => Err(AccelError::KvmUnusable(problem)),
        },
        Accel::Auto => Ok(match kvm_problem().await {
            None => (Accelerator::Kvm, None),
            Some(problem) => (Accelerator::Tcg, Some(problem)),
        }),
    }
}
