//! A client of qemu-guest-agent (the agent Debian's guests run, not memvisor's), enough to run
//! a command in a guest and read what it printed: on the agent's socket, or through libvirt,
//! which holds the socket of a domain's agent.

use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub enum GuestAgent {
    Socket {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    },
    /// `virsh qemu-agent-command` on this domain.
    Libvirt(String),
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
        let mut agent = GuestAgent::Socket {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        };
        // The port is one stream shared with every earlier client: replies to their requests
        // (or to an earlier try of ours that timed out) may still come first. The agent answers
        // in order, so everything before the reply to our own guest-sync is someone else's.
        let id = now_micros();
        let sync = json!({"execute": "guest-sync", "arguments": {"id": id}});
        agent.send(&sync)?;
        while agent.read_return(&sync)? != json!(id) {}
        // A short wait finds an agent that is not up yet; once it is, a guest still booting
        // under emulation can take longer to fork a command (CI saw more than 5 s).
        if let GuestAgent::Socket { writer, .. } = &agent {
            writer
                .set_read_timeout(Some(Duration::from_secs(60)))
                .ok()?;
        }
        Some(agent)
    }

    /// The agent of a libvirt domain, once it answers a ping within `limit`.
    pub fn through_libvirt(domain: &str, limit: Duration) -> GuestAgent {
        let started = Instant::now();
        let agent = GuestAgent::Libvirt(domain.to_string());
        while super::libvirt::virsh(&["qemu-agent-command", domain, r#"{"execute":"guest-ping"}"#])
            .status
            .code()
            != Some(0)
        {
            assert!(
                started.elapsed() < limit,
                "qemu-guest-agent of domain {domain} did not answer within {limit:?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        agent
    }

    fn request(&mut self, command: Value) -> Option<Value> {
        self.send(&command)?;
        self.read_return(&command)
    }

    /// Sends a command on the socket; through libvirt, `read_return` sends it.
    fn send(&mut self, command: &Value) -> Option<()> {
        match self {
            GuestAgent::Socket { writer, .. } => writeln!(writer, "{command}").ok(),
            GuestAgent::Libvirt(_) => Some(()),
        }
    }

    /// The next reply's value.
    fn read_return(&mut self, command: &Value) -> Option<Value> {
        let reply = match self {
            GuestAgent::Socket { reader, .. } => {
                let mut line = String::new();
                reader.read_line(&mut line).ok()?;
                line
            }
            GuestAgent::Libvirt(domain) => {
                let out =
                    super::libvirt::virsh(&["qemu-agent-command", domain, &command.to_string()]);
                assert!(
                    out.status.success(),
                    "qemu-guest-agent of {domain} refused {command}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        let reply: Value = serde_json::from_str(reply.trim()).ok()?;
        if let Some(error) = reply.get("error") {
            panic!("qemu-guest-agent refused {command}: {error}");
        }
        reply.get("return").cloned()
    }

    /// Runs `script` with /bin/sh in the guest and waits for it, within `limit`.
    pub fn sh(&mut self, script: &str, limit: Duration) -> Ran {
        let started = Instant::now();
        let started_reply = self
            .request(json!({"execute": "guest-exec", "arguments": {
                "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}}))
            .expect("guest-exec answers");
        let pid = started_reply["pid"].clone();
        // The agent logs every status request, and journald takes about 25 ms of the guest's
        // one emulated CPU for each line: a long wait polls less and less often.
        let mut poll = Duration::from_millis(100);
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
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_secs(2));
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
