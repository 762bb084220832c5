//! `memvisor demo`: the seed example on real VMs, scheduled automatically by our policy.

use crate::cli::{self, print_table, CliError};
use crate::client::Client;
use hyper::Method;
use memvisor_core::sharing::SharingMatrix;
use memvisor_core::status::{Event, HostStatus, VmStatus};
use memvisor_core::translation::Translation;
use memvisor_guest::image::{self, BuildOptions};
use std::path::Path;
use std::time::Duration;

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

    say("A host with 2 GiB for VMs starts three 1 GiB VMs (overcommit 1.5; vm3 may grow to 1.5 GiB), one at a time as each settles: memvisor up -f demo.toml");
    cli::up(dir, cache_dir, &config, Duration::from_secs(180), false).await?;
    let result = script(&client).await;
    say("memvisor down: VMs stopped, cgroups removed");
    cli::down(dir).await?;
    result
}

async fn script(client: &Client) -> Result<(), CliError> {
    show(client).await?;
    say("vm1 and vm2 keep re-reading 400 MiB of batch data through their page cache; vm3 idles 30 s, then writes a 1.1 GiB working set over and over, more than its 1 GiB. Nobody touches a balloon: the scheduler does");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        show(client).await?;
    }
    let vm3: VmStatus = client.json(Method::GET, "/v1/vms/vm3", None).await?;
    say(&format!(
        "vm3 has {} MiB now, {} MiB of them plugged through virtio-mem past its 1024 MiB boot size",
        cli::opt(vm3.allocation_mib),
        cli::opt(vm3.plugged_mib)
    ));
    say("What the scheduler decided, and why (memvisor events)");
    let events: Vec<Event> = client.json(Method::GET, "/v1/events", None).await?;
    for e in &events {
        println!("{}", cli::event_line(e));
    }
    say("One page of vm3's working set through every layer (memvisor translate vm3 held:0)");
    let page: Translation = client
        .json(Method::GET, "/v1/vms/vm3/translate?address=held:0", None)
        .await?;
    cli::print_translation("held:0", &page);
    say("Host frames KSM merged, VM by VM (memvisor sharing)");
    let sharing: SharingMatrix = client.json(Method::GET, "/v1/sharing", None).await?;
    cli::print_sharing(&sharing);
    let host: HostStatus = client.json(Method::GET, "/v1/host", None).await?;
    println!(
        "\nhost swap in use: {} MiB; KSM saved: {} MiB",
        host.swap_used_mib,
        cli::opt(host.ksm_saved_mib)
    );
    Ok(())
}
