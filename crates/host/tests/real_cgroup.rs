//! The cgroup adapter against this machine's real memory and cpu controllers (v1 or v2,
//! whichever is mounted). Needs root; a missing controller fails the test with a message saying
//! so. This machine's controllers are v1; memvisor's end-to-end tests also run this binary
//! inside the project's Debian guest, on systemd's real v2 tree (tests/disk_guest.rs).

use memvisor_core::Size;
use memvisor_host::cgroup::Hierarchy;
use std::process::Command;

#[test]
fn creates_limits_fills_and_removes_a_real_group() {
    let hierarchy =
        Hierarchy::detect().expect("this test needs a cgroup memory controller and root");
    let parent = hierarchy.group(&format!("memvisor-test-{}", std::process::id()));
    let group = parent.child("vm");
    group.create().unwrap();
    parent.set_limit(Some(Size::mib(256))).unwrap();
    assert_eq!(parent.limit().unwrap(), Some(Size::mib(256)));

    // Once told to go, the shell writes 64 MiB to a file on a disk (not a tmpfs, whose pages
    // are not file cache): page cache charged to its group.
    let cache_file = format!("/var/tmp/memvisor-test-{}.cache", std::process::id());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("read _ && head -c 64M /dev/zero > {cache_file}"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    group.add_process(child.id()).unwrap();
    assert_eq!(group.pids().unwrap(), vec![child.id()]);
    // Found again from the process, as an attached QEMU's group is.
    assert_eq!(hierarchy.group_of(child.id()).unwrap(), group);
    // Charges roll up: the parent accounts for at least what its child uses. The child's shell
    // may still be starting and charging pages between two reads, so the child is read first
    // and the pair is read again until the shell waits on its input.
    let rolls_up = (0..50).any(|_| {
        let child_usage = group.usage().unwrap();
        let rolled = parent.usage().unwrap() >= child_usage;
        if !rolled {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        rolled
    });
    assert!(rolls_up, "the parent's usage never covered its child's");
    // A cap on the process's own group, then put back as it was found; its tasks wait at it
    // instead of being killed (v1), and the shell, far below it, does not wait.
    let found = group.cap().unwrap();
    group.wait_at_limit().unwrap();
    let reclaimed_nothing = group.set_cap(Some(Size::mib(128))).unwrap();
    assert_eq!(group.cap().unwrap(), Some(Size::mib(128)));
    assert!(!group.stalled_at_limit().unwrap());
    group.set_cap(found).unwrap();
    assert_eq!(group.cap().unwrap(), found);

    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(group.pids().unwrap().is_empty());
    // The file's cache stays charged after the writer is gone, on the inactive list: the
    // group's usage counts it, what it has in use does not.
    let cache = (group.usage().unwrap().as_mib()).saturating_sub(group.in_use().unwrap().as_mib());
    assert!(
        (32..=64).contains(&cache),
        "64 MiB written, {cache} MiB of inactive file cache"
    );
    // A cap below that cache: the kernel reclaims it within the write, on this thread, and
    // the write's CPU says what taking the memory cost; the cap above what the shell held
    // took nothing.
    let reclaimed = group.set_cap(Some(Size::mib(8))).unwrap();
    let left = group.usage().unwrap().as_mib();
    println!("cap reclaiming {cache} MiB took {reclaimed:?} of CPU, one reclaiming nothing {reclaimed_nothing:?}");
    assert!(left <= 8, "{left} MiB left under an 8 MiB cap");
    assert!(
        reclaimed > reclaimed_nothing * 10,
        "reclaiming {cache} MiB cost {reclaimed:?}, reclaiming nothing {reclaimed_nothing:?}"
    );
    group.set_cap(found).unwrap();
    std::fs::remove_file(&cache_file).unwrap();
    group.remove().unwrap();
    parent.remove().unwrap();
    assert!(!parent.exists());
}

#[test]
fn a_real_cpu_quota_throttles_a_busy_process_and_not_an_idle_one() {
    let hierarchy =
        Hierarchy::detect_cpu().expect("this test needs a cgroup cpu controller and root");
    let group = hierarchy.group(&format!("memvisor-test-cpu-{}", std::process::id()));
    group.create().unwrap();
    group.set_cpu_quota(Some(0.1)).unwrap();
    // A shell in the group waits on its input for a second, then spins for a second.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read _ && end=$(($(date +%s) + 1)) && while [ $(date +%s) -le $end ]; do :; done")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    group.add_process(child.id()).unwrap();
    assert_eq!(hierarchy.group_of(child.id()).unwrap(), group);
    // The shell may still be starting (slowly, in a TCG guest) when it joins the group.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = group.cpu_periods().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let waited = group.cpu_periods().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let spun = group.cpu_periods().unwrap();
    // Waiting, it is never held back; spinning against a tenth of a core, in most periods.
    assert_eq!(waited.1, before.1, "throttled while it waited");
    let (periods, throttled) = (spun.0 - waited.0, spun.1 - waited.1);
    assert!(
        periods > 0 && throttled * 2 > periods,
        "{throttled} of {periods} periods throttled"
    );
    group.remove().unwrap();
    assert!(!group.exists());
}
