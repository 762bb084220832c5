//! The HTTP API under fuzzing and under load, on its loopback TCP listener with the token:
//! schemathesis sends what docs/openapi.json allows (and what it does not) and no answer may
//! be a server error or break the spec; then a bounded load shows the request rate the
//! daemon holds while its policy loop keeps its period.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SCHEMATHESIS: &str = "/var/cache/memvisor/venv/bin/st";

/// One GET with the token; true on 200.
fn get(port: u16, token: &str, path: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut reply = Vec::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 200")
}

#[test]
fn the_api_survives_fuzzing_and_holds_its_rate_under_load() {
    require_vm_prerequisites();
    assert!(
        std::path::Path::new(SCHEMATHESIS).exists(),
        "schemathesis is missing: run ./scripts/test.sh (it installs it into /var/cache/memvisor/venv)"
    );
    let port = free_port();
    let mut host = Host::new();
    host.up_with(
        "1G",
        "[[vm]]\nname = \"a\"\nmemory = \"256M\"\nworkload = \"hold:32M\"\n",
        &format!("[scheduler]\npolicy = \"ours\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let token = std::fs::read_to_string(host.path().join("api-token")).unwrap();
    let token = token.trim().to_string();

    // Fuzzing against the spec; operations that stop things or take minutes are left out.
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let out = std::process::Command::new(SCHEMATHESIS)
        .args(["run", spec, "--url", &format!("http://127.0.0.1:{port}")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
        ])
        .args([
            "--exclude-path-regex",
            "(shutdown|/stop$|/start$|/monitor$|/verify$)",
        ])
        .args(["--max-time", "45", "--seed", "1"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("generated,"))
        .collect();
    println!("schemathesis: {}", summary.join(" "));
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert_eq!(host.vm("a")["state"], "running", "the fuzzing broke the VM");

    // Bounded load: 4 clients for 15 s, while the policy loop runs.
    let started_at = host_clock(&host);
    let until = Instant::now() + Duration::from_secs(15);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut answered = 0u64;
                let paths = ["/v1/vms", "/metrics", "/v1/host", "/v1/events?after=0"];
                while Instant::now() < until {
                    answered += u64::from(get(port, &token, paths[i % paths.len()]));
                }
                answered
            })
        })
        .collect();
    let answered: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let rate = answered as f64 / 15.0;
    let (_, history) = api_get(host.path(), &format!("/v1/history?after={started_at}"));
    let rounds: Vec<f64> = serde_json::from_str::<Vec<Value>>(&history)
        .unwrap()
        .iter()
        .map(|s| s["at_s"].as_f64().unwrap())
        .collect();
    let gaps: Vec<f64> = rounds.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    println!(
        "API load: {answered} requests answered in 15 s ({rate:.0}/s, 4 clients); policy rounds every {mean:.2} s on average, {longest:.2} s at most"
    );
    assert!(rate >= 50.0, "only {rate:.0} requests/s");
    assert!(rounds.len() >= 10, "{} policy rounds in 15 s", rounds.len());
    assert!(
        longest < 3.0,
        "a policy round waited {longest:.2} s under load"
    );
}

/// The daemon's clock (seconds since it started), from its latest round.
fn host_clock(host: &Host) -> f64 {
    let (_, body) = api_get(host.path(), "/v1/history");
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .last()
        .map_or(0.0, |s| s["at_s"].as_f64().unwrap())
}
