//! One VM as its task holds it: its settings, its QEMU (launched or attached), the QMP
//! connection, the agent link and the last figures observed.

mod domain;
mod handle;
mod view;

pub use domain::{Connection, Domain};
pub use handle::{Place, VmHandle};
pub use view::VmView;

use super::agent::{AgentLink, Translated};
use super::state::{CpuHold, SavedVm};
use super::DaemonError;
use memvisor_core::api::Change;
use memvisor_core::config::{workload_problems, VmConfig};
use memvisor_core::faults::{Fault, Seen, Watch};
use memvisor_core::reservation::{self, GUEST_FLOOR};
use memvisor_core::snapshot;
use memvisor_core::status::Accelerator;
use memvisor_core::status::{EventKind, Origin, VmState};
use memvisor_core::translation::GuestAddress;
use memvisor_core::working_set::{self, WorkingSet};
use memvisor_core::workload::Workload;
use memvisor_core::Size;
use memvisor_host::cgroup::{Group, Hierarchy};
use memvisor_qemu::balloon::{self, GuestStats};
use memvisor_qemu::launch::{self, Boot, DirectKernel, LaunchSpec, BALLOON_ID};
use memvisor_qemu::qmp::{self, Qmp};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Reading a QEMU's page map costs milliseconds; its own memory changes slowly.
const OVERHEAD_EVERY: Duration = Duration::from_secs(15);
/// How long the scheduler leaves alone a balloon that something else moved: two of Proxmox's
/// or MoM's rounds would move it again well within this, and memvisor would see it.
const HANDS_OFF: Duration = Duration::from_secs(300);
/// How long an attached QEMU's monitor may take to greet memvisor: its manager may be talking
/// to it, and the round goes on with the VM's last figures meanwhile.
const BRIEF_CONNECT: Duration = Duration::from_secs(2);
/// How long a disk guest may take to shut down before its QEMU is killed.
const POWERDOWN_PATIENCE: Duration = Duration::from_secs(90);

pub struct Vm {
    config: VmConfig,
    origin: Origin,
    state: VmState,
    pid: Option<u32>,
    accel: Option<Accelerator>,
    qmp_path: PathBuf,
    qmp: Option<Qmp>,
    /// A libvirt domain's link, through which it is observed and ballooned instead of QMP.
    domain: Option<Domain>,
    balloon_device: String,
    cgroup: Option<Group>,
    dir: Option<PathBuf>,
    balloon_target: Option<Size>,
    /// When its balloon last took memory: asked to, or seen inflating; unless raised since
    /// (`VmObservation::balloon_lowered_s_ago`).
    balloon_lowered_at: Option<Instant>,
    /// memvisor raised the balloon's target since the last poll (`balloon_took_memory`).
    balloon_raised_since_poll: bool,
    balloon_actual: Option<Size>,
    /// The balloon as the poll before the guest's last report saw it: the report was taken
    /// after that poll, so a balloon inflating since then is not yet in its figures.
    balloon_before_report: Option<Size>,
    guest: GuestStats,
    host_rss: Option<Size>,
    host_swapped: Option<Size>,
    /// Whether its QEMU waits at its cgroup's limit for memory the kernel could not reclaim.
    stalled_at_host_limit: bool,
    /// QEMU's anonymous memory outside guest RAM (translation cache, device state, heap).
    qemu_overhead: Option<Size>,
    qemu_overhead_at: Option<Instant>,
    workload: Arc<Mutex<Workload>>,
    agent: Option<AgentLink>,
    launched_at: Option<Instant>,
    boot_s: Option<f64>,
    last_error: Option<String>,
    /// Guest RAM the running QEMU booted with; above it, memory comes from virtio-mem.
    boot_memory: Size,
    plugged: Size,
    plug_requested: Size,
    /// Guest swap counters at the previous guest report (guest clock, s), for rates.
    swap_seen: Option<(u64, Size, Size)>,
    swap_rates_mib_s: (f64, f64),
    working_set: WorkingSet,
    /// Guest RAM DAMON saw accessed during the last second; None where DAMON does not watch.
    accessed: Option<Size>,
    /// QEMU's CPU seconds, major faults, storage reads and CPU periods when last read.
    activity_seen: Option<Activity>,
    /// The share of its used memory the guest is taken to touch (working_set::busy_share).
    busy_share: f64,
    /// MiB/s QEMU read from storage since the last round.
    disk_read_mib_s: f64,
    /// QEMU's major faults a second since the last round.
    major_faults_per_s: f64,
    shared: Option<Size>,
    cgroup_limit: Option<Size>,
    /// CPU the host's reclaim took in memvisor's writes of the VM's cap (libvirt's writes for
    /// a domain are libvirtd's, and not counted).
    cap_reclaim_cpu: Duration,
    /// An attached QEMU's own group's limit before memvisor capped it, put back on release.
    cgroup_found: Option<Option<Size>>,
    /// Why an attached QEMU cannot be host-swapped (its group is not its own).
    no_host_swap: Option<String>,
    /// The hold on a paced start's CPU.
    cpu_hold: Option<CpuHold>,
    /// Faults told apart over time (faults.rs), on a clock that starts with this value.
    watch: Watch,
    /// Until then the scheduler leaves the balloon to whatever else moved it.
    hands_off_until: Option<Instant>,
    born: Instant,
}

