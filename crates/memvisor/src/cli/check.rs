use super::Context;
use crate::error::CliError;
use crate::{launcher, output};
use memvisor_core::config::Budget;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config to check.
    #[arg(short = 'f', long = "file", default_value = launcher::DEFAULT_CONFIG)]
    file: PathBuf,
    /// Print the summary as JSON: the file, budget (and its MiB on this machine), reserve, the
    /// VMs to launch and to attach, discovery and the guest image.
    #[arg(long)]
    json: bool,
}

/// Checks a config as `up` and the daemon would, without starting anything.
pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let config = launcher::read_config(&args.file)?;
    let image = launcher::image_for(&config, &cx.cache_dir)?;
    let machine = memvisor_host::meminfo::read().ok();
    let budget = match (config.host.budget, machine) {
        (Budget::Fixed(size), _) => Some(size),
        (Budget::Auto, Some(m)) => Some(m.total),
        (Budget::Auto, None) => None,
    };
    let summary = serde_json::json!({
        "file": args.file,
        "budget": config.host.budget.to_string(),
        "budget_mib": budget.map(|b| b.as_mib()),
        "reserve_mib": config.host.reserve.as_mib(),
        "vms": config.vms.iter().map(|v| &v.name).collect::<Vec<_>>(),
        "attach": config.attached.iter().map(|a| &a.name).collect::<Vec<_>>(),
        "discover": config.discover.qmp,
        "guest_image": image.map(|i| i.key),
    });
    if args.json {
        output::print_json(&summary);
    } else {
        let budget_text = match budget {
            Some(b) if config.host.budget == Budget::Auto => format!("auto ({b} on this machine)"),
            _ => config.host.budget.to_string(),
        };
        println!(
            "{}: ok: budget {budget_text}, reserve {}, {} VM(s) to launch, {} to attach, discovery {}",
            args.file.display(),
            config.host.reserve,
            config.vms.len(),
            config.attached.len(),
            config.discover.qmp.as_deref().unwrap_or("off")
        );
    }
    Ok(())
}
