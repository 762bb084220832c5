//! `memvisor bench`: one scenario, each policy in turn on fresh VMs, side by side in one run.
//! First the needy workload runs on an unconstrained host (no budget, no reclamation): its
//! throughput there is what every policy's needy throughput is measured against.

mod ksmtuned;
mod tools;

use crate::client::{Client, ClientError};
use crate::launcher::{self, LauncherError};
use memvisor_core::config::{Budget, Config};
use memvisor_core::history::HistorySample;
use memvisor_core::policy::PolicyName;
use memvisor_core::status::{VmState, VmStatus};
use memvisor_core::workload::Workload;
use memvisor_core::Size;
use memvisor_guest::image::ImageError;
use memvisor_host::cgroup::{CgroupError, Group, Hierarchy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SCENARIOS: [(&str, &str); 15] = [
    ("seed", include_str!("../../../../scenarios/seed.toml")),
    ("vdi", include_str!("../../../../scenarios/vdi.toml")),
    ("burst", include_str!("../../../../scenarios/burst.toml")),
    (
        "idle-anon",
        include_str!("../../../../scenarios/idle-anon.toml"),
    ),
    ("turns", include_str!("../../../../scenarios/turns.toml")),
    ("wake", include_str!("../../../../scenarios/wake.toml")),
    (
        "reservation",
        include_str!("../../../../scenarios/reservation.toml"),
    ),
    ("peaks", include_str!("../../../../scenarios/peaks.toml")),
    (
        "many-small",
        include_str!("../../../../scenarios/many-small.toml"),
    ),
    ("two-vm", include_str!("../../../../scenarios/two-vm.toml")),
    (
        "small-swap",
        include_str!("../../../../scenarios/small-swap.toml"),
    ),
    (
        "seed-redis",
        include_str!("../../../../scenarios/seed-redis.toml"),
    ),
    (
        "seed-pg",
        include_str!("../../../../scenarios/seed-pg.toml"),
    ),
    (
        "wake-up",
        include_str!("../../../../scenarios/wake-up.toml"),
    ),
    (
        "vdi-debian",
        include_str!("../../../../scenarios/vdi-debian.toml"),
    ),
];
const REFERENCE: &str = "unconstrained";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no scenario '{name}': give one of {} or a scenario file ({source})", SCENARIOS.map(|(name, _)| name).join(", "))]
    NoScenario {
        name: String,
        source: std::io::Error,
    },
    #[error("{scenario}: {problem}")]
    BadScenario { scenario: String, problem: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Launcher(#[from] LauncherError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot read the host's memory figures: {0}")]
    Host(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}'s guest agent does not count its pages: the guest image is older than this memvisor; run 'memvisor image build' and bench again")]
    OldImage(String),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Tool(#[from] tools::ToolError),
    #[error("bench ksmtuned: {0}")]
    Ksmtuned(String),
    #[error(
        "bench interrupted by {0}: the run's VMs were stopped and the host put back as it was"
    )]
    Interrupted(&'static str),
}

/// What a bench run compares beside the unconstrained host: a policy of memvisor's, or a
/// peer that runs beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Policy(PolicyName),
    /// Debian's ksmtuned beside static balloons, what a stock KVM host runs.
    Ksmtuned,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Policy(p) => p.fmt(f),
            Peer::Ksmtuned => f.pad(ksmtuned::NAME),
        }
    }
}

impl std::str::FromStr for Peer {
    type Err = String;

    fn from_str(name: &str) -> Result<Peer, String> {
        if name == ksmtuned::NAME {
            return Ok(Peer::Ksmtuned);
        }
        match name.parse::<PolicyName>() {
            Ok(p) if PolicyName::COMPARED.contains(&p) => Ok(Peer::Policy(p)),
            _ => Err(format!(
                "unknown policy '{name}' for the bench: give {} or {} (Debian's ksmtuned beside static balloons)",
                PolicyName::COMPARED.map(PolicyName::as_str).join(", "),
                ksmtuned::NAME
            )),
        }
    }
}

/// One `memvisor bench` request.
pub struct Options {
    /// A shipped scenario's name or a scenario file.
    pub scenario: String,
    pub peers: Vec<Peer>,
    /// Rounds of every peer beside the reference; each peer's median round is shown, with its
    /// worst round's losses.
    pub runs: usize,
    pub json: bool,
    /// Where SVG timelines and their index go.
    pub report: Option<PathBuf>,
}
/// A grant may take this long; paging inside a guest beyond it, while the host has room, is a
/// policy's fault.
const GRANT_GRACE_S: f64 = 5.0;
/// How long a run's VMs may take to boot: at least 10 minutes, and two minutes per VM, since
/// ours starts VMs one at a time on an overcommitted host (measured: many-small, the ninth
/// booted in 115 s beside eight running ones on a machine with 16% CPU steal).
fn boot_timeout(vms: usize) -> Duration {
    Duration::from_secs(120 * vms.max(5) as u64)
}

/// The `[bench]` table of a scenario file; the rest of the file is a memvisor config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchSection {
    /// Seconds to measure once every VM runs.
    duration_s: u64,
    /// The VMs whose throughput counts.
    needy: Vec<String>,
    /// The workload step whose pages/s is the throughput of a VM with memvisor's agent (e.g.
    /// `touch`); a disk guest's throughput is its client's.
    #[serde(default)]
    measure: Option<String>,
    /// CPUs each VM's QEMU may use, the same under every policy: otherwise a VM the host's
    /// OOM killer ends, or one stalled on host swap, hands its CPU time to the needy VM and
    /// the throughput measures CPU instead of memory.
    cpu_per_vm: Option<f64>,
    /// Every VM's workload starts at the same moment, once all have booted: phases written to
    /// alternate then alternate whatever order a policy booted the VMs in (a paced start
    /// shifted one VM's turns into the other's).
    #[serde(default)]
    start_together: bool,
    /// Real client tools driving real servers in disk guests, from the host.
    #[serde(default)]
    client: Vec<tools::ClientSpec>,
}

/// The VM name a scenario's `disk = "debian"` stands for: the project's Debian disk
/// (`memvisor image debian`), wherever the cache keeps it.
const DEBIAN_DISK: &str = "debian";

/// Seconds of each client window: short enough to see a server slow down and recover.
const WINDOW_S: u64 = 5;

/// A client's run, in its own units, and against the same client on the unconstrained host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientOutcome {
    pub tool: String,
    pub summary: tools::Summary,
    pub requests_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub windows: Vec<tools::Window>,
    /// Windows in which the client got no answer (each counts its time, with no request).
    pub failed_windows: u64,
    pub last_error: Option<String>,
    /// Why its data set did not load, under a policy that starved its server meanwhile.
    pub load_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub needy_throughput: f64,
    pub needy_throughput_ratio: Option<f64>,
    /// Pages the host swapped out, into zswap or to disk.
    pub host_swap_out_mib: u64,
    /// The part of them zswap kept compressed in memory.
    pub zswap_out_mib: u64,
    pub guest_swap_out_mib: u64,
    pub guest_oom_kills: u64,
    /// VMs whose QEMU the host's OOM killer ended.
    pub vms_lost: u64,
    pub reaction_s: Option<f64>,
    /// What KSM saves across the run's VMs when measuring ends, from their page maps.
    pub ksm_saved_mib: u64,
    /// The KSM saving as a share of the VMs' configured memory, in % (ESX reports over 30% on
    /// near-identical VMs).
    pub ksm_saved_pct: f64,
    pub peak_host_used_mib: u64,
    pub daemon_cpu_pct: f64,
    /// The part of the daemon's CPU the host's reclaim took in its writes of the VMs' host
    /// limits (compressing into zswap, swapping), in % of one core.
    pub cap_reclaim_cpu_pct: f64,
    pub daemon_peak_rss_mib: u64,
    pub vms: usize,
    /// Every VM's pages per second in the measured step and in steps that keep working
    /// (`KEEPS_WORKING`), over the whole measurement, by the bench's clock.
    pub vm_throughput: BTreeMap<String, f64>,
    /// Each VM's throughput over its throughput on the unconstrained host: below 1 is the
    /// slowdown the policy cost it (an idle VM woken up pays here for what was swapped out).
    pub vm_throughput_ratio: BTreeMap<String, f64>,
    pub total_throughput: f64,
    pub total_throughput_ratio: Option<f64>,
    /// Seconds each VM paged inside its guest while the host had free memory above its
    /// reserve, beyond the first 5 s of each such spell (the time a grant may take).
    pub paging_with_room_s: BTreeMap<String, f64>,
    /// CPU that KSM's scanner and the host's reclaim (kswapd, which compresses into zswap)
    /// took from the cores the guests share, in % of one core.
    pub ksmd_cpu_pct: f64,
    pub kswapd_cpu_pct: f64,
    /// Each client's run, by the VM whose server it drove.
    pub clients: BTreeMap<String, ClientOutcome>,
    /// OOM kills since boot of each disk guest, read through its qemu-guest-agent (a VM with
    /// memvisor's agent reports its own; both count in `guest_oom_kills`).
    pub disk_guest_oom_kills: BTreeMap<String, u64>,
    /// Every scheduling round of the run, for the report's charts.
    #[serde(skip)]
    history: Vec<HistorySample>,
    /// The daemon's clock when measuring began.
    #[serde(skip)]
    measured_from_s: f64,
}

