//! The seed scenario with real guests under our policy: idle VMs are ballooned so that the
//! needy one gets its memory, with no guest OOM kill and nothing on the host's swap disk.
//! (Throughput ratios against the baselines are the benchmark's job: `memvisor bench seed`.)
//! The run's report (`--report`) is checked too, that the VMs started one at a time, that every
//! VM's throughput and every cost is counted, and that the ksmtuned peer ran Debian's ksmtuned
//! and left KSM as it found it.

mod common;

use common::{ok, require_vm_prerequisites};
use serde_json::Value;

#[test]
fn seed_scenario_runs_without_oom_kills_or_swapping_to_the_host_disk() {
    require_vm_prerequisites();
    let dir = tempfile::Builder::new()
        .prefix("memvisor-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let report = dir.path().join("report");
    let ksm_before = common::ksm_settings();
    let text = ok(
        dir.path(),
        &[
            "bench",
            "seed",
            "--policy",
            "ours,ksmtuned",
            "--json",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let results: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        common::ksm_settings(),
        ksm_before,
        "the bench left KSM changed"
    );
    assert!(
        std::process::Command::new("pgrep")
            .args(["-f", "/usr/sbin/ksmtuned"])
            .status()
            .is_ok_and(|s| !s.success()),
        "ksmtuned still runs after the bench"
    );
    let ours = &results["ours"];
    for vm in ["vm1", "vm2", "vm3"] {
        assert!(ours["vm_throughput"][vm].as_f64().unwrap() > 0.0, "{ours}");
        assert!(
            ours["vm_throughput_ratio"][vm].as_f64().unwrap() > 0.0,
            "{ours}"
        );
        assert!(ours["paging_with_room_s"][vm].as_f64().is_some(), "{ours}");
    }
    for cost in ["ksmd_cpu_pct", "kswapd_cpu_pct", "cap_reclaim_cpu_pct"] {
        assert!(ours[cost].as_f64().is_some(), "{cost} not reported: {ours}");
    }
    // Static balloons with ksmtuned: nothing reclaimed, so the host swaps.
    assert!(
        results["ksmtuned"]["host_swap_out_mib"].as_u64().unwrap() > 0,
        "{}",
        results["ksmtuned"]
    );
    assert_eq!(ours["guest_oom_kills"], 0, "{ours}");
    assert_eq!(ours["vms_lost"], 0, "{ours}");
    let events = std::fs::read_to_string(dir.path().join("bench/ours/events.jsonl")).unwrap();
    // Why the host offloaded, if it did: the caps and the states around them.
    // A cap raised for a busy VM gives memory back; only caps that take it need a reason.
    let caps: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("\"cgroup_limit\"") && !l.contains("\"limit_mib\":null"))
        .filter(|l| !l.contains("its host limit rises"))
        .collect();
    let offloads: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("cgroup limit") || l.contains("host hard"))
        .take(20)
        .collect();
    // The guests drop their cache first. Where the idle guests' own use is over what they are
    // entitled to, the host compresses that anonymous memory instead of ballooning it into
    // their swap disks (how much depends on the guests' base use: 0 to 48 MiB measured), and
    // nothing reaches the host's swap disk.
    let to_disk =
        ours["host_swap_out_mib"].as_u64().unwrap() - ours["zswap_out_mib"].as_u64().unwrap();
    assert_eq!(to_disk, 0, "{ours}\n{}", offloads.join("\n"));
    assert!(
        caps.iter()
            .all(|c| c.contains("is anonymous") || c.contains("did not return")),
        "a cap that is not memory a balloon cannot take:\n{}",
        caps.join("\n")
    );
    // Without a cap the host swaps only what overshoots the budget while the balloons catch up
    // with a rise: these TCG guests' balloons returned 40 to 67 MiB/s as vm3 wrote 85 to 95
    // MiB/s (measured: 0, 8 and 31 MiB at vm3's wake, all to zswap, and 95 MiB as vm2's cache
    // reader filled 150 MiB/s after its boot). The policy must keep that within the margin it
    // keeps free, the soft threshold's share of the budget; more is the host swapping blindly
    // (measured: 72 MiB in a rehearsal). vm2's cache is now ballooned as it fills, and vm3's
    // room is not granted to the others while it starts: seven runs since swapped nothing.
    let soft_pct = memvisor_core::ladder::Thresholds::default().soft;
    let kept_free_mib = (1536.0 * soft_pct / 100.0) as u64;
    assert!(
        !caps.is_empty() || ours["host_swap_out_mib"].as_u64().unwrap() <= kept_free_mib,
        "the host swapped more than the {kept_free_mib} MiB kept free without a cap: {ours}"
    );
    assert!(ours["needy_throughput"].as_f64().unwrap() > 0.0, "{ours}");
    // Three 1 GiB VMs on 1.5 GiB: they started one at a time, and the log says why.
    assert!(
        events.contains("waits for vm1 to boot and settle")
            && events.contains("may start after waiting"),
        "no paced start in the event log"
    );
    // The CPU groups that held each VM to the same quota are gone with the VMs.
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/cpu/memvisor-bench").exists()
            && !std::path::Path::new("/sys/fs/cgroup/memvisor-bench").exists(),
        "the bench left its CPU group behind"
    );

    // The report shows both runs: the host and each VM's layers over time.
    for file in [
        "throughput.svg",
        "unconstrained-host.svg",
        "ours-host.svg",
        "ours-vm3.svg",
        "index.html",
    ] {
        assert!(report.join(file).exists(), "report lacks {file}");
    }
    let vm3 = std::fs::read_to_string(report.join("ours-vm3.svg")).unwrap();
    assert!(
        vm3.matches("<polygon").count() >= 5,
        "no stacked layers in ours-vm3.svg"
    );
    let index = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(index.contains("ours-vm1.svg") && index.contains("unconstrained-vm3.svg"));
}

