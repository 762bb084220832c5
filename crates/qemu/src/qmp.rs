//! A QMP client: line-delimited JSON over a Unix socket. Every exchange has a deadline, so a
//! hung QEMU costs a timeout error, never a stuck daemon.
//!
//! Written here rather than taken from the `qapi` crate: memvisor needs a handful of commands
//! whose replies it reads as plain JSON (guest statistics are free-form `qom-get` values), must
//! work with QEMU 7.2 as Debian ships it, and must tell "this socket is not QEMU" apart from
//! other failures when attaching.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply line longer than this is not QMP; refusing it keeps memory bounded.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {source}; is QEMU running with -qmp unix:{path},server=on,wait=off?")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a QEMU QMP socket: it {got}; point --qmp at the socket named in QEMU's -qmp option")]
    NotQmp { path: PathBuf, got: String },
    #[error("QEMU did not answer '{command}' within {timeout:?}; the VM may be hung")]
    Timeout { command: String, timeout: Duration },
    #[error("QMP connection closed while waiting for '{0}'; QEMU has probably exited")]
    Closed(String),
    #[error("QMP i/o failed during '{command}': {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("QEMU refused '{command}': {class}: {desc}")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU sent a reply memvisor does not understand to '{command}': {line}")]
    BadReply { command: String, line: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    pub major: u64,
    pub minor: u64,
    pub micro: u64,
}

/// One line from QEMU, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Return(Value),
    Error { class: String, desc: String },
    Event(String),
}

/// Reads QMP's greeting, `{"QMP": {"version": {"qemu": {...}}, ...}}`.
pub fn parse_greeting(line: &str) -> Option<QemuVersion> {
    let v: Value = serde_json::from_str(line).ok()?;
    let q = v.get("QMP")?.get("version")?.get("qemu")?;
    Some(QemuVersion {
        major: q.get("major")?.as_u64()?,
        minor: q.get("minor")?.as_u64()?,
        micro: q.get("micro")?.as_u64()?,
    })
}

pub fn parse_message(line: &str) -> Option<Message> {
    let v: Value = serde_json::from_str(line).ok()?;
    if let Some(r) = v.get("return") {
        return Some(Message::Return(r.clone()));
    }
    if let Some(e) = v.get("error") {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Some(Message::Error {
            class: text("class"),
            desc: text("desc"),
        });
    }
    v.get("event")
        .and_then(Value::as_str)
        .map(|e| Message::Event(e.to_string()))
}

/// The `id` a reply echoes from its command, if any.
pub fn reply_id(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("id")?
        .as_u64()
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Each command carries the next number as its id, so that the late reply to a command
    /// that timed out is not taken for the reply to the next one.
    next_id: u64,
    pub version: QemuVersion,
    /// PID of the QEMU at the other end, from the socket's peer credentials.
    pub pid: Option<u32>,
    timeout: Duration,
}

impl Qmp {
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::NotQmp {
                path: path.into(),
                got: "did not accept a connection in time".into(),
            })?
            .map_err(|source| QmpError::Connect {
                path: path.into(),
                source,
            })?;
        let pid = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .map(|p| p as u32);
        let (read, writer) = stream.into_split();
        let mut reader = BufReader::new(read);
        let not_qmp = |got: String| QmpError::NotQmp {
            path: path.into(),
            got,
        };
        let greeting = match tokio::time::timeout(timeout, read_line(&mut reader, "greeting")).await
        {
            Err(_) => return Err(not_qmp(format!("sent no QMP greeting within {timeout:?}"))),
            Ok(Err(QmpError::Closed(_))) => {
                return Err(not_qmp(
                    "closed the connection without a QMP greeting".into(),
                ))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(line)) => line,
        };
        let version = parse_greeting(&greeting).ok_or_else(|| {
            let shown: String = greeting.chars().take(80).collect();
            not_qmp(format!("greeted with '{shown}'"))
        })?;
        let mut qmp = Qmp {
            reader,
            writer,
            next_id: 1,
            version,
            pid,
            timeout,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value; events that arrive meanwhile are skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = match arguments {
            Some(args) => json!({ "execute": command, "arguments": args, "id": id }),
            None => json!({ "execute": command, "id": id }),
        };
        let timeout = self.timeout;
        let exchange = async {
            let mut bytes = request.to_string().into_bytes();
            bytes.push(b'\n');
            self.writer
                .write_all(&bytes)
                .await
                .map_err(|source| QmpError::Io {
                    command: command.into(),
                    source,
                })?;
            loop {
                let line = read_line(&mut self.reader, command).await?;
                if reply_id(&line).is_some_and(|other| other != id) {
                    continue; // the answer to an earlier command that timed out
                }
                match parse_message(&line) {
                    Some(Message::Return(v)) => return Ok(v),
                    Some(Message::Error { class, desc }) => {
                        return Err(QmpError::Refused {
                            command: command.into(),
                            class,
                            desc,
                        })
                    }
                    Some(Message::Event(_)) => continue,
                    None => {
                        return Err(QmpError::BadReply {
                            command: command.into(),
                            line,
                        })
                    }
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.into(),
                timeout,
            })?
    }
}

async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    command: &str,
) -> Result<String, QmpError> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|source| QmpError::Io {
            command: command.into(),
            source,
        })?;
    if n == 0 {
        return Err(QmpError::Closed(command.into()));
    }
    if !buf.ends_with(b"\n") {
        return Err(QmpError::BadReply {
            command: command.into(),
            line: "a line over 1 MiB".into(),
        });
    }
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_a_reply_echoes() {
        assert_eq!(reply_id(r#"{"return": {}, "id": 7}"#), Some(7));
        assert_eq!(reply_id(r#"{"return": {}}"#), None);
        assert_eq!(reply_id("not json"), None);
    }

    #[test]
    fn reads_qemu_greeting() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            parse_greeting(line),
            Some(QemuVersion {
                major: 7,
                minor: 2,
                micro: 22
            })
        );
        assert_eq!(parse_greeting(r#"{"hello": 1}"#), None);
        assert_eq!(parse_greeting("SSH-2.0-OpenSSH"), None);
    }

    #[test]
    fn classifies_replies() {
        assert_eq!(
            parse_message(r#"{"return": {"actual": 1}}"#),
            Some(Message::Return(json!({"actual": 1})))
        );
        assert_eq!(
            parse_message(r#"{"error": {"class": "GenericError", "desc": "No balloon device"}}"#),
            Some(Message::Error {
                class: "GenericError".into(),
                desc: "No balloon device".into()
            })
        );
        assert_eq!(
            parse_message(
                r#"{"timestamp": {"seconds": 1}, "event": "BALLOON_CHANGE", "data": {}}"#
            ),
            Some(Message::Event("BALLOON_CHANGE".into()))
        );
        assert_eq!(parse_message("{}"), None);
        assert_eq!(parse_message("garbage"), None);
    }

    #[tokio::test]
    async fn a_socket_that_is_not_qemu_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"220 smtp.example ESMTP\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let err = Qmp::connect(&path, Duration::from_secs(2))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not a QEMU QMP socket"), "{err}");
        assert!(err.contains("220 smtp.example"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_socket_times_out_as_not_qmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let _held = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = Qmp::connect(&path, Duration::from_millis(300))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sent no QMP greeting"), "{err}");
    }
}
