//! QEMUs someone else started (Proxmox, a script, by hand): attached on request, as declared
//! in `[[attach]]`, or as found by `[discover] qmp`, and let go when they end. memvisor talks
//! to them through QMP and never stops them.

use super::vm::{Vm, VmHandle};
use super::{pid_text, Daemon, DaemonError};
use memvisor_core::config::{check_name, AttachConfig, VmConfig};
use memvisor_core::status::{EventKind, Origin, VmState};
use memvisor_core::Size;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often declared and discovered sockets are looked at.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);
/// A socket that could not be attached is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What attaching a QEMU needs: its socket, and what it is called and guaranteed.
pub struct Attaching {
    /// None: as QEMU's -name says, or else as the socket's file is named.
    pub name: Option<String>,
    pub qmp: PathBuf,
    pub reservation: Size,
    pub limit: Option<Size>,
    pub shares: u32,
    /// Its cgroup's limit before memvisor capped it, as a daemon before this one found it.
    pub host_limit_found: Option<Option<Size>>,
}

impl Attaching {
    /// A QEMU attached with nothing declared: no reservation, no limit beyond its size.
    pub fn plain(name: Option<String>, qmp: PathBuf) -> Attaching {
        Attaching {
            name,
            qmp,
            reservation: Size::ZERO,
            limit: None,
            shares: 1000,
            host_limit_found: None,
        }
    }

    fn declared(a: &AttachConfig) -> Attaching {
        Attaching {
            name: Some(a.name.clone()),
            qmp: a.qmp.clone(),
            reservation: a.reservation,
            limit: a.limit,
            shares: a.shares,
            host_limit_found: None,
        }
    }
}

/// Sockets that could not be attached: when an attempt failed (None: not there to try), and
/// why (told again only when that changes).
#[derive(Default)]
pub struct Refused(std::collections::BTreeMap<PathBuf, (Option<Instant>, String)>);

impl Daemon {
    /// Attaches the QEMU behind `how.qmp`; returns the name it is managed by.
    pub async fn attach(&self, how: Attaching) -> Result<String, DaemonError> {
        let taken = |name: &str| {
            DaemonError::Conflict(format!(
                "a VM named {name} is already managed; pick another name"
            ))
        };
        if let Some(name) = &how.name {
            check_name(name).map_err(DaemonError::BadRequest)?;
            if self.vm(name).is_ok() {
                return Err(taken(name));
            }
        }
        // Connecting and observing take a QMP round trip or more: no other VM waits meanwhile.
        let stem = how
            .qmp
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let config = VmConfig::started_elsewhere(how.name.clone().unwrap_or_else(|| stem.clone()));
        let mut vm = Vm::new(config, Origin::Attached, how.qmp.clone());
        let qemu_name = vm.attach(&self.hierarchy, how.host_limit_found).await?;
        let name = match how.name {
            Some(name) => name,
            None => [qemu_name, Some(stem)]
                .into_iter()
                .flatten()
                .find(|n| check_name(n).is_ok())
                .ok_or_else(|| {
                    DaemonError::BadRequest(format!(
                        "neither QEMU's -name nor the socket's file name {} is a usable VM name (1 to 32 lowercase letters, digits, '-' or '_'); declare it in [[attach]] with a name",
                        how.qmp.display()
                    ))
                })?,
        };
        vm.declare(name.clone(), how.reservation, how.limit, how.shares)?;
        vm.observe(None).await;
        let host_swap = vm.host_swap_note();
        {
            let mut vms = self.vms.lock().expect("vms lock");
            if vms.contains_key(&name) {
                return Err(taken(&name));
            }
            vms.insert(name.clone(), VmHandle::spawn(vm));
        }
        let view = self.vm(&name)?.view();
        let declared = self.config.attached.iter().any(|a| a.qmp == how.qmp);
        let both = if declared && self.discovers(&how.qmp) {
            "; [discover]'s glob matches its socket too: it is managed once, as [[attach]] declares it"
        } else {
            ""
        };
        let reason = format!(
            "{name} attached through {}: pid {}, {} MiB, reservation {} MiB, shares {}; {host_swap}{both}",
            how.qmp.display(),
            pid_text(view.pid),
            view.config.memory.as_mib(),
            view.config.reservation.as_mib(),
            view.config.shares
        );
        self.note(EventKind::Operator, Some(&name), reason);
        self.save_state().await;
        Ok(name)
    }

