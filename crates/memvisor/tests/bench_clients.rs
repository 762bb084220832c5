//! `memvisor bench` with real clients: redis-benchmark on the host drives redis in the
//! project's Debian guest through a forwarded port, unconstrained and under ours, and the
//! verdict comes in the client's own units.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn a_client_scenario_is_measured_in_requests_per_second_and_latency() {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("redis-benchmark", "redis-tools");
    debian_disk();
    let dir = tempfile::Builder::new()
        .prefix("memvisor-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let port = free_port();
    let scenario = dir.path().join("redis.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"[bench]
duration_s = 20
needy = ["db"]

[[bench.client]]
vm = "db"
tool = "redis-benchmark"
port = 6379
load = "-t set -n 20000 -r 10000 -d 1024 -c 2 -P 16 -q"
run = "-t get -r 10000 -c 2"

[host]
budget = "1G"

[[vm]]
name = "db"
memory = "768M"
disk = "debian"
snapshot = true
forward = ["{port}:6379"]
"#
        ),
    )
    .unwrap();
    let text = ok(
        dir.path(),
        &[
            "bench",
            scenario.to_str().unwrap(),
            "--policy",
            "ours",
            "--json",
        ],
    );
    let results: Value = serde_json::from_str(&text).unwrap();
    for policy in ["unconstrained", "ours"] {
        let client = &results[policy]["clients"]["db"];
        println!("{policy}: {client}");
        assert_eq!(client["tool"], "redis-benchmark", "{client}");
        let summary = &client["summary"];
        let rps = summary["requests_per_s"].as_f64().unwrap();
        let (p50, p99) = (
            summary["p50_ms"].as_f64().unwrap(),
            summary["p99_ms"].as_f64().unwrap(),
        );
        assert!(rps > 0.0 && p50 > 0.0 && p50 <= p99, "{client}");
        // 5 s windows over 20 s: redis-benchmark ran several times, each read on its own.
        assert!(
            client["windows"].as_array().unwrap().len() >= 2,
            "{client}"
        );
        assert_eq!(
            results[policy]["vm_throughput"]["db"].as_f64(),
            Some(rps),
            "the VM's throughput is its client's"
        );
    }
    let ours = &results["ours"]["clients"]["db"];
    assert!(ours["requests_ratio"].as_f64().unwrap() > 0.0, "{ours}");
    assert!(ours["p99_ratio"].as_f64().unwrap() > 0.0, "{ours}");
    assert_eq!(results["ours"]["vms_lost"], 0);

    // A client whose server's port is not forwarded is refused before any VM starts.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&scenario)
            .unwrap()
            .replace(&format!("forward = [\"{port}:6379\"]"), ""),
    )
    .unwrap();
    let err = fails(dir.path(), &["bench", broken.to_str().unwrap()]);
    assert!(err.contains("port 6379 is not forwarded"), "{err}");
}
