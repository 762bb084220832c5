//! Real clients of real servers: redis-benchmark and pgbench, run from the host against a disk
//! guest's forwarded port, read in the units operators use (requests per second, and p50 and
//! p99 latency in milliseconds). A run is cut into windows of a few seconds, each its own
//! client process, so that the bench sees the server slow down and recover over time.

use memvisor_core::{content, Size};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} is not installed on the host: apt-get install {package}")]
    NotInstalled {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{vm}'s {tool} server does not answer on 127.0.0.1:{port}: {detail}; is the port forwarded (forward = [\"{port}:GUEST\"]) and its server started by the guest's init?")]
    NoServer {
        vm: String,
        tool: &'static str,
        port: u16,
        detail: String,
    },
    #[error("{vm}: `{command}` failed: {detail}")]
    Failed {
        vm: String,
        command: String,
        detail: String,
    },
    #[error("{vm}: `{command}` printed nothing the bench can read: {detail}")]
    Unreadable {
        vm: String,
        command: String,
        detail: String,
    },
}

/// The client tool, which also says how its output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    RedisBenchmark,
    Pgbench,
}

impl Tool {
    pub fn command(self) -> &'static str {
        match self {
            Tool::RedisBenchmark => "redis-benchmark",
            Tool::Pgbench => "pgbench",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Tool::RedisBenchmark => "redis-tools",
            Tool::Pgbench => "postgresql-client",
        }
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.command())
    }
}

/// One `[[bench.client]]` of a scenario: a client tool driving the server of one VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The VM whose server it drives; one of its `forward` ports reaches `port`.
    pub vm: String,
    pub tool: Tool,
    /// The server's port inside the guest (6379 for redis, 5432 for PostgreSQL).
    pub port: u16,
    /// pgbench's arguments of a run made once after boot, before measuring, that loads the
    /// data set: `-i -s 40 -I dtGvp`.
    #[serde(default)]
    pub load: Option<String>,
    /// redis's data set, written once after boot, before measuring.
    #[serde(default)]
    pub records: Option<Records>,
    /// Arguments of every measured window; the bench adds the server's address, the output
    /// format, and (pgbench) the window's duration: `-t get -r 550000 -c 4` for redis, `-S -c
    /// 4` for pgbench. None: the client only loads a data set, which the VM then holds idle.
    #[serde(default)]
    pub run: Option<String>,
    /// Seconds into the measurement when the client begins (0: at once).
    #[serde(default)]
    pub from_s: u64,
    /// Seconds it runs (None: to the end of the measurement).
    #[serde(default)]
    pub for_s: Option<u64>,
}

/// A redis data set the bench writes itself through `redis-cli --pipe`: `keys` values of `size`
/// bytes under redis-benchmark's own key names (`key:` and 12 digits), so that a run's `-r
/// KEYS` reads every one of them. Each value is unique and made as `memvisor_core::content`
/// makes page cache (text, numbers, binary fields), because redis-benchmark's SET writes one
/// value under every key, pages KSM would merge whole.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    pub keys: u64,
    pub size: Size,
}

impl Records {
    /// The largest value `size` may give: redis takes up to 512 MiB, the bench keeps each
    /// record a fraction of a guest.
    pub const MAX_SIZE: Size = Size::mib(1);

    /// The name redis-benchmark's `key:__rand_int__` takes for `index`.
    fn key(index: u64) -> String {
        format!("key:{index:012}")
    }

    /// Appends to `out` the SET of record `index` of a data set seeded by `salt`, in RESP.
    fn append_set(&self, salt: u64, index: u64, out: &mut Vec<u8>) {
        let key = Self::key(index);
        let size = self.size.as_bytes() as usize;
        out.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${size}\r\n", key.len()).as_bytes(),
        );
        let start = out.len();
        out.resize(start + size, 0);
        content::fill(&mut out[start..], content::tag(salt, index), content::FILES);
        out.extend_from_slice(b"\r\n");
    }
}

/// What a client did in one window and how fast the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Seconds into the measurement when the window began.
    pub at_s: f64,
    pub seconds: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The client got no answer in time: the server was stopped, stalled or gone.
    pub failed: bool,
}