    /// Every few seconds: attaches declared and discovered QEMUs not managed yet.
    pub async fn discover_forever(self: Arc<Self>) {
        loop {
            self.discover().await;
            tokio::time::sleep(DISCOVER_EVERY).await;
        }
    }

    async fn discover(&self) {
        let managed: BTreeSet<PathBuf> = self.all().iter().map(|v| v.view().qmp).collect();
        let declared: BTreeSet<&Path> = self.config.attached.iter().map(|a| &*a.qmp).collect();
        let mut wanted: Vec<Attaching> = self
            .config
            .attached
            .iter()
            .filter(|a| self.vm(&a.name).is_err() && !managed.contains(&a.qmp))
            .map(Attaching::declared)
            .collect();
        if let Some(pattern) = &self.config.discover.qmp {
            match glob::glob(pattern) {
                Ok(paths) => wanted.extend(
                    paths
                        .flatten()
                        .filter(|p| !managed.contains(p) && !declared.contains(p.as_path()))
                        .map(|p| Attaching::plain(None, p)),
                ),
                Err(e) => self.refuse(
                    Path::new(pattern),
                    None,
                    format!("discover qmp \"{pattern}\" is not a usable glob: {e}"),
                ),
            }
        }
        for how in wanted {
            let path = how.qmp.clone();
            // Looking again for a socket that is not there costs nothing; trying one that
            // does not answer costs the QMP timeout.
            if !path.exists() {
                let why = format!(
                    "{} not attached yet: no such socket; it is attached once its QEMU runs",
                    path.display()
                );
                self.refuse(&path, None, why);
                continue;
            }
            if !self.may_try(&path) {
                continue;
            }
            match self.attach(how).await {
                Ok(_) => {
                    self.refused.lock().expect("refused lock").0.remove(&path);
                }
                Err(e) => {
                    let why = format!("{} not attached: {e}", path.display());
                    self.refuse(&path, Some(Instant::now()), why);
                }
            }
        }
    }

    /// Whether discovery looks at `path`: declared in [[attach]] or matched by [discover].
    fn watches(&self, path: &Path) -> bool {
        self.config.attached.iter().any(|a| a.qmp == path) || self.discovers(path)
    }

    /// Whether [discover]'s glob matches `path`.
    fn discovers(&self, path: &Path) -> bool {
        self.config
            .discover
            .qmp
            .as_deref()
            .is_some_and(|pattern| glob::Pattern::new(pattern).is_ok_and(|p| p.matches_path(path)))
    }

    fn may_try(&self, path: &Path) -> bool {
        let refused = self.refused.lock().expect("refused lock");
        refused
            .0
            .get(path)
            .and_then(|(tried, _)| *tried)
            .is_none_or(|at| at.elapsed() >= RETRY_AFTER)
    }

    /// Keeps why `path` was refused, and when an attempt failed; tells it when the reason is
    /// new.
    fn refuse(&self, path: &Path, tried: Option<Instant>, why: String) {
        let told = {
            let mut refused = self.refused.lock().expect("refused lock");
            let before = refused.0.insert(path.into(), (tried, why.clone()));
            before.is_some_and(|(_, b)| b == why)
        };
        if !told {
            self.note(EventKind::Fault, None, why);
        }
    }

    /// Attached VMs whose QEMU ended are let go: whoever started them may start them again,
    /// and discovery then finds them anew.
    pub async fn let_go_of_ended(&self) {
        let ended: Vec<(String, PathBuf, VmHandle)> = self
            .all()
            .into_iter()
            .map(|vm| (vm.view(), vm))
            .filter(|(v, _)| v.origin == Origin::Attached && v.state == VmState::Lost)
            .map(|(v, vm)| (v.config.name, v.qmp, vm))
            .collect();
        for (name, qmp, vm) in ended {
            // Its group may be gone with it; one that stays gets its limit back.
            if let Err(e) = vm.release().await {
                tracing::warn!("{name}: {e}");
            }
            self.vms.lock().expect("vms lock").remove(&name);
            let again = if self.watches(&qmp) {
                "it is attached again if it comes back"
            } else {
                "once it runs again, 'memvisor attach' it"
            };
            self.note(
                EventKind::Lifecycle,
                Some(&name),
                format!("{name} let go: its QEMU ended; {again}"),
            );
        }
    }
}
