//! Helpers for end-to-end tests: a daemon in a private state directory with its own cgroup,
//! torn down even when a test fails. Missing prerequisites fail loudly with the fix.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

#[path = "../../../host/tests/support/mod.rs"]
pub mod damon;
pub mod libvirt;
pub mod qga;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_memvisor");

pub fn cache_dir() -> PathBuf {
    std::env::var_os("MEMVISOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/memvisor".into())
}

/// Fails (never skips) when the machine lacks what real-VM tests need.
pub fn require_vm_prerequisites() {
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is missing: run 'apt-get install qemu-system-x86' (or ./scripts/test.sh, which installs everything)"
    );
    assert!(
        cache_dir().join("current").exists(),
        "no guest image in {}: run 'memvisor image build' (./scripts/test.sh does)",
        cache_dir().display()
    );
}

/// The project's Debian guest disk; fails (never skips) when it is not built.
pub fn debian_disk() -> PathBuf {
    memvisor_guest::debian::current(&cache_dir())
        .unwrap_or_else(|e| panic!("{e} (./scripts/test.sh builds it)"))
        .disk
}

pub fn memvisor(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("memvisor runs")
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = memvisor(dir, args);
    assert!(
        out.status.success(),
        "memvisor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its error message.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = memvisor(dir, args);
    assert!(
        !out.status.success(),
        "memvisor {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub struct Host {
    pub dir: tempfile::TempDir,
    pub cgroup: String,
    /// More keys of the [host] table, e.g. `swap = "128M"`.
    pub host_keys: String,
    /// How long `up` waits for the VMs it launches to boot.
    pub boot_timeout: Duration,
    up: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Host {
    /// A state directory and a cgroup name no other test uses.
    pub fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("memvisor-e2e-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let cgroup = format!(
            "memvisor-e2e-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Host {
            dir,
            cgroup,
            host_keys: String::new(),
            boot_timeout: Duration::from_secs(180),
            up: false,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a config whose [host] table is filled in, then `up`. The scheduler is manual:
    /// these tests move balloons themselves.
    pub fn up(&mut self, budget: &str, vms: &str) {
        self.up_with_policy(budget, vms, "manual");
    }

    pub fn up_with_policy(&mut self, budget: &str, vms: &str, policy: &str) {
        self.up_with(
            budget,
            vms,
            &format!("[scheduler]\npolicy = \"{policy}\"\n"),
        );
    }

    /// `up` with more tables after the VMs ([scheduler], [api]).
    pub fn up_with(&mut self, budget: &str, vms: &str, tables: &str) {
        let file = self.write_config(budget, vms, tables);
        let timeout = self.boot_timeout.as_secs().to_string();
        ok(
            self.path(),
            &["up", "-f", file.to_str().unwrap(), "--timeout", &timeout],
        );
    }

    /// Runs the daemon in the foreground, as a service manager does, without waiting for
    /// anything; returns once its API answers.
    pub fn run_daemon(&mut self, budget: &str, vms: &str, tables: &str) -> std::process::Child {
        let file = self.write_config(budget, vms, tables);
        let daemon = Command::new(BIN)
            .arg("--dir")
            .arg(self.path())
            .args(["daemon", "-f"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the daemon runs");
        let started = Instant::now();
        while !memvisor(self.path(), &["ps"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon's API did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn write_config(&mut self, budget: &str, vms: &str, tables: &str) -> PathBuf {
        let config = format!(
            "[host]\nbudget = \"{budget}\"\ncgroup = \"{}\"\n{}\n\n{vms}\n{tables}",
            self.cgroup, self.host_keys
        );
        let file = self.path().join("config.toml");
        std::fs::write(&file, config).unwrap();
        self.up = true;
        file
    }

    pub fn vm(&self, name: &str) -> Value {
        let text = ok(self.path(), &["stats", name, "--json"]);
        serde_json::from_str(&text).unwrap()
    }

    pub fn ps(&self) -> Vec<Value> {
        serde_json::from_str(&ok(self.path(), &["ps", "--json"])).unwrap()
    }

    /// Runs a command that changes `vm` (balloon, set, workload, start, stop, attach) with
    /// `--json` and returns the state the daemon accepted, after checking that `stats` and `ps`
    /// right after it, with no sleep between, show that state. With the manual scheduler only:
    /// a policy may move a balloon in between.
    pub fn change(&self, vm: &str, args: &[&str]) -> Value {
        let args = [args, &["--json"]].concat();
        let accepted: Value = serde_json::from_str(&ok(self.path(), &args)).unwrap();
        let listed = self.ps().into_iter().find(|v| v["name"] == vm);
        for read in [Some(self.vm(vm)), listed] {
            let read = read.unwrap_or_else(|| panic!("ps lacks {vm} after {args:?}"));
            for key in [
                "memory_mib",
                "max_mib",
                "reservation_mib",
                "limit_mib",
                "shares",
                "balloon_target_mib",
                "workload",
            ] {
                // A booting VM's balloon target shows once its balloon answers.
                if !accepted[key].is_null() {
                    assert_eq!(read[key], accepted[key], "{key} right after {args:?}");
                }
            }
            assert_eq!(
                read["state"] == "stopped",
                accepted["state"] == "stopped",
                "state {} right after {args:?} answered {}",
                read["state"],
                accepted["state"]
            );
        }
        accepted
    }

    /// `memvisor balloon VM TARGET_MIB`M, checked as `change` does; the target moved at once.
    pub fn balloon(&self, vm: &str, target_mib: u64) {
        let accepted = self.change(vm, &["balloon", vm, &format!("{target_mib}M")]);
        assert_eq!(accepted["balloon_target_mib"], target_mib, "{accepted:#}");
    }

    /// Waits for `vm`'s balloon to come within 5% of `target_mib`, the target it must show;
    /// returns the seconds it took.
    pub fn wait_balloon(&self, vm: &str, target_mib: u64, limit: Duration) -> f64 {
        let what = format!("balloon within 5% of {target_mib} MiB");
        let (_, seconds) = self.wait_for(vm, limit, &what, |v| {
            assert_eq!(
                v["balloon_target_mib"], target_mib,
                "the target moved: {v:#}"
            );
            v["balloon_actual_mib"]
                .as_u64()
                .is_some_and(|a| a.abs_diff(target_mib) as f64 <= 0.05 * target_mib as f64)
        });
        seconds
    }

    /// Polls `name` until `done` holds, or fails with the last status seen.
    pub fn wait_for(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, f64) {
        let started = Instant::now();
        loop {
            let status = self.vm(name);
            if done(&status) {
                return (status, started.elapsed().as_secs_f64());
            }
            if started.elapsed() >= limit {
                panic!(
                    "{name}: {what} not reached within {limit:?}; last status: {status:#}\n\
                     the daemon's events:\n{}",
                    String::from_utf8_lossy(&memvisor(self.path(), &["events"]).stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.up {
            let _ = memvisor(self.path(), &["down"]);
        }
    }
}

pub fn mib(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

/// Waits for an event whose reason contains every one of `words`.
pub fn wait_event(host: &Host, words: &[&str], limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let text = ok(host.path(), &["events", "--json"]);
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| {
                let reason = e["reason"].as_str().unwrap_or_default();
                words.iter().all(|w| reason.contains(w))
            });
        if let Some(event) = found {
            return event;
        }
        assert!(
            started.elapsed() < limit,
            "no event with {words:?} within {limit:?}; events:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pid of the daemon serving `dir`.
pub fn daemon_pid(dir: &Path) -> u32 {
    let wanted = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.contains(&wanted) && args.iter().any(|a| a == "daemon")
            })
        })
        .expect("the daemon runs")
}

/// Fails (never skips) when a tool a test drives is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: run 'apt-get install {package}' (or ./scripts/test.sh, which installs everything)"
    );
}

/// A GET on the daemon's Unix socket: (status code, body).
pub fn api_get(dir: &Path, path: &str) -> (u16, String) {
    api_request(dir, "GET", path, "")
}

/// A request on the daemon's Unix socket: (status code, body).
pub fn api_request(dir: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dir.join("memvisor.sock"))
        .expect("the daemon's socket answers");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: memvisor\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The daemon may refuse a large body before reading it all.
    let _ = s.write_all(body.as_bytes());
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A loopback TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// KSM's knobs as they are now, smart scan included where the kernel has it.
pub fn ksm_settings() -> Vec<String> {
    ["run", "pages_to_scan", "sleep_millisecs", "smart_scan"]
        .iter()
        .filter_map(|k| std::fs::read_to_string(Path::new("/sys/kernel/mm/ksm").join(k)).ok())
        .map(|v| v.trim().to_string())
        .collect()
}

/// KSM knobs set for a test and put back however it ends (they are host-wide).
pub struct KsmKnobs(Vec<(PathBuf, String)>);

impl KsmKnobs {
    pub fn set(knobs: &[(&str, &str)]) -> KsmKnobs {
        let mut saved = Vec::new();
        for (knob, value) in knobs {
            let path = Path::new("/sys/kernel/mm/ksm").join(knob);
            saved.push((
                path.clone(),
                std::fs::read_to_string(&path).unwrap().trim().to_string(),
            ));
            std::fs::write(&path, value).unwrap();
        }
        KsmKnobs(saved)
    }
}

impl Drop for KsmKnobs {
    fn drop(&mut self) {
        for (path, value) in self.0.iter().rev() {
            let _ = std::fs::write(path, value);
        }
    }
}

/// A memory cgroup (v1, this machine's) holding the given processes; on drop they go back to
/// the root group and it is removed.
pub struct Group(pub String);

impl Group {
    pub fn new(name: &str, pids: &[&str]) -> Group {
        let path = format!("/sys/fs/cgroup/memory/{name}");
        std::fs::create_dir(&path).unwrap();
        for pid in pids {
            std::fs::write(format!("{path}/cgroup.procs"), pid).unwrap();
        }
        Group(path)
    }

    /// The group's memory limit, as memory.limit_in_bytes shows it.
    pub fn limit(&self) -> String {
        std::fs::read_to_string(format!("{}/memory.limit_in_bytes", self.0))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(format!("{}/cgroup.procs", self.0)) {
            for pid in pids.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/memory/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A figure of /proc/meminfo, MiB.
pub fn meminfo_mib(key: &str) -> u64 {
    status_mib("/proc/meminfo", key)
}

/// A "Key: N kB" line of a /proc file, in MiB.
pub fn status_mib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {path}"));
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// Memory held and touched by this test process, as other host processes would hold it.
pub fn ballast(mib: u64) -> Vec<u8> {
    let mut held = vec![0u8; (mib << 20) as usize];
    for page in held.chunks_mut(4096) {
        page[0] = 1;
    }
    held
}

/// Kills the daemon serving `host` with SIGKILL, as a crash would, and starts it again with the
/// same config.
pub fn restart_daemon(host: &Host) {
    let daemon = daemon_pid(host.path());
    Command::new("kill")
        .args(["-9", &daemon.to_string()])
        .status()
        .unwrap();
    while Path::new(&format!("/proc/{daemon}")).exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let config = host.path().join("config.toml");
    ok(host.path(), &["up", "-f", config.to_str().unwrap()]);
}

/// What a real-host seed test starts from: the machine made short by a ballast and the host's
/// swap in use before memvisor does anything.
pub struct SeedHost {
    _ballast: Vec<u8>,
    pub ballast_mib: u64,
    pub swap_used_before: u64,
}

/// Makes the rest of the machine scarce, as other host processes would: all but `room_mib` of
/// what is available is held by a ballast. Free memory that is page cache has the kernel
/// reclaiming, and swapping cold anonymous pages, long before MemAvailable nears memvisor's
/// soft threshold: the tests measure memvisor from a host whose free memory is free.
pub fn scarce_host(room_mib: u64) -> SeedHost {
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let ballast_mib = meminfo_mib("MemAvailable").saturating_sub(room_mib);
    SeedHost {
        _ballast: ballast(ballast_mib),
        ballast_mib,
        swap_used_before: host_swap_used_mib(),
    }
}

pub fn host_swap_used_mib() -> u64 {
    meminfo_mib("SwapTotal") - meminfo_mib("SwapFree")
}

/// Waits until systemd in every guest has started all it starts; returns the seconds since
/// `started`.
pub fn wait_systemd(agents: &mut [qga::GuestAgent], limit: Duration, started: Instant) -> f64 {
    for agent in agents.iter_mut() {
        agent.sh("systemctl is-system-running --wait", limit);
    }
    let booted_s = started.elapsed().as_secs_f64();
    println!("{booted_s:.0} s: {} Debian guests up", agents.len());
    booted_s
}

/// The seed on three Debian guests reached through qemu-guest-agent: the first two fill 500 MiB
/// of page cache and leave it, then the third holds 800 MiB of its 1 GiB. The idle ones are
/// ballooned with no guest OOM kill, and the host swaps nothing while ballooning suffices. Once
/// the balloons settle, prints the seed's figures on one line, the same for every kind of VM so
/// that runs can be set side by side (the CI log keeps these tests' output).
pub fn run_seed(
    host: &Host,
    agents: &mut [qga::GuestAgent],
    names: &[&str; 3],
    kind: &str,
    (booted_s, swap_used_before): (f64, u64),
) {
    for agent in &mut agents[..2] {
        let filled = agent.sh(
            "head -c 500M /dev/urandom > /var/tmp/data && cat /var/tmp/data > /dev/null",
            Duration::from_secs(400),
        );
        assert_eq!(filled.code, 0, "{filled:?}");
    }
    // Random, as a real heap is mostly unique. Identical pages would let ksmd give the host back
    // the room the test takes away, and whether vm1 is ballooned would then hang on how fast it
    // scans (CI once saw vm1 untouched 120 s after vm3's peak). Read in place, so the guest
    // never holds two copies.
    agents[2].ok(
        "nohup perl -e 'open F, \"<\", \"/dev/urandom\" or die; read F, $x, 800 << 20; sleep 900' \
         >/dev/null 2>&1 &",
    );
    let (vm3, _) = host.wait_for(names[2], Duration::from_secs(300), "800 MiB used", |v| {
        let total = v["guest_total_mib"].as_u64();
        let available = v["guest_available_mib"].as_u64();
        total
            .zip(available)
            .is_some_and(|(t, a)| t.saturating_sub(a) > 750)
    });
    println!("vm3 at its peak: {vm3:#}");
    let (vm1, reclaim_s) = host.wait_for(names[0], Duration::from_secs(120), "ballooned", |v| {
        v["balloon_target_mib"].as_u64().is_some_and(|t| t < 900)
    });
    println!("vm1 ballooned: {vm1:#}");
    for agent in agents.iter_mut() {
        let kills = agent.ok("dmesg | grep -c 'Out of memory' || true");
        assert_eq!(kills.trim(), "0", "a guest's OOM killer ran");
    }
    assert_eq!(
        agents[2].ok("pgrep -c perl").trim(),
        "1",
        "vm3's memory holder died"
    );
    // The VMs' own memory on the host's swap: the kernel may also swap the ballast's cold
    // pages, which is no VM's (CI saw 46 MiB host-wide with none of it a VM's).
    let vms_swapped: Vec<u64> = names
        .iter()
        .map(|name| {
            let pid = host.vm(name)["pid"]
                .as_u64()
                .expect("a running VM has a pid");
            status_mib(&format!("/proc/{pid}/status"), "VmSwap")
        })
        .collect();
    let swapped: u64 = vms_swapped.iter().sum();
    let host_wide = host_swap_used_mib().saturating_sub(swap_used_before);
    let ballast = status_mib("/proc/self/status", "VmSwap");
    assert!(
        swapped <= 16,
        "the host swapped {vms_swapped:?} MiB of the VMs' memory while ballooning sufficed \
         ({host_wide} MiB host-wide, {ballast} MiB of it the test's ballast); events:\n{}",
        ok(host.path(), &["events"])
    );
    let settled = settled_balloons(host, names);
    println!(
        "seed figures, {kind}: booted in {booted_s:.0} s; vm1 ballooned {reclaim_s:.0} s after vm3's peak; balloons settled at {settled:?} MiB; host swap of the VMs {swapped} MiB ({host_wide} MiB host-wide, {ballast} MiB the ballast's); guest OOM kills 0"
    );
}

/// The VMs' balloon sizes, MiB.
pub fn balloons(host: &Host, vms: &[&str]) -> Vec<u64> {
    vms.iter()
        .map(|name| mib(&host.vm(name), "balloon_actual_mib"))
        .collect()
}

/// The VMs' balloon sizes once they have settled: two readings 10 s apart within 16 MiB.
pub fn settled_balloons(host: &Host, vms: &[&str]) -> Vec<u64> {
    let mut before = balloons(host, vms);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let now = balloons(host, vms);
        let settled = now.iter().zip(&before).all(|(a, b)| a.abs_diff(*b) <= 16);
        before = now;
        if settled {
            return before;
        }
        assert!(
            Instant::now() < deadline,
            "balloons never settled: {before:?}"
        );
    }
}

/// Makes the host short beyond what balloons can give, 32 MiB at a time as a growing host
/// process would (down to 360 MiB available: below the hard threshold, above low), until
/// memvisor caps a VM; returns that VM and the memory added.
pub fn press_until_capped(host: &Host) -> (Value, Vec<Vec<u8>>) {
    let mut more_ballast = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(vm) = host.ps().into_iter().find(|v| v["host_limit_mib"].is_u64()) {
            return (vm, more_ballast);
        }
        assert!(
            Instant::now() < deadline,
            "no VM was capped with {} MiB more ballast and {} MiB available",
            more_ballast.len() * 32,
            meminfo_mib("MemAvailable")
        );
        if meminfo_mib("MemAvailable") > 360 {
            more_ballast.push(ballast(32));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// After a restart (of the daemon, or of what it talks to), no balloon was let out: a daemon
/// that lost track of a balloon would start again from the boot size and deflate it. The host
/// is still short, so the policy may go on reclaiming, and may grant a guest that then pages
/// its memory back: a balloon higher than before must be the last grant the events show.
pub fn assert_no_balloon_let_out(host: &Host, vms: &[&str], before: &[u64], restart: &str) {
    let after = balloons(host, vms);
    println!("balloons across {restart}: {before:?} -> {after:?} MiB");
    let events = ok(host.path(), &["events", "--json"]);
    for ((name, b), a) in vms.iter().zip(before).zip(&after) {
        let last_grant = events
            .lines()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["vm"] == *name && e["action"]["kind"] == "allocate")
            .filter(|e| e["reason"].as_str().unwrap_or_default().contains("granted"))
            .and_then(|e| e["action"]["target_mib"].as_u64());
        assert!(
            *a <= b + 16 || last_grant.is_some_and(|t| t.abs_diff(*a) <= 16),
            "{name}'s balloon was let out from {b} to {a} MiB across {restart}, and no grant \
             says so; events:\n{}",
            ok(host.path(), &["events"])
        );
    }
}
