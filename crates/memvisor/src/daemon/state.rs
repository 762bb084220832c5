//! What a killed daemon must not forget, kept in DIR/state.json: which QEMUs it runs, the
//! settings changed live, the balloon targets and host limits it set, and the KSM and zswap
//! settings it found on the host (so a restarted daemon restores those, not its own).
//! Written on every change, atomically (temporary file, fsync, rename).

use memvisor_core::status::Origin;
use memvisor_core::workload::Workload;
use memvisor_core::Size;
use memvisor_host::ksm::KsmSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not memvisor state ({1}); move it away to start afresh (running VMs are then not re-attached)")]
    Corrupt(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub ksm_found: Option<KsmSettings>,
    pub zswap_found: Option<bool>,
    /// What memvisor's kdamonds watch (DAMON), to take them over and stop them when done.
    #[serde(default)]
    pub damon_watched: Vec<memvisor_host::damon::Range>,
    pub vms: BTreeMap<String, SavedVm>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedVm {
    pub origin: Origin,
    pub pid: u32,
    pub qmp: PathBuf,
    pub memory: Size,
    pub reservation: Size,
    pub limit: Option<Size>,
    pub shares: u32,
    pub boot_memory: Size,
    pub balloon_target: Option<Size>,
    pub plug_requested: Size,
    pub cgroup_limit: Option<Size>,
    pub workload: Option<Workload>,
    /// An attached QEMU's group's limit before memvisor capped it.
    #[serde(default)]
    pub host_limit_found: Option<FoundLimit>,
    /// The CPU hold on a paced start, lifted by the daemon that takes the VM over.
    #[serde(default)]
    pub cpu_hold: Option<CpuHold>,
}

/// A hold on a launched VM's CPU: the share of a core it may use, and the quota (in CPUs;
/// None: none) its group had before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuHold {
    pub percent: u32,
    pub found_cores: Option<f64>,
}

/// A cgroup's limit as memvisor found it (None inside: unlimited), kept apart from "not known".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoundLimit {
    pub limit: Option<Size>,
}

/// The state an earlier daemon left, if any.
pub fn load(dir: &Path) -> Result<Option<Saved>, StateError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Read(path, e)),
    }
}

pub fn save(dir: &Path, saved: &Saved) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    let temporary = dir.join(format!("{STATE_FILE}.new"));
    let fail = |e| StateError::Write(path.clone(), e);
    let text = serde_json::to_vec_pretty(saved).expect("state serializes");
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(&text).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, &path).map_err(fail)
}

/// Forgets everything: after a clean shutdown nothing is left to re-attach or restore.
pub fn clear(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut saved = Saved {
            ksm_found: Some(KsmSettings {
                run: false,
                pages_to_scan: 100,
                sleep_ms: 20,
                smart_scan: Some(true),
            }),
            zswap_found: Some(false),
            damon_watched: Vec::new(),
            vms: BTreeMap::new(),
        };
        saved.vms.insert(
            "vm1".into(),
            SavedVm {
                origin: Origin::Launched,
                pid: 42,
                qmp: "/x/qmp.sock".into(),
                memory: Size::mib(1024),
                reservation: Size::mib(256),
                limit: None,
                shares: 2000,
                boot_memory: Size::mib(1024),
                balloon_target: Some(Size::mib(512)),
                plug_requested: Size::ZERO,
                cgroup_limit: None,
                workload: Some("hold:64M".parse().unwrap()),
                host_limit_found: Some(FoundLimit { limit: None }),
                cpu_hold: Some(CpuHold {
                    percent: 25,
                    found_cores: None,
                }),
            },
        );
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(saved));
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("state.json") && e.contains("move it away"),
            "{e}"
        );
        clear(dir.path());
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
