use super::Context;
use crate::bench::Peer;
use crate::error::CliError;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A scenario name (seed, vdi, burst, idle-anon, turns, wake, reservation, peaks,
    /// many-small, two-vm, small-swap; with real servers in Debian guests: seed-redis, seed-pg,
    /// wake-up, vdi-debian: see scenarios/) or a scenario file.
    scenario: String,
    /// Policies to compare, comma-separated; ksmtuned is Debian's ksmtuned beside static
    /// balloons, what a stock KVM host runs.
    #[arg(
        long,
        default_value = "ours,static,ksmtuned,proxmox,mom",
        value_delimiter = ','
    )]
    policy: Vec<Peer>,
    /// Rounds of every policy beside the reference; each policy's median round is shown, with
    /// the guest OOM kills and VMs lost of its worst round, and each round's ratios and swap
    /// as it ends (on stderr).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = rounds)]
    runs: usize,
    /// Print the results as one JSON object keyed by policy, unconstrained included (with
    /// --runs, each policy's median round); progress stays on stderr.
    #[arg(long)]
    json: bool,
    /// Also write SVG timelines of every run (host, each VM, needy throughput) and an
    /// index.html showing them side by side into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

fn rounds(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("--runs must be at least 1 (3 gives the median of three)".into()),
    }
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let options = crate::bench::Options {
        scenario: args.scenario,
        peers: args.policy,
        runs: args.runs,
        json: args.json,
        report: args.report,
    };
    Ok(crate::bench::run(&cx.dir, &cx.cache_dir, &options).await?)
}
