//! libvirtd's RPC: packets of a length, a 24-byte header and an XDR body over a Unix socket.
//! Calls are matched to their replies by serial; events arrive as messages in between.

use crate::xdr::{Reader, Writer};
use crate::LibvirtError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
pub const QEMU_PROGRAM: u32 = 0x2000_8087;
const PROTOCOL_VERSION: u32 = 1;
const CALL: u32 = 0;
const REPLY: u32 = 1;
const MESSAGE: u32 = 2;
const STATUS_OK: u32 = 0;
const HEADER_BYTES: usize = 24;
/// libvirt's own bound on a packet (VIR_NET_MESSAGE_MAX) is 32 MiB.
const MAX_PACKET: usize = 32 << 20;
/// A call libvirtd does not answer within this is given up: a hung QEMU monitor holds a call
/// for libvirt's own 30 s job timeout at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// An event libvirtd sent: its program, procedure and body.
pub struct Message {
    pub procedure: i32,
    pub body: Vec<u8>,
}

type Waiting = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Vec<u8>, LibvirtError>>>>>;

pub struct Rpc {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiting: Waiting,
    serial: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Rpc {
    /// Connects to `socket`; events go to `messages`, which closes when the connection does.
    pub async fn connect(
        socket: &Path,
        messages: mpsc::UnboundedSender<Message>,
    ) -> Result<Rpc, std::io::Error> {
        let stream = UnixStream::connect(socket).await?;
        let (read, write) = stream.into_split();
        let waiting: Waiting = Arc::default();
        let reader = tokio::spawn(read_forever(read, waiting.clone(), messages));
        Ok(Rpc {
            writer: tokio::sync::Mutex::new(write),
            waiting,
            serial: AtomicU32::new(1),
            reader,
        })
    }

    /// Calls `procedure` of `program` with an XDR body; the reply's body.
    pub async fn call(
        &self,
        program: u32,
        procedure: i32,
        body: &[u8],
    ) -> Result<Vec<u8>, LibvirtError> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(serial, tx);
        let mut packet = Writer::default();
        packet
            .u32((4 + HEADER_BYTES + body.len()) as u32)
            .u32(program)
            .u32(PROTOCOL_VERSION)
            .i32(procedure)
            .u32(CALL)
            .u32(serial)
            .u32(STATUS_OK);
        packet.0.extend_from_slice(body);
        let sent = self.writer.lock().await.write_all(&packet.0).await;
        let forget = || self.waiting.lock().expect("waiting lock").remove(&serial);
        if sent.is_err() {
            forget();
            return Err(LibvirtError::Closed);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(LibvirtError::Closed),
            Err(_) => {
                forget();
                Err(LibvirtError::Timeout {
                    procedure,
                    after: CALL_TIMEOUT,
                })
            }
        }
    }
}

async fn read_forever(
    mut read: OwnedReadHalf,
    waiting: Waiting,
    messages: mpsc::UnboundedSender<Message>,
) {
    while let Ok(packet) = read_packet(&mut read).await {
        let Ok((header, body)) = split(&packet) else {
            break;
        };
        match header.kind {
            REPLY => {
                let reply = if header.status == STATUS_OK {
                    Ok(body.to_vec())
                } else {
                    Err(refusal(body))
                };
                let waiter = waiting.lock().expect("waiting lock").remove(&header.serial);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            MESSAGE if header.program == REMOTE_PROGRAM => {
                let _ = messages.send(Message {
                    procedure: header.procedure,
                    body: body.to_vec(),
                });
            }
            // Keepalive and stream packets: memvisor asks for neither.
            _ => {}
        }
    }
    // Callers still waiting see the connection closed as their senders drop.
    waiting.lock().expect("waiting lock").clear();
}

async fn read_packet(read: &mut OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let length = read.read_u32().await? as usize;
    if !(4 + HEADER_BYTES..=MAX_PACKET).contains(&length) {
        return Err(std::io::Error::other(format!("a packet of {length} bytes")));
    }
    let mut packet = vec![0; length - 4];
    read.read_exact(&mut packet).await?;
    Ok(packet)
}

struct Header {
    program: u32,
    procedure: i32,
    kind: u32,
    serial: u32,
    status: u32,
}

fn split(packet: &[u8]) -> Result<(Header, &[u8]), LibvirtError> {
    let mut r = Reader::new(packet);
    let program = r.u32()?;
    let _version = r.u32()?;
    let header = Header {
        program,
        procedure: r.i32()?,
        kind: r.u32()?,
        serial: r.u32()?,
        status: r.u32()?,
    };
    Ok((header, &packet[HEADER_BYTES..]))
}

/// A remote_error: its code and message are all memvisor reports.
fn refusal(body: &[u8]) -> LibvirtError {
    let mut r = Reader::new(body);
    let parsed = (|| {
        let code = r.i32()?;
        let _domain = r.i32()?;
        let message = r.optional_string()?;
        Ok::<_, LibvirtError>((code, message))
    })();
    match parsed {
        Ok((code, message)) => LibvirtError::Refused {
            code,
            message: message.unwrap_or_else(|| format!("error {code}")),
        },
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_gives_libvirts_code_and_message() {
        let mut body = Writer::default();
        body.i32(42)
            .i32(10)
            .optional_string(Some("Domain not found: no domain with matching name 'x'"));
        match refusal(&body.0) {
            LibvirtError::Refused { code, message } => {
                assert_eq!(code, 42);
                assert!(message.contains("no domain with matching name"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_is_read_from_its_six_words() {
        let mut packet = Writer::default();
        packet
            .u32(REMOTE_PROGRAM)
            .u32(1)
            .i32(318)
            .u32(MESSAGE)
            .u32(0)
            .u32(0)
            .u32(7);
        let (header, body) = split(&packet.0).unwrap();
        assert_eq!(
            (header.program, header.procedure, header.kind),
            (REMOTE_PROGRAM, 318, MESSAGE)
        );
        assert_eq!(body, [0, 0, 0, 7]);
    }
}