impl Window {
    /// A window in which the client got no answer: as long as it lasted, no request served,
    /// and one request that waited all of it.
    pub fn failed(at_s: f64, seconds: f64) -> Window {
        let waited_ms = seconds * 1000.0;
        Window {
            at_s,
            seconds,
            requests: 0,
            p50_ms: waited_ms,
            p99_ms: waited_ms,
            max_ms: waited_ms,
            failed: true,
        }
    }
}

/// A client's whole run in the operator's units.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Summary {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Requests per second over every window, and the latency percentiles of all their requests.
/// A window says only its p50, p99 and slowest request: its latencies are taken to spread
/// evenly up to its p50, from there to its p99, and from there to its slowest, so that a slow
/// window weighs by its requests. A failed window counts as one request that waited all of it,
/// so that a server that stops answering shows in the run's latency, not only in its rate.
pub fn summarize(windows: &[Window]) -> Summary {
    let requests: u64 = windows.iter().map(|w| w.requests).sum();
    let seconds: f64 = windows.iter().map(|w| w.seconds).sum();
    let weight = |w: &Window| if w.failed { 1.0 } else { w.requests as f64 };
    let weights: f64 = windows.iter().map(weight).sum();
    if weights == 0.0 || seconds <= 0.0 {
        return Summary::default();
    }
    let below = |x: f64| -> f64 { windows.iter().map(|w| weight(w) * share_below(w, x)).sum() };
    let highest = windows.iter().map(|w| w.max_ms).fold(0.0, f64::max);
    let quantile = |q: f64| {
        let wanted = q * weights;
        let (mut low, mut high) = (0.0, highest);
        for _ in 0..60 {
            let mid = (low + high) / 2.0;
            if below(mid) >= wanted {
                high = mid;
            } else {
                low = mid;
            }
        }
        high
    };
    Summary {
        requests_per_s: requests as f64 / seconds,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
    }
}

/// The share of a window's requests that took at most `x` ms (see `summarize`).
fn share_below(w: &Window, x: f64) -> f64 {
    let p50 = w.p50_ms;
    let p99 = w.p99_ms.max(p50);
    let max = w.max_ms.max(p99);
    if x >= max {
        1.0
    } else if x >= p99 {
        0.99 + 0.01 * (x - p99) / (max - p99)
    } else if x >= p50 {
        0.5 + 0.49 * (x - p50) / (p99 - p50)
    } else {
        0.5 * x / p50
    }
}

/// One test's row of `redis-benchmark --csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedisRow {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The rows of `redis-benchmark --csv`, one per test, read by the column names of its header
/// (redis-benchmark 6.2 and later; older ones print no latency percentiles).
pub fn parse_redis_csv(text: &str) -> Result<Vec<RedisRow>, String> {
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let header = lines
        .next()
        .ok_or("no CSV header: redis-benchmark 6.2 or later prints one with --csv")?;
    let columns: Vec<&str> = fields(header);
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or(format!("no {name} column in {header}"))
    };
    let (rps, p50, p99, max) = (
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
        column("max_latency_ms")?,
    );
    let rows: Vec<RedisRow> = lines
        .map(|line| {
            let values = fields(line);
            let number = |i: usize| {
                values
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or(format!("unreadable row {line}"))
            };
            Ok(RedisRow {
                requests_per_s: number(rps)?,
                p50_ms: number(p50)?,
                p99_ms: number(p99)?,
                max_ms: number(max)?,
            })
        })
        .collect::<Result<_, String>>()?;
    if rows.is_empty() {
        return Err("a header and no result".into());
    }
    Ok(rows)
}

fn fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"'))
        .collect()
}

/// Latencies in ms of the transactions in pgbench's per-transaction log (`-l`): lines of
/// `client_id txn_no time_us script_no epoch_s epoch_us`; failed and skipped ones say so in
/// the third field and are left out.
pub fn pgbench_latencies(log: &str) -> Result<Vec<f64>, String> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| match line.split_whitespace().nth(2) {
            Some("failed" | "skipped" | "serialization" | "deadlock") => None,
            Some(us) => Some(
                us.parse::<f64>()
                    .map(|us| us / 1000.0)
                    .map_err(|_| format!("unreadable line {line}")),
            ),
            None => Some(Err(format!("unreadable line {line}"))),
        })
        .collect()
}

