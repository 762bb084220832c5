//! The daemon's loop around a policy: build a snapshot from the sensors, ask the policy, carry
//! out its plan and keep every decision with its reason as an event.

use super::{Daemon, DaemonError};
use memvisor_core::hints::Hints;
use memvisor_core::history::HistorySample;
use memvisor_core::plan::{Action, Admission, Plan};
use memvisor_core::policy::Policy;
use memvisor_core::snapshot::{HostObservation, PendingVm, Snapshot};
use memvisor_core::status::{Event, EventKind};
use memvisor_core::Size;
use memvisor_host::ksm::{Ksm, KsmSettings};
use memvisor_host::swap::Zswap;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Events kept for the API; older ones are dropped (they are also in the daemon's log).
const EVENTS_KEPT: usize = 1000;
/// Rounds kept for charts: ten minutes at one round a second, what the dashboard shows and
/// more than a bench run lasts.
const HISTORY_KEPT: usize = 600;

/// The event log on disk is started afresh (the old one kept as .1) beyond this size.
const EVENT_LOG_MAX_BYTES: u64 = 8 << 20;

pub struct Scheduler {
    pub policy: Box<dyn Policy>,
    /// Every event as a JSON line, so a crash loses none and a restart continues the log.
    event_log: PathBuf,
    next_seq: u64,
    ksm: Ksm,
    zswap: Zswap,
    started: Instant,
    pub events: VecDeque<Event>,
    /// Events ever recorded, by kind (the kept ones are only the latest).
    pub events_total: BTreeMap<EventKind, u64>,
    pub rounds_total: u64,
    hints: Hints,
    last_snapshot: Option<Snapshot>,
    pub history: VecDeque<HistorySample>,
}

impl Scheduler {
    pub fn new(policy: Box<dyn Policy>, event_log: PathBuf) -> Scheduler {
        Scheduler {
            policy,
            event_log,
            next_seq: 1,
            ksm: Ksm::at(std::path::Path::new(memvisor_host::ksm::SYSFS)),
            zswap: Zswap::new(),
            started: Instant::now(),
            events: VecDeque::new(),
            events_total: EventKind::ALL.iter().map(|&k| (k, 0)).collect(),
            rounds_total: 0,
            hints: Hints::default(),
            last_snapshot: None,
            history: VecDeque::new(),
        }
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn record(
        &mut self,
        kind: EventKind,
        vm: Option<&str>,
        action: Option<Action>,
        reason: String,
    ) {
        tracing::info!("{}: {reason}", kind.name());
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        *self.events_total.entry(kind).or_default() += 1;
        let event = Event {
            seq: self.next_seq,
            at_s: self.seconds(),
            kind,
            vm: vm.map(str::to_string),
            action,
            reason,
        };
        self.next_seq += 1;
        if let Err(e) = self.append_to_log(&event) {
            tracing::error!("cannot write {}: {e}", self.event_log.display());
        }
        self.events.push_back(event);
    }

    fn append_to_log(&self, event: &Event) -> std::io::Result<()> {
        use std::io::Write;
        if std::fs::metadata(&self.event_log).is_ok_and(|m| m.len() > EVENT_LOG_MAX_BYTES) {
            std::fs::rename(&self.event_log, self.event_log.with_extension("jsonl.1"))?;
        }
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.event_log)?
            .write_all(&line)
    }

    /// Takes up the log an earlier daemon left: its last events are served again and
    /// numbering continues after them. Their times stay on the earlier daemon's clock.
    pub fn resume_log(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.event_log) else {
            return;
        };
        let earlier: Vec<Event> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let keep = earlier.len().saturating_sub(EVENTS_KEPT);
        self.events = earlier.into_iter().skip(keep).collect();
        if let Some(last) = self.events.back() {
            self.next_seq = last.seq + 1;
        }
    }

    /// KSM and zswap settings the host had before memvisor changed them.
    pub fn found(&self) -> (Option<KsmSettings>, Option<bool>) {
        (self.ksm.found(), self.zswap.found())
    }

    /// Takes over what an earlier daemon found, so that shutting down restores the host's.
    pub fn remember_found(&mut self, ksm: Option<KsmSettings>, zswap: Option<bool>) {
        self.ksm.remember(ksm);
        self.zswap.remember(zswap);
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
        let plan = {
            let mut scheduler = self.scheduler.lock().await;
            scheduler.rounds_total += 1;
            if let Some(before) = scheduler.last_snapshot.take() {
                for hint in scheduler.hints.update(&before, &snapshot) {
                    scheduler.record(EventKind::Hint, Some(&hint.vm), None, hint.reason);
                }
            }
            let plan = scheduler.policy.decide(&snapshot);
            let state = self.free_state(&scheduler, snapshot.host.used_mib);
            if scheduler.history.len() == HISTORY_KEPT {
                scheduler.history.pop_front();
            }
            scheduler
                .history
                .push_back(HistorySample::of(&snapshot, state));
            scheduler.last_snapshot = Some(snapshot);
            plan
        };
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
                    // Smart scan skips pages that did not merge before, for several passes:
                    // measured, identical guest pages stayed apart over 5 minutes with it on.
                    // The scan rate the policy picks is what bounds KSM's CPU here.
                    smart_scan: Some(false),
                };
                scheduler.ksm.apply(wanted)?
            }
            Action::Zswap { enabled } => {
                let before = memvisor_host::swap::Zswap::enabled()?;
                scheduler.zswap.set(*enabled)?;
                before != *enabled
            }
            // Waiting is told once by the VM that waits, not every round.
            Action::Admit { verdict, .. } => *verdict != Admission::Wait,
        };
        if changed {
            let vm = match action {
                Action::Allocate { vm, .. }
                | Action::CgroupLimit { vm, .. }
                | Action::Admit { vm, .. } => Some(vm.as_str()),
                Action::Ksm { .. } | Action::Zswap { .. } => None,
            };
            scheduler.record(
                EventKind::Decision,
                vm,
                Some(action.clone()),
                reason.to_string(),
            );
        }
        Ok(())
    }

    /// Asks the policy, round by round, until the VM may start or is refused.
    pub async fn admit(
        &self,
        name: &str,
        memory: Size,
        reservation: Size,
    ) -> Result<(), DaemonError> {
        let asked = Instant::now();
        let mut told_to_wait = false;
        loop {
            let (answer, verdict) = tokio::sync::oneshot::channel();
            self.asking.lock().expect("asking lock").push(Asking {
                vm: PendingVm {
                    name: name.to_string(),
                    memory_mib: memory.as_mib(),
                    reservation_mib: reservation.as_mib(),
                },
                answer,
            });
            let (verdict, reason) = verdict
                .await
                .map_err(|_| DaemonError::Io("the scheduler stopped".into()))?;
            match verdict {
                Admission::Start => {
                    if told_to_wait {
                        let waited = asked.elapsed().as_secs_f64();
                        self.note(
                            EventKind::Lifecycle,
                            Some(name),
                            format!("{name} may start after waiting {waited:.0} s: {reason}"),
                        )
                        .await;
                    }
                    return Ok(());
                }
                Admission::Refuse => return Err(DaemonError::Refused(reason)),
                Admission::Wait if asked.elapsed() > ADMISSION_PATIENCE => {
                    return Err(DaemonError::Refused(format!(
                        "{reason}; still waiting after {} s: start it later with 'memvisor start {name}'",
                        ADMISSION_PATIENCE.as_secs()
                    )))
                }
                Admission::Wait => {
                    if !told_to_wait {
                        told_to_wait = true;
                        self.note(EventKind::Lifecycle, Some(name), reason).await;
                    }
                }
            }
        }
    }
}

/// How long a VM may wait to be admitted before it is refused.
const ADMISSION_PATIENCE: Duration = Duration::from_secs(180);

/// A VM asking to start, and where its answer goes.
pub struct Asking {
    pub vm: PendingVm,
    answer: tokio::sync::oneshot::Sender<(Admission, String)>,
}

impl Asking {
    /// Hands on the plan's verdict; a policy that said nothing of the VM lets it start.
    pub fn answer(self, plan: &Plan) {
        let verdict = plan
            .decisions
            .iter()
            .find_map(|d| match &d.action {
                Action::Admit { vm, verdict } if *vm == self.vm.name => {
                    Some((*verdict, d.reason.clone()))
                }
                _ => None,
            })
            .unwrap_or((Admission::Start, "no admission control".into()));
        // The asker may have gone (its request dropped): nothing to tell then.
        let _ = self.answer.send(verdict);
    }
}