/// The scenario's `[bench]` table and the config it runs; `debian`: the project's Debian disk,
/// if built, for VMs whose `disk` is "debian".
fn load(scenario: &str, debian: Option<&Path>) -> Result<(BenchSection, Config), BenchError> {
    let text = match SCENARIOS.iter().find(|(n, _)| *n == scenario) {
        Some((_, text)) => text.to_string(),
        None => std::fs::read_to_string(scenario).map_err(|source| BenchError::NoScenario {
            name: scenario.into(),
            source,
        })?,
    };
    let bad = |problem: String| BenchError::BadScenario {
        scenario: scenario.into(),
        problem,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let bench = table
        .remove("bench")
        .ok_or_else(|| bad("no [bench] table".into()))?;
    let bench: BenchSection = bench.try_into().map_err(|e| bad(format!("[bench]: {e}")))?;
    if let Some(cores) = bench.cpu_per_vm.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(bad(format!(
            "[bench] cpu_per_vm must be a positive number of CPUs, e.g. 0.5; got {cores}"
        )));
    }
    resolve_debian_disk(&mut table, debian).map_err(bad)?;
    let config = Config::parse(&toml::to_string(&table).expect("a table serializes"))
        .map_err(|e| bad(e.to_string()))?;
    check_clients(&bench, &config).map_err(bad)?;
    if config.host.budget == Budget::Auto {
        return Err(bad(
            "[host] budget = \"auto\" measures the machine, not a host of the scenario's size; give the budget a size, e.g. \"1.5G\"".into(),
        ));
    }
    Ok((bench, config))
}

pub async fn run(dir: &Path, cache_dir: &Path, options: &Options) -> Result<(), BenchError> {
    let scenario = options.scenario.as_str();
    let debian = memvisor_guest::debian::current(cache_dir)
        .ok()
        .map(|d| d.disk);
    let (bench, config) = load(scenario, debian.as_deref())?;
    memvisor_guest::image::current(cache_dir)?;
    // Each round runs the reference and every peer once, side by side; with several rounds
    // each peer's median round by all VMs' ratio is shown (these machines are noisy).
    let mut rounds: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for round in 0..options.runs {
        if options.runs > 1 {
            eprintln!("bench: round {} of {}", round + 1, options.runs);
        }
        let reference = run_one(dir, cache_dir, &bench, &config, None).await?;
        for &peer in &options.peers {
            let outcome =
                run_one(dir, cache_dir, &bench, &config, Some((peer, &reference))).await?;
            // The table shows the median round; each round's figures show the spread.
            if options.runs > 1 {
                eprintln!(
                    "bench: round {}: {peer}: {}",
                    round + 1,
                    round_summary(&outcome)
                );
            }
            rounds.entry(peer.to_string()).or_default().push(outcome);
        }
        rounds.entry(REFERENCE.into()).or_default().push(reference);
    }
    let order: Vec<String> = std::iter::once(REFERENCE.to_string())
        .chain(options.peers.iter().map(Peer::to_string))
        .collect();
    let results: BTreeMap<String, Outcome> = rounds
        .into_iter()
        .map(|(peer, outcomes)| (peer, median(outcomes)))
        .collect();
    if let Some(dir) = &options.report {
        let runs: Vec<_> = order
            .iter()
            .map(|p| (p.clone(), results[p].history.clone()))
            .collect();
        let name = Path::new(scenario)
            .file_stem()
            .map_or(scenario.into(), |s| s.to_string_lossy());
        let across = charts_across_policies(&name, &bench, &order, &results);
        let files = crate::report::write(dir, &name, &across, &runs)?;
        eprintln!(
            "bench: report: {} charts, open {}",
            files.len() - 1,
            dir.join("index.html").display()
        );
    }
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serializes")
        );
    } else {
        print_table(scenario, bench.measure.is_some(), &order, &results);
    }
    Ok(())
}

/// One round's ratios and swap, in a line.
fn round_summary(o: &Outcome) -> String {
    format!(
        "needy {}, all {}, host swap {} MiB ({} to zswap), guest swap {} MiB",
        ratio(o.needy_throughput_ratio),
        ratio(o.total_throughput_ratio),
        o.host_swap_out_mib,
        o.zswap_out_mib,
        o.guest_swap_out_mib
    )
}

/// The outcome of the median round by all VMs' throughput ratio (by throughput for the
/// reference, which has no ratio), with the most guest OOM kills and VMs lost of any round:
/// a loss in another round must not hide behind the median.
fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    let worst = |count: fn(&Outcome) -> u64| outcomes.iter().map(count).max().unwrap_or(0);
    let (oom_kills, lost) = (worst(|o| o.guest_oom_kills), worst(|o| o.vms_lost));
    outcomes.sort_by(|a, b| {
        let key = |o: &Outcome| o.total_throughput_ratio.unwrap_or(o.total_throughput);
        key(a).total_cmp(&key(b))
    });
    Outcome {
        guest_oom_kills: oom_kills,
        vms_lost: lost,
        ..outcomes.swap_remove(outcomes.len() / 2)
    }
}

