//! libvirt domains, managed through a real libvirtd's API: found, ballooned where `virsh` sees
//! it, followed as they stop and start, across a libvirtd restart and a daemon restart.

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
    let a = TestDomain::start("mv-lva", 384, Guest::Busybox);
    let b = TestDomain::start("mv-lvb", 384, Guest::Busybox);
    let mut host = Host::new();
    host.up_with("auto", "", &libvirt_table("mv-lv*"));
    wait_listed(&host, &["mv-lva", "mv-lvb"], Duration::from_secs(30));
    let vm = host.vm("mv-lva");
    assert_eq!(mib(&vm, "memory_mib"), 384, "{vm:#}");
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

    // A daemon killed and started again finds them again, the balloon where it was.
    restart_daemon(&host);
    wait_listed(&host, &["mv-lva", "mv-lvb"], Duration::from_secs(30));
    let vm = host.vm("mv-lva");
    assert_eq!(mib(&vm, "balloon_target_mib"), 320, "{vm:#}");
    assert_eq!(dominfo_kib("mv-lva", "Used memory"), 320 << 10);

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
