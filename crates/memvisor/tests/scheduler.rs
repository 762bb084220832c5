//! The seed scenario with real guests under our policy: idle VMs are ballooned so that the
//! needy one gets its memory, with no guest OOM kill and nothing swapped out by the host.
//! (Throughput ratios against the baselines are the benchmark's job: `memvisor bench seed`.)

mod common;

use common::{ok, require_vm_prerequisites};
use serde_json::Value;

#[test]
fn seed_scenario_runs_without_oom_kills_or_host_swap() {
    require_vm_prerequisites();
    let dir = tempfile::Builder::new()
        .prefix("memvisor-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let text = ok(dir.path(), &["bench", "seed", "--policy", "ours", "--json"]);
    let results: Value = serde_json::from_str(&text).unwrap();
    let ours = &results["ours"];
    assert_eq!(ours["guest_oom_kills"], 0, "{ours}");
    assert_eq!(ours["vms_lost"], 0, "{ours}");
    assert_eq!(ours["host_swap_out_mib"], 0, "{ours}");
    assert!(ours["needy_throughput"].as_f64().unwrap() > 0.0, "{ours}");
}
