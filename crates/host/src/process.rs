//! Memory of one host process (a QEMU) from `/proc/PID/status` and `/proc/PID/smaps`.

use memvisor_core::Size;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process {pid} is gone or unreadable: {source}")]
    Read { pid: u32, source: procfs::ProcError },
    #[error("process {0} has no resident set (a kernel thread or a zombie)")]
    NoRss(u32),
}

fn resident(
    pid: u32,
    field: fn(&procfs::process::Status) -> Option<u64>,
) -> Result<Size, ProcessError> {
    let status = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .map_err(|source| ProcessError::Read { pid, source })?;
    field(&status)
        .map(|kib| Size::bytes(kib * 1024))
        .ok_or(ProcessError::NoRss(pid))
}

/// Resident set size of `pid`.
pub fn rss(pid: u32) -> Result<Size, ProcessError> {
    resident(pid, |s| s.vmrss)
}

/// Anonymous resident memory: a QEMU's guest RAM and its own heap, without the binary, the
/// libraries and the mapped initrd, whose page-cache pages all QEMUs share.
pub fn anon_rss(pid: u32) -> Result<Size, ProcessError> {
    resident(pid, |s| s.rssanon)
}

/// Memory of `pid` the host swapped out.
pub fn swapped(pid: u32) -> Result<Size, ProcessError> {
    resident(pid, |s| s.vmswap)
}

/// Resident memory of `pid`'s anonymous mappings whose length is one of `lengths`: a QEMU's
/// guest RAM blocks, told apart from its own memory by their size.
pub fn mapped_rss(pid: u32, lengths: &[Size]) -> Result<Size, ProcessError> {
    let maps = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.smaps())
        .map_err(|source| ProcessError::Read { pid, source })?;
    let bytes = maps
        .into_iter()
        .filter(|m| m.pathname == procfs::process::MMapPath::Anonymous)
        .filter(|m| lengths.contains(&Size::bytes(m.address.1 - m.address.0)))
        .filter_map(|m| m.extension.map.get("Rss").copied())
        .sum();
    Ok(Size::bytes(bytes))
}

/// The command line `pid` was started with, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let args = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.cmdline())
        .ok()?;
    Some(args.join(" "))
}

const OWN_OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Lowers this process's OOM score adjustment to `adj` (-1000 never killed, 1000 killed first)
/// unless it is already that low; returns the value it has afterwards.
pub fn protect_from_oom(adj: i32) -> std::io::Result<i32> {
    let now: i32 = std::fs::read_to_string(OWN_OOM_SCORE_ADJ)?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    if now <= adj {
        return Ok(now);
    }
    std::fs::write(OWN_OOM_SCORE_ADJ, adj.to_string())?;
    Ok(adj)
}

pub fn is_alive(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| s.state != 'Z' && s.state != 'X')
        .unwrap_or(false)
}

/// CPU seconds `pid` has used (user + system) and the major page faults it took: a QEMU that
/// waits for host swap takes major faults while its CPU time stands still.
pub fn cpu_and_major_faults(pid: u32) -> Result<(f64, u64), ProcessError> {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_err(|source| ProcessError::Read { pid, source })?;
    let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    Ok((cpu, stat.majflt))
}

/// Bytes `pid` has had read from storage for it (`/proc/PID/io` read_bytes): a QEMU's reads
/// of its disk images, its own memory coming back from swap included. Reads its host's page
/// cache answers are not counted (memvisor's VMs open their disks with cache=none).
pub fn storage_read_bytes(pid: u32) -> Result<u64, ProcessError> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.io())
        .map(|io| io.read_bytes)
        .map_err(|source| ProcessError::Read { pid, source })
}

/// CPU time (user + system) process `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, ProcessError> {
    cpu_and_major_faults(pid).map(|(cpu, _)| cpu)
}

/// Every process whose name starts with `prefix`, kernel threads included (`kswapd` finds
/// kswapd0, kswapd1, ...).
pub fn named(prefix: &str) -> Vec<u32> {
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|p| p.stat().is_ok_and(|s| s.comm.starts_with(prefix)))
        .map(|p| p.pid as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_test_process() {
        assert!(rss(std::process::id()).unwrap() > Size::ZERO);
        assert!(is_alive(std::process::id()));
        assert!(cmdline(std::process::id()).is_some_and(|c| !c.is_empty()));
        assert!(matches!(rss(u32::MAX / 2), Err(ProcessError::Read { .. })));
        let own = procfs::process::Process::myself()
            .unwrap()
            .stat()
            .unwrap()
            .comm;
        assert!(named(&own).contains(&std::process::id()));
        assert!(named("no-such-process-name").is_empty());
        let (cpu, _) = cpu_and_major_faults(std::process::id()).unwrap();
        assert!(cpu >= 0.0 && cpu <= cpu_seconds(std::process::id()).unwrap());
    }

    /// One page, aligned as O_DIRECT needs.
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    #[test]
    fn counts_reads_that_bypass_the_page_cache_as_a_qemu_with_cache_none_does() {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        // O_DIRECT on x86_64 Linux; the host crate builds for no other target.
        const O_DIRECT: i32 = 0o40000;
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("disk");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![0x6d; 4 << 20]).unwrap();
        file.sync_all().unwrap();
        let before = storage_read_bytes(std::process::id()).unwrap();
        let mut direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_DIRECT)
            .open(&path)
            .unwrap();
        let mut page = Page([0; 4096]);
        for _ in 0..1024 {
            direct.read_exact(&mut page.0).unwrap();
        }
        assert_eq!(page.0[4095], 0x6d);
        let read = storage_read_bytes(std::process::id()).unwrap() - before;
        assert!(read >= 4 << 20, "read_bytes grew by {read}, not 4 MiB");
        assert!(matches!(
            storage_read_bytes(u32::MAX / 2),
            Err(ProcessError::Read { .. })
        ));
    }
}