/// The report's charts across policies: the needy VMs' pages/s where memvisor's agent measures
/// them, and each client's requests per second and p99 latency, window by window.
fn charts_across_policies(
    scenario: &str,
    bench: &BenchSection,
    order: &[String],
    results: &BTreeMap<String, Outcome>,
) -> Vec<crate::report::Lines> {
    use crate::report::{needy_series, Lines};
    let mut charts = Vec::new();
    if bench.measure.is_some() {
        charts.push(Lines {
            file: "throughput".into(),
            title: format!("{scenario}: needy VMs' throughput"),
            y_desc: "pages/s",
            runs: order
                .iter()
                .map(|p| {
                    let o = &results[p];
                    let series = needy_series(&o.history, &bench.needy, o.measured_from_s);
                    (p.clone(), series)
                })
                .collect(),
        });
    }
    type Figure = fn(&tools::Window) -> f64;
    let figures: [(&str, &str, &'static str, Figure); 2] = [
        ("requests", "requests per second", "requests/s", |w| {
            w.requests as f64 / w.seconds.max(f64::EPSILON)
        }),
        ("p99", "p99 latency", "ms", |w| w.p99_ms),
    ];
    for spec in bench.client.iter().filter(|c| c.run.is_some()) {
        for (file, what, unit, figure) in figures {
            charts.push(Lines {
                file: format!("{}-{file}", spec.vm),
                title: format!("{scenario}: {}'s {} {what}", spec.vm, spec.tool),
                y_desc: unit,
                runs: order
                    .iter()
                    .filter_map(|p| {
                        let windows = &results[p].clients.get(&spec.vm)?.windows;
                        let series = windows.iter().map(|w| (w.at_s, figure(w))).collect();
                        Some((p.clone(), series))
                    })
                    .collect(),
            });
        }
    }
    charts
}

/// Puts the project's Debian disk where a VM's `disk` says "debian".
fn resolve_debian_disk(table: &mut toml::Table, debian: Option<&Path>) -> Result<(), String> {
    let Some(vms) = table.get_mut("vm").and_then(|v| v.as_array_mut()) else {
        return Ok(());
    };
    for vm in vms.iter_mut().filter_map(|v| v.as_table_mut()) {
        if vm.get("disk").and_then(|d| d.as_str()) != Some(DEBIAN_DISK) {
            continue;
        }
        let disk = debian.ok_or(
            "a VM boots disk = \"debian\", the project's Debian disk, which is not built: run 'memvisor image debian' (a few minutes), then bench again",
        )?;
        vm.insert("disk".into(), disk.to_string_lossy().into_owned().into());
    }
    Ok(())
}

/// Every client drives a disk guest through one of its forwarded ports, one client a VM, and
/// every needy VM is measured: by its agent's step or by its client.
fn check_clients(bench: &BenchSection, config: &Config) -> Result<(), String> {
    for (i, spec) in bench.client.iter().enumerate() {
        host_port(config, spec)?;
        if bench.client[..i].iter().any(|c| c.vm == spec.vm) {
            return Err(format!(
                "[[bench.client]]: vm {} has two clients; give each VM one",
                spec.vm
            ));
        }
        check_data_set(spec)?;
        if spec.from_s >= bench.duration_s {
            return Err(format!(
                "[[bench.client]] of vm {}: from_s = {} is past the measurement's {} s",
                spec.vm, spec.from_s, bench.duration_s
            ));
        }
    }
    if bench.measure.is_some() && !bench.client.is_empty() {
        return Err(
            "[bench] measure counts pages of memvisor's agent, [[bench.client]] requests: a scenario measures by one of them; drop measure, or the clients".into(),
        );
    }
    if bench.measure.is_none() {
        if let Some(vm) = bench
            .needy
            .iter()
            .find(|vm| !bench.client.iter().any(|c| &c.vm == *vm && c.run.is_some()))
        {
            return Err(format!(
                "needy vm {vm} is measured by nothing: give [bench] measure = \"STEP\" (a step of its workload, e.g. \"touch\"), or a [[bench.client]] with vm = \"{vm}\" and a run"
            ));
        }
    }
    Ok(())
}

/// A redis data set is the bench's records, a PostgreSQL one pgbench's tables.
fn check_data_set(spec: &tools::ClientSpec) -> Result<(), String> {
    let vm = &spec.vm;
    match (spec.tool, &spec.load, spec.records) {
        (tools::Tool::RedisBenchmark, Some(_), _) => Err(format!(
            "[[bench.client]] of vm {vm}: redis-benchmark's SET writes one value under every key, pages KSM merges whole; drop load and give records = {{ keys = N, size = \"1K\" }}, unique values the bench writes"
        )),
        (tools::Tool::Pgbench, _, Some(_)) => Err(format!(
            "[[bench.client]] of vm {vm}: records are a redis data set; pgbench loads its tables with load = \"-i -s SCALE\""
        )),
        (_, _, Some(records)) if records.keys == 0 => Err(format!(
            "[[bench.client]] of vm {vm}: records.keys = 0; give the number of keys to write"
        )),
        (_, _, Some(records))
            if records.size.as_bytes() < memvisor_core::content::HEADER as u64
                || records.size > tools::Records::MAX_SIZE =>
        {
            Err(format!(
                "[[bench.client]] of vm {vm}: records.size = {} is outside {} B..{}; give each value's size, e.g. \"1K\"",
                records.size,
                memvisor_core::content::HEADER,
                tools::Records::MAX_SIZE
            ))
        }
        (_, _, Some(records)) => check_keyspace(vm, spec.run.as_deref(), records.keys),
        _ => Ok(()),
    }
}

/// A run over records reads their keys: redis-benchmark without `-r` reads one key literally
/// named `key:__rand_int__`, and with one past the records it reads keys that hold nothing.
fn check_keyspace(vm: &str, run: Option<&str>, keys: u64) -> Result<(), String> {
    let Some(run) = run else {
        return Ok(());
    };
    let words: Vec<&str> = run.split_whitespace().collect();
    let keyspace = words
        .iter()
        .position(|w| *w == "-r")
        .and_then(|i| words.get(i + 1)?.parse::<u64>().ok());
    match keyspace {
        Some(r) if r <= keys => Ok(()),
        Some(r) => Err(format!(
            "[[bench.client]] of vm {vm}: run reads {r} keys (-r {r}) but records write {keys}; give -r {keys}, or more records"
        )),
        None => Err(format!(
            "[[bench.client]] of vm {vm}: run has no -r, so it would read one key that holds nothing; add -r {keys} to read the records"
        )),
    }
}

/// The host port that reaches a client's server.
fn host_port(config: &Config, spec: &tools::ClientSpec) -> Result<u16, String> {
    let vm = config
        .vms
        .iter()
        .find(|v| v.name == spec.vm)
        .ok_or(format!(
            "[[bench.client]]: no vm {} in the scenario",
            spec.vm
        ))?;
    vm.forward
        .iter()
        .find(|f| f.guest == spec.port)
        .map(|f| f.host)
        .ok_or(format!(
            "[[bench.client]] of vm {}: its server's port {} is not forwarded; add forward = [\"HOST:{}\"] to vm {} (a free port of the host)",
            spec.vm, spec.port, spec.port, spec.vm
        ))
}

/// One run: a peer measured against the reference's outcome, or (None) the reference itself.
async fn run_one(
    dir: &Path,
    cache_dir: &Path,
    bench: &BenchSection,
    config: &Config,
    peer: Option<(Peer, &Outcome)>,
) -> Result<Outcome, BenchError> {
    let name = peer.map_or(REFERENCE.to_string(), |(p, _)| p.to_string());
    eprintln!("bench: {name}: starting {} VMs", config.vms.len());
    let host = memvisor_host::meminfo::read().map_err(|e| BenchError::Host(e.to_string()))?;
    let mut config = run_config(config, peer.map(|(p, _)| p), host.total);
    let workloads = if bench.start_together {
        take_workloads(&mut config)
    } else {
        Vec::new()
    };
    let run_dir = dir.join("bench").join(&name);
    let file = run_dir.join("config.toml");
    std::fs::create_dir_all(&run_dir)
        .and_then(|()| std::fs::write(&file, toml::to_string(&config).expect("config serializes")))
        .map_err(|source| BenchError::Write {
            path: file.clone(),
            source,
        })?;
    let swap_before = swap_counters()?;
    let cpu = match bench.cpu_per_vm {
        Some(cores) => Some((cpu_parent(&config.host.cgroup)?, cores)),
        None => None,
    };
    let up_and_measure = async {
        let daemon = launcher::up(
            &run_dir,
            cache_dir,
            &file,
            boot_timeout(config.vms.len()),
            true,
        )
        .await?;
        let run = Run {
            dir: &run_dir,
            bench,
            config: &config,
            daemon,
            reference: peer.map(|(_, r)| r),
        };
        drive(&run, peer.map(|(p, _)| p), cpu.as_ref(), &workloads).await
    };
    // Interrupted, the run stops its VMs and puts back the swap, KSM and cgroups it changed,
    // as it does when it ends.
    let measured = tokio::select! {
        measured = up_and_measure => measured,
        signal = interrupted() => Err(BenchError::Interrupted(signal)),
    };
    let down = launcher::down(&run_dir).await;
    if let Some((parent, _)) = cpu {
        parent.remove()?;
    }
    // Whatever did start must not run on into the next peer's run: a failed run is downed too,
    // and its own error is the one reported.
    let mut outcome = measured?;
    down?;
    let swap_after = swap_counters()?;
    outcome.host_swap_out_mib = swap_after.out_mib_since(&swap_before);
    outcome.zswap_out_mib = swap_after.zswap_mib_since(&swap_before);
    outcome.vms = config.vms.len();
    Ok(outcome)
}

/// The scenario's config as `peer` runs it. The reference (None) runs the same VMs with the
/// whole machine (`host_total`) to themselves and nothing reclaimed, each booted with the most
/// it may ever have.
fn run_config(config: &Config, peer: Option<Peer>, host_total: Size) -> Config {
    let mut config = config.clone();
    config.scheduler.policy = match peer {
        None => {
            config.host.budget = Budget::Fixed(host_total);
            config.host.swap = Size::ZERO;
            for vm in &mut config.vms {
                vm.memory = vm.effective_limit();
                vm.max = None;
                vm.limit = None;
            }
            PolicyName::Static
        }
        // Balloons stay where they booted and memvisor leaves KSM to ksmtuned.
        Some(Peer::Ksmtuned) => PolicyName::Manual,
        Some(Peer::Policy(policy)) => policy,
    };
    config.host.cgroup = "memvisor-bench".into();
    config
}

/// Takes every VM's workload out of the config, to be started once all of them run.
fn take_workloads(config: &mut Config) -> Vec<(String, Workload)> {
    config
        .vms
        .iter_mut()
        .map(|vm| (vm.name.clone(), std::mem::take(&mut vm.workload)))
        .collect()
}

fn swap_counters() -> Result<memvisor_host::swap::SwapCounters, BenchError> {
    memvisor_host::swap::counters().map_err(|e| BenchError::Host(e.to_string()))
}

/// A run in progress: where its daemon is, and what it is measured against.
struct Run<'a> {
    dir: &'a Path,
    bench: &'a BenchSection,
    config: &'a Config,
    daemon: u32,
    reference: Option<&'a Outcome>,
}