impl Vm {
    pub fn new(config: VmConfig, origin: Origin, qmp_path: PathBuf) -> Vm {
        let workload = Arc::new(Mutex::new(config.workload.clone()));
        let config_memory = config.memory;
        Vm {
            config,
            origin,
            state: VmState::Stopped,
            pid: None,
            accel: None,
            qmp_path,
            qmp: None,
            domain: None,
            balloon_device: format!("/machine/peripheral/{BALLOON_ID}"),
            cgroup: None,
            dir: None,
            balloon_target: None,
            balloon_lowered_at: None,
            balloon_raised_since_poll: false,
            balloon_actual: None,
            balloon_before_report: None,
            guest: GuestStats::default(),
            host_rss: None,
            host_swapped: None,
            stalled_at_host_limit: false,
            qemu_overhead: None,
            qemu_overhead_at: None,
            workload,
            agent: None,
            launched_at: None,
            boot_s: None,
            last_error: None,
            boot_memory: config_memory,
            plugged: Size::ZERO,
            plug_requested: Size::ZERO,
            swap_seen: None,
            swap_rates_mib_s: (0.0, 0.0),
            working_set: WorkingSet::default(),
            accessed: None,
            activity_seen: None,
            busy_share: 1.0,
            disk_read_mib_s: 0.0,
            major_faults_per_s: 0.0,
            shared: None,
            cgroup_limit: None,
            cap_reclaim_cpu: Duration::ZERO,
            cgroup_found: None,
            no_host_swap: None,
            cpu_hold: None,
            watch: Watch::default(),
            hands_off_until: None,
            born: Instant::now(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Applies `change` once it is checked against the host and the other VMs' reservations;
    /// a new size takes effect at once in a running guest.
    pub async fn reconfigure(
        &mut self,
        change: &Change,
        host: (Size, Size),
        others: &[(String, Size)],
    ) -> Result<(), DaemonError> {
        let others = others.iter().map(|(n, r)| (n.as_str(), *r));
        self.config = change
            .applied_to(&self.config, self.boot_memory, host, others)
            .map_err(DaemonError::BadRequest)?;
        if change.memory.is_some() && self.state == VmState::Running {
            self.hands_off_until = None;
            let size = self.config.memory.min(self.config.effective_limit());
            self.set_allocation(size).await?;
        }
        Ok(())
    }

    pub fn serial_log(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("serial.log"))
    }

    fn spec(
        &self,
        dir: &std::path::Path,
        accel: Accelerator,
        image: Option<&memvisor_guest::image::Image>,
    ) -> Result<LaunchSpec, DaemonError> {
        let config = &self.config;
        let boot = match &config.disk {
            None => {
                let image = image.ok_or(DaemonError::NoImage)?;
                Boot::Image {
                    kernel: image.kernel.clone(),
                    initrd: image.initrd.clone(),
                    scratch_disk: dir.join("scratch.img"),
                    agent_socket: dir.join("agent.sock"),
                }
            }
            Some(disk) => Boot::Disk {
                disk: disk.clone(),
                format: memvisor_qemu::disk::format(disk, config.format, config.kernel.is_some())?,
                snapshot: config.snapshot,
                kernel: config.kernel.clone().map(|kernel| DirectKernel {
                    kernel,
                    initrd: config.initrd.clone(),
                    append: config
                        .append
                        .clone()
                        .unwrap_or_else(|| "console=ttyS0".into()),
                }),
                guest_agent_socket: dir.join("qga.sock"),
                forward: config.forward.clone(),
            },
        };
        Ok(LaunchSpec {
            name: config.name.clone(),
            accel,
            cpus: config.cpus,
            memory: config.memory,
            max_memory: config.max_memory(),
            boot,
            swap_disk: (config.swap() > Size::ZERO).then(|| dir.join("swap.img")),
            qmp_socket: self.qmp_path.clone(),
            serial_log: dir.join("serial.log"),
            pid_file: dir.join("qemu.pid"),
        })
    }

    /// Starts QEMU in a fresh cgroup and connects to it.
    pub async fn launch(
        &mut self,
        Place { dir, accel, cgroup }: Place,
        image: Option<&memvisor_guest::image::Image>,
    ) -> Result<(), DaemonError> {
        let name = self.name();
        match self.origin {
            Origin::Launched => {}
            Origin::Attached => return Err(DaemonError::Conflict(format!(
                "{name} is attached: whoever started its QEMU starts it again, then 'memvisor attach' it"
            ))),
            Origin::Libvirt => return Err(DaemonError::Conflict(format!(
                "{name} is a libvirt domain: start it with 'virsh start {name}', and memvisor takes it up"
            ))),
        }
        if matches!(self.state, VmState::Running | VmState::Starting) {
            return Err(DaemonError::Conflict(format!(
                "{name} is already {}",
                self.state
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| DaemonError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let spec = self.spec(&dir, accel, image)?;
        let _ = std::fs::remove_file(&spec.qmp_socket);
        let _ = std::fs::remove_file(&spec.serial_log);
        if let Some(swap) = &spec.swap_disk {
            launch::create_disk(swap, self.config.swap())?;
        }
        if let Boot::Image {
            scratch_disk,
            agent_socket,
            ..
        } = &spec.boot
        {
            let _ = std::fs::remove_file(agent_socket);
            launch::create_disk(scratch_disk, self.config.memory)?;
        }
        cgroup.create()?;
        cgroup.wait_at_limit()?;
        let pid = match launch::spawn(&spec, Some(&cgroup.procs_file())).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = cgroup.remove();
                return Err(e.into());
            }
        };
        self.pid = Some(pid);
        self.cgroup = Some(cgroup);
        self.accel = Some(accel);
        self.dir = Some(dir);
        self.launched_at = Some(Instant::now());
        self.boot_s = None;
        self.state = VmState::Starting;
        self.balloon_target = None;
        self.balloon_lowered_at = None;
        self.boot_memory = self.config.memory;
        self.plugged = Size::ZERO;
        self.plug_requested = Size::ZERO;
        self.cgroup_limit = None;
        self.watch = Watch::default();
        self.hands_off_until = None;
        self.qmp = Some(Qmp::connect(&spec.qmp_socket, qmp::DEFAULT_TIMEOUT).await?);
        self.agent = match spec.boot {
            Boot::Image { agent_socket, .. } => {
                Some(AgentLink::start(agent_socket, self.workload.clone()))
            }
            // No agent of ours says when the guest is up: its balloon driver does.
            Boot::Disk { .. } => None,
        };
        Ok(())
    }

    /// Takes over a QEMU this daemon's predecessor launched and left running: nothing is
    /// changed in the guest, the balloon stays where it was asked to be.
    pub async fn adopt(
        &mut self,
        saved: &SavedVm,
        Place { dir, accel, cgroup }: Place,
    ) -> Result<(), DaemonError> {
        let name = self.name().to_string();
        let ours = memvisor_host::process::cmdline(saved.pid)
            .is_some_and(|c| c.contains(&*saved.qmp.to_string_lossy()));
        if !ours {
            return Err(DaemonError::NotRunning(name));
        }
        self.qmp = Some(Qmp::connect(&saved.qmp, qmp::DEFAULT_TIMEOUT).await?);
        self.config.memory = saved.memory;
        self.config.reservation = saved.reservation;
        self.config.limit = saved.limit;
        self.config.shares = saved.shares;
        if let Some(workload) = &saved.workload {
            *self.workload.lock().expect("workload lock") = workload.clone();
        }
        self.pid = Some(saved.pid);
        self.boot_memory = saved.boot_memory;
        self.balloon_target = saved.balloon_target;
        self.plug_requested = saved.plug_requested;
        self.cgroup_limit = saved.cgroup_limit;
        self.cgroup = Some(cgroup);
        self.cpu_hold = saved.cpu_hold;
        self.accel = Some(accel);
        self.agent = self
            .config
            .has_agent()
            .then(|| AgentLink::start(dir.join("agent.sock"), self.workload.clone()));
        self.dir = Some(dir);
        self.state = VmState::Running;
        // The pace was the last daemon's decision; this one starts without it.
        if let Err(e) = self.hold_cpu(None) {
            tracing::error!("{name}: letting go of the last daemon's CPU hold: {e}");
        }
        Ok(())
    }

    /// Takes over a QEMU someone else started: memvisor talks to it but does not own its process.
    /// Returns the name QEMU was started with (-name), if any. Host swap goes through the
    /// QEMU's own cgroup, found in `hierarchy`, whose limit was `found` when first attached
    /// (None: as it is now).
    pub async fn attach(
        &mut self,
        hierarchy: &Hierarchy,
        found: Option<Option<Size>>,
    ) -> Result<Option<String>, DaemonError> {
        let mut qmp = Qmp::connect(&self.qmp_path, qmp::DEFAULT_TIMEOUT).await?;
        let qemu_name = qmp
            .execute("query-name", None)
            .await
            .ok()
            .and_then(|reply| {
                reply
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            });
        self.balloon_device = balloon::find_device(&mut qmp).await?;
        balloon::enable_stats(&mut qmp, &self.balloon_device, launch::STATS_INTERVAL_S).await?;
        let memory = balloon::memory_size(&mut qmp).await?;
        // The balloon is taken as found: a target unknown would read as the boot size, and
        // the first reclaim step from there would deflate a balloon the policy (or a daemon
        // before this one, or the VM's manager) had set lower (measured: a restarted daemon
        // let vm1 go from 654 to 768 MiB).
        let actual = balloon::actual(&mut qmp).await?;
        self.balloon_target = Some(actual);
        self.balloon_actual = Some(actual);
        self.config.memory = memory;
        self.config.max = Some(memory);
        self.boot_memory = memory;
        self.pid = qmp.pid;
        self.qmp = Some(qmp);
        self.state = VmState::Running;
        match self.pid.ok_or("QEMU did not say its pid".to_string()) {
            Ok(pid) => match own_group(hierarchy, pid).and_then(|group| {
                let found = match found {
                    Some(found) => found,
                    None => group.cap().map_err(|e| e.to_string())?,
                };
                Ok((group, found))
            }) {
                Ok((group, found)) => {
                    self.cgroup_found = Some(found);
                    self.cgroup = Some(group);
                }
                Err(why) => self.no_host_swap = Some(why),
            },
            Err(why) => self.no_host_swap = Some(why),
        }
        Ok(qemu_name)
    }

    /// Takes up a running libvirt domain: its size and balloon as libvirt reports them, its
    /// statistics every few seconds, and its memtune hard limit as found (`found`: as a daemon
    /// before this one found it) for host swap and to put back.
    pub async fn take_domain(
        &mut self,
        mut domain: Domain,
        found: Option<Option<Size>>,
    ) -> Result<(), DaemonError> {
        let libvirt = domain.libvirt()?;
        let d = &domain.domain;
        let info = libvirt.info(d).await?;
        libvirt
            .set_stats_period(d, launch::STATS_INTERVAL_S)
            .await?;
        let stats = libvirt.memory_stats(d).await?;
        domain.virtio_mem = libvirt.virtio_mem(d).await?;
        // libvirt's maximum counts the virtio-mem device whole; the balloon covers the boot
        // memory only.
        let (pluggable, requested, plugged) = domain
            .virtio_mem
            .as_ref()
            .map_or((Size::ZERO, Size::ZERO, Size::ZERO), |m| {
                (m.size, m.requested, m.current)
            });
        let boot = Size::bytes(info.max.as_bytes().saturating_sub(pluggable.as_bytes()));
        // As for an attached QEMU, the balloon and the device are taken as found.
        let actual = stats.actual.unwrap_or(boot);
        self.balloon_target = Some(actual);
        self.balloon_actual = Some(actual);
        self.plug_requested = requested;
        self.plugged = plugged;
        self.config.memory = boot;
        self.config.max = Some(info.max);
        self.boot_memory = boot;
        self.pid = libvirt.pid(d);
        self.cgroup_found = Some(match found {
            Some(found) => found,
            None => libvirt.hard_limit(d).await?,
        });
        self.state = VmState::Running;
        self.domain = Some(domain);
        Ok(())
    }

    /// Where host swap reaches an attached VM, or why it cannot, for the event log.
    pub fn host_swap_note(&self) -> String {
        if self.domain.is_some() {
            return "host swap through libvirt's memtune hard limit".into();
        }
        match (&self.cgroup, &self.no_host_swap) {
            (Some(group), _) => format!("host swap through its cgroup {}", group.path.display()),
            (None, Some(why)) => format!("never host-swapped: {why}"),
            (None, None) => "never host-swapped".into(),
        }
    }

    /// Puts back the limit an attached QEMU's group had before memvisor capped it (also a cap
    /// a daemon before this one wrote).
    pub async fn release(&mut self) -> Result<(), DaemonError> {
        if let (Some(domain), Some(found)) = (&self.domain, self.cgroup_found) {
            let libvirt = domain.libvirt()?;
            if libvirt.hard_limit(&domain.domain).await? != found {
                libvirt.set_hard_limit(&domain.domain, found).await?;
            }
            self.cgroup_limit = None;
            return Ok(());
        }
        if let (Origin::Attached, Some(group), Some(found)) =
            (self.origin, &self.cgroup, self.cgroup_found)
        {
            if group.exists() && group.cap()? != found {
                self.cap_reclaim_cpu += group.set_cap(found)?;
            }
            self.cgroup_limit = None;
        }
        Ok(())
    }

    /// Names an attached VM and gives it what its declaration guarantees, once its QEMU said
    /// how much memory it has.
    pub fn declare(
        &mut self,
        name: String,
        reservation: Size,
        limit: Option<Size>,
        shares: u32,
    ) -> Result<(), DaemonError> {
        self.config.name = name;
        self.config.reservation = reservation;
        self.config.limit = limit;
        self.config.shares = shares;
        let problems = self.config.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::BadRequest(problems.join("; ")))
        }
    }

    /// The VM's QMP monitor. An attached QEMU's monitor is held only while memvisor talks to
    /// it: QEMU serves one client at a time, and its manager (Proxmox's `qm`, a script) must
    /// find it free between rounds.
    async fn qmp(&mut self) -> Result<&mut Qmp, DaemonError> {
        if self.qmp.is_none() && self.calls_in() {
            let connected = Qmp::connect(&self.qmp_path, BRIEF_CONNECT).await;
            self.qmp = Some(connected.map_err(|e| {
                DaemonError::Conflict(format!(
                    "{e}; another client may be holding its monitor, which QEMU serves one at a time"
                ))
            })?);
        }
        let name = self.config.name.clone();
        self.qmp.as_mut().ok_or(DaemonError::NotRunning(name))
    }

    /// Whether memvisor connects to the VM's monitor per exchange instead of holding it.
    fn calls_in(&self) -> bool {
        self.origin == Origin::Attached && self.state == VmState::Running
    }

    /// Leaves an attached QEMU's monitor free for its manager until memvisor needs it again.
    pub fn hang_up(&mut self) {
        if self.calls_in() {
            self.qmp = None;
        }
    }

    /// A QEMU human monitor command; what the monitor printed.
    pub async fn monitor(&mut self, command: &str) -> Result<String, DaemonError> {
        if let Some(domain) = &self.domain {
            if !domain.monitor {
                return Err(DaemonError::Conflict(format!(
                    "{} is a libvirt domain, whose monitor libvirt holds: reading guest kernel addresses goes through libvirt's monitor pass-through, which makes libvirt mark the domain tainted (custom-monitor); set monitor = true in [libvirt] to allow it",
                    self.name()
                )));
            }
            return Ok(domain.libvirt()?.monitor(&domain.domain, command).await?);
        }
        let reply = self
            .qmp()
            .await?
            .execute(
                "human-monitor-command",
                Some(serde_json::json!({ "command-line": command })),
            )
            .await?;
        Ok(reply.as_str().unwrap_or_default().to_string())
    }

    /// Asks the guest agent to check every page it wrote.
    pub fn verify(&self) -> Result<oneshot::Receiver<(u64, u64)>, DaemonError> {
        let agent = self.agent.as_ref();
        let Some(agent) = agent else {
            return Err(
                if self.config.has_agent() && self.origin == Origin::Launched {
                    DaemonError::NotRunning(self.name().to_string())
                } else {
                    DaemonError::Conflict(format!(
                    "{} has no memvisor guest agent: only memvisor's own image can verify its pages",
                    self.name()
                ))
                },
            );
        };
        Ok(agent.verify())
    }

    /// Asks the guest agent where `address` lies in its guest; None without an agent.
    pub fn agent_translate(&self, address: GuestAddress) -> Option<oneshot::Receiver<Translated>> {
        self.agent.as_ref().map(|a| a.translate(address))
    }

    /// Checks a manual balloon target against the VM's settings, then asks QEMU for it.
    pub async fn set_balloon(&mut self, target: Size) -> Result<(), DaemonError> {
        let name = self.config.name.clone();
        let memory = self.config.memory;
        if target > memory {
            return Err(DaemonError::BadRequest(format!(
                "balloon target {target} is above {name}'s memory {memory}; a balloon can only take memory back, so give at most {memory}"
            )));
        }
        let floor = reservation::floor(self.config.reservation);
        if target < floor {
            let why = if self.config.reservation > GUEST_FLOOR {
                "its reservation"
            } else {
                "the floor that keeps a guest kernel alive"
            };
            return Err(DaemonError::BadRequest(format!(
                "balloon target {target} is below {name}'s minimum {floor} ({why}); give at least {floor}"
            )));
        }
        if target > self.config.effective_limit() {
            return Err(DaemonError::BadRequest(format!(
                "balloon target {target} is above {name}'s limit {}",
                self.config.effective_limit()
            )));
        }
        self.send_balloon(target).await?;
        self.balloon_target = Some(target);
        // An operator's size is memvisor managing the balloon again.
        self.hands_off_until = None;
        Ok(())
    }

    /// Gives the guest agent a new workload, kept for its next reconnect too.
    pub fn set_workload(&mut self, workload: Workload) -> Result<(), DaemonError> {
        let name = self.name().to_string();
        if self.origin != Origin::Launched {
            return Err(DaemonError::Conflict(format!(
                "{name} was started by another tool and has no memvisor guest agent"
            )));
        }
        if !self.config.has_agent() {
            return Err(DaemonError::Conflict(format!(
                "{name} boots its own OS from its disk and has no memvisor guest agent to run a workload"
            )));
        }
        if let Some(problem) = workload_problems(&name, &workload, &self.config)
            .into_iter()
            .next()
        {
            return Err(DaemonError::BadRequest(problem));
        }
        *self.workload.lock().expect("workload lock") = workload.clone();
        if let Some(agent) = &self.agent {
            agent.set_workload(workload);
        }
        Ok(())
    }

    /// The balloon's size and the guest's statistics, from QEMU or through libvirt.
    async fn balloon_and_stats(&mut self) -> Result<(Size, GuestStats), DaemonError> {
        if let Some(domain) = &self.domain {
            let stats = domain.libvirt()?.memory_stats(&domain.domain).await?;
            let actual = stats
                .actual
                .ok_or(memvisor_qemu::balloon::BalloonError::NoDevice)?;
            return Ok((actual, stats.guest));
        }
        let device = self.balloon_device.clone();
        let qmp = self.qmp().await?;
        let actual = balloon::actual(qmp).await?;
        let stats = balloon::guest_stats(qmp, &device).await?;
        Ok((actual, stats))
    }

    /// Keeps why the VM could not start, for `ps` and `stats`.
    pub fn failed(&mut self, why: String) {
        self.last_error = Some(why);
    }

    /// What the guest has now: the balloon's actual size plus what virtio-mem plugged.
    pub fn allocation(&self) -> Option<Size> {
        self.balloon_actual
            .map(|b| Size::bytes(b.as_bytes() + self.plugged.as_bytes()))
    }

    /// Whether the scheduler leaves the balloon to something else that moved it.
    pub fn hands_off(&self) -> bool {
        self.hands_off_until.is_some()
    }

    /// The allocation last asked for.
    pub fn target(&self) -> Size {
        let balloon = self.balloon_target.unwrap_or(self.boot_memory);
        Size::bytes(balloon.as_bytes() + self.plug_requested.as_bytes())
    }

    /// Gives the guest `target` in all: the balloon below its boot size, virtio-mem above it.
    /// The policy has already kept `target` between the VM's floor and its ceiling.
    pub async fn set_allocation(&mut self, target: Size) -> Result<(), DaemonError> {
        if self.hands_off() {
            return Ok(());
        }
        let boot = self.boot_memory;
        let extra = Size::bytes(target.as_bytes().saturating_sub(boot.as_bytes()));
        if self.config.can_grow_past(self.boot_memory) && extra != self.plug_requested {
            self.request_plug(extra).await?;
            self.plug_requested = extra;
        }
        let balloon = target.min(boot);
        if self.balloon_target != Some(balloon) {
            self.send_balloon(balloon).await?;
            self.balloon_target = Some(balloon);
        }
        Ok(())
    }

    /// Asks the virtio-mem device to plug `extra` in all, through libvirt for a domain.
    async fn request_plug(&mut self, extra: Size) -> Result<(), DaemonError> {
        if let Some(domain) = &self.domain {
            let device = domain.virtio_mem.as_ref().ok_or_else(|| {
                DaemonError::Conflict(format!("{} has no virtio-mem device", self.name()))
            })?;
            let libvirt = domain.libvirt()?;
            return Ok(libvirt
                .request_virtio_mem(&domain.domain, device, extra)
                .await?);
        }
        Ok(memvisor_qemu::virtio_mem::request(self.qmp().await?, extra).await?)
    }

    /// What the virtio-mem device has plugged now; None where QEMU's monitor is not open.
    async fn plugged_now(&mut self) -> Result<Option<Size>, DaemonError> {
        if let Some(domain) = &self.domain {
            let device = domain.libvirt()?.virtio_mem(&domain.domain).await?;
            return Ok(device.map(|m| m.current));
        }
        match self.qmp.as_mut() {
            Some(qmp) => Ok(Some(memvisor_qemu::virtio_mem::plugged(qmp).await?)),
            None => Ok(None),
        }
    }

    fn balloon_lowered_s_ago(&self) -> Option<f64> {
        self.balloon_lowered_at.map(|t| t.elapsed().as_secs_f64())
    }

    /// Asks QEMU for a balloon target, through libvirt for a domain.
    async fn send_balloon(&mut self, target: Size) -> Result<(), DaemonError> {
        match &self.domain {
            Some(domain) => {
                domain
                    .libvirt()?
                    .set_balloon(&domain.domain, target)
                    .await?
            }
            None => balloon::set_target(self.qmp().await?, target).await?,
        }
        let before = self.balloon_target.unwrap_or(self.boot_memory);
        if target < before {
            self.balloon_lowered_at = Some(Instant::now());
        } else if target > before {
            self.balloon_lowered_at = None;
            self.balloon_raised_since_poll = true;
        }
        Ok(())
    }

    /// Caps the VM's QEMU on the host (None lifts the cap).
    pub async fn set_cgroup_limit(&mut self, limit: Option<Size>) -> Result<(), DaemonError> {
        let name = self.name().to_string();
        // Lifting a cap from someone else's group puts back what it had.
        let written = match (limit, self.cgroup_found) {
            (None, Some(found)) => found,
            _ => limit,
        };
        if let Some(domain) = &self.domain {
            // Through libvirt, which writes it into the domain's cgroup, never behind its back.
            domain
                .libvirt()?
                .set_hard_limit(&domain.domain, written)
                .await?;
            self.cgroup_limit = limit;
            return Ok(());
        }
        if let Some(why) = &self.no_host_swap {
            return Err(DaemonError::Conflict(format!(
                "{name} cannot be host-swapped: {why}"
            )));
        }
        let group = self.cgroup.clone().ok_or(DaemonError::NotRunning(name))?;
        // The kernel reclaims down to a lowered cap in this write, for as long as that takes:
        // off the runtime's threads, so that the API and the other VMs go on meanwhile.
        let reclaim = tokio::task::spawn_blocking(move || group.set_cap(written))
            .await
            .map_err(|e| DaemonError::Io(e.to_string()))??;
        self.cap_reclaim_cpu += reclaim;
        self.cgroup_limit = limit;
        Ok(())
    }

    /// Holds a launched VM's QEMU to `percent` of a core (None lets it go), in the group of
    /// the cpu hierarchy named as its memory group; returns whether that changed anything. A
    /// quota changed since memvisor set it is whoever changed it's, and is left as it is.
    pub fn hold_cpu(&mut self, percent: Option<u32>) -> Result<bool, DaemonError> {
        let name = self.name().to_string();
        if self.origin != Origin::Launched {
            return Err(DaemonError::Conflict(format!(
                "{name}'s CPU is its manager's: memvisor holds only the VMs it launched"
            )));
        }
        if self.cpu_hold.map(|h| h.percent) == percent {
            return Ok(false);
        }
        let (Some(memory), Some(pid)) = (&self.cgroup, self.pid) else {
            return Err(DaemonError::NotRunning(name));
        };
        let cpu = Hierarchy::detect_cpu()?;
        let group = memory.in_hierarchy(&cpu);
        let cores = |percent: u32| f64::from(percent) / 100.0;
        match (percent, self.cpu_hold) {
            (Some(percent), held) => {
                let found_cores = match held {
                    Some(h) => h.found_cores,
                    None => {
                        group.create()?;
                        group.cpu_quota()?
                    }
                };
                group.set_cpu_quota(Some(cores(percent)))?;
                group.add_process(pid)?;
                self.cpu_hold = Some(CpuHold {
                    percent,
                    found_cores,
                });
            }
            (None, Some(held)) => {
                let ours = group
                    .cpu_quota()
                    .is_ok_and(|q| q.is_some_and(|q| (q - cores(held.percent)).abs() < 0.005));
                if ours {
                    group.set_cpu_quota(held.found_cores)?;
                }
                self.cpu_hold = None;
            }
            (None, None) => return Ok(false),
        }
        Ok(true)
    }

    /// Guest figures without the balloon, MiB: (memory it cannot drop, memory holding data).
    /// With deflate-on-oom the balloon's pages stay in the guest's total as used pages, so they
    /// come off the total but are already missing from free and available. The guest reports
    /// once a second, the balloon moves between reports: the smaller of the balloon as the
    /// report may have found it comes off, so a moving balloon reads as more use, never less
    /// (measured: turns, c's balloon took 416 MiB, the report before it read as 0 MiB used,
    /// and the next round ballooned c from 608 to 128 MiB, into its own swap).
    fn guest_used_and_resident(&self) -> (Option<u64>, Option<u64>) {
        let g = &self.guest;
        let actual = self.balloon_actual.max(self.balloon_before_report);
        let ballooned = actual.map_or(0, |a| {
            self.boot_memory.as_bytes().saturating_sub(a.as_bytes())
        });
        let without_balloon =
            |taken: Option<u64>| Some(g.total?.as_bytes().saturating_sub(taken? + ballooned) >> 20);
        let free = g.free.map(Size::as_bytes);
        // Memory the guest cannot hand over: what its kernel does not count as available
        // (free pages and cache it can drop are; its RAM root file system is not).
        let used = without_balloon(g.available.map(Size::as_bytes));
        (used, without_balloon(free))
    }

    /// Refreshes every figure; a failure is kept as the VM's last error, not returned.
    /// Returns what happened to the VM itself: it booted, it was lost, a fault began or ended.
    /// `accessed`: guest RAM DAMON saw accessed during the last second, where it watches.
    pub async fn observe(&mut self, accessed: Option<Size>) -> Vec<(EventKind, String)> {
        self.accessed = accessed;
        if let Some(pid) = self.pid {
            if !memvisor_host::process::is_alive(pid) {
                return self.lose(pid);
            }
            self.observe_process(pid);
        }
        // A QEMU waiting at its cgroup limit answers nothing until the limit is lifted: asking
        // would hold up the round, and with it the lift.
        if self.stalled_at_host_limit {
            return Vec::new();
        }
        if self.qmp.is_none() && !self.calls_in() && self.domain.is_none() {
            return Vec::new();
        }
        // While libvirtd is away the domain keeps its last figures; it is not a hung QEMU.
        if self.domain.as_ref().is_some_and(|d| d.libvirt().is_err()) {
            return Vec::new();
        }
        let result = self.balloon_and_stats().await;
        let qmp_answers = result.is_ok();
        match result {
            Ok((actual, stats)) => {
                let before = self.balloon_actual.replace(actual);
                let raised = std::mem::take(&mut self.balloon_raised_since_poll);
                if balloon_took_memory(before, actual, raised) {
                    self.balloon_lowered_at = Some(Instant::now());
                }
                if stats.last_update > self.guest.last_update {
                    self.balloon_before_report = before;
                    self.note_report(stats);
                }
            }
            Err(e) => self.last_error = Some(e.to_string()),
        }
        if self.config.can_grow_past(self.boot_memory) && qmp_answers {
            match self.plugged_now().await {
                Ok(Some(size)) => self.plugged = size,
                Ok(None) => {}
                Err(e) => self.last_error = Some(e.to_string()),
            }
        }
        self.progress(qmp_answers)
    }

    /// The VM's QEMU is gone: it is lost unless it was asked to stop.
    fn lose(&mut self, pid: u32) -> Vec<(EventKind, String)> {
        let name = self.name().to_string();
        let mut lost = Vec::new();
        if matches!(self.state, VmState::Running | VmState::Starting) {
            self.state = VmState::Lost;
            let why = format!(
                "QEMU (pid {pid}) exited without being asked to; see 'memvisor logs {name}'"
            );
            // A guest panic ends QEMU too: it runs with -no-reboot.
            lost.push((
                EventKind::Fault,
                format!("{name} lost: {why}{}", self.console_panic()),
            ));
            self.last_error = Some(why);
        }
        self.qmp = None;
        self.agent = None;
        self.host_rss = None;
        self.host_swapped = None;
        lost
    }

    /// What the host sees of the VM's QEMU: its memory, its swap, its activity.
    fn observe_process(&mut self, pid: u32) {
        self.host_rss = memvisor_host::process::anon_rss(pid).ok();
        self.host_swapped = memvisor_host::process::swapped(pid).ok();
        self.stalled_at_host_limit = self
            .cgroup
            .as_ref()
            .is_some_and(|g| g.stalled_at_limit().unwrap_or(false));
        self.note_activity(pid);
        if self
            .qemu_overhead_at
            .is_none_or(|t| t.elapsed() >= OVERHEAD_EVERY)
        {
            self.qemu_overhead = self.measure_overhead(pid);
            self.qemu_overhead_at = Some(Instant::now());
        }
        self.shared = memvisor_host::ksm::process_merged(pid);
    }

    /// Boot completion and faults, from what was just observed.
    fn progress(&mut self, qmp_answers: bool) -> Vec<(EventKind, String)> {
        let name = self.name().to_string();
        let mut happened = Vec::new();
        if self.state == VmState::Starting {
            let up = match &self.agent {
                Some(agent) => agent.report().is_some().then_some("its agent answers"),
                None => (self.guest.last_update > 0).then_some("its balloon driver reports"),
            };
            if let Some(how) = up {
                self.state = VmState::Running;
                let boot_s = self.launched_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                self.boot_s = Some(boot_s);
                happened.push((
                    EventKind::Lifecycle,
                    format!("{name} booted in {boot_s:.1} s: {how}"),
                ));
            }
        } else if self.state == VmState::Running {
            let seen = self.seen(qmp_answers);
            for fault in self.watch.update(&seen) {
                happened.push((EventKind::Fault, self.describe(&fault)));
                if let Fault::BalloonMovedElsewhere { actual_mib, .. } = fault {
                    // Its size is now the target, so nothing pulls the balloon back.
                    self.balloon_target = Some(Size::mib(actual_mib));
                    self.hands_off_until = Some(Instant::now() + HANDS_OFF);
                }
            }
            if self
                .hands_off_until
                .is_some_and(|until| Instant::now() >= until)
            {
                self.hands_off_until = None;
                happened.push((
                    EventKind::Decision,
                    format!("{name}'s balloon was left alone for {} s and no one else moved it: the scheduler manages it again", HANDS_OFF.as_secs()),
                ));
            }
        }
        happened
    }

    /// The guest console's last kernel panic line, as "; its console says: ...", if any.
    fn console_panic(&self) -> String {
        self.serial_log()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|log| {
                log.lines()
                    .rev()
                    .find(|l| l.contains("Kernel panic"))
                    .map(|l| format!("; its console says: {}", l.trim()))
            })
            .unwrap_or_default()
    }

    fn seen(&self, qmp_answers: bool) -> Seen {
        let since_born = |t: Instant| t.saturating_duration_since(self.born).as_secs_f64();
        let agent = self.agent.as_ref();
        Seen {
            at_s: self.born.elapsed().as_secs_f64(),
            balloon_target_mib: self.balloon_target.map(Size::as_mib),
            balloon_actual_mib: self.balloon_actual.map(Size::as_mib),
            agent_uptime_s: agent.and_then(|a| a.report()).map(|r| r.uptime_s),
            agent_heard_at_s: agent.and_then(|a| a.heard_at()).map(since_born),
            qmp_answers,
        }
    }

    fn describe(&self, fault: &Fault) -> String {
        let name = self.name();
        match fault {
            Fault::BalloonStuck {
                target_mib,
                actual_mib,
                for_s,
            } => format!(
                "{name} does not answer its balloon: asked for {target_mib} MiB, it holds {actual_mib} MiB, unchanged for {for_s:.0} s (guest paused or hung, or its balloon driver gone?); the scheduler counts what it holds"
            ),
            Fault::BalloonMoves => format!("{name}'s balloon moves again"),
            Fault::BalloonMovedElsewhere {
                target_mib,
                actual_mib,
            } => format!(
                "{name}'s balloon left the {target_mib} MiB memvisor had set for {actual_mib} MiB and stays there: something else manages it too (another balloon manager, a monitor command); the scheduler leaves it alone for {} s instead of fighting, and counts what it holds",
                HANDS_OFF.as_secs()
            ),
            Fault::AgentSilent { for_s } => format!(
                "{name}'s guest agent has been silent for {for_s:.0} s: the guest is hung, paused or starved of memory"
            ),
            Fault::AgentBack => format!("{name}'s guest agent reports again"),
            Fault::GuestRestarted {
                uptime_before_s,
                uptime_now_s,
            } => {
                format!(
                    "{name}'s guest restarted (uptime {uptime_before_s:.0} s -> {uptime_now_s:.0} s){}",
                    self.console_panic()
                )
            }
            Fault::QmpHung => format!(
                "{name}'s QEMU did not answer QMP within {:?}: it is hung or stopped; its figures are stale until it answers",
                qmp::DEFAULT_TIMEOUT
            ),
            Fault::QmpBack => format!("{name}'s QEMU answers QMP again"),
        }
    }

    /// Reads how busy QEMU was since the last round: its CPU, its major faults, how often its
    /// CPU quota held it back, and what it read from storage.
    fn note_activity(&mut self, pid: u32) {
        let Ok((cpu_s, major_faults)) = memvisor_host::process::cpu_and_major_faults(pid) else {
            return;
        };
        let now = Activity {
            at: Instant::now(),
            cpu_s,
            major_faults,
            read_bytes: memvisor_host::process::storage_read_bytes(pid).ok(),
            // Our own pacing holds a start back on purpose: that says nothing of its memory.
            cpu_periods: if self.cpu_hold.is_some() {
                None
            } else {
                cpu_periods_alone(pid)
            },
        };
        if let Some(then) = &self.activity_seen {
            let seconds = now.at.duration_since(then.at).as_secs_f64();
            if seconds < 0.5 {
                return;
            }
            self.major_faults_per_s =
                now.major_faults.saturating_sub(then.major_faults) as f64 / seconds;
            let throttled_share = match (&now.cpu_periods, &then.cpu_periods) {
                (
                    Some((group, periods, throttled)),
                    Some((last_group, last_periods, last_throttled)),
                ) if group == last_group && periods > last_periods => {
                    throttled.saturating_sub(*last_throttled) as f64
                        / (periods - last_periods) as f64
                }
                _ => 0.0,
            };
            self.busy_share = working_set::busy_share(
                100.0 * (now.cpu_s - then.cpu_s) / seconds,
                self.major_faults_per_s,
                throttled_share,
            );
            if let (Some(read), Some(last_read)) = (now.read_bytes, then.read_bytes) {
                self.disk_read_mib_s = read.saturating_sub(last_read) as f64 / seconds / 1048576.0;
            }
        }
        self.activity_seen = Some(now);
    }

    /// Takes a new guest report: swap rates and the working set move only when the guest
    /// reported again, so a round between two reports does not read as "no paging".
    fn note_report(&mut self, stats: GuestStats) {
        let elapsed_s = stats.last_update.saturating_sub(self.guest.last_update);
        if let (Some(swap_in), Some(swap_out)) = (stats.swap_in, stats.swap_out) {
            if let Some((then, last_in, last_out)) = self.swap_seen {
                let seconds = stats.last_update.saturating_sub(then).max(1) as f64;
                let rate = |a: Size, b: Size| {
                    a.as_bytes().saturating_sub(b.as_bytes()) as f64 / seconds / 1048576.0
                };
                self.swap_rates_mib_s = (rate(swap_in, last_in), rate(swap_out, last_out));
            }
            self.swap_seen = Some((stats.last_update, swap_in, swap_out));
        }
        self.guest = stats;
        let (used, resident) = self.guest_used_and_resident();
        let (Some(used), Some(allocation)) = (used, self.allocation()) else {
            return;
        };
        let (swap_in, swap_out) = self.swap_rates_mib_s;
        let short = snapshot::short_of_memory(
            (swap_in, swap_out),
            self.busy_share,
            self.balloon_lowered_s_ago(),
        );
        let file_reads = snapshot::file_read_rate(self.disk_read_mib_s, swap_in);
        let active = self.accessed.map_or_else(
            || {
                let resident = resident.unwrap_or(used);
                working_set::touched_mib(used, resident, self.busy_share, file_reads)
            },
            Size::as_mib,
        );
        let sample = working_set::sample_mib(active, allocation.as_mib(), short);
        self.working_set.update(sample, elapsed_s as f64);
    }

    /// Quits QEMU (launched VMs only) and waits for it to go; kills it if it will not.
    pub async fn stop(&mut self) -> Result<(), DaemonError> {
        match self.origin {
            Origin::Launched => {}
            Origin::Attached => {
                return Err(DaemonError::Conflict(format!(
                    "{} is attached: stop it with whatever started it",
                    self.name()
                )))
            }
            Origin::Libvirt => {
                return Err(DaemonError::Conflict(format!(
                    "{0} is a libvirt domain: stop it with 'virsh shutdown {0}'",
                    self.name()
                )))
            }
        }
        if self.state == VmState::Stopped {
            return Err(DaemonError::Conflict(format!(
                "{} is already stopped",
                self.name()
            )));
        }
        // A guest whose disk keeps its writes shuts down as a machine does; quitting QEMU would
        // cut its power with its page cache unwritten.
        let keeps_writes = self.config.disk.is_some() && !self.config.snapshot;
        let (command, patience) = if keeps_writes {
            ("system_powerdown", POWERDOWN_PATIENCE)
        } else {
            ("quit", Duration::from_secs(10))
        };
        if let Some(qmp) = self.qmp.as_mut() {
            let _ = qmp.execute(command, None).await;
        }
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + patience;
            while memvisor_host::process::is_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if memvisor_host::process::is_alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.forget_process();
        if let Some(group) = self.cgroup.take() {
            // A paced start's group, or the bench's, holds no process once QEMU is gone.
            if let Ok(cpu) = Hierarchy::detect_cpu() {
                if let Err(e) = group.in_hierarchy(&cpu).remove() {
                    tracing::error!("{e}");
                }
            }
            group.remove()?;
        }
        Ok(())
    }

    /// QEMU's anonymous memory outside the guest RAM blocks, told apart by their sizes.
    fn measure_overhead(&self, pid: u32) -> Option<Size> {
        let hotplug = self
            .config
            .max_memory()
            .as_bytes()
            .saturating_sub(self.boot_memory.as_bytes());
        let ram_blocks = [self.boot_memory, Size::bytes(hotplug)];
        let guest_ram = memvisor_host::process::mapped_rss(pid, &ram_blocks).ok()?;
        let all = self.host_rss?;
        Some(Size::bytes(
            all.as_bytes().saturating_sub(guest_ram.as_bytes()),
        ))
    }

    fn forget_process(&mut self) {
        self.qmp = None;
        self.agent = None;
        self.pid = None;
        self.host_rss = None;
        self.host_swapped = None;
        self.qemu_overhead = None;
        self.qemu_overhead_at = None;
        self.balloon_actual = None;
        self.balloon_before_report = None;
        self.balloon_target = None;
        self.balloon_lowered_at = None;
        self.guest = GuestStats::default();
        self.swap_seen = None;
        self.swap_rates_mib_s = (0.0, 0.0);
        self.working_set = WorkingSet::default();
        self.accessed = None;
        self.activity_seen = None;
        self.busy_share = 1.0;
        self.disk_read_mib_s = 0.0;
        self.major_faults_per_s = 0.0;
        self.plugged = Size::ZERO;
        self.plug_requested = Size::ZERO;
        self.cgroup_limit = None;
        self.cpu_hold = None;
        self.watch = Watch::default();
        self.hands_off_until = None;
        self.state = VmState::Stopped;
    }
}

/// What QEMU had used and done when last read (`Vm::note_activity`).
struct Activity {
    at: Instant,
    cpu_s: f64,
    major_faults: u64,
    read_bytes: Option<u64>,
    /// Its cpu group, the CPU periods it ran in and those the group's quota held it back in.
    cpu_periods: Option<(Group, u64, u64)>,
}

/// The CPU periods QEMU's cpu group ran in and was held back in, where QEMU is alone in it:
/// a group shared with other processes is held back for what they do too. A libvirt domain's
/// QEMU sits in its emulator group and its vCPUs in groups of their own, so a quota there is
/// not seen (nor a parent's); none of these reads as throttled, as before quotas were read.
fn cpu_periods_alone(pid: u32) -> Option<(Group, u64, u64)> {
    let group = Hierarchy::detect_cpu().ok()?.group_of(pid).ok()?;
    let (periods, throttled) = group.cpu_periods().ok()?;
    // A group without a quota never counts a period: its processes (on a host without quotas,
    // every process on it) are not listed each round for nothing.
    if periods == 0 || group.pids().ok()? != [pid] {
        return None;
    }
    Some((group, periods, throttled))
}

/// An attached QEMU's own cgroup, or why it has none: memvisor caps only a group that holds
/// the QEMU alone, and neither moves processes another tool placed nor caps their siblings.
fn own_group(hierarchy: &Hierarchy, pid: u32) -> Result<Group, String> {
    let group = hierarchy.group_of(pid).map_err(|e| e.to_string())?;
    if group.path == hierarchy.root {
        return Err(
            "it runs in the root cgroup; start it in a group of its own (a systemd scope, say)"
                .into(),
        );
    }
    if group.has_children() {
        return Err(format!(
            "its cgroup {} has groups below it, whose processes a cap would squeeze too",
            group.path.display()
        ));
    }
    let pids = group.pids().map_err(|e| e.to_string())?;
    let others: Vec<String> = pids
        .iter()
        .filter(|p| **p != pid)
        .map(u32::to_string)
        .collect();
    if others.is_empty() {
        Ok(group)
    } else {
        Err(format!(
            "its cgroup {} also holds other processes (pids {}); capping it would squeeze them too, and moving QEMU out would fight whoever placed it there",
            group.path.display(),
            others.join(", ")
        ))
    }
}

/// Whether a poll saw the balloon take memory from its guest: smaller by a whole MiB than at
/// the poll before, memvisor not having raised it in between. A balloon still inflating,
/// slowly or moved by another tool, pushes the guest as much as one just asked to; an inflate
/// batch still in flight when the policy raised the target is not a push it wants.
fn balloon_took_memory(before: Option<Size>, actual: Size, raised_since_poll: bool) -> bool {
    let taken = |b: Size| b.as_bytes().saturating_sub(actual.as_bytes());
    !raised_since_poll && before.is_some_and(|b| taken(b) >= Size::mib(1).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balloon_takes_memory_when_seen_smaller_unless_memvisor_just_raised_it() {
        let mib = Size::mib;
        assert!(balloon_took_memory(Some(mib(600)), mib(590), false));
        assert!(!balloon_took_memory(Some(mib(600)), mib(590), true));
        assert!(!balloon_took_memory(Some(mib(590)), mib(600), false));
        assert!(!balloon_took_memory(Some(mib(600)), mib(600), false));
        assert!(!balloon_took_memory(None, mib(600), false));
        // Less than a MiB is no push.
        let just_under = Size::bytes(mib(600).as_bytes() - 4096);
        assert!(!balloon_took_memory(Some(mib(600)), just_under, false));
    }
}
