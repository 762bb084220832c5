//! The daemon's loop around a policy, one round a second: the sensors build a snapshot, the
//! policy decides, the actuators carry out its plan, and every change is kept as an event with
//! its reason. No lock is held across a QMP call: a VM's own lock covers only that VM.

use super::{Daemon, DaemonError};
use memvisor_core::config::Config;
use memvisor_core::hints::{Hint, Hints};
use memvisor_core::history::HistorySample;
use memvisor_core::ladder::{FreeState, Thresholds};
use memvisor_core::plan::{Action, Admission, Decision, Plan};
use memvisor_core::policy::{Policy, PolicyName};
use memvisor_core::snapshot::{HostObservation, PendingVm, Snapshot, VmObservation};
use memvisor_core::status::EventKind;
use memvisor_core::Size;
use std::time::Instant;

/// The policy, with what it remembers between rounds.
pub struct Scheduler {
    policy: Box<dyn Policy>,
    /// For policies without a free-memory state: the thresholds and budget that give one.
    thresholds: Thresholds,
    budget_mib: u64,
    started: Instant,
    rounds_total: u64,
    hints: Hints,
    last_snapshot: Option<Snapshot>,
}

impl Scheduler {
    pub fn new(
        policy: Box<dyn Policy>,
        config: &Config,
        budget: Size,
        started: Instant,
    ) -> Scheduler {
        Scheduler {
            policy,
            thresholds: config.scheduler.thresholds,
            budget_mib: budget.as_mib(),
            started,
            rounds_total: 0,
            hints: Hints::default(),
            last_snapshot: None,
        }
    }

    pub fn policy(&self) -> PolicyName {
        self.policy.name()
    }

    /// Rounds decided since the daemon started.
    pub fn rounds_total(&self) -> u64 {
        self.rounds_total
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The policy's free-memory state, or for policies without one the state free memory
    /// alone gives under the configured thresholds.
    pub fn free_state(&self, used_mib: u64) -> FreeState {
        self.policy.free_state().unwrap_or_else(|| {
            let budget = self.budget_mib.max(1) as f64;
            let free_pct = 100.0 * (budget - used_mib as f64) / budget;
            self.thresholds.falling(free_pct)
        })
    }

    /// Decide: the policy's plan for `snapshot`, the root-cause hints that joining it with
    /// the previous round's gives, and the round as the charts keep it.
    fn decide(&mut self, snapshot: Snapshot) -> (Plan, Vec<Hint>, HistorySample) {
        self.rounds_total += 1;
        let hints = match self.last_snapshot.take() {
            Some(before) => self.hints.update(&before, &snapshot),
            None => Vec::new(),
        };
        // What the policy saw, to find why it decided as it did (MEMVISOR_LOG=info,snapshot=trace).
        tracing::trace!(
            target: "snapshot",
            policy = %self.policy.name(),
            snapshot = %serde_json::to_string(&snapshot).unwrap_or_default()
        );
        let plan = self.policy.decide(&snapshot);
        let sample = HistorySample::of(&snapshot, self.free_state(snapshot.host.used_mib));
        self.last_snapshot = Some(snapshot);
        (plan, hints, sample)
    }
}

/// What observing needs: the host's figures and what each VM's task last saw, or fakes in
/// tests.
pub trait Sensors {
    async fn host(&self) -> HostObservation;
    fn vms(&self) -> Vec<VmObservation>;
}

impl Sensors for Daemon {
    async fn host(&self) -> HostObservation {
        let meminfo = memvisor_host::meminfo::read().ok();
        let ksm_saved = super::knobs::ksm_saved().map_or(0, Size::as_mib);
        let used_mib = self.used(meminfo).map_or(0, Size::as_mib);
        HostObservation {
            budget_mib: self.budget.as_mib(),
            used_mib,
            reserve_mib: self.config.host.reserve.as_mib(),
            psi_some_avg10: memvisor_host::pressure::some_avg10().unwrap_or(0.0),
            swap_total_mib: meminfo.map(|m| m.swap_total.as_mib()).unwrap_or(0),
            swap_used_mib: meminfo
                .map(|m| (m.swap_total.as_bytes() - m.swap_free.as_bytes()) >> 20)
                .unwrap_or(0),
            ksm_saved_mib: ksm_saved,
            other_used_mib: self.other_used_mib(used_mib, ksm_saved).unwrap_or(0),
        }
    }

