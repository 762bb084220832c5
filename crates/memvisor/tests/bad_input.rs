//! Bad input gets an error that names the problem, and changes nothing.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn bad_configs_are_refused_before_anything_starts() {
    let host = Host::new();
    let cases = [
        ("[host\nbudget=", "not valid TOML"),
        ("[host]\nbudget = \"1G\"\n[[vm]]\nname = \"a\"\nmemory = \"1G\"\nreservation = \"900M\"\nlimit = \"600M\"\n", "reservation 900MiB is above its limit 600MiB"),
        ("[host]\nbudget = \"1G\"\n[[vm]]\nname = \"a\"\nmemory = \"1G\"\nreservation = \"800M\"\n[[vm]]\nname = \"b\"\nmemory = \"1G\"\nreservation = \"800M\"\n", "below the sum of reservations"),
        ("[host]\nbudget = \"1G\"\n[[vm]]\nname = \"a\"\nmemory = \"1024\"\n", "no unit"),
        ("[host]\nbudget = \"most\"\n", "or \"auto\" for the machine's memory"),
        // No machine here has 1000 TiB: what "auto" leaves is checked before anything starts.
        ("[host]\nbudget = \"auto\"\nreserve = \"1000T\"\n", "less the reserve 1000TiB leaves 0B, below the 128MiB a VM needs"),
    ];
    for (config, expected) in cases {
        let file = host.path().join("bad.toml");
        std::fs::write(&file, config).unwrap();
        let err = fails(host.path(), &["up", "-f", file.to_str().unwrap()]);
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
        assert!(err.contains("bad.toml"), "the error names the file: {err}");
    }
    assert!(
        !host.path().join("memvisor.sock").exists(),
        "no daemon was started"
    );
    assert!(
        !host.path().join("vms").exists(),
        "no VM directory was created"
    );
}

#[test]
fn commands_without_a_daemon_say_how_to_start_one() {
    let host = Host::new();
    let err = fails(host.path(), &["ps"]);
    assert!(
        err.contains("no memvisor daemon answers") && err.contains("memvisor up"),
        "{err}"
    );
}

#[test]
fn bad_balloon_and_workload_requests_change_nothing() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up("1G", "[[vm]]\nname = \"v\"\nmemory = \"256M\"\n");
    host.wait_for("v", Duration::from_secs(60), "balloon figures", |v| {
        v["balloon_actual_mib"].is_u64()
    });
    let before = host.vm("v");
    for (args, expected) in [
        (vec!["balloon", "v", "512M"], "above v's memory 256MiB"),
        (vec!["balloon", "v", "-1G"], "negative"),
        (vec!["balloon", "v", "300"], "no unit"),
        (vec!["balloon", "v", "16M"], "below v's minimum 128MiB"),
        (vec!["balloon", "nosuch", "128M"], "no VM named 'nosuch'"),
        (vec!["workload", "v", "hold:1G"], "does not fit"),
        (vec!["workload", "v", "dance"], "unknown"),
        (vec!["stats", "nosuch"], "no VM named 'nosuch'"),
        (vec!["attach", "../../etc", "--qmp", "/tmp/x"], "name"),
        (vec!["monitor", "v", " "], "give one monitor command"),
        (vec!["set", "v", "--shares", "0"], "shares"),
        (vec!["translate", "v", "heap"], "held:N"),
    ] {
        let err = fails(host.path(), &args);
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in: {err}"
        );
    }
    // Oversized and malformed request bodies are refused before they reach anything.
    let (status, body) = api_request(
        host.path(),
        "POST",
        "/v1/vms/v/balloon",
        &format!("{{\"target\": \"{}\"}}", "1".repeat(1 << 20)),
    );
    assert_eq!(status, 413, "{body}");
    let (status, _) = api_request(host.path(), "POST", "/v1/vms/v/balloon", "{\"target\": ");
    assert_eq!(status, 400);
    let (status, _) = api_request(
        host.path(),
        "POST",
        "/v1/vms/v/balloon",
        "{\"size\": \"128M\"}",
    );
    assert_eq!(status, 422);

    // Only root may talk to the daemon; no TCP listener unless configured.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.path().join("memvisor.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(!host.path().join("api-token").exists());
    let err = fails(host.path(), &["dashboard"]);
    assert!(err.contains("[api] listen"), "{err}");

    let after = host.vm("v");
    for key in ["balloon_target_mib", "memory_mib", "workload", "state"] {
        assert_eq!(
            before[key], after[key],
            "{key} changed after refused requests"
        );
    }
}

#[test]
fn bad_bench_requests_are_refused_before_any_vm_starts() {
    let host = Host::new();
    let auto = host.path().join("auto.toml");
    std::fs::write(
        &auto,
        "[bench]\nduration_s = 10\nneedy = [\"a\"]\nmeasure = \"touch\"\n[host]\nbudget = \"auto\"\n[[vm]]\nname = \"a\"\nmemory = \"256M\"\n",
    )
    .unwrap();
    for (args, expected) in [
        (
            vec!["bench", "nosuch"],
            "no scenario 'nosuch': give one of seed, vdi, burst, idle-anon",
        ),
        (
            vec!["bench", "seed", "--runs", "0"],
            "--runs must be at least 1",
        ),
        (
            vec!["bench", "seed", "--policy", "ours,vmware"],
            "unknown policy 'vmware'",
        ),
        (
            vec!["bench", auto.to_str().unwrap()],
            "budget = \"auto\" measures the machine",
        ),
    ] {
        let err = fails(host.path(), &args);
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
    }
    assert!(
        !host.path().join("bench").exists(),
        "no bench run was started"
    );
}
