//! Memory of one host process (a QEMU) from `/proc/PID/status`.

use memvisor_core::Size;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process {pid} is gone or unreadable: {source}")]
    Read { pid: u32, source: procfs::ProcError },
    #[error("process {0} has no resident set (a kernel thread or a zombie)")]
    NoRss(u32),
}

/// Resident set size of `pid`.
pub fn rss(pid: u32) -> Result<Size, ProcessError> {
    let status = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|source| ProcessError::Read { pid, source })?;
    status
        .vmrss
        .map(|kib| Size::bytes(kib * 1024))
        .ok_or(ProcessError::NoRss(pid))
}

pub fn is_alive(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| s.state != 'Z' && s.state != 'X')
        .unwrap_or(false)
}

/// CPU time (user + system) process `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, ProcessError> {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_err(|source| ProcessError::Read { pid, source })?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_test_process() {
        assert!(rss(std::process::id()).unwrap() > Size::ZERO);
        assert!(is_alive(std::process::id()));
        assert!(matches!(rss(u32::MAX / 2), Err(ProcessError::Read { .. })));
    }
}
