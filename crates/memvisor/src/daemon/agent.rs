//! The daemon's side of the guest agent's virtio-serial port: keeps a connection, sends the
//! VM's workload on every (re)connect, records reports and answers verify requests.

use memvisor_core::agent::{AgentReport, FromGuest, ToGuest};
use memvisor_core::translation::GuestPage;
use memvisor_core::workload::Workload;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

#[derive(Default)]
pub struct AgentState {
    pub report: Option<AgentReport>,
    /// When the last report arrived.
    pub heard_at: Option<std::time::Instant>,
    pub pending_verify: Option<oneshot::Sender<(u64, u64)>>,
    pub pending_translate: Option<oneshot::Sender<Result<GuestPage, String>>>,
    pub last_rejection: Option<String>,
}

pub struct AgentLink {
    pub state: Arc<Mutex<AgentState>>,
    commands: mpsc::UnboundedSender<ToGuest>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentLink {
    pub fn start(socket: PathBuf, workload: Arc<Mutex<Workload>>) -> AgentLink {
        let state = Arc::new(Mutex::new(AgentState::default()));
        let (commands, mut inbox) = mpsc::unbounded_channel::<ToGuest>();
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(stream) = UnixStream::connect(&socket).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let (read, mut write) = stream.into_split();
                let current = workload.lock().expect("workload lock").clone();
                let mut lines = BufReader::new(read).lines();
                if send(&mut write, &ToGuest::SetWorkload { workload: current })
                    .await
                    .is_err()
                {
                    continue;
                }
                loop {
                    tokio::select! {
                        line = lines.next_line() => match line {
                            Ok(Some(line)) => record(&task_state, &line),
                            _ => break,
                        },
                        Some(command) = inbox.recv() => {
                            if send(&mut write, &command).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        AgentLink {
            state,
            commands,
            task,
        }
    }

    pub fn send(&self, command: ToGuest) {
        let _ = self.commands.send(command);
    }

    pub fn heard_at(&self) -> Option<std::time::Instant> {
        self.state.lock().expect("agent lock").heard_at
    }

    pub fn report(&self) -> Option<AgentReport> {
        self.state.lock().expect("agent lock").report.clone()
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    command: &ToGuest,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(command).expect("agent commands serialize");
    line.push(b'\n');
    write.write_all(&line).await
}

fn record(state: &Mutex<AgentState>, line: &str) {
    let mut state = state.lock().expect("agent lock");
    match serde_json::from_str::<FromGuest>(line) {
        Ok(FromGuest::Report(report)) => {
            state.report = Some(report);
            state.heard_at = Some(std::time::Instant::now());
        }
        Ok(FromGuest::Verified { pages, corrupt }) => {
            if let Some(reply) = state.pending_verify.take() {
                let _ = reply.send((pages, corrupt));
            }
        }
        Ok(FromGuest::Translated { page, error }) => {
            if let Some(reply) = state.pending_translate.take() {
                let _ = reply.send(page.ok_or_else(|| error.unwrap_or_default()));
            }
        }
        Ok(FromGuest::Rejected { message }) => state.last_rejection = Some(message),
        Err(e) => state.last_rejection = Some(format!("unreadable agent line ({e}): {line}")),
    }
}