impl Run<'_> {
    /// The VMs' configured memory together.
    fn guest_memory_mib(&self) -> u64 {
        self.config.vms.iter().map(|vm| vm.memory.as_mib()).sum()
    }

    /// Each client with the host port that reaches its server.
    fn clients(&self) -> Vec<(tools::ClientSpec, u16)> {
        self.bench
            .client
            .iter()
            .map(|spec| {
                let port = host_port(self.config, spec).expect("load() checked every client");
                (spec.clone(), port)
            })
            .collect()
    }
}

/// Holds each VM to its CPU, starts the peer beside the daemon and the workloads, measures.
async fn drive(
    run: &Run<'_>,
    peer: Option<Peer>,
    cpu: Option<&(Group, f64)>,
    workloads: &[(String, Workload)],
) -> Result<Outcome, BenchError> {
    let client = Client::new(run.dir);
    let vms = client.vms().await?;
    // A VM the host lost while booting is counted as lost; it has no CPU to hold and no
    // workload to start.
    let running: Vec<&VmStatus> = vms.iter().filter(|v| v.state == VmState::Running).collect();
    if let Some((parent, cores)) = cpu {
        hold_cpu(&running, parent, *cores)?;
    }
    let ksmtuned = match peer {
        Some(Peer::Ksmtuned) => Some(ksmtuned::Ksmtuned::start(run.dir).await?),
        _ => None,
    };
    for (vm, workload) in workloads
        .iter()
        .filter(|(vm, _)| running.iter().any(|v| &v.name == vm))
    {
        client.workload(vm, workload).await?;
    }
    let measured = match prepare_clients(run).await {
        Ok(load_failures) => measure(run, load_failures).await,
        Err(e) => Err(e),
    };
    if let Some(ksmtuned) = ksmtuned {
        ksmtuned.stop()?;
    }
    measured
}

/// Waits for every client's server to answer (a disk guest's init starts it well after its
/// balloon driver reports), then loads its data set; the VMs load theirs at the same time. A
/// server a policy starves while it starts or loads is that policy's result: its error is kept
/// by VM and the run goes on. On the unconstrained host it is the scenario's fault, and ends
/// the bench.
async fn prepare_clients(run: &Run<'_>) -> Result<BTreeMap<String, String>, BenchError> {
    let mut preparing = tokio::task::JoinSet::new();
    for (spec, port) in run.clients() {
        preparing.spawn(async move { (spec.vm.clone(), prepare_client(spec, port).await) });
    }
    let mut failures = BTreeMap::new();
    while let Some(done) = preparing.join_next().await {
        let (vm, prepared) =
            done.map_err(|e| BenchError::Host(format!("a client's preparation: {e}")))?;
        match prepared {
            Ok(()) => {}
            Err(e @ tools::ToolError::NotInstalled { .. }) => return Err(e.into()),
            Err(e) if run.reference.is_none() => return Err(e.into()),
            Err(e) => {
                eprintln!("bench: {vm}'s data set did not load: {e}");
                failures.insert(vm, e.to_string());
            }
        }
    }
    Ok(failures)
}

async fn prepare_client(spec: tools::ClientSpec, port: u16) -> Result<(), tools::ToolError> {
    let deadline = Instant::now() + SERVER_START;
    loop {
        match tools::check(&spec, port).await {
            Ok(()) => break,
            Err(e @ tools::ToolError::NotInstalled { .. }) => return Err(e),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    eprintln!("bench: {}: loading {}'s data set", spec.tool, spec.vm);
    tools::load(&spec, port).await
}

/// How long a disk guest's server may take to answer after its balloon driver reported
/// (measured: systemd's user space took 3 min 41 s under heavy CPU steal).
const SERVER_START: Duration = Duration::from_secs(600);

/// A client's windows from `from_s` until its `for_s` or the measurement's end. Under a policy,
/// a window that fails (the server stopped answering in time, or its guest killed it) counts as
/// that much time with no request served and the client tries again: a policy that starves a
/// server is measured, not aborted. On the unconstrained host (`must_answer`), or where the
/// client's output cannot be read, the scenario is at fault and the bench ends.
async fn run_client(
    spec: tools::ClientSpec,
    run: String,
    port: u16,
    duration_s: u64,
    scratch: PathBuf,
    must_answer: bool,
) -> Result<ClientRun, BenchError> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(spec.from_s)).await;
    let end_s = spec
        .for_s
        .map_or(duration_s, |f| (spec.from_s + f).min(duration_s)) as f64;
    let mut done = ClientRun::default();
    // redis-benchmark runs a count of requests: sized to last a window at the last rate.
    let mut requests = 5_000;
    while started.elapsed().as_secs_f64() + 1.0 < end_s {
        let at_s = started.elapsed().as_secs_f64();
        let seconds = WINDOW_S.min((end_s - at_s).ceil() as u64);
        // A slow window may not run on past the client's end by more than a little.
        let limit = Duration::from_secs_f64(end_s - at_s + WINDOW_GRACE_S);
        let slot = tools::Slot {
            at_s,
            seconds,
            requests,
            limit,
        };
        match tools::window(&spec, &run, port, slot, &scratch).await {
            Ok(got) => {
                if let Some(last) = got.last().filter(|w| w.seconds > 0.0) {
                    let rate = last.requests as f64 / last.seconds;
                    requests = ((rate * WINDOW_S as f64) as u64).clamp(1_000, 1_000_000);
                }
                done.windows.extend(got);
            }
            Err(e @ tools::ToolError::Unreadable { .. }) => return Err(e.into()),
            Err(e) if must_answer => return Err(e.into()),
            Err(e) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let seconds = started.elapsed().as_secs_f64() - at_s;
                done.windows.push(tools::Window::failed(at_s, seconds));
                done.failed_windows += 1;
                done.last_error = Some(e.to_string());
            }
        }
    }
    Ok(done)
}

/// Seconds a window may run past its client's end before it is killed and counted as failed.
const WINDOW_GRACE_S: f64 = 5.0;

/// Each disk guest's OOM kills since its boot, where its guest agent answers; they count in
/// the run's guest OOM kills as those memvisor's agent reports do.
async fn read_disk_guests_oom_kills(run: &Run<'_>, out: &mut Outcome) {
    for vm in run.config.vms.iter().filter(|vm| vm.disk.is_some()) {
        let socket = run.dir.join("vms").join(&vm.name).join("qga.sock");
        match disk_guest_oom_kills(&socket).await {
            Ok(kills) => {
                out.guest_oom_kills = out.guest_oom_kills.max(kills);
                out.disk_guest_oom_kills.insert(vm.name.clone(), kills);
            }
            Err(e) => eprintln!("bench: {}'s guest OOM kills are unknown: {e}", vm.name),
        }
    }
}

