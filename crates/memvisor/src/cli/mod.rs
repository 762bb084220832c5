//! The command line: its global options, and one module per subcommand with that command's
//! arguments and its run.

mod attach;
mod balloon;
mod bench;
mod check;
mod daemon;
mod dashboard;
mod demo;
mod down;
mod events;
mod image;
mod logs;
mod metrics;
mod monitor;
mod openapi;
mod ps;
mod set;
mod sharing;
mod start;
mod stats;
mod stop;
mod top;
mod translate;
mod up;
mod verify;
mod workload;

use crate::client::Client;
use crate::error::CliError;
use clap::{Parser, Subcommand};
use memvisor_guest::image::DEFAULT_CACHE_DIR;
use std::path::PathBuf;

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
    #[arg(long, global = true, env = "MEMVISOR_CACHE", default_value = DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the daemon in the background and the VMs CONFIG declares; returns once they run.
    Up(up::Args),
    /// Run the daemon in the foreground (what `up` starts; for service managers).
    Daemon(daemon::Args),
    /// Check a config as `up` and the daemon would (sizes, reservations against the budget,
    /// disks), without starting anything.
    Check(check::Args),
    /// Stop the launched VMs and the daemon; attached VMs keep running.
    Down,
    /// List the VMs with their memory figures.
    Ps(ps::Args),
    /// All figures of one VM.
    Stats(VmArgs),
    /// Set how much memory VM keeps (QEMU's balloon target): SIZE below its memory inflates.
    Balloon(balloon::Args),
    /// Start a stopped VM.
    Start(VmArgs),
    /// Stop a VM (its QEMU quits).
    Stop(VmArgs),
    /// The VM's serial console.
    Logs(logs::Args),
    /// Change what the guest agent does, e.g. hold:512M, touch:900M:600M, cache:400M@15s,idle.
    Workload(workload::Args),
    /// Make the guest agent check every page it wrote; exits non-zero on corruption.
    Verify(VmArgs),
    /// Manage a QEMU someone else started, through its QMP socket.
    Attach(attach::Args),
    /// Guest image commands.
    Image {
        #[command(subcommand)]
        command: image::Command,
    },
    /// The seed example, scaled: a 2 GiB host, three 1 GiB VMs, scheduled automatically.
    Demo,
    /// Change a VM's reservation, limit, shares or size live, without restarting its guest.
    Set(set::Args),
    /// What the daemon did and noticed, and why, oldest first: the scheduler's decisions,
    /// operators' requests, VMs booting, faults (a QEMU lost, a balloon or agent not answering,
    /// QMP hung, host swap gone) and hints at root causes that join guest and host signals (a
    /// balloon too large, host swap, KSM copy-on-write breaks).
    Events(events::Args),
    /// Live view of the host and every VM, in the manner of esxtop's memory screen.
    Top(top::Args),
    /// Run a QEMU human monitor command on VM (like virsh qemu-monitor-command --hmp), e.g.
    /// "info balloon", "stop", "cont". Logged as an event.
    Monitor(monitor::Args),
    /// Follow one guest page through every layer: guest virtual -> guest physical -> host
    /// virtual (QEMU's guest-RAM mapping) -> host physical, with its state at each level.
    Translate(translate::Args),
    /// Which VMs share host frames with which through KSM, in MiB, from the host page map.
    Sharing(sharing::Args),
    /// The web dashboard's address, with the token that opens it.
    Dashboard,
    /// The OpenAPI 3 description of the daemon's HTTP API (docs/openapi.json is a copy).
    Openapi,
    /// The daemon's figures in Prometheus' text format (what GET /metrics serves).
    Metrics,
    /// Run a scenario under each policy, one after the other, with fresh VMs, and compare.
    Bench(bench::Args),
}

/// The arguments of commands about one VM: its name, and whether to answer in JSON.
#[derive(clap::Args, Debug)]
pub struct VmArgs {
    vm: String,
    /// Print the answer whole, as JSON.
    #[arg(long)]
    json: bool,
}

/// What every command works with: the daemon's directory, the image cache, its client.
pub struct Context {
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub client: Client,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let cx = Context {
        client: Client::new(&args.dir),
        dir: args.dir,
        cache_dir: args.cache_dir,
    };
    match args.command {
        Command::Up(a) => up::run(a, &cx).await,
        Command::Daemon(a) => daemon::run(a, &cx).await,
        Command::Check(a) => check::run(a, &cx).await,
        Command::Down => down::run(&cx).await,
        Command::Ps(a) => ps::run(a, &cx).await,
        Command::Stats(a) => stats::run(a, &cx).await,
        Command::Balloon(a) => balloon::run(a, &cx).await,
        Command::Start(a) => start::run(a, &cx).await,
        Command::Stop(a) => stop::run(a, &cx).await,
        Command::Logs(a) => logs::run(a, &cx).await,
        Command::Workload(a) => workload::run(a, &cx).await,
        Command::Verify(a) => verify::run(a, &cx).await,
        Command::Attach(a) => attach::run(a, &cx).await,
        Command::Image { command } => image::run(command, &cx).await,
        Command::Demo => demo::run(&cx).await,
        Command::Set(a) => set::run(a, &cx).await,
        Command::Events(a) => events::run(a, &cx).await,
        Command::Top(a) => top::run(a, &cx).await,
        Command::Monitor(a) => monitor::run(a, &cx).await,
        Command::Translate(a) => translate::run(a, &cx).await,
        Command::Sharing(a) => sharing::run(a, &cx).await,
        Command::Dashboard => dashboard::run(&cx).await,
        Command::Openapi => openapi::run(),
        Command::Metrics => metrics::run(&cx).await,
        Command::Bench(a) => bench::run(a, &cx).await,
    }
}
