//! A client of qemu-guest-agent (the agent Debian's guests run, not memvisor's), enough to run
//! a command in a guest and read what it printed.

use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct GuestAgent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What a command run in the guest ended with.
#[derive(Debug)]
pub struct Ran {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl GuestAgent {
    /// Connects to the agent's socket once the guest's agent answers a ping, within `limit`.
    pub fn connect(socket: &Path, limit: Duration) -> GuestAgent {
        let started = Instant::now();
        loop {
            if let Some(agent) = Self::try_connect(socket) {
                return agent;
            }
            assert!(
                started.elapsed() < limit,
                "qemu-guest-agent on {} did not answer within {limit:?}",
                socket.display()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn try_connect(socket: &Path) -> Option<GuestAgent> {
        let stream = UnixStream::connect(socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut agent = GuestAgent {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        };
        // The port is one stream shared with every earlier client: replies to their requests
        // (or to an earlier try of ours that timed out) may still come first. The agent answers
        // in order, so everything before the reply to our own guest-sync is someone else's.
        let id = now_micros();
        let sync = json!({"execute": "guest-sync", "arguments": {"id": id}});
        writeln!(agent.writer, "{sync}").ok()?;
        while agent.next_return(&sync)? != json!(id) {}
        Some(agent)
    }

    fn request(&mut self, command: Value) -> Option<Value> {
        writeln!(self.writer, "{command}").ok()?;
        self.next_return(&command)
    }

    fn next_return(&mut self, command: &Value) -> Option<Value> {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            let reply: Value = serde_json::from_str(line.trim()).ok()?;
            if let Some(value) = reply.get("return") {
                return Some(value.clone());
            }
            if let Some(error) = reply.get("error") {
                panic!("qemu-guest-agent refused {command}: {error}");
            }
        }
    }

    /// Runs `script` with /bin/sh in the guest and waits for it, within `limit`.
    pub fn sh(&mut self, script: &str, limit: Duration) -> Ran {
        let started = Instant::now();
        let started_reply = self
            .request(json!({"execute": "guest-exec", "arguments": {
                "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}}))
            .expect("guest-exec answers");
        let pid = started_reply["pid"].clone();
        assert!(
            pid.is_u64(),
            "guest-exec answered {started_reply} to '{script}'"
        );
        loop {
            let status = self
                .request(json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}))
                .expect("guest-exec-status answers");
            if status["exited"] == true {
                let text = |key: &str| {
                    let data = status[key].as_str().unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .expect("guest-exec output is base64");
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                return Ran {
                    code: status["exitcode"].as_i64().unwrap_or(-1),
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                };
            }
            assert!(
                started.elapsed() < limit,
                "'{script}' did not finish in the guest within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Writes `bytes` to `path` in the guest, in pieces the agent takes in one request each.
    pub fn write_file(&mut self, path: &str, bytes: &[u8]) {
        let handle = self
            .request(
                json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}}),
            )
            .expect("guest-file-open answers");
        for piece in bytes.chunks(256 << 10) {
            let data = base64::engine::general_purpose::STANDARD.encode(piece);
            self.request(json!({"execute": "guest-file-write",
                "arguments": {"handle": handle, "buf-b64": data}}))
                .expect("guest-file-write answers");
        }
        self.request(json!({"execute": "guest-file-close", "arguments": {"handle": handle}}))
            .expect("guest-file-close answers");
    }

    /// Runs `script` and returns what it printed; it must succeed.
    pub fn ok(&mut self, script: &str) -> String {
        let ran = self.sh(script, Duration::from_secs(120));
        assert_eq!(ran.code, 0, "'{script}' failed in the guest: {ran:?}");
        ran.stdout
    }
}

/// A guest-sync id no earlier try shares, so a late reply to one cannot pass for ours.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
