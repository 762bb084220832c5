//! A VM runs in a task of its own that owns its QEMU connection and agent link. The daemon
//! talks to it through a handle: commands in, replies out, and a view of its state published
//! after every command, so that nobody locks a VM or waits for one to read it.

use super::super::agent::Translated;
use super::super::state::SavedVm;
use super::super::DaemonError;
use super::{Vm, VmView};
use memvisor_core::api::Change;
use memvisor_core::status::{Accelerator, EventKind};
use memvisor_core::translation::GuestAddress;
use memvisor_core::workload::Workload;
use memvisor_core::Size;
use memvisor_guest::image::Image;
use memvisor_host::cgroup::Group;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands waiting beyond this make their senders wait: a VM is asked a few things a round.
const INBOX: usize = 16;

type Reply<T> = oneshot::Sender<Result<T, DaemonError>>;

/// Where a launched VM's QEMU lives: its directory, accelerator and cgroup.
pub struct Place {
    pub dir: PathBuf,
    pub accel: Accelerator,
    pub cgroup: Group,
}

enum Command {
    Launch {
        place: Place,
        image: Option<Image>,
        reply: Reply<()>,
    },
    Adopt {
        saved: SavedVm,
        place: Place,
        reply: Reply<()>,
    },
    Observe {
        accessed: Option<Size>,
        reply: oneshot::Sender<Vec<(EventKind, String)>>,
    },
    Allocate {
        target: Size,
        reply: Reply<()>,
    },
    Cap {
        limit: Option<Size>,
        reply: Reply<()>,
    },
    HoldCpu {
        percent: Option<u32>,
        reply: Reply<bool>,
    },
    Balloon {
        target: Size,
        reply: Reply<Size>,
    },
    Workload {
        workload: Workload,
        reply: Reply<()>,
    },
    Reconfigure {
        change: Change,
        host: (Size, Size),
        others: Vec<(String, Size)>,
        reply: Reply<()>,
    },
    Stop {
        reply: Reply<()>,
    },
    Release {
        reply: Reply<()>,
    },
    Failed {
        why: String,
    },
    Monitor {
        command: String,
        reply: Reply<String>,
    },
    Verify {
        reply: Reply<oneshot::Receiver<(u64, u64)>>,
    },
    Translate {
        address: GuestAddress,
        reply: Reply<Option<oneshot::Receiver<Translated>>>,
    },
}

/// The daemon's side of a VM's task.
#[derive(Clone)]
pub struct VmHandle {
    commands: mpsc::Sender<Command>,
    views: watch::Receiver<VmView>,
}

impl VmHandle {
    /// Starts the VM's task; it ends once every handle is gone.
    pub fn spawn(vm: Vm) -> VmHandle {
        let (commands, inbox) = mpsc::channel(INBOX);
        let (publish, views) = watch::channel(vm.view());
        tokio::spawn(run(vm, inbox, publish));
        VmHandle { commands, views }
    }

    /// The VM as of its last command.
    pub fn view(&self) -> VmView {
        self.views.borrow().clone()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DaemonError> {
        let (reply, answer) = oneshot::channel();
        let gone = || DaemonError::Io(format!("{}'s task has ended", self.view().name()));
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Starts its QEMU in a fresh cgroup and connects to it.
    pub async fn launch(&self, place: Place, image: Option<Image>) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Launch {
            place,
            image,
            reply,
        })
        .await?
    }

