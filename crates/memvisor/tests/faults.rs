//! Faults around the daemon, on real guests: each is detected, reported as an event, kept to
//! its VM, and the daemon keeps serving.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `args` and checks the daemon answered within `limit`.
fn answers_within(host: &Host, args: &[&str], limit: Duration) -> String {
    let started = Instant::now();
    let out = ok(host.path(), args);
    assert!(
        started.elapsed() < limit,
        "memvisor {args:?} took {:?}: the daemon stalled",
        started.elapsed()
    );
    out
}

fn signal(pid: u64, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

#[test]
fn faults_are_detected_reported_and_contained() {
    use nix::sys::signal::Signal;
    require_vm_prerequisites();
    let mut host = Host::new();
    host.host_keys = "swap = \"64M\"".into();
    host.up(
        "1536M",
        r#"
[[vm]]
name = "a"
memory = "384M"
workload = "hold:32M"

[[vm]]
name = "b"
memory = "384M"
workload = "hold:32M"
"#,
    );
    let fast = Duration::from_secs(3);

    // A guest kernel panic ends its QEMU (-no-reboot): a is lost, its console quoted, b runs
    // on, and a starts again.
    ok(host.path(), &["monitor", "a", "sendkey alt-sysrq-c"]);
    let lost = wait_event(&host, &["a lost", "Kernel panic"], Duration::from_secs(60));
    assert_eq!(
        (lost["kind"].as_str(), lost["vm"].as_str()),
        (Some("fault"), Some("a"))
    );
    assert!(answers_within(&host, &["stats", "b", "--json"], fast).contains("\"running\""));
    host.change("a", &["start", "a"]);
    host.wait_for("a", Duration::from_secs(90), "a running again", |v| {
        v["workload_phase"] == "hold"
    });

    // A guest that stops answering its balloon (paused): told, and b is served meanwhile.
    ok(host.path(), &["monitor", "a", "stop"]);
    ok(host.path(), &["balloon", "a", "256M"]);
    wait_event(
        &host,
        &["a does not answer its balloon", "asked for 256 MiB"],
        Duration::from_secs(60),
    );
    wait_event(
        &host,
        &["a's guest agent has been silent"],
        Duration::from_secs(30),
    );
    answers_within(&host, &["stats", "b"], fast);
    ok(host.path(), &["monitor", "a", "cont"]);
    wait_event(&host, &["a's balloon moves again"], Duration::from_secs(30));

    // A QMP socket that hangs (QEMU stopped): told, and the API still answers at once.
    let a_pid = host.vm("a")["pid"].as_u64().unwrap();
    signal(a_pid, Signal::SIGSTOP);
    wait_event(
        &host,
        &["a's QEMU did not answer QMP"],
        Duration::from_secs(30),
    );
    for _ in 0..3 {
        answers_within(&host, &["ps"], fast);
        answers_within(&host, &["stats", "a"], fast);
    }
    signal(a_pid, Signal::SIGCONT);
    wait_event(
        &host,
        &["a's QEMU answers QMP again"],
        Duration::from_secs(30),
    );

    // The host swap device disappears.
    let swap = host.path().join("host-swap.img");
    let off = std::process::Command::new("swapoff")
        .arg(&swap)
        .status()
        .unwrap();
    assert!(off.success());
    wait_event(
        &host,
        &["host swap", "was switched off outside memvisor"],
        Duration::from_secs(15),
    );

    // A QEMU killed: a is lost, b runs on.
    signal(a_pid, Signal::SIGKILL);
    let lost = wait_event(
        &host,
        &["a lost", "exited without being asked to"],
        Duration::from_secs(15),
    );
    assert_eq!(lost["vm"], "a");
    assert_eq!(host.vm("b")["state"], "running");
}

#[test]
fn a_host_swap_that_does_not_fit_is_reported_and_the_daemon_runs_without_it() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.host_keys = "swap = \"64T\"".into();
    host.up("1G", "");
    let event = wait_event(
        &host,
        &["host swap of 64TiB not enabled"],
        Duration::from_secs(5),
    );
    assert_eq!(event["kind"], "fault");
    assert!(!Path::new(&host.path().join("host-swap.img")).exists());
    ok(host.path(), &["ps"]);
}

#[test]
fn a_vm_stalled_at_a_host_limit_below_what_it_touches_waits_and_is_let_go() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up_with_policy(
        "1536M",
        "[[vm]]\nname = \"x\"\nmemory = \"512M\"\nworkload = \"hold:64M\"\n",
        "ours",
    );
    // This machine's memory controller is v1, where a limit is hard and kills what it cannot
    // reclaim; v2's caps (memory.high) never kill, which the cgroup module's fixtures cover.
    let group = Path::new("/sys/fs/cgroup/memory")
        .join(&host.cgroup)
        .join("x");
    assert!(
        group.join("memory.oom_control").exists(),
        "no v1 memory group at {}",
        group.display()
    );
    let read = |file: &str| std::fs::read_to_string(group.join(file)).unwrap();
    assert!(
        read("memory.oom_control").contains("oom_kill_disable 1"),
        "x's group kills at its limit: {}",
        read("memory.oom_control")
    );
    let pid = host.vm("x")["pid"].as_u64().unwrap();

    // A cap 64 MiB above what x holds, with no anonymous memory reclaimable (swappiness 0, as
    // if swap were full), then x touches 400 MiB: as a cap set while a VM idled meets the VM
    // waking up.
    std::fs::write(group.join("memory.swappiness"), "0").unwrap();
    let usage: u64 = read("memory.usage_in_bytes").trim().parse().unwrap();
    let cap_mib = (usage >> 20) + 64;
    std::fs::write(
        group.join("memory.limit_in_bytes"),
        (cap_mib << 20).to_string(),
    )
    .unwrap();
    ok(host.path(), &["workload", "x", "touch:400M:400M"]);

    let lifted = wait_event(
        &host,
        &["x stalls at its host limit", "lifted"],
        Duration::from_secs(60),
    );
    println!("cap {cap_mib} MiB: {}", lifted["reason"]);
    assert_eq!(
        read("memory.limit_in_bytes").trim(),
        "9223372036854771712",
        "x's limit is not lifted"
    );
    host.wait_for("x", Duration::from_secs(60), "x touching again", |v| {
        v["workload_phase"] == "touch" && v["host_rss_mib"].as_u64().is_some_and(|r| r > cap_mib)
    });
    let x = host.vm("x");
    assert_eq!(
        (x["state"].as_str(), x["pid"].as_u64()),
        (Some("running"), Some(pid)),
        "x was lost at its limit: {x:#}"
    );
    assert!(
        read("memory.oom_control").contains("oom_kill 0"),
        "{}",
        read("memory.oom_control")
    );
}
