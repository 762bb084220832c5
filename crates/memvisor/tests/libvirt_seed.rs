//! The seed scenario on three libvirt domains booting the project's Debian disk, with policy
//! ours, on this machine as a real host (budget auto, a ballast process holding the rest): the
//! idle domains' page cache is ballooned away through libvirt, with no guest OOM kill and no
//! host swap; libvirtd restarts in the middle and no balloon jumps; then the host is made short
//! beyond what balloons give, and memvisor caps a domain through libvirt's memtune, which
//! `virsh memtune` shows, and lifts it when it lets go.

mod common;
use common::libvirt::{dominfo_kib, virsh_ok, Guest, Libvirtd, TestDomain, URI};
use common::qga::GuestAgent;
use common::*;
use std::time::{Duration, Instant};

const DOMAINS: [&str; 3] = ["mv-seed1", "mv-seed2", "mv-seed3"];
/// As in real_seed.rs: what the booted domains may still take once the ballast holds the rest.
const ROOM_FOR_VMS_MIB: u64 = 2600;
/// Three Debian guests booting together under TCG on two cores.
const BOOT_LIMIT: Duration = Duration::from_secs(480);

/// `virsh memtune`'s hard limit, KiB (None: unlimited).
fn hard_limit_kib(domain: &str) -> Option<u64> {
    let text = virsh_ok(&["memtune", domain]);
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("hard_limit"))
        .and_then(|v| v.trim_start_matches([' ', ':']).split_whitespace().next())
        .unwrap_or_else(|| panic!("no hard_limit in memtune: {text}"))
        .to_string();
    value.parse().ok()
}

#[test]
fn the_seed_holds_on_libvirt_domains_through_a_libvirtd_restart() {
    let started = Instant::now();
    let libvirtd = Libvirtd::start();
    let domains: Vec<TestDomain> = DOMAINS
        .iter()
        .map(|name| TestDomain::start(name, 1024, Guest::Debian))
        .collect();
    let mut agents: Vec<GuestAgent> = DOMAINS
        .iter()
        .map(|name| GuestAgent::through_libvirt(name, BOOT_LIMIT))
        .collect();
    let booted_s = wait_systemd(&mut agents, BOOT_LIMIT, started);

    let scarce = scarce_host(ROOM_FOR_VMS_MIB);
    let mut host = Host::new();
    host.host_keys = "swap = \"2G\"".into();
    host.up_with(
        "auto",
        "",
        &format!("[scheduler]\npolicy = \"ours\"\n[libvirt]\nuri = \"{URI}\"\ninclude = [\"mv-seed*\"]\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while host.ps().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "not all taken up: {:?}",
            host.ps()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    run_seed(
        &host,
        &mut agents,
        &DOMAINS,
        "libvirt domains",
        (booted_s, scarce.swap_used_before),
    );

    // Once the balloons settled, libvirtd restarts: memvisor keeps the last figures,
    // reconnects, and no balloon jumps. libvirt saw what memvisor set.
    let target = mib(&host.vm(DOMAINS[0]), "balloon_target_mib");
    assert!(
        (dominfo_kib(DOMAINS[0], "Used memory") >> 10).abs_diff(target) <= 16,
        "virsh dominfo does not show vm1's balloon at {target} MiB"
    );
    let before = balloons(&host, &DOMAINS);
    libvirtd.restart();
    wait_event(&host, &["answers again"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(10));
    assert_no_balloon_let_out(&host, &DOMAINS, &before, "libvirtd's restart");
    println!(
        "{:.0} s: libvirtd restarted",
        started.elapsed().as_secs_f64()
    );

    // The host is made short beyond what balloons give: memvisor caps a domain through
    // libvirt's memtune, never its cgroup files.
    let (capped, more_ballast) = press_until_capped(&host);
    let name = capped["name"].as_str().unwrap();
    println!(
        "{:.0} s: {name} capped with {} MiB more ballast: {capped:#}",
        started.elapsed().as_secs_f64(),
        more_ballast.len() * 32
    );
    assert_eq!(
        hard_limit_kib(name).map(|kib| kib >> 10),
        Some(mib(&capped, "host_limit_mib")),
        "virsh memtune does not show {name}'s cap"
    );
    drop(more_ballast);
    ok(host.path(), &["down"]);
    for domain in &domains {
        assert_eq!(
            hard_limit_kib(&domain.name),
            None,
            "{}'s memtune was not put back",
            domain.name
        );
        assert!(virsh_ok(&["domstate", &domain.name]).contains("running"));
    }
}
