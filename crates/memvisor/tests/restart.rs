//! A daemon killed with SIGKILL leaves its VMs running; a restarted one takes them over from
//! its state directory without moving a balloon or losing a setting; SIGTERM then leaves
//! nothing behind: no QEMU, no cgroup, KSM and swap as they were, even while VMs still start.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
}

fn wait_gone(pid: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still runs");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn swap_active(path: &Path) -> bool {
    std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .contains(&*path.to_string_lossy())
}

/// No cgroup of the daemon's is left, and KSM is as it was found.
fn assert_put_back(host: &Host, ksm_before: &[String]) {
    for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
        assert!(
            !Path::new(root).join(&host.cgroup).exists(),
            "cgroup {} left behind",
            host.cgroup
        );
    }
    assert_eq!(ksm_settings(), ksm_before, "KSM settings not restored");
}

#[test]
fn a_killed_daemon_is_replaced_without_harm_and_sigterm_leaves_nothing() {
    require_vm_prerequisites();
    // Settings our policy never uses, so that their restoring shows.
    let _ksm = KsmKnobs::set(&[("pages_to_scan", "123"), ("sleep_millisecs", "45")]);
    let ksm_before = ksm_settings();
    let mut host = Host::new();
    let vms = r#"
[[vm]]
name = "a"
memory = "384M"
limit = "256M"
workload = "hold:64M"
"#;
    // Our policy runs KSM, so there is a host setting to restore; the limit keeps a there.
    let tables = "[scheduler]\npolicy = \"ours\"\n";
    host.host_keys = "swap = \"128M\"".into();
    host.up_with("1536M", vms, tables);
    let swap_file = host.path().join("host-swap.img");
    assert!(swap_active(&swap_file));
    let (before, _) = host.wait_for(
        "a",
        Duration::from_secs(60),
        "the balloon at its limit",
        |v| v["balloon_actual_mib"].as_u64().is_some_and(|a| a <= 260),
    );
    ok(
        host.path(),
        &["set", "a", "--shares", "3000", "--reserve", "128M"],
    );
    let qemu = before["pid"].as_u64().unwrap();
    assert_ne!(
        ksm_settings(),
        ksm_before,
        "our policy should have tuned KSM"
    );

    let daemon = daemon_pid(host.path()) as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(daemon as u64, "the killed daemon");
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(qemu), "the VM died with the daemon");

    // A new daemon on the same state directory takes the VM over.
    ok(
        host.path(),
        &[
            "up",
            "-f",
            host.path().join("config.toml").to_str().unwrap(),
        ],
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let a = host.vm("a");
        assert_eq!(
            a["pid"].as_u64(),
            Some(qemu),
            "a new QEMU was started: {a:#}"
        );
        let actual = a["balloon_actual_mib"].as_u64().unwrap_or(0);
        assert!(
            actual <= 260,
            "the balloon jumped to {actual} MiB after the restart"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        swap_active(&swap_file),
        "the host swap file was switched off"
    );
    let a = host.vm("a");
    assert_eq!(a["state"], "running", "{a:#}");
    assert_eq!(a["shares"], 3000, "a setting was lost: {a:#}");
    assert_eq!(a["reservation_mib"], 128, "a setting was lost: {a:#}");
    let events = ok(host.path(), &["events"]);
    assert!(
        events.contains("a taken over after a daemon restart")
            && events.contains("a reconfigured on request"),
        "{events}"
    );

    // SIGTERM: the daemon stops the VM, removes its cgroups, restores KSM, and exits.
    let daemon = daemon_pid(host.path()) as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_gone(daemon as u64, "the daemon after SIGTERM");
    assert!(!alive(qemu), "QEMU still runs after SIGTERM");
    assert_put_back(&host, &ksm_before);
    assert!(
        !swap_active(&swap_file) && !swap_file.exists(),
        "host swap left on"
    );
    assert!(
        !host.path().join("state.json").exists(),
        "state left after a clean stop"
    );
    assert!(!host.path().join("memvisor.sock").exists());
}

#[test]
fn sigterm_while_vms_still_start_stops_those_started_and_leaves_nothing() {
    require_vm_prerequisites();
    let ksm_before = ksm_settings();
    let mut host = Host::new();
    // Overcommitted: under our policy b waits for a to boot and settle, which takes a TCG
    // guest 15 s or more.
    let vms =
        "[[vm]]\nname = \"a\"\nmemory = \"384M\"\n\n[[vm]]\nname = \"b\"\nmemory = \"384M\"\n";
    let mut daemon = host.run_daemon("512M", vms, "[scheduler]\npolicy = \"ours\"\n");
    wait_event(&host, &["b waits for a"], Duration::from_secs(60));
    let qemu = host.vm("a")["pid"].as_u64().expect("a's QEMU runs");
    let b = host.vm("b");
    assert_eq!(
        b["state"], "stopped",
        "b started too soon for this test: {b:#}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still runs 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "the daemon exited with {status} after SIGTERM"
    );
    wait_gone(qemu, "a's QEMU after SIGTERM");
    let events = std::fs::read_to_string(host.path().join("events.jsonl")).unwrap();
    assert!(!events.contains("b started"), "{events}");
    assert_put_back(&host, &ksm_before);
    assert!(!host.path().join("state.json").exists());
}