    fn vms(&self) -> Vec<VmObservation> {
        self.all()
            .iter()
            .filter_map(|vm| vm.view().observation)
            .collect()
    }
}

/// What one round came to.
pub struct Round {
    pub plan: Plan,
    /// Root causes that joining this round's snapshot with the last one's gives.
    pub hints: Vec<Hint>,
    /// The round as the charts keep it.
    pub sample: HistorySample,
    /// The decisions that changed something, for the event log.
    pub changed: Vec<Decision>,
}

/// One round: observe (the sensors' snapshot), decide (the policy), act (carry out the plan).
/// The scheduler is held only while the policy decides, never across a QMP or sysfs call.
pub async fn round(
    scheduler: &std::sync::Mutex<Scheduler>,
    sense: &impl Sensors,
    act: &impl Actuators,
    pending: Vec<PendingVm>,
) -> Round {
    let at_s = scheduler.lock().expect("scheduler lock").seconds();
    let snapshot = Snapshot {
        at_s,
        host: sense.host().await,
        vms: sense.vms(),
        pending,
    };
    let (plan, hints, sample) = scheduler.lock().expect("scheduler lock").decide(snapshot);
    let changed = carry_out(&plan, act).await.into_iter().cloned().collect();
    Round {
        plan,
        hints,
        sample,
        changed,
    }
}

impl Daemon {
    /// One round, kept in the history and the event log. Returns the plan carried out.
    pub async fn schedule(&self, pending: Vec<PendingVm>) -> Plan {
        let round = round(&self.scheduler, self, self, pending).await;
        self.history
            .lock()
            .expect("history lock")
            .push(round.sample);
        for hint in round.hints {
            self.record(EventKind::Hint, Some(&hint.vm), None, hint.reason);
        }
        for d in round.changed {
            self.record(
                EventKind::Decision,
                d.action.vm(),
                Some(d.action.clone()),
                d.reason,
            );
        }
        round.plan
    }
}

/// What carrying out a plan needs: the daemon's VMs and the host's knobs, or fakes in tests.
pub trait Actuators {
    async fn allocate(&self, vm: &str, target: Size) -> Result<(), DaemonError>;
    async fn cap(&self, vm: &str, limit: Option<Size>) -> Result<(), DaemonError>;
    /// Holds a VM's CPU; true when that changed it.
    async fn hold_cpu(&self, vm: &str, percent: Option<u32>) -> Result<bool, DaemonError>;
    /// Sets KSM or zswap; true when that changed the host's setting.
    async fn host_knob(&self, action: &Action) -> Result<bool, DaemonError>;
}

impl Actuators for Daemon {
    async fn allocate(&self, vm: &str, target: Size) -> Result<(), DaemonError> {
        self.vm(vm)?.allocate(target).await
    }

    async fn cap(&self, vm: &str, limit: Option<Size>) -> Result<(), DaemonError> {
        self.vm(vm)?.cap(limit).await
    }

    async fn hold_cpu(&self, vm: &str, percent: Option<u32>) -> Result<bool, DaemonError> {
        self.vm(vm)?.hold_cpu(percent).await
    }

