//! Observability on real guests: `top` in a real terminal (tmux), `/metrics` checked by
//! promtool, and the event log telling what happened and why.

mod common;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of its own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("memvisor-top-{}", std::process::id()),
        };
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "200",
            "-y",
            "30",
            command,
        ]);
        assert!(
            started.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The figure in column `heading` of VM `vm`'s row on a `top` screen.
fn cell(screen: &str, vm: &str, heading: &str) -> Option<String> {
    let headings: Vec<&str> = screen
        .lines()
        .find(|l| l.trim_start().starts_with("NAME"))?
        .split_whitespace()
        .collect();
    let column = headings
        .iter()
        .position(|h| h.trim_end_matches(['v', '^']) == heading)?;
    let row: Vec<&str> = screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.first() == Some(&vm))?;
    row.get(column).map(|s| s.to_string())
}

#[test]
fn top_metrics_and_events_show_a_balloon_moving() {
    require_vm_prerequisites();
    require_tool("tmux", "tmux");
    require_tool("promtool", "prometheus");
    let damon_before = damon::damon_settings();
    let mut host = Host::new();
    host.up(
        "1536M",
        r#"
[[vm]]
name = "a"
memory = "512M"
workload = "hold:100M"

[[vm]]
name = "b"
memory = "512M"
"#,
    );

    let top = Tmux::new(&format!(
        "{BIN} --dir {} top --every 0.5",
        host.path().display()
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screen = String::new();
    while Instant::now() < deadline {
        screen = top.screen();
        if cell(&screen, "a", "BALLOON").is_some_and(|c| c == "0")
            && cell(&screen, "b", "CONSUMED").is_some_and(|c| c != "-")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        cell(&screen, "a", "BALLOON").as_deref(),
        Some("0"),
        "{screen}"
    );
    assert!(screen.contains("budget 1536 MiB"), "{screen}");

    host.balloon("a", 384);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        screen = top.screen();
        if cell(&screen, "a", "BALLOON").is_some_and(|c| c == "128") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        cell(&screen, "a", "BALLOON").as_deref(),
        Some("128"),
        "{screen}"
    );
    assert_eq!(
        cell(&screen, "a", "TARGET").as_deref(),
        Some("384"),
        "{screen}"
    );
    top.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while top.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!top.alive(), "q did not quit top: {}", top.screen());

    // Metrics: valid for promtool, every family has a sample, figures agree with the balloon.
    host.wait_for(
        "a",
        Duration::from_secs(30),
        "a working-set estimate",
        |v| v["working_set_mib"].is_u64(),
    );
    // DAMON where it is free and the kernel offers vaddr; elsewhere the guest's statistics,
    // and why, once. Another tool's kdamonds (these build machines boot with one) stay as found.
    let vaddr = kernel_config().contains("CONFIG_DAMON_VADDR=y");
    let held_by_another_tool = damon_before
        .get(std::path::Path::new(
            "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds",
        ))
        .is_some_and(|n| n.trim() != "0");
    println!("DAMON on this machine: vaddr {vaddr}, held by another tool {held_by_another_tool}");
    if vaddr && !held_by_another_tool {
        assert_eq!(host.vm("a")["working_set_from"], "damon");
    } else {
        assert_eq!(host.vm("a")["working_set_from"], "guest");
        let why = if vaddr {
            "set up by another tool"
        } else {
            "'vaddr'"
        };
        wait_event(
            &host,
            &["working sets come from guest statistics, not DAMON", why],
            Duration::from_secs(5),
        );
    }
    if held_by_another_tool {
        assert_eq!(
            damon::damon_settings(),
            damon_before,
            "the daemon changed a DAMON set-up it did not make"
        );
    }
    let metrics = ok(host.path(), &["metrics"]);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for family in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])),
            "metric {name} is declared but never set\n{metrics}"
        );
    }
    // What QEMU read from storage, from its /proc/PID/io, for the disk reads a balloon causes.
    assert!(
        metrics.contains("memvisor_vm_disk_read_bytes_total{vm=\"a\"} "),
        "{metrics}"
    );
    let balloon_line = format!("memvisor_vm_balloon_bytes{{vm=\"a\"}} {}", 128u64 << 20);
    assert!(metrics.contains(&balloon_line), "{metrics}");

    // The running server serves the spec kept in the repository, and its answers fit it.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let (status, served) = api_get(host.path(), "/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&served).unwrap(),
        kept,
        "served spec differs"
    );
    for (path, spec_path) in [
        ("/v1/host", "/v1/host"),
        ("/v1/vms", "/v1/vms"),
        ("/v1/vms/a", "/v1/vms/{name}"),
        ("/v1/events?after=0", "/v1/events"),
        ("/v1/history?after=0", "/v1/history"),
        (
            "/v1/vms/a/translate?address=held:0",
            "/v1/vms/{name}/translate",
        ),
        ("/v1/sharing", "/v1/sharing"),
        ("/v1/vms/nosuch", "/v1/vms/{name}"),
        (
            "/v1/vms/a/translate?address=heap",
            "/v1/vms/{name}/translate",
        ),
    ] {
        let (status, body) = api_get(host.path(), path);
        let response = &kept["paths"][spec_path]["get"]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "GET {path} answered {status}, which the spec does not list: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        let root = serde_json::json!({ "components": kept["components"], "allOf": [schema] });
        let validator = jsonschema::validator_for(&root).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "GET {path} ({status}) does not fit the spec: {errors:#?}\n{body:#}"
        );
    }

    let host_schema = serde_json::json!({
        "components": kept["components"],
        "allOf": [kept["paths"]["/v1/host"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]]
    });
    assert!(
        !jsonschema::validator_for(&host_schema)
            .unwrap()
            .is_valid(&serde_json::json!({ "budget_mib": "lots" })),
        "the spec check cannot fail"
    );

    // Events: the operator's balloon request and the boots, with their numbers.
    let events: Vec<Value> = ok(host.path(), &["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["kind"] == "operator"
            && e["vm"] == "a"
            && e["reason"] == "a balloon 512 -> 384 MiB on request"),
        "{reasons:#?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "lifecycle"
            && e["reason"].as_str().unwrap().starts_with("b booted in ")),
        "{reasons:#?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let text = ok(host.path(), &["events"]);
    assert!(
        text.contains("operator   a balloon 512 -> 384 MiB on request"),
        "{text}"
    );

    // --follow prints what happens after it started.
    let mut follow = Command::new(BIN)
        .arg("--dir")
        .arg(host.path())
        .args(["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    host.balloon("b", 448);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("b balloon 512 -> 448 MiB on request") {
            seen = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen,
        "events --follow did not print b's balloon request within 10 s"
    );
}

/// The running kernel's build configuration.
fn kernel_config() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{}", release.trim())) {
        return text;
    }
    let unzipped = Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .unwrap();
    assert!(
        unzipped.status.success(),
        "this test needs the kernel's config, in /boot/config-VERSION or /proc/config.gz \
         (CONFIG_IKCONFIG_PROC), to know whether DAMON can watch a process"
    );
    String::from_utf8(unzipped.stdout).unwrap()
}
