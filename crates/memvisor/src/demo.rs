//! `memvisor demo`: the seed example on real VMs. The balloons are moved by hand here, with
//! the same API calls the CLI makes; automatic scheduling comes with the policy.

use crate::cli::{self, print_table, CliError};
use crate::client::Client;
use hyper::Method;
use memvisor_core::status::{HostStatus, VmStatus};
use memvisor_guest::image::{self, BuildOptions};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("../../../examples/seed.toml");

fn say(text: &str) {
    println!("\n== {text}");
}

async fn show(client: &Client) -> Result<Vec<VmStatus>, CliError> {
    let vms: Vec<VmStatus> = client.json(Method::GET, "/v1/vms", None).await?;
    let host: HostStatus = client.json(Method::GET, "/v1/host", None).await?;
    print_table(&vms);
    println!(
        "host budget {} MiB, used by VMs {} MiB (cgroup {} {})",
        host.budget_mib,
        cli::opt(host.used_mib),
        host.cgroup_version,
        host.cgroup
    );
    Ok(vms)
}

async fn balloon(client: &Client, vm: &str, size: &str) -> Result<(), CliError> {
    println!("$ memvisor balloon {vm} {size}");
    client
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/balloon"),
            Some(json!({ "target": size })),
        )
        .await?;
    Ok(())
}

/// Waits until every named VM's balloon is within 5% of its target.
async fn settle(client: &Client, names: &[&str], limit: Duration) -> Result<f64, CliError> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let vms: Vec<VmStatus> = client.json(Method::GET, "/v1/vms", None).await?;
        let done = vms
            .iter()
            .filter(|v| names.contains(&v.name.as_str()))
            .all(|v| match (v.balloon_target_mib, v.balloon_actual_mib) {
                (Some(t), Some(a)) => (a as f64 - t as f64).abs() <= 0.05 * t as f64,
                _ => false,
            });
        if done {
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(CliError::Other(format!(
        "balloons of {names:?} did not reach their targets within {limit:?}"
    )))
}

pub async fn run(dir: &Path, cache_dir: &Path) -> Result<(), CliError> {
    if image::current(cache_dir).is_err() {
        say("Building the guest image (once; cached afterwards)");
        let agent = std::env::current_exe()
            .map_err(|e| CliError::Other(e.to_string()))?
            .with_file_name("memvisor-agent");
        let options = BuildOptions {
            cache_dir: cache_dir.to_path_buf(),
            agent,
            kernel: None,
            modules: None,
        };
        tokio::task::spawn_blocking(move || image::build(&options))
            .await
            .map_err(|e| CliError::Other(e.to_string()))??;
    }
    let config = dir.join("demo.toml");
    std::fs::create_dir_all(dir).map_err(|source| CliError::Read {
        path: dir.into(),
        source,
    })?;
    std::fs::write(&config, CONFIG).map_err(|source| CliError::Read {
        path: config.clone(),
        source,
    })?;
    let client = Client::new(dir);

    say("A host with 1.5 GiB for VMs starts three 1 GiB VMs (overcommit 2.0): memvisor up -f demo.toml");
    cli::up(dir, cache_dir, &config, Duration::from_secs(180)).await?;
    let result = script(&client).await;
    say("memvisor down: VMs stopped, cgroups removed");
    cli::down(dir).await?;
    result
}

async fn script(client: &Client) -> Result<(), CliError> {
    show(client).await?;
    say("vm1 and vm2 run a batch job that fills 128 MiB of page cache, then keep 64 MiB in use (25 s)");
    tokio::time::sleep(Duration::from_secs(25)).await;
    show(client).await?;

    say("Their cache is idle memory the host pays for (RSS). Take it back with the balloon:");
    balloon(client, "vm1", "256M").await?;
    balloon(client, "vm2", "256M").await?;
    let seconds = settle(client, &["vm1", "vm2"], Duration::from_secs(90)).await?;
    println!("balloons reached their targets in {seconds:.1} s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    show(client).await?;

    say("vm3 now needs memory: a 250 MiB working set, written over and over");
    println!("$ memvisor workload vm3 touch:260M:250M");
    client
        .call(
            Method::PUT,
            "/v1/vms/vm3/workload",
            Some(json!({ "workload": "touch:260M:250M" })),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(25)).await;
    show(client).await?;

    say("vm3's job is done; it goes idle and vm1 gets its memory back (deflate)");
    client
        .call(
            Method::PUT,
            "/v1/vms/vm3/workload",
            Some(json!({ "workload": "idle" })),
        )
        .await?;
    balloon(client, "vm1", "1G").await?;
    let seconds = settle(client, &["vm1"], Duration::from_secs(60)).await?;
    println!("vm1 deflated in {seconds:.1} s");
    show(client).await?;
    Ok(())
}
