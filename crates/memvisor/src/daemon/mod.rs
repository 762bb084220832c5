//! The daemon: launches the configured VMs, observes them and the host every second, and serves
//! the HTTP API the CLI speaks. No automatic policy runs yet; every balloon change is asked for.

mod agent;
mod api;
mod vm;

use memvisor_core::config::{check_name, Config, VmConfig};
use memvisor_core::status::{HostStatus, Origin, VmState};
use memvisor_core::Size;
use memvisor_guest::image::Image;
use memvisor_host::cgroup::{CgroupError, Group, Hierarchy};
use memvisor_qemu::accel::Accelerator;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
pub use vm::Vm;

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
    Image(#[from] memvisor_guest::image::ImageError),
    #[error("{0}")]
    Io(String),
    #[error("the guest agent of {0} did not answer within {1:?}; is the VM still booting?")]
    AgentTimeout(String, Duration),
}

pub struct Daemon {
    config: Config,
    dir: PathBuf,
    image: Image,
    accel: Accelerator,
    hierarchy: Hierarchy,
    parent: Group,
    vms: Mutex<BTreeMap<String, Arc<Mutex<Vm>>>>,
    pub shutdown: Notify,
}

impl Daemon {
    /// Prepares the host side (accelerator, parent cgroup with the budget) without starting VMs.
    pub async fn new(config: Config, dir: PathBuf, image: Image) -> Result<Daemon, DaemonError> {
        let (accel, why_not_kvm) = memvisor_qemu::accel::resolve(config.host.accel).await?;
        if let Some(why) = why_not_kvm {
            tracing::info!("using TCG: KVM cannot run a guest here ({why})");
        }
        let hierarchy = Hierarchy::detect()?;
        let parent = hierarchy.group(&config.host.cgroup);
        parent.create()?;
        parent.set_limit(Some(config.host.budget))?;
        let vms = config
            .vms
            .iter()
            .map(|c| {
                let qmp = dir.join("vms").join(&c.name).join("qmp.sock");
                (
                    c.name.clone(),
                    Arc::new(Mutex::new(Vm::new(c.clone(), Origin::Launched, qmp))),
                )
            })
            .collect();
        Ok(Daemon {
            config,
            dir,
            image,
            accel,
            hierarchy,
            parent,
            vms: Mutex::new(vms),
            shutdown: Notify::new(),
        })
    }

    pub async fn vm(&self, name: &str) -> Result<Arc<Mutex<Vm>>, DaemonError> {
        self.vms
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| DaemonError::UnknownVm(name.to_string()))
    }

    pub async fn all(&self) -> Vec<Arc<Mutex<Vm>>> {
        self.vms.lock().await.values().cloned().collect()
    }

    pub async fn start(&self, name: &str) -> Result<(), DaemonError> {
        let vm = self.vm(name).await?;
        let mut vm = vm.lock().await;
        if vm.origin == Origin::Attached {
            return Err(DaemonError::Conflict(format!(
                "{name} is attached: whoever started its QEMU starts it again, then 'memvisor attach' it"
            )));
        }
        if matches!(vm.state, VmState::Running | VmState::Starting) {
            return Err(DaemonError::Conflict(format!(
                "{name} is already {}",
                state_word(vm.state)
            )));
        }
        let dir = self.dir.join("vms").join(name);
        let cgroup = self.parent.child(name);
        vm.launch(dir, self.accel, &self.image, cgroup).await
    }

    pub async fn stop(&self, name: &str) -> Result<(), DaemonError> {
        let vm = self.vm(name).await?;
        let mut vm = vm.lock().await;
        if vm.state == VmState::Stopped {
            return Err(DaemonError::Conflict(format!("{name} is already stopped")));
        }
        vm.stop().await
    }

    pub async fn attach(&self, name: &str, qmp: &Path) -> Result<(), DaemonError> {
        check_name(name).map_err(DaemonError::BadRequest)?;
        let mut vms = self.vms.lock().await;
        if vms.contains_key(name) {
            return Err(DaemonError::Conflict(format!(
                "a VM named {name} is already managed; pick another name"
            )));
        }
        // Settings an attached VM did not declare: no reservation, no limit beyond its size.
        let config = VmConfig {
            name: name.to_string(),
            memory: Size::ZERO,
            max: None,
            reservation: Size::ZERO,
            limit: None,
            shares: 1000,
            cpus: 1,
            swap: Size::ZERO,
            workload: Default::default(),
        };
        let mut vm = Vm::new(config, Origin::Attached, qmp.to_path_buf());
        vm.attach().await?;
        vm.observe().await;
        vms.insert(name.to_string(), Arc::new(Mutex::new(vm)));
        Ok(())
    }

    /// Starts every configured VM; one that fails is reported and the rest still start.
    pub async fn start_all(&self) {
        for name in self.config.vms.iter().map(|v| v.name.clone()) {
            if let Err(e) = self.start(&name).await {
                tracing::error!("cannot start {name}: {e}");
                if let Ok(vm) = self.vm(&name).await {
                    vm.lock().await.last_error = Some(e.to_string());
                }
            }
        }
    }

    pub async fn observe_forever(self: Arc<Self>) {
        loop {
            for vm in self.all().await {
                vm.lock().await.observe().await;
            }
            tokio::time::sleep(OBSERVE_EVERY).await;
        }
    }

    /// Stops launched VMs, lets attached ones be, and removes memvisor's cgroups.
    pub async fn shut_down(&self) {
        for vm in self.all().await {
            let mut vm = vm.lock().await;
            if vm.origin == Origin::Launched && vm.state != VmState::Stopped {
                if let Err(e) = vm.stop().await {
                    tracing::error!("stopping {}: {e}", vm.name());
                }
            }
        }
        if let Err(e) = self.parent.remove() {
            tracing::error!("{e}");
        }
    }

    pub fn host_status(&self) -> HostStatus {
        let host = memvisor_host::meminfo::read().ok();
        HostStatus {
            budget_mib: self.config.host.budget.as_mib(),
            used_mib: self.parent.usage().ok().map(Size::as_mib),
            host_total_mib: host.map(|h| h.total.as_mib()).unwrap_or(0),
            host_available_mib: host.map(|h| h.available.as_mib()).unwrap_or(0),
            cgroup: self.parent.path.display().to_string(),
            cgroup_version: self.hierarchy.version.name().to_string(),
            accel: self.accel.name().to_string(),
        }
    }
}

fn state_word(state: VmState) -> &'static str {
    match state {
        VmState::Starting => "starting",
        VmState::Running => "running",
        VmState::Stopped => "stopped",
        VmState::Lost => "lost",
    }
}

/// Runs the daemon until `down` or SIGTERM/SIGINT: serve the API, start the VMs, observe.
pub async fn run(config: Config, dir: PathBuf, image: Image) -> Result<(), DaemonError> {
    let socket = dir.join(crate::client::SOCKET_NAME);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::Io(format!("cannot create {}: {e}", dir.display())))?;
    if crate::client::daemon_answers(&socket).await {
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
    daemon.start_all().await;
    let observer = tokio::spawn(daemon.clone().observe_forever());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Io(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = daemon.shutdown.notified() => tracing::info!("shutting down: asked through the API"),
        _ = term.recv() => tracing::info!("shutting down: SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down: SIGINT"),
    }
    observer.abort();
    daemon.shut_down().await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
