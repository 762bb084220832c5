//! A client of qemu-guest-agent, the agent a disk guest's own OS runs (memvisor's agent is not
//! there): enough to read a file of the guest, such as its `/proc/vmstat`.

use crate::qmp::Message;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// A reply line longer than this is not the agent's; refusing it keeps memory bounded.
const MAX_LINE: usize = 1 << 20;
/// The largest file `read_file` reads: it is for the guest's small status files.
const MAX_FILE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GuestAgentError {
    #[error("cannot connect to the guest agent's socket {path}: {source}; is the VM running with a virtio-serial port named org.qemu.guest_agent.0 on it?")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the guest agent did not answer '{command}' within {timeout:?}; is qemu-guest-agent installed and running in the guest?")]
    Timeout { command: String, timeout: Duration },
    #[error("the guest agent's connection closed during '{0}'; the VM has probably stopped")]
    Closed(String),
    #[error("guest agent i/o failed during '{command}': {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("the guest agent refused '{command}': {desc}")]
    Refused { command: String, desc: String },
    #[error("the guest agent sent a reply memvisor does not understand to '{command}': {line}")]
    BadReply { command: String, line: String },
}

pub struct GuestAgent {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl GuestAgent {
    /// Connects, and clears whatever an earlier client left on the port: a 0xFF byte resets the
    /// agent's parser from a request left half-written, and the agent answers in order and
    /// echoes no ids, so every line before the reply to our own `guest-sync` is someone else's.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<GuestAgent, GuestAgentError> {
        let connect_failed = |source| GuestAgentError::Connect {
            path: path.into(),
            source,
        };
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| connect_failed(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_failed)?;
        let (read, writer) = stream.into_split();
        let mut agent = GuestAgent {
            reader: BufReader::new(read),
            writer,
            timeout,
        };
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        agent
            .writer
            .write_all(&[0xFF])
            .await
            .map_err(|source| GuestAgentError::Io {
                command: "guest-sync".into(),
                source,
            })?;
        let sync = json!({"execute": "guest-sync", "arguments": {"id": id}});
        agent
            .exchange("guest-sync", &sync, |reply| reply == Some(&json!(id)))
            .await?;
        Ok(agent)
    }

    /// Runs one command and returns its `return` value.
    async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, GuestAgentError> {
        let request = json!({"execute": command, "arguments": arguments});
        self.exchange(command, &request, |_| true).await
    }

    /// Sends `request`, then reads lines until one that `ours` accepts: a return value, or None
    /// for an error or a line that is no reply. What it does not accept is skipped.
    async fn exchange(
        &mut self,
        command: &str,
        request: &Value,
        ours: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Value, GuestAgentError> {
        let timeout = self.timeout;
        let io = |source| GuestAgentError::Io {
            command: command.into(),
            source,
        };
        let exchange = async {
            let mut bytes = request.to_string().into_bytes();
            bytes.push(b'\n');
            self.writer.write_all(&bytes).await.map_err(io)?;
            loop {
                let mut line = Vec::new();
                let n = (&mut self.reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(io)?;
                if n == 0 {
                    return Err(GuestAgentError::Closed(command.into()));
                }
                let line = String::from_utf8_lossy(&line).trim().to_string();
                let reply = reply(&line);
                let value = match &reply {
                    Some(Ok(value)) => Some(value),
                    _ => None,
                };
                if !ours(value) {
                    continue;
                }
                match reply {
                    Some(Ok(value)) => return Ok(value),
                    Some(Err(desc)) => {
                        return Err(GuestAgentError::Refused {
                            command: command.into(),
                            desc,
                        })
                    }
                    None => {
                        return Err(GuestAgentError::BadReply {
                            command: command.into(),
                            line,
                        })
                    }
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| GuestAgentError::Timeout {
                command: command.into(),
                timeout,
            })?
    }

    /// The content of a small file in the guest (up to `MAX_FILE`).
    pub async fn read_file(&mut self, path: &str) -> Result<String, GuestAgentError> {
        let handle = self
            .execute("guest-file-open", json!({"path": path, "mode": "r"}))
            .await?;
        let content = self.read_open(&handle).await;
        // Closed whatever the read gave: the agent keeps open handles until it restarts.
        let closed = self
            .execute("guest-file-close", json!({"handle": handle}))
            .await;
        let content = content?;
        closed?;
        Ok(String::from_utf8_lossy(&content).into_owned())
    }

    async fn read_open(&mut self, handle: &Value) -> Result<Vec<u8>, GuestAgentError> {
        let mut content = Vec::new();
        loop {
            let chunk = self
                .execute("guest-file-read", json!({"handle": handle, "count": 65536}))
                .await?;
            let bad = || GuestAgentError::BadReply {
                command: "guest-file-read".into(),
                line: chunk.to_string(),
            };
            let (bytes, eof) = file_chunk(&chunk).ok_or_else(bad)?;
            if bytes.is_empty() && !eof || content.len() + bytes.len() > MAX_FILE {
                return Err(bad());
            }
            content.extend(bytes);
            if eof {
                return Ok(content);
            }
        }
    }
}

/// A reply line: its `return` value, or its error's description; None if it is neither. The
/// agent's replies are QMP's, read by QMP's own parser.
fn reply(line: &str) -> Option<Result<Value, String>> {
    match crate::qmp::parse_message(line)? {
        Message::Return(value) => Some(Ok(value)),
        Message::Error { desc, .. } => Some(Err(desc)),
        Message::Event(_) => None,
    }
}

/// `guest-file-read`'s return: the bytes read (base64) and whether the file ended.
fn file_chunk(value: &Value) -> Option<(Vec<u8>, bool)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.get("buf-b64")?.as_str()?)
        .ok()?;
    Some((bytes, value.get("eof")?.as_bool()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_file_chunks_are_read() {
        assert_eq!(reply(r#"{"return": 42}"#), Some(Ok(json!(42))));
        assert_eq!(
            reply(r#"{"error": {"class": "GenericError", "desc": "no such file"}}"#),
            Some(Err("no such file".into()))
        );
        assert_eq!(reply("{}"), None);
        assert_eq!(reply("not json"), None);
        let chunk = json!({"count": 5, "buf-b64": "aGVsbG8=", "eof": true});
        assert_eq!(file_chunk(&chunk), Some((b"hello".to_vec(), true)));
        assert_eq!(file_chunk(&json!({"count": 0})), None);
    }
}
