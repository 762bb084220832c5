//! `memvisor bench` with real clients: redis-benchmark and pgbench on the host drive redis and
//! PostgreSQL in two of the project's Debian guests through forwarded ports, unconstrained and
//! under ours, and the verdict comes in the clients' own units.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn a_client_scenario_is_measured_in_requests_per_second_and_latency() {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("redis-benchmark", "redis-tools");
    require_tool("pgbench", "postgresql-client");
    debian_disk();
    let dir = tempfile::Builder::new()
        .prefix("memvisor-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (port, pg_port) = (free_port(), free_port());
    let scenario = dir.path().join("redis.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"[bench]
duration_s = 20
needy = ["db", "pg"]

[[bench.client]]
vm = "db"
tool = "redis-benchmark"
port = 6379
records = {{ keys = 10000, size = "1K" }}
run = "-t get -r 10000 -c 2"

[[bench.client]]
vm = "pg"
tool = "pgbench"
port = 5432
load = "-i -s 2 -I dtGvp -q"
run = "-S -c 2"

[host]
budget = "1.5G"

[[vm]]
name = "db"
memory = "768M"
disk = "debian"
snapshot = true
forward = ["{port}:6379"]

[[vm]]
name = "pg"
memory = "768M"
disk = "debian"
snapshot = true
forward = ["{pg_port}:5432"]
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
        for (vm, tool) in [("db", "redis-benchmark"), ("pg", "pgbench")] {
            let client = &results[policy]["clients"][vm];
            println!("{policy} {vm}: {client}");
            assert_eq!(client["tool"], tool, "{client}");
            let summary = &client["summary"];
            let rps = summary["requests_per_s"].as_f64().unwrap();
            let (p50, p99) = (
                summary["p50_ms"].as_f64().unwrap(),
                summary["p99_ms"].as_f64().unwrap(),
            );
            assert!(rps > 0.0 && p50 > 0.0 && p50 <= p99, "{client}");
            // 5 s windows over 20 s: the client ran several times, each read on its own.
            assert!(client["windows"].as_array().unwrap().len() >= 2, "{client}");
            assert_eq!(
                results[policy]["vm_throughput"][vm].as_f64(),
                Some(rps),
                "the VM's throughput is its client's"
            );
            if policy == "ours" {
                assert!(client["requests_ratio"].as_f64().unwrap() > 0.0, "{client}");
                assert!(client["p99_ratio"].as_f64().unwrap() > 0.0, "{client}");
            }
        }
    }
    assert_eq!(results["ours"]["vms_lost"], 0);
    // Their guests' OOM kills come from their own /proc/vmstat, through qemu-guest-agent.
    for policy in ["unconstrained", "ours"] {
        let kills = &results[policy]["disk_guest_oom_kills"];
        assert_eq!(kills["db"], 0, "{policy}: {kills}");
        assert_eq!(kills["pg"], 0, "{policy}: {kills}");
    }

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
