use super::Context;
use crate::error::CliError;
use crate::output;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep printing new events as they happen (Ctrl-C stops).
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per event and line (with --follow too).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cx: &Context) -> Result<(), CliError> {
    let mut after = 0;
    loop {
        for e in cx.client.events(after).await? {
            if args.json {
                println!("{}", serde_json::to_string(&e).expect("events serialize"));
            } else {
                println!("{}", output::event_line(&e));
            }
            after = e.seq;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