/// A bench stopped halfway (Ctrl-C, a CI timeout) stops its VMs and takes back the swap file
/// and the cgroups its run added, as a finished one does.
#[test]
fn an_interrupted_bench_puts_the_host_back() {
    require_vm_prerequisites();
    let dir = tempfile::Builder::new()
        .prefix("memvisor-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let scenario = dir.path().join("short.toml");
    std::fs::write(
        &scenario,
        "[bench]\nduration_s = 5\nneedy = [\"a\"]\nmeasure = \"touch\"\n\n\
         [host]\nbudget = \"512M\"\nswap = \"64M\"\n\n\
         [[vm]]\nname = \"a\"\nmemory = \"256M\"\nworkload = \"touch:64M:32M\"\n",
    )
    .unwrap();
    let mut bench = std::process::Command::new(common::BIN)
        .arg("--dir")
        .arg(dir.path())
        .args(["bench", scenario.to_str().unwrap(), "--policy", "ours"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted in ours' run, once its daemon answers and has added its swap file.
    let run = dir.path().join("bench/ours");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !(run.join("memvisor.sock").exists() && swaps().contains(&run.display().to_string())) {
        assert!(
            std::time::Instant::now() < deadline && bench.try_wait().unwrap().is_none(),
            "ours' run never started with its swap file"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bench interrupted by SIGTERM"), "{stderr}");
    assert!(
        !swaps().contains(&dir.path().display().to_string()),
        "the bench left its swap file on: {}",
        swaps()
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", &dir.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the bench left processes running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    for group in [
        "memory/memvisor-bench",
        "cpu/memvisor-bench",
        "memvisor-bench",
    ] {
        assert!(
            !std::path::Path::new("/sys/fs/cgroup").join(group).exists(),
            "the bench left /sys/fs/cgroup/{group}"
        );
    }
}

fn swaps() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap()
}
