//! Command-line interface: argument definitions and what each command does.

use crate::client::{Client, ClientError};
use crate::daemon;
use clap::{Parser, Subcommand};
use hyper::Method;
use memvisor_core::config::{Config, ConfigError};
use memvisor_core::status::{Event, VmState, VmStatus};
use memvisor_guest::image::{self, BuildOptions, ImageError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    #[error("{0}")]
    Other(String),
}

const ABOUT: &str = "Memory manager of a KVM/QEMU host: launches or attaches to QEMU VMs, resizes \
them live through their balloon, and reports what each guest and the host really use.";

const AFTER_HELP: &str = "\
Sizes are binary and need a unit: 512M, 1G, 1536MiB, 1.5G.

Typical session:
  memvisor image build                 # once: kernel, busybox, modules, agent -> initramfs
  memvisor up -f vms.toml              # start the daemon and the VMs the file declares
  memvisor ps                          # one line per VM; --json for scripts
  memvisor balloon vm1 512M            # vm1 keeps 512 MiB, the balloon takes the rest
  memvisor top                         # live esxtop-style screen; events --follow says why
  memvisor down                        # stop the VMs and the daemon, remove the cgroups";

#[derive(Parser, Debug)]
#[command(name = "memvisor", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    /// State directory: the API socket, each VM's disks, sockets and console log.
    #[arg(
        long,
        global = true,
        env = "MEMVISOR_DIR",
        default_value = "/var/lib/memvisor"
    )]
    dir: PathBuf,
    /// Where guest images and downloaded packages are cached.
    #[arg(long, global = true, env = "MEMVISOR_CACHE", default_value = image::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the daemon in the background and the VMs CONFIG declares; returns once they run.
    Up {
        /// TOML file: [host] budget, and [[vm]] tables (see examples/seed.toml).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Seconds to wait for every VM to boot.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Run the daemon in the foreground (what `up` starts; for service managers).
    Daemon {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Stop the launched VMs and the daemon; attached VMs keep running.
    Down,
    /// List the VMs with their memory figures.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// All figures of one VM.
    Stats {
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// Set how much memory VM keeps (QEMU's balloon target): SIZE below its memory inflates.
    Balloon {
        vm: String,
        #[arg(allow_hyphen_values = true)]
        size: String,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped VM.
    Start {
        vm: String,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM (its QEMU quits).
    Stop {
        vm: String,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The VM's serial console.
    Logs {
        vm: String,
        /// How many of the last lines.
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: usize,
    },
    /// Change what the guest agent does, e.g. hold:512M, touch:900M:600M, cache:400M@15s,idle.
    Workload {
        vm: String,
        workload: String,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the guest agent check every page it wrote; exits non-zero on corruption.
    Verify {
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// Manage a QEMU someone else started, through its QMP socket.
    Attach {
        name: String,
        /// The path given to QEMU's -qmp unix:PATH,server=on option.
        #[arg(long)]
        qmp: PathBuf,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Guest image commands.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The seed example, scaled: a 1.5 GiB host, three 1 GiB VMs, scheduled automatically.
    Demo,
    /// Change a VM's reservation, limit, shares or size live, without restarting its guest.
    Set {
        vm: String,
        /// Memory never taken from the VM, e.g. 256M.
        #[arg(long)]
        reserve: Option<String>,
        /// Memory never given to the VM beyond, e.g. 768M.
        #[arg(long)]
        limit: Option<String>,
        /// Relative claim on contended memory (default 1000; 2000 counts double).
        #[arg(long)]
        shares: Option<u32>,
        /// The VM's size now: the balloon below its boot size, virtio-mem above it (needs max).
        #[arg(long)]
        memory: Option<String>,
        /// Print the VM's state as the daemon accepted it, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the daemon did and noticed, and why, oldest first: the scheduler's decisions,
    /// operators' requests, VMs booting, faults (a QEMU lost, a balloon or agent not answering,
    /// QMP hung, host swap gone) and hints at root causes that join guest and host signals (a
    /// balloon too large, host swap, KSM copy-on-write breaks).
    Events {
        /// Keep printing new events as they happen (Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per event and line (with --follow too).
        #[arg(long)]
        json: bool,
    },
    /// Live view of the host and every VM, in the manner of esxtop's memory screen.
    Top {
        /// Column to sort by: NAME, MEMSZ, RESV, LIMIT, SHARES, TARGET, CONSUMED, ACTIVE,
        /// BALLOON, SHARED, HSWAPPED, GFREE, GAVAIL, SWIN/s, SWOUT/s, OVHD.
        #[arg(long, default_value = "CONSUMED")]
        sort: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
    /// Run a QEMU human monitor command on VM (like virsh qemu-monitor-command --hmp), e.g.
    /// "info balloon", "stop", "cont". Logged as an event.
    Monitor { vm: String, command: String },
    /// Follow one guest page through every layer: guest virtual -> guest physical -> host
    /// virtual (QEMU's guest-RAM mapping) -> host physical, with its state at each level.
    Translate {
        vm: String,
        /// held:N (page N of the agent's workload memory), a guest virtual address (the
        /// agent's own, or a kernel address such as 0xfffffe0000000000, resolved by QEMU), or
        /// gpa:ADDRESS for a guest physical one.
        address: String,
        #[arg(long)]
        json: bool,
    },
    /// Which VMs share host frames with which through KSM, in MiB, from the host page map.
    Sharing {
        #[arg(long)]
        json: bool,
    },
    /// The web dashboard's address, with the token that opens it.
    Dashboard,
    /// The OpenAPI 3 description of the daemon's HTTP API (docs/openapi.json is a copy).
    Openapi,
    /// The daemon's figures in Prometheus' text format (what GET /metrics serves).
    Metrics,
    /// Run a scenario under each policy, one after the other, with fresh VMs, and compare.
    Bench {
        /// A scenario name (seed, vdi, burst, idle-anon, turns, wake, reservation, peaks,
        /// many-small, two-vm: see scenarios/) or a scenario file.
        scenario: String,
        /// Policies to compare, comma-separated; ksmtuned is Debian's ksmtuned beside static
        /// balloons, what a stock KVM host runs.
        #[arg(
            long,
            default_value = "ours,static,ksmtuned,proxmox,mom",
            value_delimiter = ','
        )]
        policy: Vec<String>,
        /// Rounds of every policy beside the reference; each policy's median round is shown.
        #[arg(long, default_value_t = 1, value_name = "N")]
        runs: usize,
        #[arg(long)]
        json: bool,
        /// Also write SVG timelines of every run (host, each VM, needy throughput) and an
        /// index.html showing them side by side into this directory.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Build (or find cached) the guest kernel and initramfs.
    Build {
        /// Boot this kernel instead of Debian's.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// lib/modules/RELEASE directory matching --kernel (omit if virtio is built in).
        #[arg(long, requires = "kernel")]
        modules: Option<PathBuf>,
        /// The static guest agent binary (default: memvisor-agent beside memvisor).
        #[arg(long)]
        agent: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn read_config(path: &Path) -> Result<Config, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.into(),
        source,
    })?;
    Config::parse(&text).map_err(|source| CliError::Config {
        path: path.into(),
        source,
    })
}

/// A changed VM's state as the daemon accepted it: whole as JSON, else the line `say` makes.
fn print_accepted(json: bool, status: &VmStatus, say: impl FnOnce(&VmStatus) -> String) {
    if json {
        print_json(status);
    } else {
        println!("{}", say(status));
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("status serializes")
    );
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let client = Client::new(&args.dir);
    match args.command {
        Command::Up { file, timeout } => {
            up(
                &args.dir,
                &args.cache_dir,
                &file,
                Duration::from_secs(timeout),
                false,
            )
            .await?;
            print_table(
                &client
                    .json::<Vec<VmStatus>>(Method::GET, "/v1/vms", None)
                    .await?,
            );
        }
        Command::Daemon { file } => {
            let config = read_config(&file)?;
            let image = image::current(&args.cache_dir)?;
            daemon::run(config, args.dir, image).await?;
        }
        Command::Down => down(&args.dir).await?,
        Command::Set {
            vm,
            reserve,
            limit,
            shares,
            memory,
            json,
        } => {
            let mut change = serde_json::Map::new();
            for (key, value) in [
                ("reservation", reserve),
                ("limit", limit),
                ("memory", memory),
            ] {
                if let Some(v) = value {
                    v.parse::<memvisor_core::Size>()
                        .map_err(|e| CliError::Other(format!("--{key}: {e}")))?;
                    change.insert(key.into(), json!(v));
                }
            }
            if let Some(s) = shares {
                change.insert("shares".into(), json!(s));
            }
            if change.is_empty() {
                return Err(CliError::Other(
                    "nothing to change: give --reserve, --limit, --shares or --memory".into(),
                ));
            }
            let status: VmStatus = client
                .json(
                    Method::PATCH,
                    &format!("/v1/vms/{vm}"),
                    Some(serde_json::Value::Object(change)),
                )
                .await?;
            print_accepted(json, &status, |s| {
                format!(
                    "{vm}: memory {} MiB, reservation {} MiB, limit {} MiB, shares {}",
                    s.memory_mib, s.reservation_mib, s.limit_mib, s.shares
                )
            });
        }
        Command::Events { follow, json } => {
            let mut after = 0;
            loop {
                let events: Vec<Event> = client
                    .json(Method::GET, &format!("/v1/events?after={after}"), None)
                    .await?;
                for e in &events {
                    if json {
                        println!("{}", serde_json::to_string(e).expect("event serializes"));
                    } else {
                        println!("{}", event_line(e));
                    }
                    after = e.seq;
                }
                if !follow {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Bench {
            scenario,
            policy,
            runs,
            json,
            report,
        } => {
            crate::bench::run(
                &args.dir,
                &args.cache_dir,
                &scenario,
                &policy,
                runs,
                json,
                report.as_deref(),
            )
            .await?
        }
        Command::Top { sort, every } => {
            let sort =
                crate::top::Sort::by(&sort).map_err(|e| CliError::Other(format!("--sort: {e}")))?;
            if !(0.1..=3600.0).contains(&every) {
                return Err(CliError::Other(format!(
                    "--every {every}: give seconds between 0.1 and 3600"
                )));
            }
            crate::top::run(&client, sort, Duration::from_secs_f64(every)).await?;
        }
        Command::Monitor { vm, command } => {
            let text = client
                .call(
                    Method::POST,
                    &format!("/v1/vms/{vm}/monitor"),
                    Some(json!({ "command": command })),
                )
                .await?;
            print!("{}", String::from_utf8_lossy(&text));
        }
        Command::Translate { vm, address, json } => {
            address
                .parse::<memvisor_core::translation::GuestAddress>()
                .map_err(|e| CliError::Other(e.to_string()))?;
            let t: memvisor_core::translation::Translation = client
                .json(
                    Method::GET,
                    &format!("/v1/vms/{vm}/translate?address={address}"),
                    None,
                )
                .await?;
            if json {
                print_json(&t);
            } else {
                print_translation(&address, &t);
            }
        }
        Command::Sharing { json } => {
            let m: memvisor_core::sharing::SharingMatrix =
                client.json(Method::GET, "/v1/sharing", None).await?;
            if json {
                print_json(&m);
            } else {
                print_sharing(&m);
            }
        }
        Command::Dashboard => {
            let host: memvisor_core::status::HostStatus =
                client.json(Method::GET, "/v1/host", None).await?;
            let addr = host.api_listen.ok_or_else(|| {
                CliError::Other(
                    "the daemon serves no dashboard: add [api] listen = \"127.0.0.1:8680\" to its config and restart it".into(),
                )
            })?;
            let path = args.dir.join(daemon::TOKEN_FILE);
            let token = std::fs::read_to_string(&path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?;
            println!("http://{addr}/?token={}", token.trim());
        }
        Command::Openapi => println!(
            "{}",
            daemon::api::openapi()
                .to_pretty_json()
                .map_err(|e| CliError::Other(e.to_string()))?
        ),
        Command::Metrics => {
            let text = client.call(Method::GET, "/metrics", None).await?;
            print!("{}", String::from_utf8_lossy(&text));
        }
        Command::Ps { json } => {
            let vms: Vec<VmStatus> = client.json(Method::GET, "/v1/vms", None).await?;
            if json {
                print_json(&vms);
            } else {
                print_table(&vms);
            }
        }
        Command::Stats { vm, json } => {
            let status: VmStatus = client
                .json(Method::GET, &format!("/v1/vms/{vm}"), None)
                .await?;
            if json {
                print_json(&status);
            } else {
                print_stats(&status);
            }
        }
        Command::Balloon { vm, size, json } => {
            let status: VmStatus = client
                .json(
                    Method::POST,
                    &format!("/v1/vms/{vm}/balloon"),
                    Some(json!({ "target": size })),
                )
                .await?;
            print_accepted(json, &status, |s| {
                format!(
                    "{vm}: balloon target {} MiB (now {} MiB)",
                    opt(s.balloon_target_mib),
                    opt(s.balloon_actual_mib)
                )
            });
        }
        Command::Start { vm, json } => {
            let status: VmStatus = client
                .json(Method::POST, &format!("/v1/vms/{vm}/start"), None)
                .await?;
            print_accepted(json, &status, |s| format!("{vm}: {}", s.state));
        }
        Command::Stop { vm, json } => {
            let status: VmStatus = client
                .json(Method::POST, &format!("/v1/vms/{vm}/stop"), None)
                .await?;
            print_accepted(json, &status, |s| format!("{vm}: {}", s.state));
        }
        Command::Logs { vm, lines } => {
            let text = client
                .call(
                    Method::GET,
                    &format!("/v1/vms/{vm}/logs?lines={lines}"),
                    None,
                )
                .await?;
            print!("{}", String::from_utf8_lossy(&text));
        }
        Command::Workload { vm, workload, json } => {
            let status: VmStatus = client
                .json(
                    Method::PUT,
                    &format!("/v1/vms/{vm}/workload"),
                    Some(json!({ "workload": workload })),
                )
                .await?;
            print_accepted(json, &status, |s| {
                format!(
                    "{vm}: workload {}",
                    s.workload.as_deref().unwrap_or_default()
                )
            });
        }
        Command::Verify { vm, json } => {
            let reply: serde_json::Value = client
                .json(Method::POST, &format!("/v1/vms/{vm}/verify"), None)
                .await?;
            let corrupt = reply["corrupt"].as_u64().unwrap_or(u64::MAX);
            if json {
                print_json(&reply);
            } else {
                println!("{vm}: {} pages verified, {corrupt} corrupt", reply["pages"]);
            }
            if corrupt != 0 {
                return Err(CliError::Other(format!("{vm}: {corrupt} corrupt pages")));
            }
        }
        Command::Attach { name, qmp, json } => {
            let qmp = std::path::absolute(&qmp).unwrap_or(qmp);
            let status: VmStatus = client
                .json(
                    Method::POST,
                    "/v1/attach",
                    Some(json!({ "name": name, "qmp": qmp })),
                )
                .await?;
            print_accepted(json, &status, |s| {
                format!(
                    "{name}: attached (pid {}, {} MiB)",
                    opt(s.pid.map(u64::from)),
                    s.memory_mib
                )
            });
        }
        Command::Image {
            command:
                ImageCommand::Build {
                    kernel,
                    modules,
                    agent,
                    json,
                },
        } => {
            let agent = match agent {
                Some(a) => a,
                None => std::env::current_exe()
                    .map_err(|e| {
                        CliError::Other(format!(
                            "cannot find memvisor's own path: {e}; pass --agent"
                        ))
                    })?
                    .with_file_name("memvisor-agent"),
            };
            let options = BuildOptions {
                cache_dir: args.cache_dir.clone(),
                agent,
                kernel,
                modules,
            };
            let report = tokio::task::spawn_blocking(move || image::build(&options))
                .await
                .map_err(|e| CliError::Other(e.to_string()))??;
            if json {
                print_json(
                    &json!({ "image": report.image, "cached": report.cached, "seconds": report.seconds }),
                );
            } else {
                let how = if report.cached { "cached" } else { "built" };
                println!(
                    "guest image {} {how} in {:.1} s: kernel {} ({}), initramfs {} ({} KiB, modules: {})",
                    report.image.key,
                    report.seconds,
                    report.image.kernel.display(),
                    report.image.kernel_source,
                    report.image.initrd.display(),
                    report.image.initrd_bytes / 1024,
                    report.image.modules.join(" ")
                );
            }
        }
        Command::Demo => crate::demo::run(&args.dir, &args.cache_dir).await?,
    }
    Ok(())
}

/// Starts `memvisor daemon` detached and waits until every VM runs. With `losses_counted`, a
/// VM whose QEMU the host ended while it booted is an outcome to count (the bench), not an error.
pub async fn up(
    dir: &Path,
    cache_dir: &Path,
    file: &Path,
    timeout: Duration,
    losses_counted: bool,
) -> Result<u32, CliError> {
    let config = read_config(file)?;
    image::current(cache_dir)?;
    let client = Client::new(dir);
    if crate::client::daemon_answers(&dir.join(crate::client::SOCKET_NAME)).await {
        return Err(CliError::Other(format!(
            "a memvisor daemon already runs with --dir {}; 'memvisor down' first, or use another --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| CliError::Read {
        path: dir.into(),
        source,
    })?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).map_err(|source| CliError::Read {
        path: log_path.clone(),
        source,
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find memvisor's own path: {e}")))?;
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let mut daemon = tokio::process::Command::new(exe)
        .arg("--dir")
        .arg(dir)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("daemon")
        .arg("-f")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::Other(e.to_string()))?,
        )
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start the daemon: {e}")))?;

    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(CliError::Other(format!(
                "the daemon exited ({status}):\n{}",
                log.trim()
            )));
        }
        if let Ok(vms) = client
            .json::<Vec<VmStatus>>(Method::GET, "/v1/vms", None)
            .await
        {
            let waiting: Vec<&VmStatus> = vms
                .iter()
                .filter(|v| {
                    v.state == VmState::Starting
                        || (v.state == VmState::Stopped && v.last_error.is_none())
                })
                .collect();
            if waiting.is_empty() && vms.len() >= config.vms.len() {
                let failed: Vec<String> = vms
                    .iter()
                    .filter(|v| {
                        v.state != VmState::Running && !(losses_counted && v.state == VmState::Lost)
                    })
                    .map(|v| format!("{}: {}", v.name, v.last_error.clone().unwrap_or_default()))
                    .collect();
                if !failed.is_empty() {
                    return Err(CliError::Other(format!(
                        "some VMs did not start:\n  {}",
                        failed.join("\n  ")
                    )));
                }
                return daemon
                    .id()
                    .ok_or_else(|| CliError::Other("the daemon exited".into()));
            }
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "VMs still booting after {timeout:?}; see 'memvisor ps' and {}",
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn down(dir: &Path) -> Result<(), CliError> {
    let client = Client::new(dir);
    client.call(Method::POST, "/v1/shutdown", None).await?;
    let socket = dir.join(crate::client::SOCKET_NAME);
    let deadline = Instant::now() + Duration::from_secs(60);
    while socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if socket.exists() {
        return Err(CliError::Other(format!(
            "the daemon did not stop within 60 s; see {}",
            dir.join("daemon.log").display()
        )));
    }
    Ok(())
}

pub fn print_translation(asked: &str, t: &memvisor_core::translation::Translation) {
    use memvisor_core::translation::{FrameFlags, Mapping};
    let hex = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v:#x}"));
    let mapping = |m: Option<Mapping>| match m {
        None => String::new(),
        Some(m) if m.present => "present".into(),
        Some(m) if m.swapped => "swapped out".into(),
        Some(_) => "not present".into(),
    };
    let flags = |f: Option<FrameFlags>, ksm_word: &str| match f {
        None => String::new(),
        Some(f) => [
            (f.ksm, ksm_word),
            (f.ballooned, "ballooned"),
            (f.free, "free"),
            (f.anonymous, "anonymous"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(", "),
    };
    println!(
        "{} {asked} (guest side resolved by the {})",
        t.vm, t.resolved_by
    );
    let g = &t.guest;
    println!(
        "  guest virtual   {:<20} {}",
        hex(g.virtual_address),
        mapping(g.mapping)
    );
    println!(
        "  guest physical  {:<20} {}",
        hex(g.physical_address),
        flags(g.flags, "KSM")
    );
    match &t.host {
        Some(h) => {
            println!(
                "  host virtual    {:<20} {}",
                hex(Some(h.virtual_address)),
                mapping(Some(h.mapping))
            );
            let count = h
                .map_count
                .map(|c| format!(", mapped {c} time{}", if c == 1 { "" } else { "s" }))
                .unwrap_or_default();
            println!(
                "  host physical   {:<20} {}{count}",
                hex(h.physical_address),
                flags(h.flags, "shared by KSM")
            );
        }
        None => println!("  host            -                    (the guest page is not present)"),
    }
}

pub fn print_sharing(m: &memvisor_core::sharing::SharingMatrix) {
    print!("{:<12}", "MiB shared");
    for name in &m.vms {
        print!(" {name:>10}");
    }
    println!();
    for (name, row) in m.vms.iter().zip(&m.mib) {
        print!("{name:<12}");
        for v in row {
            print!(" {v:>10.1}");
        }
        println!();
    }
    println!(
        "(row VM's memory on KSM-merged frames the column VM maps too; the diagonal: merged within the VM)\n{} merged frames stand in for {:.1} MiB more",
        m.frames, m.saved_mib
    );
}

pub fn event_line(e: &Event) -> String {
    format!("{:>8.1}s  {:<9}  {}", e.at_s, e.kind.name(), e.reason)
}

pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn print_table(vms: &[VmStatus]) {
    println!(
        "{:<10} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6}  {:>8}  WORKLOAD",
        "NAME", "STATE", "MEM", "TARGET", "ACTUAL", "FREE", "AVAIL", "SWAPOUT", "RSS", "PAGES/S"
    );
    for v in vms {
        println!(
            "{:<10} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6}  {:>8}  {}",
            v.name,
            v.state,
            v.memory_mib,
            opt(v.balloon_target_mib),
            opt(v.balloon_actual_mib),
            opt(v.guest_free_mib),
            opt(v.guest_available_mib),
            opt(v.guest_swap_out_mib),
            opt(v.host_rss_mib),
            opt(v.workload_pages_per_sec.map(|p| p as u64)),
            v.workload.clone().unwrap_or_else(|| "(attached)".into()),
        );
    }
    println!("(MiB; TARGET/ACTUAL: balloon, what the guest keeps; RSS: its QEMU's anonymous memory on the host, shared files excluded)");
}

fn print_stats(v: &VmStatus) {
    let value = serde_json::to_value(v).expect("status serializes");
    for (key, val) in value.as_object().expect("status is an object") {
        let shown = match val {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<26} {shown}");
    }
}
