//! The daemon: launches the configured VMs, every second observes them and the host and lets
//! the scheduler's policy decide, and serves the HTTP API the CLI speaks.

mod admission;
mod agent;
pub mod api;
mod attached;
mod events;
mod history;
mod inspect;
mod knobs;
mod libvirt;
pub mod metrics;
mod scheduler;
mod state;
mod vm;
mod working_sets;

use memvisor_core::api::{Change, SOCKET_NAME, TOKEN_FILE};
use memvisor_core::config::{Budget, Config};
use memvisor_core::status::Accelerator;
use memvisor_core::status::{EventKind, HostStatus, Origin, VmState, VmStatus};
use memvisor_core::Size;
use memvisor_guest::image::Image;
use memvisor_host::cgroup::{CgroupError, Group, Hierarchy};
use memvisor_host::meminfo::HostMemory;
use memvisor_host::swap::SwapFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use vm::{Place, Vm, VmHandle};

const OBSERVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no VM named '{0}'; 'memvisor ps' lists the VMs")]
    UnknownVm(String),
    #[error("VM '{0}' is not running; start it with 'memvisor start {0}'")]
    NotRunning(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Qmp(#[from] memvisor_qemu::qmp::QmpError),
    #[error(transparent)]
    Balloon(#[from] memvisor_qemu::balloon::BalloonError),
    #[error(transparent)]
    Launch(#[from] memvisor_qemu::launch::LaunchError),
    #[error(transparent)]
    Accel(#[from] memvisor_qemu::accel::AccelError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    VirtioMem(#[from] memvisor_qemu::virtio_mem::VirtioMemError),
    #[error(transparent)]
    Ksm(#[from] memvisor_host::ksm::KsmError),
    #[error(transparent)]
    Swap(#[from] memvisor_host::swap::SwapError),
    #[error("not admitted: {0}")]
    Refused(String),
    #[error(transparent)]
    Image(#[from] memvisor_guest::image::ImageError),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Disk(#[from] memvisor_qemu::disk::DiskError),
    #[error(transparent)]
    Libvirt(#[from] memvisor_libvirt::LibvirtError),
    #[error("no guest image is built, and a VM without a disk boots memvisor's: run 'memvisor image build', or give the VM a disk")]
    NoImage,
    #[error("the guest agent of {0} did not answer within {1:?}; is the VM still booting?")]
    AgentTimeout(String, Duration),
}

/// The daemon's OOM score adjustment, as the packaged unit's OOMScoreAdjust.
pub const OOM_SCORE_ADJ: i32 = -900;

pub struct Daemon {
    config: Config,
    dir: PathBuf,
    /// memvisor's guest image, which VMs without a disk boot; none built is fine for the rest.
    image: Option<Image>,
    accel: Accelerator,
    hierarchy: Hierarchy,
    /// The cgroup that holds the launched VMs; in the lab its limit is the budget.
    parent: Group,
    /// The memory the VMs share: the lab host's size, or the machine's (MemTotal).
    budget: Size,
    /// Each VM's task, by name; the map's lock is never held across a wait.
    vms: Mutex<BTreeMap<String, VmHandle>>,
    scheduler: Mutex<scheduler::Scheduler>,
    knobs: Mutex<knobs::HostKnobs>,
    events: Mutex<events::EventLog>,
    history: Mutex<history::History>,
    host_swap: Mutex<Option<SwapFile>>,
    /// What went wrong while the daemon started, told once the event log is open.
    startup_faults: Mutex<Vec<String>>,
    /// The state last written to DIR/state.json.
    last_saved: Mutex<Option<state::Saved>>,
    /// VMs asking to start, each answered by the next scheduling round.
    asking: Mutex<Vec<admission::Asking>>,
    /// Until the predecessor's state is taken over, writing ours would forget its VMs.
    recovered: std::sync::atomic::AtomicBool,
    access: Mutex<working_sets::AccessSensor>,
    /// Sockets discovery could not attach, not tried again for a while.
    refused: Mutex<attached::Refused>,
    /// The connection to libvirtd, where [libvirt] names one.
    libvirt: Option<vm::Connection>,
    /// libvirt's events until the daemon follows them.
    libvirt_events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<memvisor_libvirt::Event>>>,
    /// Domains' memtune hard limits as a daemon before this one found them, by name.
    libvirt_found: Mutex<BTreeMap<String, Option<Size>>>,
    pub shutdown: Notify,
}

/// A memory manager the OOM killer takes first is worse than none; its QEMUs stay killable
/// (launch resets theirs).
fn protect_from_oom(startup_faults: &mut Vec<String>) {
    match memvisor_host::process::protect_from_oom(OOM_SCORE_ADJ) {
        Ok(adj) => tracing::info!("oom_score_adj {adj}: the OOM killer takes other processes first"),
        Err(e) => startup_faults.push(format!(
            "the daemon is not protected from the OOM killer: lowering its oom_score_adj to {OOM_SCORE_ADJ} failed ({e}; it needs CAP_SYS_RESOURCE); run it from memvisor.service, whose OOMScoreAdjust does it"
        )),
    }
}

/// The host swap file [host] swap asks for. Without it the VMs still run: the ladder's hard
/// rung then only compresses.
fn enable_host_swap(
    config: &Config,
    dir: &Path,
    startup_faults: &mut Vec<String>,
) -> Result<Option<SwapFile>, DaemonError> {
    if config.host.swap == Size::ZERO {
        return Ok(None);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| DaemonError::Io(format!("cannot create {}: {e}", dir.display())))?;
    match SwapFile::enable(&dir.join("host-swap.img"), config.host.swap) {
        Ok(file) => Ok(Some(file)),
        Err(e) => {
            startup_faults.push(format!(
                "host swap of {} not enabled: {e}; free space in {} or lower [host] swap",
                config.host.swap,
                dir.display()
            ));
            Ok(None)
        }
    }
}

impl Daemon {
    /// Prepares the host side (accelerator, parent cgroup with the budget) without starting VMs.
    pub async fn new(
        config: Config,
        dir: PathBuf,
        image: Option<Image>,
    ) -> Result<Daemon, DaemonError> {
        let kernel = image.as_ref().map(|i| i.kernel.as_path());
        let (accel, why_not_kvm) = memvisor_qemu::accel::resolve(config.host.accel, kernel).await?;
        if let Some(why) = why_not_kvm {
            tracing::info!("using TCG: KVM cannot run a guest here ({why})");
        }
        let machine = memvisor_host::meminfo::read()
            .map_err(|e| DaemonError::Io(format!("cannot read the machine's memory: {e}")))?;
        let budget = config
            .budget_on(machine.total)
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        // A libvirtd that does not answer is refused before anything on the host changes.
        let (libvirt, libvirt_events) = match &config.libvirt {
            Some(l) => {
                let (connection, events) = libvirt::connect(&l.uri).await?;
                (Some(connection), Some(events))
            }
            None => (None, None),
        };
        let hierarchy = Hierarchy::detect()?;
        let parent = hierarchy.group(&config.host.cgroup);
        parent.create()?;
        // On a real host the machine's memory is the limit; the group only holds the VMs.
        parent.set_limit(match config.host.budget {
            Budget::Fixed(size) => Some(size),
            Budget::Auto => None,
        })?;
        let mut startup_faults = Vec::new();
        protect_from_oom(&mut startup_faults);
        let host_swap = enable_host_swap(&config, &dir, &mut startup_faults)?;
        let policy = memvisor_core::policy::from_settings(&config.scheduler);
        let vms = config
            .vms
            .iter()
            .map(|c| {
                let qmp = dir.join("vms").join(&c.name).join("qmp.sock");
                (
                    c.name.clone(),
                    VmHandle::spawn(Vm::new(c.clone(), Origin::Launched, qmp)),
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let event_log = events::EventLog::new(dir.join("events.jsonl"), started);
        let scheduler = scheduler::Scheduler::new(policy, &config, budget, started);
        Ok(Daemon {
            config,
            dir,
            image,
            accel,
            hierarchy,
            parent,
            budget,
            vms: Mutex::new(vms),
            scheduler: Mutex::new(scheduler),
            knobs: Mutex::new(knobs::HostKnobs::new()),
            events: Mutex::new(event_log),
            history: Mutex::new(history::History::default()),
            last_saved: Mutex::new(None),
            recovered: std::sync::atomic::AtomicBool::new(false),
            access: Mutex::new(working_sets::AccessSensor::new()),
            refused: Mutex::new(attached::Refused::default()),
            libvirt,
            libvirt_events: Mutex::new(libvirt_events),
            libvirt_found: Mutex::new(BTreeMap::new()),
            asking: Mutex::new(Vec::new()),
            host_swap: Mutex::new(host_swap),
            startup_faults: Mutex::new(startup_faults),
            shutdown: Notify::new(),
        })
    }

    pub fn vm(&self, name: &str) -> Result<VmHandle, DaemonError> {
        self.vms
            .lock()
            .expect("vms lock")
            .get(name)
            .cloned()
            .ok_or_else(|| DaemonError::UnknownVm(name.to_string()))
    }

    /// A VM's figures as of its last command, with its agent's latest report.
    pub fn status(&self, name: &str) -> Result<VmStatus, DaemonError> {
        Ok(self.vm(name)?.view().status())
    }

    pub fn statuses(&self) -> Vec<VmStatus> {
        self.all().iter().map(|vm| vm.view().status()).collect()
    }

    pub fn all(&self) -> Vec<VmHandle> {
        self.vms
            .lock()
            .expect("vms lock")
            .values()
            .cloned()
            .collect()
    }

    /// Where a launched VM's QEMU lives.
    fn place(&self, name: &str) -> Place {
        Place {
            dir: self.dir.join("vms").join(name),
            accel: self.accel,
            cgroup: self.parent.child(name),
        }
    }

    pub async fn start(&self, name: &str) -> Result<(), DaemonError> {
        let vm = self.vm(name)?;
        let view = vm.view();
        // An attached or running VM is refused by its task; it asks for no room.
        if view.state != VmState::Running && view.origin == Origin::Launched {
            self.admit(name, view.config.memory, view.config.reservation)
                .await?;
        }
        vm.launch(self.place(name), self.image.clone()).await?;
        let view = vm.view();
        let reason = format!(
            "{name} started: {} MiB, reservation {} MiB, shares {}, pid {}",
            view.config.memory.as_mib(),
            view.config.reservation.as_mib(),
            view.config.shares,
            pid_text(view.pid)
        );
        self.note(EventKind::Lifecycle, Some(name), reason);
        self.save_state().await;
        Ok(())
    }

    pub async fn stop(&self, name: &str) -> Result<(), DaemonError> {
        self.vm(name)?.stop().await?;
        self.note(
            EventKind::Operator,
            Some(name),
            format!("{name} stopped on request"),
        );
        self.save_state().await;
        Ok(())
    }

    /// Changes a VM's reservation, limit, shares or size while it runs.
    pub async fn reconfigure(&self, name: &str, change: Change) -> Result<(), DaemonError> {
        let vm = self.vm(name)?;
        let others = self
            .all()
            .iter()
            .map(VmHandle::view)
            .filter(|v| v.name() != name)
            .map(|v| (v.name().to_string(), v.config.reservation))
            .collect();
        vm.reconfigure(
            change.clone(),
            (self.budget, self.config.host.reserve),
            others,
        )
        .await?;
        self.note(
            EventKind::Operator,
            Some(name),
            format!("{name} reconfigured on request: {change}"),
        );
        self.save_state().await;
        Ok(())
    }

    /// Starts every configured VM; one that fails is reported and the rest still start.
    pub async fn start_all(&self) {
        for name in self.config.vms.iter().map(|v| v.name.clone()) {
            if let Ok(vm) = self.vm(&name) {
                if vm.view().state == VmState::Running {
                    continue; // taken over from the daemon before this one
                }
            }
            if let Err(e) = self.start(&name).await {
                tracing::error!("cannot start {name}: {e}");
                if let Ok(vm) = self.vm(&name) {
                    vm.failed(e.to_string()).await;
                }
            }
        }
    }

    pub async fn schedule_forever(self: Arc<Self>) {
        loop {
            let accessed = Arc::new(self.sense_access().await);
            // All at once: a QEMU slow to answer (a busy TCG guest) must not delay the others.
            let mut observing = tokio::task::JoinSet::new();
            for vm in self.all() {
                let name = vm.view().name().to_string();
                let seen = accessed.get(&name).copied();
                observing.spawn(async move { (name, vm.observe(seen).await) });
            }
            for (vm, happened) in observing.join_all().await {
                for (kind, reason) in happened {
                    self.note(kind, Some(&vm), reason);
                }
            }
            self.let_go_of_ended().await;
            let asking = std::mem::take(&mut *self.asking.lock().expect("asking lock"));
            let pending = asking.iter().map(|a| a.vm.clone()).collect();
            let plan = self.schedule(pending).await;
            for a in asking {
                a.answer(&plan);
            }
            self.check_host_swap().await;
            self.save_state().await;
            tokio::time::sleep(OBSERVE_EVERY).await;
        }
    }

    /// What DAMON saw each VM it watches access during the last second.
    async fn sense_access(&self) -> BTreeMap<String, Size> {
        let mut watchable = Vec::new();
        for vm in self.all().iter().map(VmHandle::view) {
            if let (Some(pid), VmState::Running | VmState::Starting) = (vm.pid, vm.state) {
                watchable.push(working_sets::Watchable {
                    name: vm.name().to_string(),
                    pid,
                    guest_ram: vm.boot_memory,
                });
            }
        }
        let (sensed, rewatched) = {
            let mut access = self.access.lock().expect("access lock");
            let before = access.watched();
            let sensed = access.sense(&watchable);
            (sensed, access.watched() != before)
        };
        // A daemon killed now must find the kdamonds it runs recorded, to take them over.
        if rewatched {
            self.save_state().await;
        }
        match sensed {
            Ok(accessed) => accessed,
            Err(why) => {
                self.note(EventKind::Fault, None, why);
                BTreeMap::new()
            }
        }
    }

    /// Notices the host swap file switched off behind memvisor's back (swapoff, a device
    /// gone): it is told once and no longer counted on.
    async fn check_host_swap(&self) {
        let gone = {
            let mut swap = self.host_swap.lock().expect("swap lock");
            let active = std::fs::read_to_string("/proc/swaps").ok().map(|swaps| {
                swap.as_ref()
                    .is_none_or(|f| memvisor_host::swap::is_active(&swaps, f.path()))
            });
            match (active, swap.as_ref()) {
                (Some(false), Some(file)) => {
                    let path = file.path().to_path_buf();
                    *swap = None;
                    Some(path)
                }
                _ => None,
            }
        };
        if let Some(path) = gone {
            self.note(
                EventKind::Fault,
                None,
                format!(
                    "host swap {} was switched off outside memvisor: VMs can no longer be swapped by the host, the hard rung only compresses; restart the daemon to enable it again",
                    path.display()
                ),
            );
        }
    }

    /// Writes DIR/state.json if anything a restarted daemon needs has changed.
    pub async fn save_state(&self) {
        if !self.recovered.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (ksm_found, zswap_found) = self.knobs.lock().expect("knobs lock").found();
        let mut saved = state::Saved {
            ksm_found,
            zswap_found,
            damon_watched: self.access.lock().expect("access lock").watched(),
            vms: BTreeMap::new(),
        };
        for vm in self.all().iter().map(VmHandle::view) {
            if let Some(s) = vm.saved {
                saved.vms.insert(vm.config.name, s);
            }
        }
        let mut last = self.last_saved.lock().expect("state lock");
        if last.as_ref() == Some(&saved) {
            return;
        }
        match state::save(&self.dir, &saved) {
            Ok(()) => *last = Some(saved),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Takes over what a killed predecessor left: its event log, the host settings it found,
    /// and every QEMU still running, without touching the guests.
    pub async fn recover(&self) -> Result<(), DaemonError> {
        self.events.lock().expect("events lock").resume();
        let faults = std::mem::take(&mut *self.startup_faults.lock().expect("faults lock"));
        for fault in faults {
            self.note(EventKind::Fault, None, fault);
        }
        let Some(saved) = state::load(&self.dir).map_err(|e| DaemonError::Io(e.to_string()))?
        else {
            self.recovered
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(());
        };
        self.knobs
            .lock()
            .expect("knobs lock")
            .remember_found(saved.ksm_found, saved.zswap_found);
        // Kdamonds that no longer watch what the predecessor recorded are not memvisor's to
        // touch; sensing says why once.
        self.access
            .lock()
            .expect("access lock")
            .adopt(&saved.damon_watched);
        for (name, s) in &saved.vms {
            let alive = memvisor_host::process::is_alive(s.pid);
            let result = match (s.origin, alive) {
                // libvirt lists its running domains again; what memvisor found is kept for them.
                (Origin::Libvirt, _) => {
                    if let Some(found) = s.host_limit_found {
                        self.libvirt_found
                            .lock()
                            .expect("found lock")
                            .insert(name.clone(), found.limit);
                    }
                    continue;
                }
                (_, false) => Err(DaemonError::Io(format!(
                    "its QEMU (pid {}) ended while no daemon watched it",
                    s.pid
                ))),
                (Origin::Attached, true) => self
                    .attach(attached::Attaching {
                        name: Some(name.clone()),
                        qmp: s.qmp.clone(),
                        reservation: s.reservation,
                        limit: s.limit,
                        shares: s.shares,
                        host_limit_found: s.host_limit_found.map(|f| f.limit),
                    })
                    .await
                    .map(|_| ()),
                (Origin::Launched, true) => match self.vm(name) {
                    Ok(vm) => vm.adopt(s.clone(), self.place(name)).await,
                    Err(_) => Err(DaemonError::Conflict(format!(
                        "the config no longer declares it; its QEMU (pid {}) keeps running: stop it by hand or declare it again",
                        s.pid
                    ))),
                },
            };
            let reason = match result {
                Ok(()) => format!(
                    "{name} taken over after a daemon restart: pid {}, balloon target {} kept",
                    s.pid,
                    self.vm(name)
                        .ok()
                        .and_then(|vm| vm.view().saved?.balloon_target)
                        .map_or("(none)".to_string(), |t| format!("{} MiB", t.as_mib()))
                ),
                Err(e) => format!("{name} not taken over after a daemon restart: {e}"),
            };
            self.note(EventKind::Lifecycle, Some(name), reason);
        }
        self.recovered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.save_state().await;
        Ok(())
    }

    /// Events numbered after `after`, oldest first.
    pub fn events(&self, after: u64) -> Vec<memvisor_core::status::Event> {
        self.events.lock().expect("events lock").after(after)
    }

    /// Scheduling rounds after `after_s` seconds of the daemon's clock, oldest first.
    pub fn history(&self, after_s: f64) -> Vec<memvisor_core::history::HistorySample> {
        self.history.lock().expect("history lock").after(after_s)
    }

    pub async fn counters(&self) -> metrics::Counters {
        let rounds_total = self
            .scheduler
            .lock()
            .expect("scheduler lock")
            .rounds_total();
        metrics::Counters {
            events_total: self.events.lock().expect("events lock").totals(),
            rounds_total,
            host_swap_out_bytes_total: memvisor_host::swap::counters().ok().map(|c| c.out_bytes()),
        }
    }

    /// Records something the daemon did or saw outside the policy's plan.
    pub fn note(&self, kind: EventKind, vm: Option<&str>, reason: String) {
        self.record(kind, vm, None, reason);
    }

    fn record(
        &self,
        kind: EventKind,
        vm: Option<&str>,
        action: Option<memvisor_core::plan::Action>,
        reason: String,
    ) {
        self.events
            .lock()
            .expect("events lock")
            .record(kind, vm, action, reason);
    }

    /// Stops launched VMs, lets attached ones be (their cgroups as memvisor found them), and
    /// removes memvisor's cgroups.
    pub async fn shut_down(&self) {
        for vm in self.all() {
            let view = vm.view();
            let done = match view.origin {
                // A launch still queued in the VM's task runs before this stop.
                Origin::Launched => match vm.stop().await {
                    Err(DaemonError::Conflict(_)) if view.state == VmState::Stopped => Ok(()),
                    done => done,
                },
                Origin::Attached | Origin::Libvirt => vm.release().await,
            };
            if let Err(e) = done {
                tracing::error!("letting go of {}: {e}", view.name());
            }
        }
        // Paced starts' groups in the cpu hierarchy sit where the memory groups do.
        let cpu = Hierarchy::detect_cpu();
        let groups = cpu.iter().map(|cpu| self.parent.in_hierarchy(cpu));
        for group in groups.chain([self.parent.clone()]) {
            if let Err(e) = group.remove() {
                tracing::error!("{e}");
            }
        }
        self.knobs.lock().expect("knobs lock").restore();
        self.access.lock().expect("access lock").stop();
        drop(self.host_swap.lock().expect("swap lock").take());
        state::clear(&self.dir);
    }

    /// Memory in use: in the lab what the VMs' parent cgroup is charged less its inactive file
    /// cache, on a real host what the kernel counts in use (host processes too, page cache
    /// not), from `machine`, this round's meminfo. Either way the cache the kernel drops first
    /// is free (measured: seed-pg, vm3's QEMU held 505 MiB of host cache of its snapshot
    /// overlay, 458 of it inactive, while ours read the host as hard and swapped vm1 and vm2).
    fn used(&self, machine: Option<HostMemory>) -> Option<Size> {
        match self.config.host.budget {
            Budget::Fixed(_) => self.parent.in_use().ok(),
            Budget::Auto => machine.map(|m| m.used()),
        }
    }

    /// Memory in use that no managed VM holds, on a real host (budget auto), where the kernel's
    /// figure counts every process; the VMs' RSS counts each page KSM merged once per VM. None in
    /// a lab, whose parent cgroup holds only VMs.
    pub(crate) fn other_used_mib(&self, used_mib: u64, ksm_saved_mib: u64) -> Option<u64> {
        matches!(self.config.host.budget, Budget::Auto).then(|| {
            let vms: u64 = self
                .all()
                .iter()
                .filter_map(|vm| vm.view().observation)
                .map(|o| o.host_rss_mib)
                .sum();
            (used_mib + ksm_saved_mib).saturating_sub(vms)
        })
    }

    pub async fn host_status(&self) -> HostStatus {
        let host = memvisor_host::meminfo::read().ok();
        let used_mib = self.used(host).map(Size::as_mib);
        let ksm_saved_mib = knobs::ksm_saved().map(Size::as_mib);
        let (policy, state) = {
            let scheduler = self.scheduler.lock().expect("scheduler lock");
            (
                scheduler.policy(),
                used_mib.map(|u| scheduler.free_state(u)),
            )
        };
        HostStatus {
            policy,
            state,
            ksm_saved_mib,
            other_used_mib: used_mib
                .and_then(|u| self.other_used_mib(u, ksm_saved_mib.unwrap_or(0))),
            swap_total_mib: host.map(|h| h.swap_total.as_mib()).unwrap_or(0),
            swap_used_mib: host
                .map(|h| (h.swap_total.as_bytes() - h.swap_free.as_bytes()) >> 20)
                .unwrap_or(0),
            psi_some_avg10: memvisor_host::pressure::some_avg10().ok(),
            budget_mib: self.budget.as_mib(),
            used_mib,
            free_mib: used_mib.map(|u| self.budget.as_mib().saturating_sub(u)),
            host_total_mib: host.map(|h| h.total.as_mib()).unwrap_or(0),
            host_available_mib: host.map(|h| h.available.as_mib()).unwrap_or(0),
            cgroup: self.parent.path.display().to_string(),
            cgroup_version: self.hierarchy.version,
            accel: self.accel,
            api_listen: self.config.api.listen.map(|a| a.to_string()),
        }
    }
}

/// A QEMU's pid as events tell it; an attached QEMU may not say.
pub(crate) fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".into(), |p| p.to_string())
}

/// The TCP API's token: kept across restarts so an open dashboard keeps working.
fn api_token(dir: &Path) -> Result<String, DaemonError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        if token.trim().len() >= 32 {
            return Ok(token.trim().to_string());
        }
    }
    let io = |e: std::io::Error| DaemonError::Io(format!("cannot create {}: {e}", path.display()));
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(io)?;
    Ok(token)
}

/// Waits until the daemon is asked to stop; says by what.
async fn stop_asked(daemon: &Daemon, term: &mut tokio::signal::unix::Signal) -> &'static str {
    tokio::select! {
        _ = daemon.shutdown.notified() => "asked through the API",
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Runs the daemon until `down` or SIGTERM/SIGINT: serve the API, start the VMs, observe.
pub async fn run(config: Config, dir: PathBuf, image: Option<Image>) -> Result<(), DaemonError> {
    let socket = dir.join(SOCKET_NAME);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::Io(format!("cannot create {}: {e}", dir.display())))?;
    // Something accepting connections there is a daemon still serving.
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(DaemonError::Conflict(format!(
            "a memvisor daemon already serves {}; stop it with 'memvisor down' first",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| DaemonError::Io(format!("cannot listen on {}: {e}", socket.display())))?;
    // Only root (who runs memvisor) may drive the daemon.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));

    let daemon = Arc::new(Daemon::new(config, dir, image).await?);
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        api::router(daemon.clone()),
    )));
    let tcp = match daemon.config.api.listen {
        Some(addr) => {
            let token: Arc<str> = api_token(&daemon.dir)?.into();
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                DaemonError::Io(format!(
                    "cannot listen on {addr}: {e}; pick a free port in [api] listen"
                ))
            })?;
            tracing::info!(
                "API and dashboard on http://{addr}/ (token in {})",
                daemon.dir.join(TOKEN_FILE).display()
            );
            Some(tokio::spawn(std::future::IntoFuture::into_future(
                axum::serve(listener, api::tcp_router(daemon.clone(), token)),
            )))
        }
        None => None,
    };
    daemon.recover().await?;
    // Admission is decided in scheduling rounds, so they run while the VMs start.
    let observer = tokio::spawn(daemon.clone().schedule_forever());
    let discoverer = tokio::spawn(daemon.clone().discover_forever());
    let libvirt_events = daemon
        .libvirt_events
        .lock()
        .expect("libvirt events lock")
        .take();
    let libvirt = libvirt_events.map(|events| tokio::spawn(daemon.clone().follow_libvirt(events)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Io(format!("cannot watch SIGTERM: {e}")))?;
    let stop = stop_asked(&daemon, &mut term);
    tokio::pin!(stop);
    // VMs of an overcommitted host start one at a time, for minutes: a stop asked meanwhile
    // ends the starting. A launch under way finishes in its VM's task, and shutting down
    // stops what it launched.
    let why = tokio::select! {
        why = &mut stop => why,
        () = daemon.start_all() => stop.await,
    };
    tracing::info!("shutting down: {why}");
    observer.abort();
    discoverer.abort();
    if let Some(libvirt) = libvirt {
        libvirt.abort();
    }
    daemon.shut_down().await;
    server.abort();
    if let Some(tcp) = tcp {
        tcp.abort();
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
