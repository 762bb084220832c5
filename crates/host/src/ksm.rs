//! Kernel samepage merging: the knobs in `/sys/kernel/mm/ksm`, what it saved, and per-process
//! merged pages. The knobs are host-wide, so the values found are put back on `restore`.

use memvisor_core::Size;
use std::path::{Path, PathBuf};

pub const SYSFS: &str = "/sys/kernel/mm/ksm";
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KsmError {
    #[error("cannot read {0}: {1}; this kernel needs CONFIG_KSM (is /sys mounted?)")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}; memvisor must run as root to tune KSM")]
    Write(PathBuf, std::io::Error),
    #[error("{0} holds '{1}', not a number")]
    Parse(PathBuf, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KsmSettings {
    pub run: bool,
    pub pages_to_scan: u32,
    pub sleep_ms: u32,
    /// Whether KSM skips pages that did not merge in earlier scans (kernel 6.7+; None where
    /// the kernel lacks the knob, or to leave it as it is).
    #[serde(default)]
    pub smart_scan: Option<bool>,
}

pub struct Ksm {
    root: PathBuf,
    found: Option<KsmSettings>,
}

impl Ksm {
    pub fn at(root: &Path) -> Ksm {
        Ksm {
            root: root.to_path_buf(),
            found: None,
        }
    }

    fn read(&self, knob: &str) -> Result<u64, KsmError> {
        let path = self.root.join(knob);
        let text = std::fs::read_to_string(&path).map_err(|e| KsmError::Read(path.clone(), e))?;
        text.trim()
            .parse()
            .map_err(|_| KsmError::Parse(path, text.trim().to_string()))
    }

    fn write(&self, knob: &str, value: u64) -> Result<(), KsmError> {
        let path = self.root.join(knob);
        std::fs::write(&path, value.to_string()).map_err(|e| KsmError::Write(path, e))
    }

    pub fn settings(&self) -> Result<KsmSettings, KsmError> {
        let smart_scan = if self.root.join("smart_scan").exists() {
            Some(self.read("smart_scan")? == 1)
        } else {
            None
        };
        Ok(KsmSettings {
            run: self.read("run")? == 1,
            pages_to_scan: self.read("pages_to_scan")? as u32,
            sleep_ms: self.read("sleep_millisecs")? as u32,
            smart_scan,
        })
    }

    /// Applies `wanted`, remembering what was there before the first change; true if
    /// anything changed.
    pub fn apply(&mut self, wanted: KsmSettings) -> Result<bool, KsmError> {
        let now = self.settings()?;
        self.found.get_or_insert(now);
        let wanted = KsmSettings {
            // Left as it is when not asked for, or when this kernel has no such knob.
            smart_scan: match (now.smart_scan, wanted.smart_scan) {
                (Some(_), Some(asked)) => Some(asked),
                (as_it_is, _) => as_it_is,
            },
            ..wanted
        };
        if now == wanted {
            return Ok(false);
        }
        if let Some(smart) = wanted.smart_scan {
            self.write("smart_scan", smart as u64)?;
        }
        self.write("pages_to_scan", wanted.pages_to_scan as u64)?;
        self.write("sleep_millisecs", wanted.sleep_ms as u64)?;
        // run=0 stops scanning but keeps what is merged; 2 would unmerge everything.
        self.write("run", wanted.run as u64)?;
        Ok(true)
    }

    /// What `restore` will put back, if anything was changed.
    pub fn found(&self) -> Option<KsmSettings> {
        self.found
    }

    /// Takes over what an earlier run found, as `Zswap::remember` does.
    pub fn remember(&mut self, found: Option<KsmSettings>) {
        self.found = found.or(self.found);
    }

    pub fn restore(&mut self) -> Result<(), KsmError> {
        match self.found.take() {
            Some(found) => self.apply(found).map(|_| self.found = None),
            None => Ok(()),
        }
    }

    /// Memory KSM saves host-wide: every page mapped to a shared page beyond its first user.
    pub fn saved(&self) -> Result<Size, KsmError> {
        Ok(Size::bytes(self.read("pages_sharing")? * PAGE))
    }
}

/// Pages of process `pid` that KSM merged (kernel 6.1+), as a size.
pub fn process_merged(pid: u32) -> Option<Size> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/ksm_merging_pages")).ok()?;
    text.trim()
        .parse::<u64>()
        .ok()
        .map(|p| Size::bytes(p * PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in [
            ("run", "0"),
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("pages_sharing", "2560"),
            ("smart_scan", "1"),
        ] {
            std::fs::write(dir.path().join(k), format!("{v}\n")).unwrap();
        }
        dir
    }

    const FAST: KsmSettings = KsmSettings {
        run: true,
        pages_to_scan: 5000,
        sleep_ms: 10,
        smart_scan: Some(false),
    };

    #[test]
    fn applies_then_restores_what_it_found() {
        let dir = fixture();
        let mut ksm = Ksm::at(dir.path());
        let wanted = FAST;
        assert!(ksm.apply(wanted).unwrap(), "changed");
        assert!(!ksm.apply(wanted).unwrap(), "already so");
        assert_eq!(ksm.settings().unwrap(), wanted);
        ksm.apply(KsmSettings {
            pages_to_scan: 1000,
            ..wanted
        })
        .unwrap();
        ksm.restore().unwrap();
        let back = ksm.settings().unwrap();
        assert_eq!(
            (back.run, back.pages_to_scan, back.sleep_ms, back.smart_scan),
            (false, 100, 20, Some(true))
        );
        assert_eq!(ksm.saved().unwrap(), Size::mib(10));
    }

    #[test]
    fn smart_scan_is_left_alone_where_the_kernel_has_none_or_none_is_asked_for() {
        let dir = fixture();
        std::fs::remove_file(dir.path().join("smart_scan")).unwrap();
        let mut ksm = Ksm::at(dir.path());
        let wanted = FAST;
        ksm.apply(wanted).unwrap();
        assert_eq!(ksm.settings().unwrap().smart_scan, None);
        assert!(!dir.path().join("smart_scan").exists());

        let dir = fixture();
        let mut ksm = Ksm::at(dir.path());
        ksm.apply(KsmSettings {
            smart_scan: None,
            ..wanted
        })
        .unwrap();
        assert_eq!(ksm.settings().unwrap().smart_scan, Some(true));
    }

    #[test]
    fn a_missing_knob_says_what_the_kernel_lacks() {
        let err = Ksm::at(Path::new("/nonexistent")).settings().unwrap_err();
        assert!(err.to_string().contains("CONFIG_KSM"), "{err}");
    }
}
