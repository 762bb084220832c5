use super::Context;
use crate::error::CliError;
use crate::top::Sort;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Column to sort by: NAME, MEMSZ, RESV, LIMIT, SHARES, TARGET, CONSUMED, ACTIVE,
    /// BALLOON, SHARED, HSWAPPED, PACE% (the share of a core a paced start runs on), GFREE,
    /// GAVAIL, SWIN/s, SWOUT/s, DREAD/s (what QEMU reads from the VM's disks), OVHD.
    #[arg(long, default_value = "CONSUMED", value_parser = Sort::by)]
    sort: Sort,
    /// Seconds between refreshes, from 0.1 to 3600.
    #[arg(long, default_value_t = 1.0, value_parser = refresh_seconds)]
    every: f64,
}

fn refresh_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err("give seconds between 0.1 and 3600".into()),
    }
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    crate::top::run(&cx.client, args.sort, Duration::from_secs_f64(args.every)).await
}