    /// Takes over a QEMU the daemon before this one launched, changing nothing in the guest.
    pub async fn adopt(&self, saved: SavedVm, place: Place) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Adopt {
            saved,
            place,
            reply,
        })
        .await?
    }

    /// Refreshes every figure; returns what happened to the VM (booted, lost, a fault).
    pub async fn observe(&self, accessed: Option<Size>) -> Vec<(EventKind, String)> {
        self.ask(|reply| Command::Observe { accessed, reply })
            .await
            .unwrap_or_default()
    }

    /// Gives the guest `target` in all: the balloon below its boot size, virtio-mem above.
    pub async fn allocate(&self, target: Size) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Allocate { target, reply })
            .await?
    }

    /// Caps its QEMU on the host (None lifts the cap).
    pub async fn cap(&self, limit: Option<Size>) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Cap { limit, reply }).await?
    }

    /// Holds its QEMU to `percent` of a core (None lets it go); true when that changed it.
    pub async fn hold_cpu(&self, percent: Option<u32>) -> Result<bool, DaemonError> {
        self.ask(|reply| Command::HoldCpu { percent, reply })
            .await?
    }

    /// A manual balloon target, checked against the VM's settings; returns the target before.
    pub async fn set_balloon(&self, target: Size) -> Result<Size, DaemonError> {
        self.ask(|reply| Command::Balloon { target, reply }).await?
    }

    pub async fn set_workload(&self, workload: Workload) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Workload { workload, reply })
            .await?
    }

    /// Applies `change`, checked against the host's (budget, reserve) and the other VMs'
    /// reservations.
    pub async fn reconfigure(
        &self,
        change: Change,
        host: (Size, Size),
        others: Vec<(String, Size)>,
    ) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Reconfigure {
            change,
            host,
            others,
            reply,
        })
        .await?
    }

    pub async fn stop(&self) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Stop { reply }).await?
    }

    /// Puts back what memvisor wrote into an attached QEMU's cgroup.
    pub async fn release(&self) -> Result<(), DaemonError> {
        self.ask(|reply| Command::Release { reply }).await?
    }

    /// Keeps why the VM could not start, for `ps` and `stats`.
    pub async fn failed(&self, why: String) {
        let _ = self.commands.send(Command::Failed { why }).await;
    }

    /// A QEMU human monitor command; what the monitor printed.
    pub async fn monitor(&self, command: String) -> Result<String, DaemonError> {
        self.ask(|reply| Command::Monitor { command, reply })
            .await?
    }

    /// Asks the guest agent to check every page it wrote; its answer comes later.
    pub async fn verify(&self) -> Result<oneshot::Receiver<(u64, u64)>, DaemonError> {
        self.ask(|reply| Command::Verify { reply }).await?
    }

    /// Asks the guest agent where `address` lies; None without an agent.
    pub async fn agent_translate(
        &self,
        address: GuestAddress,
    ) -> Result<Option<oneshot::Receiver<Translated>>, DaemonError> {
        self.ask(|reply| Command::Translate { address, reply })
            .await?
    }
}

/// Sends a command's reply; run once the view that shows its effect is published.
type Answer = Box<dyn FnOnce() + Send>;

fn answer<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) -> Answer {
    Box::new(move || {
        let _ = reply.send(value);
    })
}

async fn run(mut vm: Vm, mut inbox: mpsc::Receiver<Command>, publish: watch::Sender<VmView>) {
    while let Some(command) = inbox.recv().await {
        let answer = execute(&mut vm, command).await;
        if inbox.is_empty() {
            vm.hang_up();
        }
        publish.send_replace(vm.view());
        answer();
    }
}

async fn execute(vm: &mut Vm, command: Command) -> Answer {
    match command {
        Command::Launch {
            place,
            image,
            reply,
        } => answer(reply, vm.launch(place, image.as_ref()).await),
        Command::Adopt {
            saved,
            place,
            reply,
        } => answer(reply, vm.adopt(&saved, place).await),
        Command::Observe { accessed, reply } => answer(reply, vm.observe(accessed).await),
        Command::Allocate { target, reply } => answer(reply, vm.set_allocation(target).await),
        Command::Cap { limit, reply } => answer(reply, vm.set_cgroup_limit(limit).await),
        Command::HoldCpu { percent, reply } => answer(reply, vm.hold_cpu(percent)),
        Command::Balloon { target, reply } => {
            let before = vm.target();
            answer(reply, vm.set_balloon(target).await.map(|()| before))
        }
        Command::Workload { workload, reply } => answer(reply, vm.set_workload(workload)),
        Command::Reconfigure {
            change,
            host,
            others,
            reply,
        } => answer(reply, vm.reconfigure(&change, host, &others).await),
        Command::Stop { reply } => answer(reply, vm.stop().await),
        Command::Release { reply } => answer(reply, vm.release().await),
        Command::Failed { why } => {
            vm.failed(why);
            Box::new(|| {})
        }
        Command::Monitor { command, reply } => answer(reply, vm.monitor(&command).await),
        Command::Verify { reply } => answer(reply, vm.verify()),
        Command::Translate { address, reply } => answer(reply, Ok(vm.agent_translate(address))),
    }
}
