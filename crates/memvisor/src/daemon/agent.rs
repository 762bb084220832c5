//! The daemon's side of the guest agent's virtio-serial port: keeps a connection, sends the
//! VM's workload on every (re)connect, records reports, and hands each verify or translate
//! reply to the request that asked (the agent answers in the order it was asked).

use memvisor_core::agent::{AgentReport, FromGuest, ToGuest};
use memvisor_core::translation::{GuestAddress, GuestPage};
use memvisor_core::workload::Workload;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

pub type Translated = Result<GuestPage, String>;

#[derive(Default)]
struct AgentState {
    report: Option<AgentReport>,
    /// When the last report arrived.
    heard_at: Option<std::time::Instant>,
    verifying: VecDeque<oneshot::Sender<(u64, u64)>>,
    translating: VecDeque<oneshot::Sender<Translated>>,
}

/// The agent's reports, readable by whoever holds this, without the VM.
#[derive(Clone)]
pub struct AgentReports(Arc<Mutex<AgentState>>);

impl AgentReports {
    pub fn latest(&self) -> Option<AgentReport> {
        self.0.lock().expect("agent lock").report.clone()
    }
}

pub struct AgentLink {
    state: Arc<Mutex<AgentState>>,
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

    fn send(&self, command: ToGuest) {
        let _ = self.commands.send(command);
    }

    pub fn set_workload(&self, workload: Workload) {
        self.send(ToGuest::SetWorkload { workload });
    }

    /// Asks the agent to check every page it wrote: (pages, corrupt) once it has.
    pub fn verify(&self) -> oneshot::Receiver<(u64, u64)> {
        let (tx, rx) = oneshot::channel();
        self.state
            .lock()
            .expect("agent lock")
            .verifying
            .push_back(tx);
        self.send(ToGuest::Verify);
        rx
    }

    /// Asks the agent where `address` lies in its guest.
    pub fn translate(&self, address: GuestAddress) -> oneshot::Receiver<Translated> {
        let (tx, rx) = oneshot::channel();
        self.state
            .lock()
            .expect("agent lock")
            .translating
            .push_back(tx);
        self.send(ToGuest::Translate { address });
        rx
    }

    pub fn heard_at(&self) -> Option<std::time::Instant> {
        self.state.lock().expect("agent lock").heard_at
    }

    pub fn report(&self) -> Option<AgentReport> {
        self.reports().latest()
    }

    pub fn reports(&self) -> AgentReports {
        AgentReports(self.state.clone())
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
            if let Some(reply) = state.verifying.pop_front() {
                let _ = reply.send((pages, corrupt));
            }
        }
        Ok(FromGuest::Translated { page, error }) => {
            if let Some(reply) = state.translating.pop_front() {
                let _ = reply.send(page.ok_or_else(|| error.unwrap_or_default()));
            }
        }
        Ok(FromGuest::Rejected { message }) => tracing::warn!("the guest agent refused: {message}"),
        Err(e) => tracing::warn!("unreadable guest agent line ({e}): {line}"),
    }
}
