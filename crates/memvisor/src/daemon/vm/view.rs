//! The one place a VM's state becomes what others read of it: the API's status, the policy's
//! observation and the state a restarted daemon takes over. The VM's task publishes a view
//! after every command; readers never wait for the VM.

use super::super::agent::AgentReports;
use super::super::state::{FoundLimit, SavedVm};
use super::Vm;
use memvisor_core::agent::AgentReport;
use memvisor_core::config::VmConfig;
use memvisor_core::reservation::GUEST_FLOOR;
use memvisor_core::snapshot::VmObservation;
use memvisor_core::status::{Origin, VmState, VmStatus, WorkingSetSource};
use memvisor_core::Size;
use std::path::PathBuf;

/// A VM as of its last command, for everyone but its task.
#[derive(Clone)]
pub struct VmView {
    pub config: VmConfig,
    pub origin: Origin,
    pub state: VmState,
    pub pid: Option<u32>,
    pub qmp: PathBuf,
    /// Guest RAM the running QEMU booted with.
    pub boot_memory: Size,
    /// None for an attached VM: its console is wherever its QEMU sends it.
    pub serial_log: Option<PathBuf>,
    /// None unless QEMU answered once and the VM runs.
    pub observation: Option<VmObservation>,
    /// None unless its QEMU runs.
    pub saved: Option<SavedVm>,
    status: VmStatus,
    /// The guest agent's reports arrive without the VM's task: a status shows the latest.
    agent: Option<AgentReports>,
}

impl VmView {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The VM's figures, with the guest agent's latest report.
    pub fn status(&self) -> VmStatus {
        let mut status = self.status.clone();
        if let Some(agent) = &self.agent {
            with_report(&mut status, agent.latest().as_ref());
        }
        status
    }
}

impl Vm {
    pub(super) fn view(&self) -> VmView {
        VmView {
            config: self.config.clone(),
            origin: self.origin,
            state: self.state,
            pid: self.pid,
            qmp: self.qmp_path.clone(),
            boot_memory: self.boot_memory,
            serial_log: self.serial_log(),
            observation: self.observation(),
            saved: self.saved(),
            status: self.status(),
            agent: self.agent.as_ref().map(|a| a.reports()),
        }
    }

    /// What a restarted daemon needs to take this VM over again; None unless its QEMU runs.
    fn saved(&self) -> Option<SavedVm> {
        if !matches!(self.state, VmState::Running | VmState::Starting) {
            return None;
        }
        Some(SavedVm {
            origin: self.origin,
            pid: self.pid?,
            qmp: self.qmp_path.clone(),
            memory: self.config.memory,
            reservation: self.config.reservation,
            limit: self.config.limit,
            shares: self.config.shares,
            boot_memory: self.boot_memory,
            balloon_target: self.balloon_target,
            plug_requested: self.plug_requested,
            cgroup_limit: self.cgroup_limit,
            workload: (self.origin == Origin::Launched)
                .then(|| self.workload.lock().expect("workload lock").clone()),
            host_limit_found: self.cgroup_found.map(|limit| FoundLimit { limit }),
            cpu_hold: self.cpu_hold,
        })
    }

