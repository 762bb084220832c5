//! `[host] budget = "auto"`: memvisor on the machine's own memory rather than a lab cgroup.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

fn cgroup_file(cgroup: &str, file: &str) -> u64 {
    let path = format!("/sys/fs/cgroup/memory/{cgroup}/{file}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

/// Whether this process may lower an OOM score adjustment (CAP_SYS_RESOURCE is capability 24).
fn can_lower_oom_score_adj() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    effective & (1 << 24) != 0
}

#[test]
fn an_auto_budget_is_the_machines_memory_and_counts_what_the_kernel_has_in_use() {
    require_vm_prerequisites();
    // The daemon and its QEMU inherit this (a process may raise its own): the QEMU must get 0.
    std::fs::write("/proc/self/oom_score_adj", "500").unwrap();
    let mut host = Host::new();
    let total = meminfo_mib("MemTotal");
    // An operator's reserve that leaves the VMs 1.5 GiB of this machine.
    host.host_keys = format!("reserve = \"{}M\"", total - 1536);
    host.up_with_policy("auto", "[[vm]]\nname = \"v\"\nmemory = \"256M\"\n", "ours");
    host.wait_for("v", Duration::from_secs(90), "guest statistics", |v| {
        v["guest_total_mib"].is_u64()
    });

    let (code, text) = api_get(host.path(), "/v1/host");
    assert_eq!(code, 200, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["budget_mib"], total, "{status:#}");
    let used = status["used_mib"].as_u64().expect("used is known");
    let kernel_used = total - meminfo_mib("MemAvailable");
    assert!(
        used.abs_diff(kernel_used) < 256,
        "used {used} MiB is what the kernel counts in use ({kernel_used} MiB): {status:#}"
    );
    // The kernel's count holds more than the VM's own group: the host's processes count too.
    let vms_charged = cgroup_file(&host.cgroup, "memory.usage_in_bytes") >> 20;
    assert!(
        used > vms_charged,
        "used {used} MiB, the VMs' group {vms_charged} MiB"
    );
    // What the VM does not hold is the host's own, and no VM's to be entitled to.
    let other = status["other_used_mib"]
        .as_u64()
        .expect("other is known on a real host");
    let rss = mib(&host.vm("v"), "host_rss_mib");
    assert!(
        other.abs_diff(used.saturating_sub(rss)) < 256 && other < used,
        "other {other} MiB is used less the VM's {rss} MiB: {status:#}"
    );
    // The machine's memory is the limit: memvisor set none on the VMs' group.
    assert!(
        cgroup_file(&host.cgroup, "memory.limit_in_bytes") >> 20 > total,
        "the VMs' group is not capped in real mode"
    );
    // Free is what the machine has left, the reserve included.
    let free = status["free_mib"].as_u64().unwrap();
    assert_eq!(free, total - used, "{status:#}");

    // The OOM killer takes other processes before the daemon, and the VMs as it would anyway.
    let adj = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    };
    assert_eq!(
        adj(mib(&host.vm("v"), "pid")),
        0,
        "its QEMU does not inherit the daemon's"
    );
    let daemon = adj(daemon_pid(host.path()) as u64);
    if can_lower_oom_score_adj() {
        assert_eq!(daemon, -900, "the daemon protects itself");
    } else {
        // A container without CAP_SYS_RESOURCE (this machine): the daemon cannot lower it, and
        // says so where the operator looks.
        assert_eq!(daemon, 500);
        wait_event(
            &host,
            &["not protected from the OOM killer", "CAP_SYS_RESOURCE"],
            Duration::from_secs(5),
        );
    }
}
