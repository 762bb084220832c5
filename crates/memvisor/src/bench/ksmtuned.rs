//! The `ksmtuned` peer: Debian's ksmtuned, run unmodified beside static balloons, which is what
//! a stock KVM host does. ksmtuned sizes its thresholds from /proc/meminfo, which on the lab's
//! host is the whole machine, so it runs in a mount namespace of its own where /proc/meminfo is
//! a file the bench rewrites each second with the lab host's figures: its total is the budget,
//! its free memory what the budget has left. Its own script, config and defaults are untouched.

use super::BenchError;
use crate::client::Client;
use memvisor_core::status::HostStatus;
use memvisor_host::ksm::{Ksm, KsmSettings, SYSFS};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const NAME: &str = "ksmtuned";
const BINARY: &str = "/usr/sbin/ksmtuned";

pub struct Ksmtuned {
    /// ksmtuned's process group, until it is ended.
    group: Option<i32>,
    meminfo: PathBuf,
    ksm_before: KsmSettings,
    updater: tokio::task::JoinHandle<()>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Ksmtuned(format!("{what}: {e}"))
}

/// The lab host as /proc/meminfo would show it, in kB.
fn meminfo(host: &HostStatus) -> String {
    let total = host.budget_mib * 1024;
    let free = host.free_mib.unwrap_or(0) * 1024;
    format!("MemTotal:       {total} kB\nMemFree:        {free} kB\nMemAvailable:   {free} kB\nBuffers:               0 kB\nCached:                0 kB\n")
}

impl Ksmtuned {
    /// Starts ksmtuned against the lab host that the daemon in `dir` manages.
    pub async fn start(dir: &Path) -> Result<Ksmtuned, BenchError> {
        if !Path::new(BINARY).exists() {
            return Err(BenchError::Ksmtuned(format!(
                "{BINARY} is missing: install it with 'apt-get install ksmtuned' (scripts/setup.sh does)"
            )));
        }
        let ksm_before = Ksm::at(Path::new(SYSFS))
            .settings()
            .map_err(|e| failed("reading KSM", e))?;
        let client = Client::new(dir);
        let host = client.host().await?;
        let meminfo_file = dir.join("ksmtuned-meminfo");
        std::fs::write(&meminfo_file, meminfo(&host)).map_err(|e| failed("writing meminfo", e))?;
        let script = format!(
            "mount --bind {} /proc/meminfo && exec {BINARY}",
            meminfo_file.display()
        );
        let mut child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("PIDFILE", dir.join("ksmtuned.pid"))
            .process_group(0)
            .spawn()
            .map_err(|e| failed("starting unshare", e))?;
        let group = child.id().ok_or_else(|| failed("starting", "no pid"))? as i32;
        // ksmtuned forks its loop and returns; the loop keeps the process group.
        let status = child.wait().await.map_err(|e| failed("starting", e))?;
        if !status.success() {
            return Err(failed("starting", format!("exited with {status}")));
        }
        let (file, dir) = (meminfo_file.clone(), dir.to_path_buf());
        let updater = tokio::spawn(async move {
            let client = Client::new(&dir);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(host) = client.host().await {
                    // Written in place: the bind mount holds this file's inode.
                    let _ = std::fs::write(&file, meminfo(&host));
                }
            }
        });
        Ok(Ksmtuned {
            group: Some(group),
            meminfo: meminfo_file,
            ksm_before,
            updater,
        })
    }

    /// Ends ksmtuned and puts KSM's knobs back as they were before it ran.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), BenchError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        self.updater.abort();
        // The whole process group: ksmtuned's loop and the sleep it waits on.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
        let _ = std::fs::remove_file(&self.meminfo);
        Ksm::at(Path::new(SYSFS))
            .apply(self.ksm_before)
            .map(|_| ())
            .map_err(|e| failed("putting KSM back", e))
    }
}

/// A run cut short (the bench interrupted) still ends ksmtuned and puts KSM back.
impl Drop for Ksmtuned {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            eprintln!("bench: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_host_is_what_ksmtuned_reads() {
        let host: HostStatus = serde_json::from_value(serde_json::json!({
            "budget_mib": 1536, "used_mib": 1236, "free_mib": 300, "host_total_mib": 24000,
            "host_available_mib": 20000, "cgroup": "x", "cgroup_version": "v1", "accel": "tcg",
            "policy": "manual", "swap_total_mib": 0, "swap_used_mib": 0
        }))
        .unwrap();
        let text = meminfo(&host);
        assert!(text.contains("MemTotal:       1572864 kB"), "{text}");
        assert!(text.contains("MemFree:        307200 kB"), "{text}");
    }
}