    /// What the policy sees of this VM; None until QEMU answered once. A booting guest is
    /// seen too: it takes memory before its agent answers.
    fn observation(&self) -> Option<VmObservation> {
        if !matches!(self.state, VmState::Running | VmState::Starting) {
            return None;
        }
        let allocation = self.allocation()?;
        let mib = |s: Size| s.as_mib();
        let g = &self.guest;
        let (guest_used, guest_resident) = self.guest_used_and_resident();
        let report = self.agent.as_ref().and_then(|a| a.report());
        // A balloon something else manages is held where it is: the policy plans around it.
        // Held within the guest's floor and boot size, so that the policies' bounds stay whole.
        let (reservation, limit) = if self.hands_off() {
            let held = allocation.clamp(GUEST_FLOOR, self.config.memory.max(GUEST_FLOOR));
            (held, held)
        } else {
            (self.config.reservation, self.config.effective_limit())
        };
        Some(VmObservation {
            name: self.config.name.clone(),
            memory_mib: mib(self.config.memory),
            max_mib: mib(self.config.max_memory()),
            reservation_mib: mib(reservation),
            limit_mib: mib(limit),
            shares: self.config.shares,
            allocation_mib: mib(allocation),
            target_mib: mib(self.target()),
            guest_used_mib: guest_used,
            guest_resident_mib: guest_resident,
            guest_available_mib: g.available.map(mib),
            guest_swap_in_rate: self.swap_rates_mib_s.0,
            guest_swap_out_rate: self.swap_rates_mib_s.1,
            busy_share: self.busy_share,
            balloon_lowered_s_ago: self.balloon_lowered_s_ago(),
            disk_read_rate: self.disk_read_mib_s,
            host_rss_mib: self.host_rss.map(mib).unwrap_or(0),
            qemu_overhead_mib: self.qemu_overhead.map(mib),
            shared_mib: self.shared.map(mib).unwrap_or(0),
            working_set_mib: self.working_set.estimate_mib(),
            throughput: report.as_ref().map(|r| r.pages_per_sec),
            cgroup_limit_mib: self.cgroup_limit.map(mib),
            host_swapped_mib: self.host_swapped.map_or(0, mib),
            host_faults_per_s: self.major_faults_per_s,
            stalled_at_host_limit: self.stalled_at_host_limit,
            guest_oom_kills: report.as_ref().map_or(0, |r| r.oom_kills),
            launched_s_ago: self.launched_at.map(|t| t.elapsed().as_secs_f64()),
            booted_s_ago: self
                .launched_at
                .zip(self.boot_s)
                .map(|(t, boot_s)| t.elapsed().as_secs_f64() - boot_s),
            host_swappable: self.no_host_swap.is_none(),
        })
    }

    /// What QEMU has read from storage, once a round has read its I/O counters.
    fn storage_read_bytes(&self) -> Option<u64> {
        self.activity_seen.as_ref().and_then(|seen| seen.read_bytes)
    }

    fn status(&self) -> VmStatus {
        let mib = |s: Size| s.as_mib();
        let g = &self.guest;
        let mut status = VmStatus {
            name: self.config.name.clone(),
            state: self.state,
            origin: self.origin,
            pid: self.pid,
            accel: self.accel,
            memory_mib: mib(self.config.memory),
            max_mib: mib(self.config.max_memory()),
            reservation_mib: mib(self.config.reservation),
            limit_mib: mib(self.config.effective_limit()),
            shares: self.config.shares,
            balloon_target_mib: self
                .balloon_target
                .or(self.balloon_actual.map(|_| self.config.memory))
                .map(mib),
            balloon_actual_mib: self.balloon_actual.map(mib),
            ballooned_mib: self
                .balloon_actual
                .map(|a| mib(self.boot_memory).saturating_sub(mib(a))),
            target_mib: self.pid.map(|_| mib(self.target())),
            guest_total_mib: g.total.map(mib),
            guest_free_mib: g.free.map(mib),
            guest_available_mib: g.available.map(mib),
            guest_cache_mib: g.disk_caches.map(mib),
            guest_swap_in_mib: g.swap_in.map(mib),
            guest_swap_out_mib: g.swap_out.map(mib),
            guest_major_faults: g.major_faults,
            host_rss_mib: self.host_rss.map(mib),
            allocation_mib: self.allocation().map(mib),
            plugged_mib: self
                .config
                .can_grow_past(self.boot_memory)
                .then_some(mib(self.plugged)),
            shared_mib: self.shared.map(mib),
            host_limit_mib: self.cgroup_limit.map(mib),
            host_swapped_mib: self.host_swapped.map(mib),
            cap_reclaim_cpu_s: self
                .domain
                .is_none()
                .then_some(self.cap_reclaim_cpu.as_secs_f64()),
            cpu_limit_percent: self.cpu_hold.map(|hold| hold.percent),
            overhead_mib: self.qemu_overhead.map(mib),
            working_set_mib: self.working_set.estimate_mib(),
            working_set_from: self.working_set.estimate_mib().map(|_| {
                if self.accessed.is_some() {
                    WorkingSetSource::Damon
                } else {
                    WorkingSetSource::Guest
                }
            }),
            guest_swap_in_mib_s: self.swap_seen.map(|_| self.swap_rates_mib_s.0),
            guest_swap_out_mib_s: self.swap_seen.map(|_| self.swap_rates_mib_s.1),
            disk_read_mib: self.storage_read_bytes().map(|b| b >> 20),
            disk_read_mib_s: self.storage_read_bytes().map(|_| self.disk_read_mib_s),
            guest_oom_kills: None,
            workload: (self.origin == Origin::Launched && self.config.has_agent())
                .then(|| self.workload.lock().expect("workload lock").to_string()),
            workload_phase: None,
            workload_pages_per_sec: None,
            workload_pages: None,
            workload_held_mib: None,
            boot_s: self.boot_s,
            last_error: self.last_error.clone(),
        };
        let report = self.agent.as_ref().and_then(|a| a.report());
        with_report(&mut status, report.as_ref());
        status
    }
}

