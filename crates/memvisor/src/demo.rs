//! `memvisor demo`: the seed example on real VMs, scheduled automatically by our policy.

use crate::client::Client;
use crate::error::CliError;
use crate::guest_image::{build, default_agent};
use crate::launcher;
use crate::output::{self, opt};
use memvisor_core::status::VmStatus;
use memvisor_core::translation::GuestAddress;
use memvisor_guest::image::{self, BuildOptions};
use std::path::Path;
use std::time::Duration;

const CONFIG: &str = include_str!("../../../examples/seed.toml");

fn say(text: &str) {
    println!("\n== {text}");
}

async fn show(client: &Client) -> Result<Vec<VmStatus>, CliError> {
    let vms = client.vms().await?;
    let host = client.host().await?;
    output::print_table(&vms);
    println!(
        "host budget {} MiB, used by VMs {} MiB (cgroup {} {})",
        host.budget_mib,
        opt(host.used_mib),
        host.cgroup_version,
        host.cgroup
    );
    Ok(vms)
}

pub async fn run(dir: &Path, cache_dir: &Path) -> Result<(), CliError> {
    if image::current(cache_dir).is_err() {
        say("Building the guest image (once; cached afterwards)");
        build(BuildOptions {
            cache_dir: cache_dir.to_path_buf(),
            agent: default_agent()?,
            kernel: None,
            modules: None,
        })
        .await?;
    }
    let config = dir.join("demo.toml");
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    std::fs::write(&config, CONFIG).map_err(io("write", &config))?;
    let client = Client::new(dir);

    say("A host with 2 GiB for VMs starts three 1 GiB VMs (overcommit 1.5; vm3 may grow to 1.5 GiB), one at a time as each settles: memvisor up -f demo.toml");
    launcher::up(dir, cache_dir, &config, Duration::from_secs(180), false).await?;
    let result = script(&client).await;
    say("memvisor down: VMs stopped, cgroups removed");
    launcher::down(dir).await?;
    result
}

async fn script(client: &Client) -> Result<(), CliError> {
    show(client).await?;
    say("vm1 and vm2 keep re-reading 400 MiB of batch data through their page cache; vm3 idles 30 s, then writes a 1.1 GiB working set over and over, more than its 1 GiB. Nobody touches a balloon: the scheduler does");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        show(client).await?;
    }
    let vm3 = client.vm("vm3").await?;
    say(&format!(
        "vm3 has {} MiB now, {} MiB of them plugged through virtio-mem past its 1024 MiB boot size",
        opt(vm3.allocation_mib),
        opt(vm3.plugged_mib)
    ));
    say("What the scheduler decided, and why (memvisor events)");
    for e in &client.events(0).await? {
        println!("{}", output::event_line(e));
    }
    say("One page of vm3's working set through every layer (memvisor translate vm3 held:0)");
    let page = client
        .translate("vm3", &GuestAddress::Held { page: 0 })
        .await?;
    output::print_translation("held:0", &page);
    say("Host frames KSM merged, VM by VM (memvisor sharing)");
    output::print_sharing(&client.sharing().await?);
    let host = client.host().await?;
    println!(
        "\nhost swap in use: {} MiB; KSM saved: {} MiB",
        host.swap_used_mib,
        opt(host.ksm_saved_mib)
    );
    Ok(())
}
