//! The guest agent, PID 1's only child in memvisor's guest image. It runs the workload the
//! daemon asks for and reports once a second over the virtio-serial port.

mod memory;
mod port;
mod run;
mod translate;

use memvisor_core::agent::{FromGuest, ToGuest};
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let port = match port::open(Duration::from_secs(60)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("memvisor-agent: {e}");
            std::process::exit(1);
        }
    };
    let booted = Instant::now();
    let shared = run::Shared::new();
    let (results, outbox) = mpsc::channel::<FromGuest>();

    let worker = shared.clone();
    let verify_results = results.clone();
    std::thread::spawn(move || run::work(worker, verify_results));

    let reader = port.try_clone().expect("virtio port can be duplicated");
    let control = shared.clone();
    std::thread::spawn(move || listen(reader, control, results));

    let mut writer = port;
    loop {
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(message) =
            outbox.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            send(&mut writer, &message);
        }
        send(&mut writer, &FromGuest::Report(shared.report(booted)));
    }
}

fn send(writer: &mut std::fs::File, message: &FromGuest) {
    let mut line = serde_json::to_vec(message).expect("agent messages serialize");
    line.push(b'\n');
    // Writes block while no host is connected; a failed write is retried with the next report.
    let _ = writer.write_all(&line);
}

fn listen(port: std::fs::File, shared: run::Shared, results: mpsc::Sender<FromGuest>) {
    let mut reader = BufReader::new(port);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            // No host on the other end: wait for one to connect.
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) => match serde_json::from_str::<ToGuest>(line.trim()) {
                Ok(ToGuest::SetWorkload { workload }) => shared.set_workload(workload),
                Ok(ToGuest::Verify) => shared.request_verify(),
                Ok(ToGuest::Translate { address }) => {
                    let chunks = shared.held_chunks.lock().expect("chunks lock").clone();
                    let (page, error) = match translate::translate(address, &chunks) {
                        Ok(page) => (Some(page), None),
                        Err(e) => (None, Some(e)),
                    };
                    let _ = results.send(FromGuest::Translated { page, error });
                }
                Err(e) => {
                    let message = format!("cannot read '{}': {e}", line.trim());
                    let _ = results.send(FromGuest::Rejected { message });
                }
            },
        }
    }
}
