use super::Context;
use crate::error::CliError;
use crate::guest_image::{build, default_agent};
use crate::output;
use memvisor_guest::debian;
use memvisor_guest::image::BuildOptions;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build (or find cached) the guest kernel and initramfs.
    Build(BuildArgs),
    /// Build (or find cached) a Debian 12 guest disk: systemd, the stock kernel, qemu-guest-agent,
    /// redis and PostgreSQL, booted through the firmware and syslinux; no memvisor agent inside.
    /// Boot it with `disk = PATH` (and `snapshot = true` to share it between VMs).
    #[command(
        after_help = "It runs mmdebstrap from the host's apt sources (a few minutes the \
first time, cached afterwards by the packages' versions) and needs mmdebstrap, e2fsprogs, \
dosfstools, mtools, syslinux, fdisk and qemu-utils."
    )]
    Debian(DebianArgs),
}

#[derive(clap::Args, Debug)]
pub struct DebianArgs {
    /// Print the disk, its path, whether it was cached and the seconds taken, as JSON.
    #[arg(long)]
    json: bool,
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
    /// Print the image, whether it was cached and the seconds taken, as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: Command, cx: &Context) -> Result<(), CliError> {
    match command {
        Command::Build(args) => build_image(args, cx).await,
        Command::Debian(args) => build_debian(args, cx).await,
    }
}

async fn build_debian(args: DebianArgs, cx: &Context) -> Result<(), CliError> {
    let cache_dir = cx.cache_dir.clone();
    let report = tokio::task::spawn_blocking(move || debian::build(&cache_dir))
        .await
        .expect("the disk build does not panic")?;
    if args.json {
        output::print_json(&serde_json::json!({
            "disk": report.disk, "path": debian::stable_path(&cx.cache_dir),
            "cached": report.cached, "seconds": report.seconds
        }));
    } else {
        let how = if report.cached { "cached" } else { "built" };
        println!(
            "Debian guest disk {} {how} in {:.1} s: {} ({} MiB), kernel {}, packages: {}",
            report.disk.key,
            report.seconds,
            debian::stable_path(&cx.cache_dir).display(),
            report.disk.disk_bytes >> 20,
            report.disk.kernel,
            report.disk.packages.join(", ")
        );
    }
    Ok(())
}

async fn build_image(args: BuildArgs, cx: &Context) -> Result<(), CliError> {
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
