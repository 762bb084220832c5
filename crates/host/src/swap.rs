//! Host swap, the last rung: a swap file memvisor can add and take away again, zswap (compress
//! before writing to disk), and the kernel's swap counters.

use memvisor_core::Size;
use std::path::{Path, PathBuf};
use std::process::Command;

const ZSWAP_ENABLED: &str = "/sys/module/zswap/parameters/enabled";
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}; memvisor must run as root")]
    Write(PathBuf, std::io::Error),
    #[error("'{0}' failed: {1}; is util-linux installed (apt-get install util-linux) and is the file system one that allows swap files (not tmpfs, not btrfs without nocow)?")]
    Command(String, String),
}

/// Pages the host moved out of memory since boot: to disk, and into zswap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapCounters {
    pub out_to_disk_pages: u64,
    pub out_to_zswap_pages: u64,
}

impl SwapCounters {
    pub fn out_bytes(&self) -> u64 {
        (self.out_to_disk_pages + self.out_to_zswap_pages) * PAGE
    }

    pub fn out_mib_since(&self, earlier: &SwapCounters) -> u64 {
        self.out_bytes().saturating_sub(earlier.out_bytes()) >> 20
    }

    /// The part of `out_mib_since` that zswap compressed in memory instead of writing it out.
    pub fn zswap_mib_since(&self, earlier: &SwapCounters) -> u64 {
        (self
            .out_to_zswap_pages
            .saturating_sub(earlier.out_to_zswap_pages)
            * PAGE)
            >> 20
    }
}

pub fn counters() -> Result<SwapCounters, SwapError> {
    let path = Path::new("/proc/vmstat");
    let text = std::fs::read_to_string(path).map_err(|e| SwapError::Read(path.into(), e))?;
    Ok(parse_vmstat(&text))
}

pub fn parse_vmstat(text: &str) -> SwapCounters {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    };
    SwapCounters {
        out_to_disk_pages: get("pswpout"),
        out_to_zswap_pages: get("zswpout"),
    }
}

/// zswap's global switch; `restore` puts back what `set` found.
pub struct Zswap {
    found: Option<bool>,
}

impl Zswap {
    pub fn new() -> Zswap {
        Zswap { found: None }
    }

    pub fn enabled() -> Result<bool, SwapError> {
        let text = std::fs::read_to_string(ZSWAP_ENABLED)
            .map_err(|e| SwapError::Read(ZSWAP_ENABLED.into(), e))?;
        Ok(text.trim() == "Y")
    }

    pub fn set(&mut self, enabled: bool) -> Result<(), SwapError> {
        let now = Zswap::enabled()?;
        self.found.get_or_insert(now);
        if now != enabled {
            std::fs::write(ZSWAP_ENABLED, if enabled { "Y" } else { "N" })
                .map_err(|e| SwapError::Write(ZSWAP_ENABLED.into(), e))?;
        }
        Ok(())
    }

    pub fn restore(&mut self) -> Result<(), SwapError> {
        match self.found.take() {
            Some(found) => self.set(found).map(|_| self.found = None),
            None => Ok(()),
        }
    }

    /// What `restore` will put back, if anything was changed.
    pub fn found(&self) -> Option<bool> {
        self.found
    }

    /// Takes over what an earlier run found (a restarted daemon restores the host's setting,
    /// not the one its crashed predecessor left).
    pub fn remember(&mut self, found: Option<bool>) {
        self.found = found.or(self.found);
    }
}

impl Default for Zswap {
    fn default() -> Self {
        Zswap::new()
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), SwapError> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| SwapError::Command(shown.clone(), e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SwapError::Command(
            shown,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// A swap file that is switched on while this value lives and removed when it is dropped.
pub struct SwapFile {
    path: PathBuf,
}

/// Whether `path` is an active swap area, per the text of /proc/swaps.
pub fn is_active(swaps: &str, path: &Path) -> bool {
    swaps
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next() == Some(&*path.to_string_lossy()))
}

impl SwapFile {
    pub fn enable(path: &Path, size: Size) -> Result<SwapFile, SwapError> {
        let shown = path.display().to_string();
        // A daemon restarted after a crash keeps its predecessor's swap file: switching it
        // off would force every page in it back into memory at once.
        let swaps = std::fs::read_to_string("/proc/swaps")
            .map_err(|e| SwapError::Read("/proc/swaps".into(), e))?;
        let same_size = std::fs::metadata(path).is_ok_and(|m| m.len() == size.as_bytes());
        if is_active(&swaps, path) && same_size {
            return Ok(SwapFile { path: path.into() });
        }
        let _ = run("swapoff", &[&shown]);
        let _ = std::fs::remove_file(path);
        let made = (|| {
            run("fallocate", &["-l", &size.as_bytes().to_string(), &shown])?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| SwapError::Write(path.into(), e))?;
            run("mkswap", &["-q", &shown])?;
            run("swapon", &[&shown])
        })();
        if let Err(e) = made {
            // A full disk leaves a partial file: nothing half-made stays behind.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(SwapFile { path: path.into() })
    }
}

impl SwapFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let shown = self.path.display().to_string();
        if let Err(e) = run("swapoff", &[&shown]) {
            eprintln!("memvisor: {e}");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_active_swap_areas() {
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/var/lib/memvisor/host-swap.img file 1048572 0 -2\n";
        assert!(is_active(
            swaps,
            Path::new("/var/lib/memvisor/host-swap.img")
        ));
        assert!(!is_active(swaps, Path::new("/var/lib/memvisor/other.img")));
        assert!(!is_active("Filename Type\n", Path::new("Filename")));
    }

    #[test]
    fn counts_disk_and_zswap_swap_out() {
        let before = parse_vmstat("pswpin 3\npswpout 100\nzswpout 50\n");
        let after = parse_vmstat("pswpin 3\npswpout 356\nzswpout 50\npswpout_x 9\n");
        assert_eq!(after.out_to_disk_pages, 356);
        assert_eq!(after.out_mib_since(&before), 1);
        assert_eq!(parse_vmstat(""), SwapCounters::default());
    }
}
