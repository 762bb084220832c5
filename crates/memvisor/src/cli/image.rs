use super::Context;
use crate::error::CliError;
use crate::guest_image::{build, default_agent};
use crate::output;
use memvisor_guest::image::BuildOptions;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build (or find cached) the guest kernel and initramfs.
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
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
}

pub async fn run(Command::Build(args): Command, cx: &Context) -> Result<(), CliError> {
    let agent = match args.agent {
        Some(a) => a,
        None => default_agent()?,
    };
    let report = build(BuildOptions {
        cache_dir: cx.cache_dir.clone(),
        agent,
        kernel: args.kernel,
        modules: args.modules,
    })
    .await?;
    if args.json {
        output::print_json(&serde_json::json!({
            "image": report.image, "cached": report.cached, "seconds": report.seconds
        }));
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
    Ok(())
}
