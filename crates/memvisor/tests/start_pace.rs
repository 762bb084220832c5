//! A VM that starts on an overcommitted host with less room than the start before it took runs
//! on a tenth to a quarter of a core while it boots and settles, so that what it writes comes no faster
//! than KSM merges it. The hold lives in the cpu hierarchy's group named as the VM's memory
//! group; a daemon that takes the VM over after a crash lets it go, and `down` leaves no group.

mod common;

use common::{ksm_settings, ok, require_vm_prerequisites, wait_event, Host};
use std::path::Path;
use std::time::{Duration, Instant};

/// This machine's cpu controller (cgroup v1, as its memory controller).
const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

fn quota(host: &Host, vm: &str) -> String {
    let file = Path::new(CPU_ROOT)
        .join(&host.cgroup)
        .join(vm)
        .join("cpu.cfs_quota_us");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string()
}

#[test]
fn a_start_short_of_room_is_paced_and_the_next_daemon_lets_it_go() {
    require_vm_prerequisites();
    let ksm_before = ksm_settings();
    let mut host = Host::new();
    // Six desktops from one image, as in the vdi scenario: each takes about 300 MiB of the host
    // as it boots and writes the 200 MiB they all hold, before KSM merges it, and about 75 once
    // merged (measured: vdi, 325 MiB for d5's start; 377 MiB free on 1 GiB after five). On
    // 896 MiB the room left for the fifth or sixth is short of what the start before took.
    let vms: String = (1..=6)
        .map(|i| {
            format!("[[vm]]\nname = \"d{i}\"\nmemory = \"512M\"\nworkload = \"shared:200M\"\n\n")
        })
        .collect();
    host.host_keys = "swap = \"512M\"".into();
    let tables = "[scheduler]\npolicy = \"ours\"\n";
    let mut daemon = host.run_daemon("896M", &vms, tables);
    let paced = wait_event(
        &host,
        &["% of a core while it starts"],
        Duration::from_secs(420),
    );
    assert!(
        paced["reason"]
            .as_str()
            .unwrap()
            .contains("the last VM took as it started"),
        "{paced}"
    );
    let vm = paced["vm"].as_str().unwrap().to_string();
    let reason = paced["reason"].as_str().unwrap();
    let percent: u64 = reason
        .split_once(" runs on ")
        .and_then(|(_, rest)| rest.split_once('%'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no share of a core in {reason:?}"));
    assert!(
        (10..=25).contains(&percent),
        "a paced start runs on a tenth to a quarter of a core: {reason}"
    );
    let status = host.vm(&vm);
    let qemu = status["pid"].as_u64().expect("the paced VM's QEMU runs");
    assert_eq!(
        status["cpu_limit_percent"].as_u64(),
        Some(percent),
        "its status shows the pace: {status}"
    );
    // The cpu controller's period is 100 ms: a percent of a core is 1000 µs of it.
    assert_eq!(
        quota(&host, &vm),
        (percent * 1000).to_string(),
        "{vm} is held to {percent}% of a core"
    );
    let members = Path::new(CPU_ROOT)
        .join(&host.cgroup)
        .join(&vm)
        .join("cgroup.procs");
    let members = std::fs::read_to_string(members).unwrap();
    assert!(
        members.lines().any(|l| l == qemu.to_string()),
        "{vm}'s QEMU {qemu} is not in its cpu group: {members}"
    );

    // The daemon dies mid-start; the next one takes the VM over without its predecessor's pace.
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let mut daemon = host.run_daemon("896M", &vms, tables);
    let started = Instant::now();
    while quota(&host, &vm) != "-1" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new daemon left {vm} held: quota {}",
            quota(&host, &vm)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        host.vm(&vm)["pid"].as_u64(),
        Some(qemu),
        "{vm} kept running"
    );

    ok(host.path(), &["down"]);
    daemon.wait().unwrap();
    for root in ["/sys/fs/cgroup/memory", CPU_ROOT] {
        let left = Path::new(root).join(&host.cgroup);
        assert!(!left.exists(), "{} left behind", left.display());
    }
    assert_eq!(ksm_settings(), ksm_before, "KSM settings not restored");
}
