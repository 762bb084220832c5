//! memvisor: the memory manager of a KVM/QEMU host. One binary: the daemon (`up`, `daemon`)
//! and its command-line client (everything else).

mod bench;
mod cli;
mod client;
mod daemon;
mod demo;
mod error;
mod guest_image;
mod launcher;
mod output;
mod report;
mod top;

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEMVISOR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
    if let Err(e) = cli::run(args).await {
        eprintln!("memvisor: error: {e}");
        std::process::exit(1);
    }
}