/// The OOM kills of a disk guest since its boot, from its `/proc/vmstat` read through its
/// qemu-guest-agent: it has no agent of ours to report them.
async fn disk_guest_oom_kills(socket: &Path) -> Result<u64, String> {
    use memvisor_qemu::guest_agent::GuestAgent;
    let mut agent = GuestAgent::connect(socket, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let vmstat = agent
        .read_file("/proc/vmstat")
        .await
        .map_err(|e| e.to_string())?;
    memvisor_core::agent::oom_kills_in_vmstat(&vmstat)
        .ok_or("the guest's /proc/vmstat has no oom_kill line".into())
}

/// What a client's measured run gave.
#[derive(Debug, Default)]
struct ClientRun {
    windows: Vec<tools::Window>,
    failed_windows: u64,
    last_error: Option<String>,
}

/// Resolves when the bench is asked to stop, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The CPU group the run's VMs go in; on cgroup v2 it is the memory group the daemon makes.
fn cpu_parent(name: &str) -> Result<Group, BenchError> {
    Ok(Hierarchy::detect_cpu()?.group(name))
}

/// Puts each VM's QEMU in a CPU group of its own that holds it to `cores` CPUs.
fn hold_cpu(vms: &[&VmStatus], parent: &Group, cores: f64) -> Result<(), BenchError> {
    for vm in vms {
        let Some(pid) = vm.pid else { continue };
        let group = parent.child(&vm.name);
        group.create()?;
        group.set_cpu_quota(Some(cores))?;
        group.add_process(pid)?;
    }
    Ok(())
}

/// CPU seconds the named kernel threads have used, summed.
fn kernel_cpu_seconds(prefix: &str) -> f64 {
    memvisor_host::process::named(prefix)
        .into_iter()
        .filter_map(|pid| memvisor_host::process::cpu_seconds(pid).ok())
        .sum()
}

type ClientTasks = tokio::task::JoinSet<(String, tools::Tool, Result<ClientRun, BenchError>)>;

/// Starts every client that has a run; one with none only loaded the data set its VM holds.
/// Dropping the set (on an early return) ends the clients and kills their processes.
fn start_clients(run: &Run<'_>) -> ClientTasks {
    let mut clients = tokio::task::JoinSet::new();
    for (spec, port) in run.clients() {
        let Some(args) = spec.run.clone() else {
            continue;
        };
        let scratch = run.dir.to_path_buf();
        let (duration_s, must_answer) = (run.bench.duration_s, run.reference.is_none());
        clients.spawn(async move {
            let (vm, tool) = (spec.vm.clone(), spec.tool);
            let done = run_client(spec, args, port, duration_s, scratch, must_answer).await;
            (vm, tool, done)
        });
    }
    clients
}

/// Every client's outcome once its run ends, by VM, with the data sets that did not load.
async fn finish_clients(
    mut clients: ClientTasks,
    load_failures: BTreeMap<String, String>,
    bench: &BenchSection,
) -> Result<BTreeMap<String, ClientOutcome>, BenchError> {
    let mut outcomes = BTreeMap::new();
    while let Some(joined) = clients.join_next().await {
        let (vm, tool, done) =
            joined.map_err(|e| BenchError::Host(format!("a client's run: {e}")))?;
        let done = done?;
        if let Some(error) = &done.last_error {
            eprintln!(
                "bench: {vm}'s {tool}: {} windows failed, the last with: {error}",
                done.failed_windows
            );
        }
        let outcome = ClientOutcome {
            tool: tool.to_string(),
            summary: tools::summarize(&done.windows),
            windows: done.windows,
            failed_windows: done.failed_windows,
            last_error: done.last_error,
            ..ClientOutcome::default()
        };
        outcomes.insert(vm, outcome);
    }
    for (vm, error) in load_failures {
        let tool = bench.client.iter().find(|c| c.vm == vm).map(|c| c.tool);
        let outcome = outcomes.entry(vm).or_insert_with(|| ClientOutcome {
            tool: tool.map(|t| t.to_string()).unwrap_or_default(),
            ..ClientOutcome::default()
        });
        outcome.load_error = Some(error);
    }
    Ok(outcomes)
}

/// The CPU the daemon, KSM's scanner and the host's reclaim used: they share the cores with
/// the guests.
struct CpuSeconds {
    daemon: f64,
    /// The part of the daemon's that the host's reclaim took in its cap writes.
    cap_reclaim: f64,
    ksmd: f64,
    kswapd: f64,
}

impl CpuSeconds {
    async fn read(daemon: u32, client: &Client) -> Result<CpuSeconds, BenchError> {
        let vms = client.vms().await?;
        Ok(CpuSeconds {
            daemon: memvisor_host::process::cpu_seconds(daemon).unwrap_or(0.0),
            cap_reclaim: vms.iter().filter_map(|v| v.cap_reclaim_cpu_s).sum(),
            ksmd: kernel_cpu_seconds("ksmd"),
            kswapd: kernel_cpu_seconds("kswapd"),
        })
    }

    /// What was used since `before`; nothing for a daemon that is gone (it reads 0 then), nor
    /// for the caps of a VM lost since (it takes its seconds with it).
    fn since(&self, before: &CpuSeconds) -> CpuSeconds {
        CpuSeconds {
            daemon: (self.daemon - before.daemon).max(0.0),
            cap_reclaim: (self.cap_reclaim - before.cap_reclaim).max(0.0),
            ksmd: self.ksmd - before.ksmd,
            kswapd: self.kswapd - before.kswapd,
        }
    }
}

/// Measures the run; `load_failures`: the clients whose data set did not load, by VM.
async fn measure(
    run: &Run<'_>,
    load_failures: BTreeMap<String, String>,
) -> Result<Outcome, BenchError> {
    let (dir, bench, daemon, reference) = (run.dir, run.bench, run.daemon, run.reference);
    let reserve_mib = run.config.host.reserve.as_mib();
    let client = Client::new(dir);
    let started = Instant::now();
    let clients = start_clients(run);
    let cpu_before = CpuSeconds::read(daemon, &client).await?;
    let mut tally = Tally::default();
    let mut out = Outcome::default();
    let mut samples: BTreeMap<String, Vec<WorkSample>> = BTreeMap::new();
    let mut onset: Option<f64> = None;
    let history = client.history().await?;
    out.measured_from_s = history.last().map_or(0.0, |s| s.at_s);
    while started.elapsed() < Duration::from_secs(bench.duration_s) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = started.elapsed().as_secs_f64();
        let vms = client.vms().await?;
        let host = client.host().await?;
        out.peak_host_used_mib = out.peak_host_used_mib.max(host.used_mib.unwrap_or(0));
        if let Ok(rss) = memvisor_host::process::rss(daemon) {
            out.daemon_peak_rss_mib = out.daemon_peak_rss_mib.max(rss.as_mib());
        }
        let mut needy_rate = 0.0;
        let mut measuring = false;
        let room = host.free_mib.unwrap_or(0) > reserve_mib;
        for vm in &vms {
            tally.sample(vm, bench.measure.as_deref(), room);
            out.guest_oom_kills = out.guest_oom_kills.max(vm.guest_oom_kills.unwrap_or(0));
            out.guest_swap_out_mib = out
                .guest_swap_out_mib
                .max(vm.guest_swap_out_mib.unwrap_or(0));
            let Some(step) = bench.measure.as_deref() else {
                continue;
            };
            if !bench.needy.contains(&vm.name) {
                continue;
            }
            let seen = samples.entry(vm.name.clone()).or_default();
            if let Some(rate) = sample_needy(vm, step, seen, now)? {
                needy_rate += rate;
                measuring = true;
            }
        }
        if measuring && onset.is_none() {
            onset = Some(now);
        }
        if let (Some(onset), Some(reference), None) = (onset, reference, out.reaction_s) {
            if needy_rate >= 0.9 * reference.needy_throughput / bench.needy.len() as f64 {
                out.reaction_s = Some(now - onset);
            }
        }
        out.vms_lost = vms.iter().filter(|v| v.state == VmState::Lost).count() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSeconds::read(daemon, &client).await?.since(&cpu_before);
    out.daemon_cpu_pct = 100.0 * cpu.daemon / seconds;
    out.cap_reclaim_cpu_pct = 100.0 * cpu.cap_reclaim / seconds;
    out.ksmd_cpu_pct = 100.0 * cpu.ksmd / seconds;
    out.kswapd_cpu_pct = 100.0 * cpu.kswapd / seconds;
    out.clients = finish_clients(clients, load_failures, bench).await?;
    read_disk_guests_oom_kills(run, &mut out).await;
    tally.finish(seconds, reference, &mut out);
    out.history = client.history().await?;
    // From this run's VMs' own page maps: KSM's host-wide counter still holds pages of an
    // earlier run's QEMUs until KSM scans again.
    let sharing = client.sharing().await?;
    out.ksm_saved_mib = sharing.saved_mib.round() as u64;
    out.ksm_saved_pct = 100.0 * sharing.saved_mib / run.guest_memory_mib().max(1) as f64;
    // Pages of memvisor's agent, or requests of clients: a scenario measures by one of them.
    let by_clients = bench.needy.iter().filter_map(|vm| out.clients.get(vm));
    out.needy_throughput = samples.values().map(|s| step_throughput(s)).sum::<f64>()
        + by_clients.map(|c| c.summary.requests_per_s).sum::<f64>();
    out.needy_throughput_ratio = reference
        .filter(|r| r.needy_throughput > 0.0)
        .map(|r| out.needy_throughput / r.needy_throughput);
    Ok(out)
}

/// Records a needy VM's progress; its pages per second now while it is in the measured step.
fn sample_needy(
    vm: &VmStatus,
    measure: &str,
    seen: &mut Vec<WorkSample>,
    now: f64,
) -> Result<Option<f64>, BenchError> {
    let in_step = vm.workload_phase.as_deref() == Some(measure);
    let pages = match (in_step, vm.workload_pages) {
        (_, Some(pages)) => pages,
        (false, None) => 0,
        (true, None) => return Err(BenchError::OldImage(vm.name.clone())),
    };
    // A report not renewed since the last sample is a guest that sent none: no progress.
    let fresh = seen.last().is_none_or(|last| last.pages != pages);
    seen.push(WorkSample {
        at_s: now,
        in_step,
        pages,
    });
    let rate = if fresh {
        vm.workload_pages_per_sec.unwrap_or(0.0)
    } else {
        0.0
    };
    Ok(in_step.then_some(rate))
}

/// The workload steps that work for as long as they run: `touch:` writes its active memory over
/// and over, `cache:` reads its files round and round.
const KEEPS_WORKING: [&str; 2] = ["touch", "cache"];

/// Every VM's progress and its paging over one measurement, a reading a second.
#[derive(Debug, Default)]
struct Tally {
    /// Each VM's page counter at its latest reading, whether it then ran a step that counts
    /// (the measured one, or one that keeps working), and the pages it touched between
    /// readings that both did.
    pages: BTreeMap<String, (u64, bool, u64)>,
    /// Seconds each VM has paged in its guest, in a row, while the host had room.
    spells: BTreeMap<String, f64>,
    paging_with_room_s: BTreeMap<String, f64>,
}

impl Tally {
    /// One reading of `vm`; `measure`: the scenario's measured step; `room`: the host had
    /// free memory above its reserve. Only the pages of the measured step and of steps that
    /// keep working count: a `hold:` step writes its pages once as it loads, and whether that
    /// falls within the measurement depends on when a policy booted the VM, not on how it ran.
    fn sample(&mut self, vm: &VmStatus, measure: Option<&str>, room: bool) {
        if let Some(pages) = vm.workload_pages {
            let phase = vm.workload_phase.as_deref();
            let in_step = phase.is_some_and(|p| measure == Some(p) || KEEPS_WORKING.contains(&p));
            let (last, was_in_step, worked) = self
                .pages
                .entry(vm.name.clone())
                .or_insert((pages, false, 0));
            if in_step && *was_in_step {
                *worked += pages.saturating_sub(*last);
            }
            (*last, *was_in_step) = (pages, in_step);
        }
        let paging = memvisor_core::snapshot::pages_to_disk(
            vm.guest_swap_in_mib_s.unwrap_or(0.0),
            vm.guest_swap_out_mib_s.unwrap_or(0.0),
        );
        let spell = self.spells.entry(vm.name.clone()).or_default();
        *spell = if paging && room { *spell + 1.0 } else { 0.0 };
        let beyond = self.paging_with_room_s.entry(vm.name.clone()).or_default();
        if *spell > GRANT_GRACE_S {
            *beyond += 1.0;
        }
    }

    /// Every VM's throughput over the `seconds` measured (a disk guest's: its client's
    /// requests per second), and its ratio to the reference.
    fn finish(self, seconds: f64, reference: Option<&Outcome>, out: &mut Outcome) {
        out.paging_with_room_s = self.paging_with_room_s;
        out.vm_throughput = self
            .pages
            .into_iter()
            .map(|(vm, (_, _, worked))| (vm, worked as f64 / seconds))
            .chain(
                out.clients
                    .iter()
                    .map(|(vm, c)| (vm.clone(), c.summary.requests_per_s)),
            )
            .collect();
        out.total_throughput = out.vm_throughput.values().sum();
        if let Some(reference) = reference {
            for (vm, c) in &mut out.clients {
                let Some(base) = reference.clients.get(vm) else {
                    continue;
                };
                let over = |now: f64, then: f64| (then > 0.0).then(|| now / then);
                c.requests_ratio = over(c.summary.requests_per_s, base.summary.requests_per_s);
                c.p99_ratio = over(c.summary.p99_ms, base.summary.p99_ms);
            }
            out.vm_throughput_ratio = out
                .vm_throughput
                .iter()
                .filter_map(|(vm, rate)| {
                    let base = reference.vm_throughput.get(vm).filter(|b| **b > 0.0)?;
                    Some((vm.clone(), rate / base))
                })
                .collect();
            out.total_throughput_ratio = (reference.total_throughput > 0.0)
                .then(|| out.total_throughput / reference.total_throughput);
        }
    }
}

/// A needy VM's workload as the bench read it at one of its own sampling times.
#[derive(Debug, Clone, Copy)]
struct WorkSample {
    at_s: f64,
    /// The workload ran the measured step.
    in_step: bool,
    /// The workload's page counter since its agent started.
    pages: u64,
}

/// Pages per second over the time the measured step ran, by the bench's clock. Rates the
/// guest reports cannot be averaged: a guest stalled on host swap sends no report, and its
/// last rate would count again for every second it stalls.
fn step_throughput(samples: &[WorkSample]) -> f64 {
    let (pages, seconds) = samples
        .windows(2)
        .filter(|w| w[0].in_step && w[1].in_step)
        .fold((0u64, 0.0), |(pages, seconds), w| {
            (
                pages + w[1].pages.saturating_sub(w[0].pages),
                seconds + (w[1].at_s - w[0].at_s),
            )
        });
    if seconds > 0.0 {
        pages as f64 / seconds
    } else {
        0.0
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// `by_agent`: the needy VMs are measured by memvisor's agent (pages, and the reaction to
/// their need), not by clients (requests).
fn print_table(
    scenario: &str,
    by_agent: bool,
    order: &[String],
    results: &BTreeMap<String, Outcome>,
) {
    let unit = if by_agent {
        "NEEDY_PG/S"
    } else {
        "NEEDY_REQ/S"
    };
    println!("scenario {scenario}");
    println!(
        "{:<14} {:>11} {:>6} {:>9} {:>9} {:>6} {:>9} {:>4} {:>5} {:>9} {:>8} {:>5} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7}",
        "POLICY",
        unit,
        "RATIO",
        "ALL_RATIO",
        "HOSTSWAP",
        "ZSWAP",
        "GUESTSWAP",
        "OOM",
        "LOST",
        "REACT_S",
        "KSM_MIB",
        "KSM%",
        "PEAK_MIB",
        "PAGING_S",
        "KSMD%",
        "KSWAPD%",
        "CPU%",
        "CAPCPU%",
        "RSS_MIB"
    );
    for name in order {
        let o = &results[name];
        println!(
            "{:<14} {:>11.0} {:>6} {:>9} {:>9} {:>6} {:>9} {:>4} {:>5} {:>9} {:>8} {:>5.1} {:>9} {:>8.0} {:>6.1} {:>7.1} {:>7.2} {:>7.2} {:>7}",
            name,
            o.needy_throughput,
            ratio(o.needy_throughput_ratio),
            ratio(o.total_throughput_ratio),
            o.host_swap_out_mib,
            o.zswap_out_mib,
            o.guest_swap_out_mib,
            o.guest_oom_kills,
            o.vms_lost,
            match o.reaction_s {
                Some(r) => format!("{r:.0}"),
                None if by_agent => "never".into(),
                None => "-".into(),
            },
            o.ksm_saved_mib,
            o.ksm_saved_pct,
            o.peak_host_used_mib,
            o.paging_with_room_s.values().sum::<f64>(),
            o.ksmd_cpu_pct,
            o.kswapd_cpu_pct,
            o.daemon_cpu_pct,
            o.cap_reclaim_cpu_pct,
            o.daemon_peak_rss_mib
        );
    }
    print_vm_ratios(order, results);
    print_clients(order, results);
}

/// Each VM's throughput as a ratio to the same VM's on the unconstrained host.
fn print_vm_ratios(order: &[String], results: &BTreeMap<String, Outcome>) {
    let vms: Vec<&String> = results
        .get(REFERENCE)
        .map(|r| r.vm_throughput.keys().collect())
        .unwrap_or_default();
    println!("each VM's throughput, as a ratio to unconstrained");
    print!("{:<14}", "POLICY");
    for vm in &vms {
        print!(" {vm:>8}");
    }
    println!();
    for name in order.iter().filter(|n| n.as_str() != REFERENCE) {
        print!("{name:<14}");
        for vm in &vms {
            print!(
                " {:>8}",
                ratio(results[name].vm_throughput_ratio.get(*vm).copied())
            );
        }
        println!();
    }
}

/// Each client's run in its own units, and as ratios to the unconstrained host's.
fn print_clients(order: &[String], results: &BTreeMap<String, Outcome>) {
    if results.values().all(|o| o.clients.is_empty()) {
        return;
    }
    println!("each client: requests (or transactions) per second and latency, their ratios to unconstrained, and its windows with no answer");
    println!(
        "{:<14} {:<8} {:<16} {:>10} {:>6} {:>8} {:>8} {:>9} {:>6}",
        "POLICY", "VM", "CLIENT", "REQ/S", "RATIO", "P50_MS", "P99_MS", "P99_RATIO", "FAILED"
    );
    for name in order {
        for (vm, c) in &results[name].clients {
            println!(
                "{:<14} {:<8} {:<16} {:>10.0} {:>6} {:>8.2} {:>8.2} {:>9} {:>6}",
                name,
                vm,
                c.tool,
                c.summary.requests_per_s,
                ratio(c.requests_ratio),
                c.summary.p50_ms,
                c.summary.p99_ms,
                ratio(c.p99_ratio),
                c.failed_windows
            );
        }
    }
    for name in order {
        for (vm, c) in &results[name].clients {
            if let Some(error) = &c.load_error {
                println!("{name}: {vm}'s data set did not load: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_runs_the_scenario_as_it_would_on_a_host_of_its_own() {
        let (_, config) = load("two-vm", None).unwrap();
        let whole_machine = Size::mib(24 * 1024);
        let reference = run_config(&config, None, whole_machine);
        assert_eq!(reference.scheduler.policy, PolicyName::Static);
        assert_eq!(
            (reference.host.budget, reference.host.swap),
            (Budget::Fixed(whole_machine), Size::ZERO)
        );
        let db = reference.vms.iter().find(|v| v.name == "db").unwrap();
        assert_eq!(
            db.memory,
            Size::mib(768),
            "booted with the most it may have"
        );
        let ksmtuned = run_config(&config, Some(Peer::Ksmtuned), whole_machine);
        assert_eq!(ksmtuned.scheduler.policy, PolicyName::Manual);
        assert_eq!(ksmtuned.host.budget, config.host.budget);
        let ours = run_config(&config, Some(Peer::Policy(PolicyName::Ours)), whole_machine);
        assert_eq!(ours.scheduler.policy, PolicyName::Ours);
        assert_eq!(ours.host.cgroup, "memvisor-bench");
    }

    #[test]
    fn peers_are_the_compared_policies_and_ksmtuned() {
        assert_eq!("ksmtuned".parse(), Ok(Peer::Ksmtuned));
        assert_eq!("mom".parse(), Ok(Peer::Policy(PolicyName::Mom)));
        let e = "manual".parse::<Peer>().unwrap_err();
        assert!(e.contains("unknown policy 'manual'"), "{e}");
    }

    fn samples(points: &[(f64, bool, u64)]) -> Vec<WorkSample> {
        points
            .iter()
            .map(|&(at_s, in_step, pages)| WorkSample {
                at_s,
                in_step,
                pages,
            })
            .collect()
    }

    #[test]
    fn a_guest_stalled_between_reports_counts_as_making_no_progress() {
        // 1,000 pages/s, then a 4 s stall in which no report arrives, then 1,000 pages/s again.
        let stalled = samples(&[
            (0.0, true, 0),
            (1.0, true, 1_000),
            (2.0, true, 1_000),
            (3.0, true, 1_000),
            (4.0, true, 1_000),
            (5.0, true, 1_000),
            (6.0, true, 2_000),
        ]);
        assert_eq!(step_throughput(&stalled), 2_000.0 / 6.0);
    }

    #[test]
    fn only_time_spent_in_the_measured_step_counts() {
        // A cache step moves 5,000 pages/s before and after; the touch step 1,000 pages/s.
        let turns = samples(&[
            (0.0, false, 0),
            (1.0, false, 5_000),
            (2.0, true, 6_000),
            (3.0, true, 7_000),
            (4.0, true, 8_000),
            (5.0, false, 13_000),
        ]);
        assert_eq!(step_throughput(&turns), 1_000.0);
        assert_eq!(step_throughput(&turns[..2]), 0.0);
    }

    #[test]
    fn paging_counts_beyond_the_grace_and_only_while_the_host_has_room() {
        let vm = |pages: u64, paging: bool| {
            let mut v: VmStatus = serde_json::from_value(serde_json::json!({
                "name": "db", "state": "running", "origin": "launched", "memory_mib": 512,
                "max_mib": 768, "reservation_mib": 0, "limit_mib": 768, "shares": 1000
            }))
            .unwrap();
            v.workload_pages = Some(pages);
            v.workload_phase = Some("touch".into());
            v.guest_swap_out_mib_s = Some(if paging { 28.0 } else { 0.0 });
            v
        };
        let mut tally = Tally::default();
        // 8 s paging with room, 3 s paging on a full host, 2 s paging with room again.
        for t in 0..13u64 {
            tally.sample(&vm(t * 100, t != 12), Some("touch"), !(8..11).contains(&t));
        }
        let mut out = Outcome::default();
        let reference = Outcome {
            vm_throughput: [("db".to_string(), 200.0)].into(),
            total_throughput: 200.0,
            ..Outcome::default()
        };
        tally.finish(12.0, Some(&reference), &mut out);
        assert_eq!(out.paging_with_room_s["db"], 3.0);
        assert_eq!(out.vm_throughput["db"], 100.0);
        assert_eq!(out.vm_throughput_ratio["db"], 0.5);
        assert_eq!(out.total_throughput_ratio, Some(0.5));
    }

    #[test]
    fn only_steps_that_keep_working_are_throughput() {
        let vm = |name: &str, phase: &str, pages: u64| {
            let mut v: VmStatus = serde_json::from_value(serde_json::json!({
                "name": name, "state": "running", "origin": "launched", "memory_mib": 512,
                "max_mib": 512, "reservation_mib": 0, "limit_mib": 512, "shares": 1000
            }))
            .unwrap();
            v.workload_pages = Some(pages);
            v.workload_phase = Some(phase.into());
            v
        };
        let mut tally = Tally::default();
        // `holder` loads 1,000 pages and holds them; `waker` loads, idles, then touches;
        // `reader` reads its files round and round.
        let readings = [
            (("hold", 400), ("hold", 400), 0),
            (("hold", 1_000), ("hold", 1_000), 100),
            (("hold", 1_000), ("idle", 1_000), 200),
            (("hold", 1_000), ("touch", 1_500), 300),
            (("hold", 1_000), ("touch", 2_500), 400),
            (("hold", 1_000), ("touch", 3_500), 500),
        ];
        for ((hold_phase, held), (wake_phase, woke), read) in readings {
            tally.sample(&vm("holder", hold_phase, held), Some("touch"), true);
            tally.sample(&vm("waker", wake_phase, woke), Some("touch"), true);
            tally.sample(&vm("reader", "cache", read), Some("touch"), true);
        }
        let reference = Outcome {
            vm_throughput: [
                ("holder".to_string(), 0.0),
                ("waker".to_string(), 100.0),
                ("reader".to_string(), 100.0),
            ]
            .into(),
            total_throughput: 200.0,
            ..Outcome::default()
        };
        let mut out = Outcome::default();
        tally.finish(10.0, Some(&reference), &mut out);
        assert_eq!(out.vm_throughput["holder"], 0.0);
        assert_eq!(out.vm_throughput["waker"], 200.0);
        assert_eq!(out.vm_throughput["reader"], 50.0);
        assert!(!out.vm_throughput_ratio.contains_key("holder"));
        assert_eq!(out.vm_throughput_ratio["waker"], 2.0);
        assert_eq!(out.vm_throughput_ratio["reader"], 0.5);
        assert_eq!(out.total_throughput_ratio, Some(1.25));
    }

    #[test]
    fn the_median_round_is_shown_with_the_worst_round_s_losses() {
        let round = |ratio: f64| Outcome {
            total_throughput_ratio: Some(ratio),
            ..Outcome::default()
        };
        let lost = Outcome {
            vms_lost: 1,
            ..round(0.9)
        };
        let shown = median(vec![lost, round(0.2), round(0.5)]);
        assert_eq!(shown.total_throughput_ratio, Some(0.5));
        assert_eq!(shown.vms_lost, 1, "a VM lost in any round shows");
        assert_eq!(shown.guest_oom_kills, 0);
        assert_eq!(median(vec![round(0.7)]).total_throughput_ratio, Some(0.7));
    }

    const BUILT_DEBIAN: &str = "/var/cache/memvisor/debian/debian.qcow2";

    #[test]
    fn shipped_scenarios_load_and_a_bad_cpu_quota_is_named() {
        for (name, _) in SCENARIOS {
            load(name, Some(Path::new(BUILT_DEBIAN))).unwrap();
        }
        let err = load("seed-redis", None).unwrap_err().to_string();
        assert!(err.contains("run 'memvisor image debian'"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        let seed = SCENARIOS[0]
            .1
            .replace("cpu_per_vm = 0.6", "cpu_per_vm = -1");
        std::fs::write(&file, seed).unwrap();
        let err = load(file.to_str().unwrap(), Some(Path::new(BUILT_DEBIAN)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cpu_per_vm must be a positive number"),
            "{err}"
        );
    }

    /// Runs real redis-benchmark against a port nothing listens on: under a policy the time
    /// counts as failed windows, on the unconstrained host the bench ends.
    #[tokio::test]
    async fn a_server_that_does_not_answer_is_measured_under_a_policy_and_ends_the_reference() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = tools::ClientSpec {
            vm: "vm3".into(),
            tool: tools::Tool::RedisBenchmark,
            port: 6379,
            load: None,
            records: None,
            run: Some("-t get".into()),
            from_s: 0,
            for_s: None,
        };
        let scratch = tempfile::tempdir().unwrap();
        let run = |must_answer| {
            let scratch = scratch.path().to_path_buf();
            run_client(spec.clone(), "-t get".into(), port, 2, scratch, must_answer)
        };
        let starved = run(false).await.unwrap();
        assert!(starved.failed_windows >= 1, "{starved:?}");
        assert!(starved.windows.iter().all(|w| w.failed && w.requests == 0));
        let waited: f64 = starved.windows.iter().map(|w| w.seconds).sum();
        assert!(waited >= 2.0, "{starved:?}");
        let summary = tools::summarize(&starved.windows);
        assert_eq!(summary.requests_per_s, 0.0);
        assert!(summary.p99_ms >= 1000.0, "{summary:?}");
        let err = run(true).await.unwrap_err().to_string();
        assert!(err.contains(&format!("-p {port}")), "{err}");
    }

    #[test]
    fn the_report_draws_each_measured_client_s_requests_and_p99_per_policy() {
        let (bench, _) = load("seed-redis", Some(Path::new(BUILT_DEBIAN))).unwrap();
        let window = |at_s: f64, requests: u64, p99_ms: f64| tools::Window {
            at_s,
            seconds: 5.0,
            requests,
            p50_ms: 0.5,
            p99_ms,
            max_ms: 2.0 * p99_ms,
            failed: false,
        };
        let with_client = |windows: Vec<tools::Window>| Outcome {
            clients: BTreeMap::from([(
                "vm3".to_string(),
                ClientOutcome {
                    windows,
                    ..ClientOutcome::default()
                },
            )]),
            ..Outcome::default()
        };
        let results = BTreeMap::from([
            (
                REFERENCE.to_string(),
                with_client(vec![window(0.0, 15_000, 1.0)]),
            ),
            (
                "ours".to_string(),
                with_client(vec![window(0.0, 10_000, 2.0), window(5.0, 5_000, 40.0)]),
            ),
        ]);
        let order = vec![REFERENCE.to_string(), "ours".to_string()];
        let charts = charts_across_policies("seed-redis", &bench, &order, &results);
        // Pages/s only where memvisor's agent measures; vm1's and vm2's clients only loaded.
        let files: Vec<&str> = charts.iter().map(|c| c.file.as_str()).collect();
        assert_eq!(files, ["vm3-requests", "vm3-p99"]);
        assert_eq!(charts[0].runs[0], (REFERENCE.into(), vec![(0.0, 3000.0)]));
        assert_eq!(
            charts[1].runs[1],
            ("ours".into(), vec![(0.0, 2.0), (5.0, 40.0)])
        );
        assert_eq!(charts[1].y_desc, "ms");
    }

    #[test]
    fn a_client_that_cannot_reach_its_server_or_measures_nothing_is_named() {
        let (bench, config) = load("seed-redis", Some(Path::new(BUILT_DEBIAN))).unwrap();
        assert_eq!(host_port(&config, &bench.client[0]), Ok(26379));
        assert_eq!(config.vms[2].disk.as_deref(), Some(Path::new(BUILT_DEBIAN)));
        let broken = |edit: &dyn Fn(&mut BenchSection, &mut Config)| {
            let (mut bench, mut config) = (bench.clone(), config.clone());
            edit(&mut bench, &mut config);
            check_clients(&bench, &config).unwrap_err()
        };
        let err = broken(&|_, c| c.vms[2].forward.clear());
        assert!(err.contains("port 6379 is not forwarded"), "{err}");
        let err = broken(&|b, _| b.client[0].vm = "vm9".into());
        assert!(err.contains("no vm vm9"), "{err}");
        let err = broken(&|b, _| b.client.retain(|c| c.vm != "vm3"));
        assert!(err.contains("needy vm vm3 is measured by nothing"), "{err}");
        let err = broken(&|b, _| b.client[1] = b.client[0].clone());
        assert!(err.contains("two clients"), "{err}");
        let err = broken(&|b, _| b.measure = Some("touch".into()));
        assert!(err.contains("measures by one of them"), "{err}");
        let err = broken(&|b, _| b.client[0].run = None);
        assert!(err.contains("needy vm vm3 is measured by nothing"), "{err}");
        let err = broken(&|b, _| b.client[0].from_s = 500);
        assert!(err.contains("past the measurement"), "{err}");
        let err = broken(&|b, _| b.client[0].load = Some("-t set -d 1024".into()));
        assert!(err.contains("one value under every key"), "{err}");
        let err = broken(&|b, _| b.client[1].records = b.client[0].records);
        assert!(err.contains("records are a redis data set"), "{err}");
        let err = broken(&|b, _| b.client[0].records.as_mut().unwrap().keys = 0);
        assert!(err.contains("records.keys = 0"), "{err}");
        let err = broken(&|b, _| b.client[0].records.as_mut().unwrap().size = Size::bytes(8));
        assert!(err.contains("records.size = 8"), "{err}");
        let err = broken(&|b, _| b.client[0].run = Some("-t get -r 600000 -c 4".into()));
        assert!(err.contains("give -r 550000"), "{err}");
        let err = broken(&|b, _| b.client[0].run = Some("-t get -c 4".into()));
        assert!(err.contains("add -r 550000"), "{err}");
    }
}