    async fn host_knob(&self, action: &Action) -> Result<bool, DaemonError> {
        self.knobs.lock().expect("knobs lock").apply(action)
    }
}

/// Act: carries out every decision of `plan`, one after the other, and returns those that
/// changed something (the event log keeps them). One that fails is logged and the rest still
/// run: a VM slow to answer must not stop the others' balloons.
pub async fn carry_out<'p>(plan: &'p Plan, act: &impl Actuators) -> Vec<&'p Decision> {
    let mut changed = Vec::new();
    for d in &plan.decisions {
        let outcome = match &d.action {
            Action::Allocate { vm, target_mib } => act
                .allocate(vm, Size::mib(*target_mib))
                .await
                .map(|()| true),
            Action::CgroupLimit { vm, limit_mib } => {
                act.cap(vm, limit_mib.map(Size::mib)).await.map(|()| true)
            }
            Action::CpuLimit { vm, percent } => act.hold_cpu(vm, *percent).await,
            Action::Ksm { .. } | Action::Zswap { .. } => act.host_knob(&d.action).await,
            // Waiting is told once by the VM that waits, not every round.
            Action::Admit { verdict, .. } => Ok(*verdict != Admission::Wait),
        };
        match outcome {
            Ok(true) => changed.push(d),
            Ok(false) => {}
            Err(e) => tracing::error!("could not {:?}: {e}", d.action),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Actuators that record what they were asked and fail for VMs named "gone".
    #[derive(Default)]
    struct Recorder {
        asked: Mutex<Vec<String>>,
    }

    impl Actuators for Recorder {
        async fn allocate(&self, vm: &str, target: Size) -> Result<(), DaemonError> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("allocate {vm} {target}"));
            match vm {
                "gone" => Err(DaemonError::UnknownVm(vm.into())),
                _ => Ok(()),
            }
        }

        async fn cap(&self, vm: &str, limit: Option<Size>) -> Result<(), DaemonError> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("cap {vm} {limit:?}"));
            Ok(())
        }

        async fn hold_cpu(&self, vm: &str, percent: Option<u32>) -> Result<bool, DaemonError> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("hold {vm} {percent:?}"));
            Ok(percent.is_some())
        }

        async fn host_knob(&self, action: &Action) -> Result<bool, DaemonError> {
            self.asked.lock().unwrap().push(format!("{action:?}"));
            // KSM already as asked; zswap switched.
            Ok(matches!(action, Action::Zswap { .. }))
        }
    }

    #[test]
    fn a_round_decides_from_the_snapshot_and_keeps_it_for_the_charts() {
        let config = Config::parse("[host]\nbudget = \"1G\"\n").unwrap();
        let policy = memvisor_core::policy::from_settings(&config.scheduler);
        let mut scheduler = Scheduler::new(policy, &config, Size::mib(1024), Instant::now());
        let snapshot = Snapshot {
            at_s: 3.0,
            host: HostObservation {
                budget_mib: 1024,
                used_mib: 100,
                reserve_mib: 64,
                psi_some_avg10: 0.0,
                swap_total_mib: 0,
                swap_used_mib: 0,
                ksm_saved_mib: 0,
                other_used_mib: 0,
            },
            vms: Vec::new(),
            pending: vec![PendingVm {
                name: "a".into(),
                memory_mib: 512,
                reservation_mib: 0,
            }],
        };
        let (plan, hints, sample) = scheduler.decide(snapshot);
        assert!(hints.is_empty(), "no round before this one to compare with");
        assert!(plan.decisions.iter().any(|d| d.action
            == Action::Admit {
                vm: "a".into(),
                verdict: Admission::Start
            }));
        assert_eq!((sample.at_s, sample.state), (3.0, FreeState::High));
        assert_eq!(scheduler.rounds_total(), 1);
    }

    /// A 1 GiB VM as the sensors see it.
    fn observed(name: &str, used: u64, resident: u64, active: u64, paging: f64) -> VmObservation {
        VmObservation {
            name: name.into(),
            memory_mib: 1024,
            max_mib: 1024,
            reservation_mib: 0,
            limit_mib: 1024,
            shares: 1000,
            allocation_mib: 1024,
            target_mib: 1024,
            guest_used_mib: Some(used),
            guest_resident_mib: Some(resident),
            guest_available_mib: Some(1024 - used),
            guest_swap_in_rate: paging,
            guest_swap_out_rate: paging,
            busy_share: 1.0,
            balloon_lowered_s_ago: None,
            disk_read_rate: 0.0,
            host_rss_mib: resident + 60,
            qemu_overhead_mib: Some(60),
            shared_mib: 0,
            working_set_mib: Some(active),
            throughput: None,
            cgroup_limit_mib: None,
            host_swapped_mib: 0,
            host_faults_per_s: 0.0,
            stalled_at_host_limit: false,
            guest_oom_kills: 0,
            launched_s_ago: None,
            booted_s_ago: None,
            host_swappable: true,
        }
    }

    /// Sensors that see a 2 GiB host nearly full: one VM holds 900 MiB of page cache but uses
    /// 100 MiB, the other pages to its disk.
    struct FullHost;

    impl Sensors for FullHost {
        async fn host(&self) -> HostObservation {
            HostObservation {
                budget_mib: 2048,
                used_mib: 2030,
                reserve_mib: 0,
                psi_some_avg10: 0.0,
                swap_total_mib: 0,
                swap_used_mib: 0,
                ksm_saved_mib: 0,
                other_used_mib: 0,
            }
        }

        fn vms(&self) -> Vec<VmObservation> {
            vec![
                observed("idle", 100, 900, 100, 0.0),
                observed("busy", 1000, 1000, 1200, 8.0),
            ]
        }
    }

    #[tokio::test]
    async fn a_round_observes_decides_and_carries_out_with_fake_sensors_and_actuators() {
        let config = Config::parse("[host]\nbudget = \"2G\"\n").unwrap();
        let policy = memvisor_core::policy::from_settings(&config.scheduler);
        let scheduler = std::sync::Mutex::new(Scheduler::new(
            policy,
            &config,
            Size::mib(1024),
            Instant::now(),
        ));
        let act = Recorder::default();
        let round = round(&scheduler, &FullHost, &act, Vec::new()).await;
        assert!(round.sample.state >= FreeState::Hard, "{:?}", round.sample);
        let ballooned = round.changed.iter().find_map(|d| match &d.action {
            Action::Allocate { vm, target_mib } if vm == "idle" => Some(*target_mib),
            _ => None,
        });
        let target = ballooned.expect("the idle VM's page cache is taken back");
        assert!(target < 1024, "{target}");
        assert!(
            act.asked
                .lock()
                .unwrap()
                .contains(&format!("allocate idle {}", Size::mib(target))),
            "the plan reached the actuators"
        );
        assert_eq!(scheduler.lock().unwrap().rounds_total(), 1);
    }

    #[tokio::test]
    async fn a_plan_is_carried_out_whole_and_only_changes_are_kept() {
        let mut plan = Plan::default();
        let allocate = |vm: &str| Action::Allocate {
            vm: vm.into(),
            target_mib: 512,
        };
        let admit = |verdict| Action::Admit {
            vm: "new".into(),
            verdict,
        };
        plan.push(allocate("gone"), "a VM that went away");
        plan.push(allocate("a"), "a gives memory back");
        plan.push(
            Action::Ksm {
                run: true,
                pages_to_scan: 100,
                sleep_ms: 20,
            },
            "as before",
        );
        plan.push(Action::Zswap { enabled: true }, "compress");
        plan.push(
            Action::CgroupLimit {
                vm: "b".into(),
                limit_mib: Some(300),
            },
            "offload b",
        );
        let hold = |percent| Action::CpuLimit {
            vm: "c".into(),
            percent,
        };
        plan.push(hold(Some(25)), "pace c");
        plan.push(hold(None), "c was not held");
        plan.push(admit(Admission::Wait), "new waits");
        plan.push(admit(Admission::Start), "new starts");
        let act = Recorder::default();
        let changed: Vec<&str> = carry_out(&plan, &act)
            .await
            .iter()
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(
            changed,
            [
                "a gives memory back",
                "compress",
                "offload b",
                "pace c",
                "new starts"
            ]
        );
        let asked = act.asked.lock().unwrap();
        assert_eq!(
            asked.len(),
            7,
            "every action after the failed one ran: {asked:?}"
        );
        assert_eq!(asked[1], "allocate a 512MiB");
    }
}
