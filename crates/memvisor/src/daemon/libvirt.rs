//! The running domains of a libvirt daemon (`[libvirt] uri`): taken up when they run and let go
//! when they stop, as libvirt's lifecycle events tell. When libvirtd goes away the domains keep
//! running with their last figures, and memvisor reconnects and takes up where it was.

use super::vm::{Connection, Domain, Vm, VmHandle};
use super::{pid_text, Daemon, DaemonError};
use memvisor_core::config::{check_name, VmConfig};
use memvisor_core::status::{EventKind, Origin};
use memvisor_libvirt::{DomainRef, Event, Libvirt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// How often a lost libvirtd is called again.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Connects to the configured libvirtd; a URI that does not answer is the caller's to refuse.
pub async fn connect(uri: &str) -> Result<(Connection, UnboundedReceiver<Event>), DaemonError> {
    let (libvirt, events) = Libvirt::connect(uri).await?;
    let connection = Connection::new(uri);
    connection.set(Some(Arc::new(libvirt)));
    Ok((connection, events))
}

impl Daemon {
    /// Takes up every running domain the config includes, lets go of managed ones that no
    /// longer run, then follows libvirt's events for as long as the daemon runs.
    pub async fn follow_libvirt(self: Arc<Self>, mut events: UnboundedReceiver<Event>) {
        let Some((connection, uri)) = self.libvirt_connection() else {
            return;
        };
        loop {
            self.sync_domains(&connection).await;
            while let Some(event) = events.recv().await {
                match event {
                    Event::Started(domain) => self.take_up(&connection, domain).await,
                    Event::Stopped(domain) => {
                        self.let_go_of_domain(&domain.name, "libvirt says it stopped")
                            .await
                    }
                }
            }
            connection.set(None);
            self.note(
                EventKind::Fault,
                None,
                format!("libvirt at {uri} closed the connection (libvirtd stopped or restarts): its domains keep running with their last figures; memvisor reconnects"),
            );
            events = loop {
                tokio::time::sleep(RECONNECT_EVERY).await;
                if let Ok((libvirt, events)) = Libvirt::connect(&uri).await {
                    connection.set(Some(Arc::new(libvirt)));
                    break events;
                }
            };
            self.note(
                EventKind::Lifecycle,
                None,
                format!(
                    "libvirt at {uri} answers again: memvisor takes up its domains where it was"
                ),
            );
        }
    }

    fn libvirt_connection(&self) -> Option<(Connection, String)> {
        let uri = self.config.libvirt.as_ref()?.uri.clone();
        Some((self.libvirt.clone()?, uri))
    }

    async fn sync_domains(&self, connection: &Connection) {
        let running = match connection.get() {
            Ok(libvirt) => libvirt.running().await,
            Err(_) => return,
        };
        let running = match running {
            Ok(running) => running,
            Err(e) => {
                self.note(
                    EventKind::Fault,
                    None,
                    format!("libvirt did not list its domains: {e}"),
                );
                return;
            }
        };
        for domain in &running {
            self.take_up(connection, domain.clone()).await;
        }
        let gone: Vec<String> = self
            .all()
            .iter()
            .map(VmHandle::view)
            .filter(|v| v.origin == Origin::Libvirt)
            .map(|v| v.config.name)
            .filter(|name| !running.iter().any(|d| &d.name == name))
            .collect();
        for name in gone {
            self.let_go_of_domain(&name, "libvirt no longer runs it")
                .await;
        }
    }

    /// Manages a running domain like a launched VM, unless the config leaves it alone or its
    /// name is taken.
    async fn take_up(&self, connection: &Connection, domain: DomainRef) {
        let Some(config) = &self.config.libvirt else {
            return;
        };
        let name = domain.name.clone();
        if !config.takes(&name) {
            return;
        }
        if let Ok(vm) = self.vm(&name) {
            let what = match vm.view().origin {
                Origin::Libvirt => return,
                Origin::Launched => "one memvisor launches from its config",
                Origin::Attached => "an attached QEMU",
            };
            self.note(EventKind::Fault, Some(&name), format!(
                "libvirt domain {name} is not managed: a VM named {name} is already managed ({what}); exclude the domain in [libvirt], or rename one of them"
            ));
            return;
        }
        if let Err(e) = check_name(&name) {
            self.note(EventKind::Fault, None, format!(
                "libvirt domain {name} is not managed: its name is not a usable VM name ({e}); rename the domain, or exclude it in [libvirt]"
            ));
            return;
        }
        let (reservation, limit, shares) = config.guarantees(&name);
        let found = self.libvirt_found.lock().expect("found lock").remove(&name);
        let mut vm = Vm::new(
            VmConfig::started_elsewhere(name.clone()),
            Origin::Libvirt,
            PathBuf::new(),
        );
        let link = Domain {
            connection: connection.clone(),
            domain,
            monitor: config.monitor,
            virtio_mem: None,
        };
        let taken = async {
            vm.take_domain(link, found).await?;
            vm.declare(name.clone(), reservation, limit, shares)
        }
        .await;
        if let Err(e) = taken {
            self.note(
                EventKind::Fault,
                Some(&name),
                format!("libvirt domain {name} not taken up: {e}"),
            );
            return;
        }
        vm.observe(None).await;
        let handle = VmHandle::spawn(vm);
        let view = handle.view();
        self.vms
            .lock()
            .expect("vms lock")
            .insert(name.clone(), handle);
        let reason = format!(
            "{name} taken up from libvirt at {}: pid {}, {} MiB, balloon {} MiB, reservation {} MiB, shares {}; host swap through libvirt's memtune hard limit",
            config.uri,
            pid_text(view.pid),
            view.config.memory.as_mib(),
            view.status().balloon_target_mib.unwrap_or(0),
            view.config.reservation.as_mib(),
            view.config.shares
        );
        self.note(EventKind::Operator, Some(&name), reason);
        self.save_state().await;
    }

    async fn let_go_of_domain(&self, name: &str, why: &str) {
        let Ok(vm) = self.vm(name) else {
            return;
        };
        if vm.view().origin != Origin::Libvirt {
            return;
        }
        // A stopped domain's live memtune went with it; one still running gets its limit back.
        if let Err(e) = vm.release().await {
            tracing::debug!("{name}: {e}");
        }
        self.vms.lock().expect("vms lock").remove(name);
        self.note(
            EventKind::Lifecycle,
            Some(name),
            format!("{name} let go: {why}; it is taken up again when it runs"),
        );
        self.save_state().await;
    }
}
