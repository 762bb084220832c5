//! Real guests under a host budget: the balloon moves memory between guest and host.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn inflating_returns_memory_to_the_host_and_deflating_gives_it_back() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up(
        "1536M",
        r#"
[[vm]]
name = "a"
memory = "512M"
workload = "cache:400M@40s,idle"

[[vm]]
name = "b"
memory = "512M"
"#,
    );
    let vms = host.ps();
    assert_eq!(vms.len(), 2);
    for key in [
        "name",
        "state",
        "memory_mib",
        "balloon_target_mib",
        "balloon_actual_mib",
        "guest_free_mib",
        "guest_available_mib",
        "guest_swap_out_mib",
        "host_rss_mib",
    ] {
        assert!(vms[0].get(key).is_some(), "ps --json lacks {key}");
    }

    // The guest fills its page cache: memory QEMU really holds, which the balloon can reclaim.
    host.wait_for("a", Duration::from_secs(90), "page cache filled", |v| {
        v["guest_free_mib"].as_u64().is_some_and(|f| f < 64)
    });
    let before = host.vm("a");
    let rss_before = mib(&before, "host_rss_mib");

    host.balloon("a", 256);
    let seconds = host.wait_balloon("a", 256, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let after = host.vm("a");
    let rss_after = mib(&after, "host_rss_mib");
    let dropped = rss_before.saturating_sub(rss_after);
    println!("inflate 512 -> 256 MiB: {seconds:.1} s, host RSS {rss_before} -> {rss_after} MiB ({dropped} MiB)");
    assert!(
        dropped as f64 >= 0.6 * 256.0,
        "host RSS fell only {dropped} MiB for a 256 MiB balloon"
    );
    assert_eq!(
        host.vm("b")["balloon_actual_mib"],
        512,
        "the other VM is untouched"
    );

    host.balloon("a", 512);
    let seconds = host.wait_balloon("a", 512, Duration::from_secs(30));
    println!("deflate 256 -> 512 MiB: {seconds:.1} s");

    // Stopping and starting show at once too.
    let stopped = host.change("b", &["stop", "b"]);
    assert_eq!(stopped["state"], "stopped");
    let started = host.change("b", &["start", "b"]);
    assert_ne!(started["state"], "stopped", "{started:#}");
    assert_ne!(host.vm("b")["state"], "stopped");
}

#[test]
fn a_balloon_beyond_free_memory_makes_the_guest_swap_and_loses_nothing() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up(
        "1G",
        r#"
[[vm]]
name = "s"
memory = "512M"
swap = "512M"
workload = "hold:300M"
"#,
    );
    host.wait_for("s", Duration::from_secs(60), "300 MiB held", |v| {
        v["workload_phase"] == "hold" && v["guest_free_mib"].as_u64().is_some_and(|f| f < 150)
    });
    host.balloon("s", 192);
    let (v, seconds) = host.wait_for("s", Duration::from_secs(90), "guest swap-out", |v| {
        v["guest_swap_out_mib"].as_u64().is_some_and(|s| s > 0)
    });
    println!(
        "guest swapped {} MiB out after {seconds:.1} s",
        mib(&v, "guest_swap_out_mib")
    );
    host.wait_balloon("s", 192, Duration::from_secs(90));
    host.balloon("s", 512);
    host.wait_balloon("s", 512, Duration::from_secs(30));

    let verify: serde_json::Value =
        serde_json::from_str(&ok(host.path(), &["verify", "s", "--json"])).unwrap();
    assert_eq!(verify["pages"], 300 * 256, "{verify}");
    assert_eq!(verify["corrupt"], 0, "{verify}");
    assert_eq!(host.vm("s")["state"], "running");
}
