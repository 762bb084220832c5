//! Host memory from `/proc/meminfo`.
//!
//! Parsed here rather than with procfs: procfs-core 0.17 panics on text the kernel never
//! writes (inside a multi-byte character, on figures whose bytes overflow, on other units),
//! which fuzzing found; memvisor needs five figures in kB.

use memvisor_core::Size;

#[derive(Debug, thiserror::Error)]
pub enum MeminfoError {
    #[error("cannot read /proc/meminfo: {0}; is /proc mounted?")]
    Read(std::io::Error),
    #[error("/proc/meminfo has no usable {0} line (\"{0}: N kB\")")]
    Missing(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    pub total: Size,
    pub available: Size,
    pub free: Size,
    pub swap_total: Size,
    pub swap_free: Size,
}

impl HostMemory {
    /// What the kernel counts in use: all but what it could hand out without swapping.
    pub fn used(&self) -> Size {
        Size::bytes(
            self.total
                .as_bytes()
                .saturating_sub(self.available.as_bytes()),
        )
    }
}

pub fn read() -> Result<HostMemory, MeminfoError> {
    parse(&std::fs::read_to_string("/proc/meminfo").map_err(MeminfoError::Read)?)
}

/// The figure of a `Key:   N kB` line, in bytes, if it fits.
fn kib(text: &str, key: &'static str) -> Option<Size> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB") && words.next().is_none())
            .then(|| n.checked_mul(1024).map(Size::bytes))?
    })
}

pub fn parse(text: &str) -> Result<HostMemory, MeminfoError> {
    let need = |key| kib(text, key).ok_or(MeminfoError::Missing(key));
    let free = need("MemFree")?;
    Ok(HostMemory {
        total: need("MemTotal")?,
        // Kernels before 3.14 have no MemAvailable; free is the honest lower bound there.
        available: kib(text, "MemAvailable").unwrap_or(free),
        free,
        swap_total: need("SwapTotal")?,
        swap_free: need("SwapFree")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_text() {
        let text = "MemTotal:       24571328 kB\nMemFree:        23000000 kB\nMemAvailable:   23500000 kB\n\
                    Buffers:            1000 kB\nCached:           50000 kB\nSwapCached:            0 kB\n\
                    Active:            10000 kB\nInactive:          10000 kB\nSwapTotal:       1048576 kB\n\
                    SwapFree:         524288 kB\nDirty:                 0 kB\nWriteback:             0 kB\n\
                    Mapped:             1000 kB\nShmem:               100 kB\nSlab:               1000 kB\n\
                    CommitLimit:     1000 kB\nCommitted_AS:     1000 kB\nVmallocTotal:   1000 kB\n\
                    VmallocUsed:     1000 kB\nVmallocChunk:   0 kB\n";
        let m = parse(text).unwrap();
        assert_eq!(m.total, Size::bytes(24571328 * 1024));
        assert_eq!(m.available, Size::bytes(23500000 * 1024));
        assert_eq!(m.swap_total, Size::mib(1024));
        assert_eq!(m.swap_free, Size::mib(512));
        assert_eq!(m.used(), Size::bytes((24571328 - 23500000) * 1024));
        let odd = text.replace("MemTotal:  ", "MemTotal:\u{feff}");
        assert!(matches!(
            parse(&odd),
            Err(MeminfoError::Missing("MemTotal"))
        ));
        let overflowing = text.replace("24571328", "18446744073709551");
        assert!(matches!(
            parse(&overflowing),
            Err(MeminfoError::Missing("MemTotal"))
        ));
        let no_available = text.replace("MemAvailable", "Other");
        assert_eq!(parse(&no_available).unwrap().available, m.free);
        assert!(read().unwrap().total > Size::ZERO);
    }

    #[test]
    fn reads_this_host() {
        let m = read().unwrap();
        assert!(m.total > Size::ZERO && m.available <= m.total);
    }
}
