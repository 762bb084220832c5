//! Host memory from `/proc/meminfo`.

use memvisor_core::Size;
use procfs::{Current, FromBufRead};

#[derive(Debug, thiserror::Error)]
pub enum MeminfoError {
    #[error("cannot read /proc/meminfo: {0}; is /proc mounted?")]
    Read(#[from] procfs::ProcError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    pub total: Size,
    pub available: Size,
    pub free: Size,
    pub swap_total: Size,
    pub swap_free: Size,
}

impl From<procfs::Meminfo> for HostMemory {
    fn from(m: procfs::Meminfo) -> HostMemory {
        HostMemory {
            total: Size::bytes(m.mem_total),
            // Kernels before 3.14 have no MemAvailable; free is the honest lower bound there.
            available: Size::bytes(m.mem_available.unwrap_or(m.mem_free)),
            free: Size::bytes(m.mem_free),
            swap_total: Size::bytes(m.swap_total),
            swap_free: Size::bytes(m.swap_free),
        }
    }
}

pub fn read() -> Result<HostMemory, MeminfoError> {
    Ok(procfs::Meminfo::current()?.into())
}

pub fn parse(text: &str) -> Result<HostMemory, MeminfoError> {
    Ok(procfs::Meminfo::from_buf_read(text.as_bytes())?.into())
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
    }

    #[test]
    fn reads_this_host() {
        let m = read().unwrap();
        assert!(m.total > Size::ZERO && m.available <= m.total);
    }
}
