//! `[[vm]] disk`: a VM that boots a real Debian 12 from its own disk through the firmware and
//! syslinux, with no memvisor agent inside; what memvisor knows of it comes from the balloon's
//! statistics and the host.

mod common;
use common::qga::GuestAgent;
use common::*;
use std::time::Duration;

#[test]
fn a_debian_disk_guest_boots_its_own_os_and_is_ballooned_without_our_agent() {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("redis-benchmark", "redis-tools");
    require_tool("pgbench", "postgresql-15");
    let disk = debian_disk();
    let mut host = Host::new();
    let (redis_port, pg_port) = (free_port(), free_port());
    host.up(
        "3G",
        &format!(
            "[[vm]]\nname = \"deb\"\nmemory = \"1G\"\ndisk = \"{}\"\nsnapshot = true\nswap = \"256M\"\nforward = [\"{redis_port}:6379\", \"{pg_port}:5432\"]\n",
            disk.display()
        ),
    );
    // `up` returned: the guest's balloon driver reported, which is how a disk guest is up.
    let booted = wait_event(
        &host,
        &["deb booted in", "its balloon driver reports"],
        Duration::from_secs(5),
    );
    let vm = host.vm("deb");
    println!(
        "the Debian guest booted in {} s ({})",
        vm["boot_s"], booted["reason"]
    );
    assert!(vm["boot_s"].as_f64().is_some_and(|s| s > 1.0), "{vm:#}");
    assert!(
        vm["workload_pages"].is_null() && vm["workload"].is_null(),
        "no memvisor agent runs inside: {vm:#}"
    );

    // Its own OS: systemd as init, Debian's kernel, cgroup v2, memvisor's swap disk in use,
    // and the servers the benchmarks drive, started by its own init.
    let mut guest = GuestAgent::connect(
        &host.path().join("vms/deb/qga.sock"),
        Duration::from_secs(120),
    );
    assert_eq!(guest.ok("cat /proc/1/comm").trim(), "systemd");
    assert!(guest.ok("uname -v").contains("Debian"));
    assert_eq!(guest.ok("stat -fc %T /sys/fs/cgroup").trim(), "cgroup2fs");
    // The balloon driver reports well before systemd has started everything (under heavy
    // steal, userspace took 3 min 41 s here).
    let state = guest.sh(
        "systemctl is-system-running --wait",
        Duration::from_secs(300),
    );
    println!(
        "systemd: {} {}",
        state.stdout.trim(),
        guest.ok("systemd-analyze time").trim()
    );
    let swaps = guest.ok("cat /proc/swaps");
    assert!(
        swaps.contains("/dev/vd"),
        "the swap disk is the guest's swap: {swaps}"
    );
    let active = guest.ok("systemctl is-active redis-server postgresql@15-main || true");
    assert_eq!(
        active.lines().collect::<Vec<_>>(),
        ["active", "active"],
        "{active}"
    );
    // The servers answer clients on the host through the forwarded ports: redis-benchmark and
    // pgbench, as the benchmarks drive them. A few clients each: user networking reset most of
    // redis-benchmark's default 50 connections at once here, and delayed some of 16 by 3 s.
    println!(
        "the guest's network: {}\nlistening: {}",
        guest.ok("ip -br addr"),
        guest.ok("ss -ltn")
    );
    let redis = client(&format!(
        "redis-benchmark -h 127.0.0.1 -p {redis_port} -t set,get -c 4 -n 20000 -r 10000 -d 1024 --csv"
    ));
    let rps: Vec<f64> = redis
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .collect();
    assert!(rps.len() == 2 && rps.iter().all(|r| *r > 0.0), "{redis}");
    let keys = client(&format!("redis-cli -p {redis_port} dbsize"));
    assert!(
        keys.trim().parse::<u64>().is_ok_and(|k| k > 5000),
        "the SETs are kept in the guest's redis: {keys}"
    );
    let pg = format!("pgbench -h 127.0.0.1 -p {pg_port} -U postgres");
    client(&format!("{pg} -i -s 1 -q postgres"));
    let run = client(&format!("{pg} -c 2 -T 15 postgres"));
    let tps: f64 = run
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        tps > 0.0 && run.contains("number of failed transactions: 0 "),
        "{run}"
    );
    println!(
        "through the forwarded ports: redis-benchmark SET and GET at {rps:?} requests/s, pgbench at {tps:.0} TPS"
    );

    // The balloon takes memory back from Debian's stock virtio_balloon.
    let available_before = mib(&host.vm("deb"), "guest_available_mib");
    host.balloon("deb", 640);
    host.wait_balloon("deb", 640, Duration::from_secs(120));
    // With deflate-on-oom the guest keeps counting ballooned pages in its total, as used.
    host.wait_for(
        "deb",
        Duration::from_secs(60),
        "the guest's available memory to fall by the balloon",
        |v| {
            v["guest_available_mib"]
                .as_u64()
                .is_some_and(|a| a + 300 < available_before)
        },
    );
    let mut in_guest = |key: &str| -> u64 {
        guest
            .ok(&format!(
                "awk '/^{key}:/ {{print int($2/1024)}}' /proc/meminfo"
            ))
            .trim()
            .parse()
            .unwrap()
    };
    // memvisor shows the balloon's statistics of the last poll, and a guest still starting its
    // services moves its available memory by tens of MiB in seconds (CI: 396 shown, 319 read
    // a moment later): the two must agree once read close together, within a few tries.
    let mut tries = 0;
    let (total, available, vm, agrees) = loop {
        let (total, available) = (in_guest("MemTotal"), in_guest("MemAvailable"));
        let vm = host.vm("deb");
        let agrees = total.abs_diff(mib(&vm, "guest_total_mib")) < 8
            && available.abs_diff(mib(&vm, "guest_available_mib")) < 64;
        tries += 1;
        if agrees || tries == 10 {
            break (total, available, vm, agrees);
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(
        agrees,
        "the guest's own MemTotal {total} and MemAvailable {available} MiB are what memvisor shows (after {tries} tries): {vm:#}"
    );

    // The cgroup adapter's own tests, on the guest's real cgroup v2 tree (this host's memory
    // controller is v1): the static test binary is copied in and run by qemu-guest-agent.
    let adapter_tests = std::fs::read(cgroup_test_binary()).unwrap();
    guest.write_file("/root/real_cgroup", &adapter_tests);
    let ran = guest.sh(
        "chmod +x /root/real_cgroup && /root/real_cgroup --test-threads=1",
        Duration::from_secs(120),
    );
    println!(
        "the cgroup adapter's tests in the guest (v2):\n{}",
        ran.stdout
    );
    assert_eq!(ran.code, 0, "the cgroup adapter failed on real v2: {ran:?}");
    assert!(ran.stdout.contains("test result: ok. 2 passed"), "{ran:?}");
    assert!(
        guest
            .ok("ls /sys/fs/cgroup | grep -c memvisor-test || true")
            .trim()
            == "0",
        "the test's groups are gone from the guest's tree"
    );

    // A workload needs memvisor's agent, which this guest does not have.
    let refused = fails(host.path(), &["workload", "deb", "hold:100M"]);
    assert!(refused.contains("has no memvisor guest agent"), "{refused}");
}

/// A TCP port nothing on the host listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client tool's output, which must succeed. Debian's PostgreSQL offers TLS with a snakeoil
/// certificate; the forwarded port is the host's own loopback, so it is left off.
fn client(command: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "'{command}' failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The host crate's real-cgroup test binary, as cargo built it for this test run (static, so it
/// runs in any Linux guest).
fn cgroup_test_binary() -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "test",
            "-p",
            "memvisor-host",
            "--test",
            "real_cgroup",
            "--no-run",
        ])
        .args(["--message-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo names the test binary")
}

#[test]
fn a_disk_that_is_missing_or_not_an_image_is_refused_before_anything_starts() {
    let host = Host::new();
    let text = host.path().join("notes.txt");
    std::fs::write(&text, "not a disk\n").unwrap();
    let missing = host.path().join("missing.qcow2");
    for (disk, says) in [
        (&missing, "cannot be read"),
        (&text, "neither a qcow2 image nor a raw disk"),
    ] {
        let config = host.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\nbudget = \"2G\"\ncgroup = \"{}\"\n[[vm]]\nname = \"d\"\nmemory = \"512M\"\ndisk = \"{}\"\n",
                host.cgroup,
                disk.display()
            ),
        )
        .unwrap();
        for command in ["check", "up"] {
            let message = fails(host.path(), &[command, "-f", config.to_str().unwrap()]);
            assert!(
                message.contains("vm d: disk") && message.contains(&*disk.to_string_lossy()),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
        }
        assert!(
            !host.path().join("memvisor.sock").exists(),
            "no daemon started"
        );
        assert!(
            !std::path::Path::new("/sys/fs/cgroup/memory")
                .join(&host.cgroup)
                .exists(),
            "no cgroup made"
        );
    }
}
