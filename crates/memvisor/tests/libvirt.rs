//! libvirt domains, managed through a real libvirtd's API: found, ballooned where `virsh` sees
//! it, followed as they stop and start, across a libvirtd restart and a daemon restart; kernel
//! addresses translated through libvirt's monitor pass-through only where the config allows it;
//! grown past its boot size through a virtio-mem device that libvirt changes live.

mod common;
use common::libvirt::{dominfo_kib, Guest, Libvirtd, TestDomain, URI};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn libvirt_table(include: &str) -> String {
    format!(
        "[scheduler]\npolicy = \"manual\"\n[libvirt]\nuri = \"{URI}\"\ninclude = [\"{include}\"]\n"
    )
}

fn wait_listed(host: &Host, names: &[&str], limit: Duration) {
    let started = Instant::now();
    loop {
        let vms = host.ps();
        let listed = |name: &&str| {
            vms.iter()
                .any(|v| v["name"] == *name && v["origin"] == "libvirt")
        };
        if names.iter().all(listed) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{names:?} not all listed as libvirt domains within {limit:?}: {vms:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The IDT's fixed cpu_entry_area mapping, mapped in every x86-64 guest kernel.
const KERNEL_ADDRESS: &str = "0xfffffe0000000000";

fn translate(host: &Host, vm: &str, address: &str) -> serde_json::Value {
    serde_json::from_str(&ok(host.path(), &["translate", vm, address, "--json"])).unwrap()
}

/// What libvirt logged for the domain since it last started (its QEMU's command line and
/// taints); the file keeps every earlier start's too.
fn domain_log(domain: &str) -> String {
    let log =
        std::fs::read_to_string(format!("/var/log/libvirt/qemu/{domain}.log")).unwrap_or_default();
    let last_start = log.rfind("starting up").unwrap_or(0);
    log[last_start..].to_string()
}

fn wait_used_memory(domain: &str, mib: u64) {
    let started = Instant::now();
    while dominfo_kib(domain, "Used memory") != mib << 10 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "virsh dominfo {domain} does not show {mib} MiB used: {} KiB",
            dominfo_kib(domain, "Used memory")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn domains_are_found_ballooned_through_libvirt_and_followed_across_restarts() {
    require_vm_prerequisites();
    let libvirtd = Libvirtd::start();
    let a = TestDomain::start_growable("mv-lva", 384, 256, Guest::Busybox);
    let b = TestDomain::start("mv-lvb", 384, Guest::Busybox);
    let mut host = Host::new();
    host.up_with("auto", "", &libvirt_table("mv-lv*"));
    wait_listed(&host, &["mv-lva", "mv-lvb"], Duration::from_secs(30));
    let vm = host.vm("mv-lva");
    assert_eq!(mib(&vm, "memory_mib"), 384, "{vm:#}");
    assert_eq!(
        mib(&vm, "max_mib"),
        640,
        "boot memory and virtio-mem: {vm:#}"
    );
    assert!(
        vm["pid"].is_u64(),
        "the QEMU's pid comes from libvirt's run-time state: {vm:#}"
    );

    // memvisor's balloon target is libvirt's: virsh shows it.
    host.wait_for(
        "mv-lva",
        Duration::from_secs(120),
        "guest statistics",
        |v| v["guest_free_mib"].is_u64(),
    );
    host.balloon("mv-lva", 256);
    host.wait_balloon("mv-lva", 256, Duration::from_secs(60));
    wait_used_memory("mv-lva", 256);

    // A domain destroyed is let go at once (libvirt's event), and taken up when it runs again.
    b.destroy();
    wait_event(
        &host,
        &["mv-lvb let go", "libvirt says it stopped"],
        Duration::from_secs(10),
    );
    assert!(host.ps().iter().all(|v| v["name"] != "mv-lvb"));
    b.boot();
    wait_listed(&host, &["mv-lvb"], Duration::from_secs(10));

    // libvirtd restarts: the domains run on, memvisor reconnects, and no balloon moves.
    libvirtd.restart();
    wait_event(&host, &["closed the connection"], Duration::from_secs(10));
    wait_event(&host, &["answers again"], Duration::from_secs(30));
    let vm = host.vm("mv-lva");
    assert_eq!(mib(&vm, "balloon_target_mib"), 256, "{vm:#}");
    host.balloon("mv-lva", 320);
    host.wait_balloon("mv-lva", 320, Duration::from_secs(60));
    wait_used_memory("mv-lva", 320);

    // Guest physical addresses are followed through the pid libvirt reports. Kernel addresses
    // need the monitor, which libvirt holds: refused until the config allows the pass-through.
    let physical = translate(&host, "mv-lva", "gpa:0x100000");
    assert_eq!(physical["host"]["mapping"]["present"], true, "{physical:#}");
    let refused = fails(host.path(), &["translate", "mv-lva", KERNEL_ADDRESS]);
    assert!(
        refused.contains("monitor = true") && refused.contains("tainted"),
        "{refused}"
    );
    assert!(!domain_log("mv-lva").contains("custom-monitor"));

    // A daemon killed and started again finds them again, the balloon where it was; this one
    // may use libvirt's monitor pass-through.
    let config = host.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}monitor = true\n")).unwrap();
    restart_daemon(&host);
    wait_listed(&host, &["mv-lva", "mv-lvb"], Duration::from_secs(30));
    let vm = host.vm("mv-lva");
    assert_eq!(mib(&vm, "balloon_target_mib"), 320, "{vm:#}");
    assert_eq!(dominfo_kib("mv-lva", "Used memory"), 320 << 10);
    let kernel = translate(&host, "mv-lva", KERNEL_ADDRESS);
    assert_eq!(kernel["resolved_by"], "QEMU gva2gpa", "{kernel:#}");
    assert_eq!(kernel["host"]["mapping"]["present"], true, "{kernel:#}");
    assert!(
        domain_log("mv-lva").contains("tainted: custom-monitor"),
        "libvirt did not mark mv-lva tainted by the monitor pass-through:\n{}",
        domain_log("mv-lva")
    );

    // Past its boot size the domain grows through its virtio-mem device, changed live through
    // libvirt: its XML shows what memvisor asked for and what the guest plugged.
    host.change("mv-lva", &["set", "mv-lva", "--memory", "640M"]);
    let (grown, seconds) = host.wait_for(
        "mv-lva",
        Duration::from_secs(60),
        "640 MiB with 256 plugged",
        |v| v["allocation_mib"].as_u64() == Some(640),
    );
    println!("mv-lva grew 320 -> 640 MiB through libvirt in {seconds:.1} s");
    assert_eq!(mib(&grown, "plugged_mib"), 256, "{grown:#}");
    let xml = common::libvirt::virsh_ok(&["dumpxml", "mv-lva"]);
    assert!(
        xml.contains("<requested unit='KiB'>262144</requested>")
            && xml.contains("<current unit='KiB'>262144</current>"),
        "{xml}"
    );
    assert_eq!(dominfo_kib("mv-lva", "Used memory"), 640 << 10);

    // Letting go leaves the domains running.
    ok(host.path(), &["down"]);
    assert!(common::libvirt::virsh_ok(&["domstate", &a.name]).contains("running"));
}

#[test]
fn a_libvirt_that_does_not_answer_or_a_domain_named_like_a_vm_is_refused() {
    let mut host = Host::new();
    for (uri, expected) in [
        (
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            "does not answer on /nonexistent/libvirt-sock",
        ),
        ("qemu+ssh://elsewhere/system", "is not a local QEMU URI"),
    ] {
        let file = host.path().join("bad.toml");
        std::fs::write(
            &file,
            format!(
                "[host]\nbudget = \"auto\"\ncgroup = \"{}\"\n[libvirt]\nuri = \"{uri}\"\n",
                host.cgroup
            ),
        )
        .unwrap();
        let err = fails(host.path(), &["up", "-f", file.to_str().unwrap()]);
        assert!(err.contains(uri) && err.contains(expected), "{err}");
        assert!(
            !Path::new("/sys/fs/cgroup/memory")
                .join(&host.cgroup)
                .exists(),
            "nothing changed on the host"
        );
    }

    require_vm_prerequisites();
    let _libvirtd = Libvirtd::start();
    let _twin = TestDomain::start("mv-twin", 256, Guest::Busybox);
    host.up_with(
        "auto",
        "[[vm]]\nname = \"mv-twin\"\nmemory = \"256M\"\n",
        &libvirt_table("mv-twin"),
    );
    wait_event(
        &host,
        &[
            "libvirt domain mv-twin is not managed",
            "a VM named mv-twin is already managed",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(host.vm("mv-twin")["origin"], "launched");
}
