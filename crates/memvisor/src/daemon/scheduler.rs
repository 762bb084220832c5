//! The daemon's loop around a policy: build a snapshot from the sensors, ask the policy, carry
//! out its plan and keep every decision with its reason as an event.

use super::{Daemon, DaemonError};
use memvisor_core::plan::{Action, Plan};
use memvisor_core::policy::Policy;
use memvisor_core::snapshot::{HostObservation, PendingVm, Snapshot};
use memvisor_core::status::Event;
use memvisor_core::Size;
use memvisor_host::ksm::{Ksm, KsmSettings};
use memvisor_host::swap::Zswap;
use std::collections::VecDeque;
use std::time::Instant;

/// Events kept for the API; older ones are dropped (they are also in the daemon's log).
const EVENTS_KEPT: usize = 1000;

pub struct Scheduler {
    pub policy: Box<dyn Policy>,
    ksm: Ksm,
    zswap: Zswap,
    started: Instant,
    pub events: VecDeque<Event>,
}

impl Scheduler {
    pub fn new(policy: Box<dyn Policy>) -> Scheduler {
        Scheduler {
            policy,
            ksm: Ksm::at(std::path::Path::new(memvisor_host::ksm::SYSFS)),
            zswap: Zswap::new(),
            started: Instant::now(),
            events: VecDeque::new(),
        }
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn record(&mut self, action: Action, reason: String) {
        tracing::info!("{reason}");
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at_s: self.seconds(),
            action,
            reason,
        });
    }

    pub fn ksm_saved(&self) -> Option<Size> {
        self.ksm.saved().ok()
    }

    /// Puts back the KSM and zswap settings found when memvisor started.
    pub fn restore(&mut self) {
        if let Err(e) = self.ksm.restore() {
            tracing::error!("{e}");
        }
        if let Err(e) = self.zswap.restore() {
            tracing::error!("{e}");
        }
    }
}

impl Daemon {
    pub async fn snapshot(&self, at_s: f64, pending: Vec<PendingVm>) -> Snapshot {
        let mut vms = Vec::new();
        for vm in self.all().await {
            if let Some(o) = vm.lock().await.observation() {
                vms.push(o);
            }
        }
        let meminfo = memvisor_host::meminfo::read().ok();
        Snapshot {
            at_s,
            host: HostObservation {
                budget_mib: self.config.host.budget.as_mib(),
                used_mib: self.parent.usage().map(Size::as_mib).unwrap_or(0),
                reserve_mib: self.config.host.reserve.as_mib(),
                psi_some_avg10: memvisor_host::pressure::some_avg10().unwrap_or(0.0),
                swap_total_mib: meminfo.map(|m| m.swap_total.as_mib()).unwrap_or(0),
                swap_used_mib: meminfo
                    .map(|m| (m.swap_total.as_bytes() - m.swap_free.as_bytes()) >> 20)
                    .unwrap_or(0),
                ksm_saved_mib: self
                    .scheduler
                    .lock()
                    .await
                    .ksm_saved()
                    .map_or(0, Size::as_mib),
            },
            vms,
            pending,
        }
    }

    /// One round: observe, decide, act. Returns the plan carried out.
    pub async fn schedule(&self, pending: Vec<PendingVm>) -> Plan {
        let at_s = self.scheduler.lock().await.seconds();
        let snapshot = self.snapshot(at_s, pending).await;
        let plan = self.scheduler.lock().await.policy.decide(&snapshot);
        for d in &plan.decisions {
            if let Err(e) = self.carry_out(&d.action, &d.reason).await {
                tracing::error!("could not {:?}: {e}", d.action);
            }
        }
        plan
    }

    async fn carry_out(&self, action: &Action, reason: &str) -> Result<(), DaemonError> {
        let mut scheduler = self.scheduler.lock().await;
        let changed = match action {
            Action::Allocate { vm, target_mib } => {
                let vm = self.vm(vm).await?;
                let mut vm = vm.lock().await;
                vm.set_allocation(Size::mib(*target_mib)).await?;
                true
            }
            Action::CgroupLimit { vm, limit_mib } => {
                let vm = self.vm(vm).await?;
                vm.lock().await.set_cgroup_limit(limit_mib.map(Size::mib))?;
                true
            }
            Action::Ksm {
                run,
                pages_to_scan,
                sleep_ms,
            } => {
                let wanted = KsmSettings {
                    run: *run,
                    pages_to_scan: *pages_to_scan,
                    sleep_ms: *sleep_ms,
                };
                let before = scheduler.ksm.settings()?;
                scheduler.ksm.apply(wanted)?;
                before != wanted
            }
            Action::Zswap { enabled } => {
                let before = memvisor_host::swap::Zswap::enabled()?;
                scheduler.zswap.set(*enabled)?;
                before != *enabled
            }
            Action::Admit { .. } => true,
        };
        if changed {
            scheduler.record(action.clone(), reason.to_string());
        }
        Ok(())
    }

    /// Asks the policy whether a VM with this reservation may start now.
    pub async fn admit(&self, name: &str, reservation: Size) -> Result<(), DaemonError> {
        let pending = vec![PendingVm {
            name: name.to_string(),
            reservation_mib: reservation.as_mib(),
        }];
        let plan = self.schedule(pending).await;
        for d in plan.decisions {
            if let Action::Admit {
                vm,
                admitted: false,
            } = d.action
            {
                if vm == name {
                    return Err(DaemonError::Refused(d.reason));
                }
            }
        }
        Ok(())
    }
}