/// The `q` quantile of `values` (sorted in place), nearest rank.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The arguments that reach `host_port`'s server, before the spec's own.
fn address(tool: Tool, host_port: u16) -> Vec<String> {
    let mut args = vec![
        "-h".to_string(),
        "127.0.0.1".to_string(),
        "-p".to_string(),
        host_port.to_string(),
    ];
    if tool == Tool::Pgbench {
        args.extend(["-U".to_string(), "postgres".to_string()]);
    }
    args
}

/// Runs `program` (one of `tool`'s package) with `args`, killed past `limit`: redis-benchmark
/// 7.0 spins forever on a refused connection.
async fn run_for(
    vm: &str,
    tool: Tool,
    program: &'static str,
    args: &[String],
    limit: Duration,
) -> Result<String, ToolError> {
    let process = Process::spawn(vm, tool, program, args, Stdio::null())?;
    process.finish(limit).await
}

/// A client process and how its failures are named.
struct Process {
    vm: String,
    command: String,
    child: tokio::process::Child,
}

impl Process {
    fn spawn(
        vm: &str,
        tool: Tool,
        program: &'static str,
        args: &[String],
        stdin: Stdio,
    ) -> Result<Process, ToolError> {
        let command = format!("{program} {}", args.join(" "));
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ToolError::NotInstalled {
                    tool: program,
                    package: tool.package(),
                },
                _ => ToolError::Failed {
                    vm: vm.to_string(),
                    command: command.clone(),
                    detail: e.to_string(),
                },
            })?;
        Ok(Process {
            vm: vm.to_string(),
            command,
            child,
        })
    }

    /// Its standard output once it ends with success, killed past `limit`.
    async fn finish(self, limit: Duration) -> Result<String, ToolError> {
        self.finish_feeding(limit, std::future::ready(Ok(()))).await
    }

    /// Its standard output once it ends with success, killed past `limit`, while `input` writes
    /// its standard input: a child blocked on its full output pipes stops reading its input.
    async fn finish_feeding(
        self,
        limit: Duration,
        input: impl std::future::Future<Output = std::io::Result<()>>,
    ) -> Result<String, ToolError> {
        let Process { vm, command, child } = self;
        let failed = |detail| ToolError::Failed {
            vm: vm.clone(),
            command: command.clone(),
            detail,
        };
        let both = async { tokio::join!(input, child.wait_with_output()) };
        let (fed, out) = tokio::time::timeout(limit, both)
            .await
            .map_err(|_| failed(format!("no end within {limit:?}")))?;
        let out = out.map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(format!("{}: {}", out.status, last_words(&out))));
        }
        fed.map_err(|e| failed(format!("writing its input: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The last lines a failed client wrote to stderr, and its last line of output (redis-cli
/// --pipe writes every error reply, then counts them on stdout).
fn last_words(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let mut words = lines[lines.len().saturating_sub(5)..].join("; ");
    if let Some(last) = stdout.trim().lines().last() {
        words = format!("{words} ({last})");
    }
    words
}

/// Checks the server answers through `host_port`.
pub async fn check(spec: &ClientSpec, host_port: u16) -> Result<(), ToolError> {
    let (probe, args) = match spec.tool {
        Tool::RedisBenchmark => ("redis-cli", vec!["ping".to_string()]),
        Tool::Pgbench => ("pg_isready", Vec::new()),
    };
    let mut full = address(spec.tool, host_port);
    full.extend(args);
    match run_for(&spec.vm, spec.tool, probe, &full, Duration::from_secs(10)).await {
        Ok(_) => Ok(()),
        Err(e @ ToolError::NotInstalled { .. }) => Err(e),
        Err(e) => Err(ToolError::NoServer {
            vm: spec.vm.clone(),
            tool: spec.tool.command(),
            port: host_port,
            detail: e.to_string(),
        }),
    }
}

/// The longest a data set may take: one larger than the VM's share loads through its guest's
/// swap under TCG.
const LOAD_LIMIT: Duration = Duration::from_secs(1800);

/// Loads the spec's data set, if it has one.
pub async fn load(spec: &ClientSpec, host_port: u16) -> Result<(), ToolError> {
    if let Some(records) = spec.records {
        return load_records(spec, host_port, records).await;
    }
    let Some(load) = &spec.load else {
        return Ok(());
    };
    let mut args = address(spec.tool, host_port);
    args.extend(load.split_whitespace().map(str::to_string));
    if spec.tool == Tool::Pgbench {
        args.push("postgres".into());
    }
    run_for(&spec.vm, spec.tool, spec.tool.command(), &args, LOAD_LIMIT)
        .await
        .map(drop)
}

/// Writes `records` into the redis server through `redis-cli --pipe`, redis's own way of mass
/// insertion, generated as it goes.
async fn load_records(
    spec: &ClientSpec,
    host_port: u16,
    records: Records,
) -> Result<(), ToolError> {
    use tokio::io::AsyncWriteExt;
    let mut args = address(spec.tool, host_port);
    // The bench's own limit bounds the wait for the last reply, from a guest paging as it loads.
    args.extend(["--pipe", "--pipe-timeout", "0"].map(String::from));
    let mut process = Process::spawn(&spec.vm, spec.tool, "redis-cli", &args, Stdio::piped())?;
    let mut stdin = process
        .child
        .stdin
        .take()
        .expect("spawned with a piped stdin");
    // Seeded by the VM's name, so that two servers hold different data.
    let salt = spec
        .vm
        .bytes()
        .fold(0u64, |h, b| content::tag(h, u64::from(b)));
    let feed = async move {
        const BATCH_BYTES: usize = 1 << 20;
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        for index in 0..records.keys {
            records.append_set(salt, index, &mut batch);
            if batch.len() >= BATCH_BYTES || index + 1 == records.keys {
                stdin.write_all(&batch).await?;
                batch.clear();
            }
        }
        // The end of its input is redis-cli's cue to wait for the last reply.
        drop(stdin);
        Ok::<(), std::io::Error>(())
    };
    let command = process.command.clone();
    // redis-cli ends with failure on any error reply, so what it printed is all replies.
    let out = process.finish_feeding(LOAD_LIMIT, feed).await?;
    match pipe_replies(&out) {
        Some(replies) if replies == records.keys => Ok(()),
        Some(replies) => Err(ToolError::Failed {
            vm: spec.vm.clone(),
            command,
            detail: format!("{replies} replies to {} SETs", records.keys),
        }),
        None => Err(ToolError::Unreadable {
            vm: spec.vm.clone(),
            command,
            detail: format!("no line `errors: 0, replies: N` in {:?}", out.trim()),
        }),
    }
}

/// The replies `redis-cli --pipe` counted, from its last line (`errors: 0, replies: N`).
fn pipe_replies(out: &str) -> Option<u64> {
    let last = out.lines().rev().find(|l| l.starts_with("errors:"))?;
    last.split(',')
        .find_map(|part| part.trim().strip_prefix("replies:"))?
        .trim()
        .parse()
        .ok()
}

/// When a window runs and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Seconds into the measurement.
    pub at_s: f64,
    /// How long it should last.
    pub seconds: u64,
    /// redis-benchmark runs a number of requests, not a time: sized from the last window's
    /// rate.
    pub requests: u64,
    /// When its client is killed and the window counted as failed.
    pub limit: Duration,
}

/// Runs one window with the arguments `run` and reads it.
pub async fn window(
    spec: &ClientSpec,
    run: &str,
    host_port: u16,
    slot: Slot,
    scratch: &Path,
) -> Result<Vec<Window>, ToolError> {
    let mut args = address(spec.tool, host_port);
    match spec.tool {
        Tool::RedisBenchmark => {
            args.extend(["--csv".into(), "-n".into(), slot.requests.to_string()]);
            args.extend(run.split_whitespace().map(str::to_string));
            redis_window(spec, &args, slot).await
        }
        Tool::Pgbench => {
            let prefix = scratch.join(format!("pgbench-{}", spec.vm));
            args.extend([
                "-T".into(),
                slot.seconds.to_string(),
                "-l".into(),
                format!("--log-prefix={}", prefix.display()),
            ]);
            args.extend(run.split_whitespace().map(str::to_string));
            args.push("postgres".into());
            pgbench_window(spec, &args, slot, &prefix).await
        }
    }
}

fn unreadable(spec: &ClientSpec, args: &[String], detail: String) -> ToolError {
    ToolError::Unreadable {
        vm: spec.vm.clone(),
        command: format!("{} {}", spec.tool, args.join(" ")),
        detail,
    }
}

/// One window per test: redis-benchmark's `-t` may name several, run one after the other.
async fn redis_window(
    spec: &ClientSpec,
    args: &[String],
    slot: Slot,
) -> Result<Vec<Window>, ToolError> {
    let text = run_for(&spec.vm, spec.tool, "redis-benchmark", args, slot.limit).await?;
    let rows = parse_redis_csv(&text).map_err(|e| unreadable(spec, args, e))?;
    let mut begins = slot.at_s;
    Ok(rows
        .into_iter()
        .map(|row| {
            let seconds = if row.requests_per_s > 0.0 {
                slot.requests as f64 / row.requests_per_s
            } else {
                0.0
            };
            let w = Window {
                at_s: begins,
                seconds,
                requests: slot.requests,
                p50_ms: row.p50_ms,
                p99_ms: row.p99_ms,
                max_ms: row.max_ms,
                failed: false,
            };
            begins += seconds;
            w
        })
        .collect())
}

/// One window of `-T` seconds, read from the per-transaction logs under `prefix`.
async fn pgbench_window(
    spec: &ClientSpec,
    args: &[String],
    slot: Slot,
    prefix: &Path,
) -> Result<Vec<Window>, ToolError> {
    // A window killed at its limit leaves its logs: they are not the next one's.
    remove_logs(prefix);
    let started = Instant::now();
    run_for(&spec.vm, spec.tool, "pgbench", args, slot.limit).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for log in logs_with_prefix(prefix) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        latencies.extend(pgbench_latencies(&text).map_err(|e| unreadable(spec, args, e))?);
    }
    remove_logs(prefix);
    Ok(vec![Window {
        at_s: slot.at_s,
        seconds: elapsed.min(slot.seconds as f64).max(1.0),
        requests: latencies.len() as u64,
        p50_ms: percentile(&mut latencies, 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
        max_ms: percentile(&mut latencies, 1.0),
        failed: false,
    }])
}

fn remove_logs(prefix: &Path) {
    for log in logs_with_prefix(prefix) {
        let _ = std::fs::remove_file(log);
    }
}

/// pgbench writes one log per thread: PREFIX.PID, and PREFIX.PID.N for the others.
fn logs_with_prefix(prefix: &Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(name)) = (prefix.parent(), prefix.file_name()) else {
        return Vec::new();
    };
    let start = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&start))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sets_of_unique_values_under_redis_benchmark_s_key_names() {
        let records = Records {
            keys: 3,
            size: Size::bytes(1024),
        };
        // redis-benchmark writes `key:__rand_int__` as 12 digits, zero-padded
        // (randomizeClientKey in redis-benchmark.c), so `-r 3` reads these three.
        assert_eq!(Records::key(7), "key:000000000007");
        let set = |salt, index| {
            let mut out = Vec::new();
            records.append_set(salt, index, &mut out);
            out
        };
        let first = set(1, 0);
        let head = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000000\r\n$1024\r\n";
        assert_eq!(&first[..head.len()], head);
        assert_eq!(first.len(), head.len() + 1024 + 2);
        assert!(first.ends_with(b"\r\n"));
        let value = |out: &[u8]| out[head.len()..head.len() + 1024].to_vec();
        assert_ne!(value(&first), value(&set(1, 1)), "two keys hold one value");
        assert_ne!(
            value(&first),
            value(&set(2, 0)),
            "two servers hold one value"
        );
        assert_eq!(first, set(1, 0), "a data set is the same in every run");
        // Values are like files' content, not runs of one byte.
        let distinct: std::collections::BTreeSet<u8> = value(&first).into_iter().collect();
        assert!(distinct.len() > 64, "{} distinct bytes", distinct.len());
    }

    #[test]
    fn redis_cli_pipe_s_count_of_replies_is_read() {
        let out = "All data transferred. Waiting for the last reply...\nLast reply received from server.\nerrors: 0, replies: 550000\n";
        assert_eq!(pipe_replies(out), Some(550000));
        assert_eq!(pipe_replies("ERR\n"), None);
    }

    #[test]
    fn redis_benchmark_csv_is_read_by_its_header() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"40000.00\",\"0.400\",\"0.080\",\"0.350\",\"0.600\",\"0.900\",\"3.000\"\n\
                    \"GET\",\"81234.57\",\"0.320\",\"0.080\",\"0.303\",\"0.519\",\"0.711\",\"2.103\"\n";
        let row = |requests_per_s, p50_ms, p99_ms, max_ms| RedisRow {
            requests_per_s,
            p50_ms,
            p99_ms,
            max_ms,
        };
        assert_eq!(
            parse_redis_csv(text).unwrap(),
            vec![
                row(40000.0, 0.35, 0.9, 3.0),
                row(81234.57, 0.303, 0.711, 2.103)
            ]
        );
        assert!(parse_redis_csv("").unwrap_err().contains("no CSV header"));
        let header_only = text.lines().next().unwrap();
        assert!(parse_redis_csv(header_only).is_err());
    }

    #[test]
    fn pgbench_logs_give_latencies_and_leave_out_failures() {
        let log = "0 199 2241 0 1175850568 995598\n1 7 failed 0 1175850569 100\n0 200 1500 0 1175850569 2000\n";
        assert_eq!(pgbench_latencies(log).unwrap(), vec![2.241, 1.5]);
        assert!(pgbench_latencies("0 1\n").is_err());
        let mut values = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut values, 0.5), 3.0);
        assert_eq!(percentile(&mut values, 0.99), 5.0);
        assert_eq!(percentile(&mut [], 0.99), 0.0);
    }

    /// 5 s in which the server answered 10,000 requests at its usual speed.
    fn steady(at_s: f64) -> Window {
        Window {
            at_s,
            seconds: 5.0,
            requests: 10_000,
            p50_ms: 0.3,
            p99_ms: 0.7,
            max_ms: 2.0,
            failed: false,
        }
    }

    #[test]
    fn a_stalled_window_shows_in_the_run_s_p99() {
        let windows: Vec<Window> = (0..10).map(|i| steady(5.0 * i as f64)).collect();
        let calm = summarize(&windows);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!(calm.requests_per_s, 2000.0);
        assert!(near(calm.p50_ms, 0.3) && near(calm.p99_ms, 0.7), "{calm:?}");
        // A window where the server stalled: few requests, all of them slow.
        let mut stalled = windows.clone();
        stalled.push(Window {
            at_s: 50.0,
            seconds: 5.0,
            requests: 2_000,
            p50_ms: 40.0,
            p99_ms: 300.0,
            max_ms: 900.0,
            failed: false,
        });
        let slow = summarize(&stalled);
        assert!(slow.requests_per_s < 2000.0);
        assert!(slow.p50_ms < 0.31, "{slow:?}");
        assert!(slow.p99_ms > 30.0, "{slow:?}");
        assert_eq!(summarize(&[]), Summary::default());
    }

    #[test]
    fn a_server_that_stops_answering_shows_in_the_latency_not_only_the_rate() {
        // Once failed over a run that served nothing: the wait is the latency.
        let gone = summarize(&[Window::failed(0.0, 80.0)]);
        assert_eq!(gone.requests_per_s, 0.0);
        assert!((gone.p99_ms - 80_000.0).abs() < 1.0, "{gone:?}");
        // Among windows that served thousands, one failure weighs as one request.
        let once = summarize(&[steady(0.0), Window::failed(5.0, 10.0)]);
        assert_eq!(once.requests_per_s, 10_000.0 / 15.0);
        assert!(once.p99_ms < 1.0, "{once:?}");
    }
}