/// The figures of a status that the guest agent reports.
fn with_report(status: &mut VmStatus, report: Option<&AgentReport>) {
    status.guest_oom_kills = report.map(|r| r.oom_kills);
    status.workload_phase = report.map(|r| r.phase.clone());
    status.workload_pages_per_sec = report.map(|r| r.pages_per_sec);
    status.workload_pages = report.and_then(|r| r.pages);
    status.workload_held_mib = report.map(|r| r.held_mib);
}

#[cfg(test)]
mod tests {
    use super::*;
    use memvisor_core::policy;
    use memvisor_qemu::balloon::GuestStats;

    #[test]
    fn a_balloon_something_else_manages_is_held_where_it_is_for_the_policy() {
        let config: VmConfig = toml::from_str(
            "name = \"vm1\"\nmemory = \"1G\"\nreservation = \"128M\"\nlimit = \"1G\"",
        )
        .unwrap();
        let mut vm = Vm::new(config, Origin::Attached, "/run/vm1.qmp".into());
        vm.state = VmState::Running;
        vm.balloon_actual = Some(Size::mib(700));
        vm.balloon_target = Some(Size::mib(700));
        let free = vm.observation().unwrap();
        assert_eq!((free.reservation_mib, free.limit_mib), (128, 1024));

        vm.hands_off_until = Some(std::time::Instant::now() + std::time::Duration::from_secs(60));
        let held = vm.observation().unwrap();
        assert_eq!(
            (held.reservation_mib, held.allocation_mib, held.limit_mib),
            (700, 700, 700),
            "the policy can neither take from it nor give to it"
        );
        // Past its boot size (virtio-mem) or below the floor, the bounds stay whole.
        for (balloon, plugged) in [(1024, 512), (100, 0)] {
            vm.balloon_actual = Some(Size::mib(balloon));
            vm.plugged = Size::mib(plugged);
            let held = vm.observation().unwrap();
            assert!(
                policy::floor_mib(&held) <= policy::ceiling_mib(&held),
                "{held:?}"
            );
        }
    }

    #[test]
    fn a_balloon_that_moved_since_the_guest_last_reported_reads_as_use_not_as_free_memory() {
        let config: VmConfig = toml::from_str("name = \"c\"\nmemory = \"1G\"").unwrap();
        let mut vm = Vm::new(config, Origin::Launched, "/run/c.qmp".into());
        vm.state = VmState::Running;
        // The guest reported 124 MiB used with its balloon empty.
        vm.balloon_before_report = Some(Size::mib(1024));
        vm.guest = GuestStats {
            total: Some(Size::mib(1024)),
            available: Some(Size::mib(900)),
            free: Some(Size::mib(850)),
            last_update: 1,
            ..GuestStats::default()
        };
        vm.balloon_actual = Some(Size::mib(1024));
        assert_eq!(vm.observation().unwrap().guest_used_mib, Some(124));
        // The balloon took 416 MiB before the next report: still 124, not 0.
        vm.balloon_actual = Some(Size::mib(608));
        assert_eq!(vm.observation().unwrap().guest_used_mib, Some(124));
        // The next report counts the balloon's pages as used: 124 once they come off.
        vm.balloon_before_report = Some(Size::mib(608));
        vm.guest.available = Some(Size::mib(484));
        vm.guest.free = Some(Size::mib(434));
        assert_eq!(vm.observation().unwrap().guest_used_mib, Some(124));
        // A balloon let out since the report reads as more use too, never less.
        vm.balloon_actual = Some(Size::mib(1024));
        assert_eq!(vm.observation().unwrap().guest_used_mib, Some(124 + 416));
    }
}
