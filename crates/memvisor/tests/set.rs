//! `memvisor set` changes a running VM's reservation, limit, shares and size without restarting
//! its guest; growing past the boot size plugs memory through virtio-mem.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn set_changes_a_running_vm_live_and_refuses_what_cannot_be() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up(
        "2G",
        r#"
[[vm]]
name = "g"
memory = "512M"
max = "1G"
"#,
    );
    let (before, _) = host.wait_for("g", Duration::from_secs(60), "guest statistics", |v| {
        v["guest_total_mib"].is_u64()
    });
    let pid = before["pid"].as_u64().expect("a launched VM has a pid");
    let boot_total = mib(&before, "guest_total_mib");

    let after = host.change(
        "g",
        &[
            "set",
            "g",
            "--reserve",
            "128M",
            "--limit",
            "896M",
            "--shares",
            "2000",
        ],
    );
    assert_eq!(mib(&after, "reservation_mib"), 128, "{after:#}");
    assert_eq!(mib(&after, "limit_mib"), 896, "{after:#}");
    assert_eq!(after["shares"], 2000, "{after:#}");

    // Past its boot size: virtio-mem plugs the difference into the running guest.
    let accepted = host.change("g", &["set", "g", "--memory", "768M"]);
    assert_eq!(mib(&accepted, "memory_mib"), 768, "{accepted:#}");
    let (grown, seconds) = host.wait_for("g", Duration::from_secs(60), "768 MiB plugged in", |v| {
        v["allocation_mib"].as_u64() == Some(768)
    });
    println!("grew 512 -> 768 MiB live in {seconds:.1} s");
    assert_eq!(mib(&grown, "plugged_mib"), 256, "{grown:#}");
    // The guest onlines what was plugged in whole memory blocks (128 MiB on x86).
    host.wait_for(
        "g",
        Duration::from_secs(60),
        "the guest sees more memory",
        |v| v["guest_total_mib"].as_u64() >= Some(boot_total + 128),
    );

    // What cannot be is refused with the reason, and nothing changes.
    for (args, words) in [
        (vec!["--memory", "2G"], "1GiB"),
        (vec!["--reserve", "4G"], "budget"),
        (vec!["--limit", "lots"], "--limit"),
    ] {
        let mut full = vec!["set", "g"];
        full.extend(&args);
        let error = fails(host.path(), &full);
        assert!(error.contains(words), "{args:?}: {error}");
    }
    let last = host.vm("g");
    assert_eq!(mib(&last, "reservation_mib"), 128, "{last:#}");
    assert_eq!(mib(&last, "limit_mib"), 896, "{last:#}");
    assert_eq!(mib(&last, "allocation_mib"), 768, "{last:#}");
    assert_eq!(
        last["pid"].as_u64(),
        Some(pid),
        "the guest was restarted: {last:#}"
    );
}
