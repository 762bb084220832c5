//! What the daemon reports about VMs and the host: the shapes of its HTTP API's answers.
//! Figures the daemon has not observed yet are `null`, never a made-up zero.

use crate::ladder::FreeState;
use crate::policy::PolicyName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Starting,
    Running,
    Stopped,
    /// The QEMU process went away without being asked to.
    Lost,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Lost => "lost",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Started by memvisor from the config.
    Launched,
    /// Started by someone else; memvisor only talks to its QMP socket.
    Attached,
    /// A libvirt domain, managed through libvirt's API.
    Libvirt,
}

/// How QEMU runs guest code: KVM where the host can, TCG (emulation) where it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    pub origin: Origin,
    pub pid: Option<u32>,
    pub accel: Option<Accelerator>,
    pub memory_mib: u64,
    pub max_mib: u64,
    pub reservation_mib: u64,
    pub limit_mib: u64,
    pub shares: u32,
    pub balloon_target_mib: Option<u64>,
    pub balloon_actual_mib: Option<u64>,
    /// Memory the balloon holds now: boot size minus balloon actual.
    pub ballooned_mib: Option<u64>,
    /// The allocation last asked for (balloon target plus virtio-mem requested).
    pub target_mib: Option<u64>,
    pub guest_total_mib: Option<u64>,
    pub guest_free_mib: Option<u64>,
    pub guest_available_mib: Option<u64>,
    pub guest_cache_mib: Option<u64>,
    pub guest_swap_in_mib: Option<u64>,
    pub guest_swap_out_mib: Option<u64>,
    pub guest_major_faults: Option<u64>,
    /// QEMU's anonymous resident memory (guest RAM and its own heap; shared files excluded).
    pub host_rss_mib: Option<u64>,
    /// Balloon actual plus virtio-mem plugged: what the guest has.
    pub allocation_mib: Option<u64>,
    pub plugged_mib: Option<u64>,
    /// Pages of this VM merged with others by KSM.
    pub shared_mib: Option<u64>,
    /// The VM's own cgroup limit, set only while the host swaps it.
    pub host_limit_mib: Option<u64>,
    /// QEMU's memory the host swapped out (VmSwap): the guest cannot see it.
    pub host_swapped_mib: Option<u64>,
    /// CPU seconds the host's reclaim took in memvisor's writes of the VM's host limit: what
    /// compressing and swapping its memory out cost (None for a libvirt domain, whose limit
    /// libvirtd writes).
    pub cap_reclaim_cpu_s: Option<f64>,
    /// The share of a core (%) memvisor holds the VM's QEMU to while its start runs paced;
    /// None while its CPU is its own.
    pub cpu_limit_percent: Option<u32>,
    /// QEMU's own anonymous memory beyond guest RAM (translation cache, devices, heap).
    pub overhead_mib: Option<u64>,
    pub working_set_mib: Option<u64>,
    /// What the working set is estimated from.
    pub working_set_from: Option<WorkingSetSource>,
    pub guest_swap_in_mib_s: Option<f64>,
    pub guest_swap_out_mib_s: Option<f64>,
    /// What QEMU read from storage since it started: the guest's reads that missed its page
    /// cache, such as cache a balloon took and the guest reads again.
    pub disk_read_mib: Option<u64>,
    pub disk_read_mib_s: Option<f64>,
    pub guest_oom_kills: Option<u64>,
    pub workload: Option<String>,
    pub workload_phase: Option<String>,
    pub workload_pages_per_sec: Option<f64>,
    /// Pages the workload has written or read since the guest agent started.
    pub workload_pages: Option<u64>,
    /// Memory the guest agent's workload holds now.
    pub workload_held_mib: Option<u64>,
    pub boot_s: Option<f64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkingSetSource {
    /// DAMON's sampling of the guest RAM QEMU maps: pages the guest touched.
    Damon,
    /// The guest's own statistics: memory it does not count as available.
    Guest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostStatus {
    pub budget_mib: u64,
    /// In a lab (a fixed budget), what the parent cgroup has charged: all launched VMs
    /// together. On a real host (budget auto), what the kernel counts in use (MemTotal −
    /// MemAvailable): every process, VMs or not.
    pub used_mib: Option<u64>,
    /// The part of used that no managed VM holds (the host's own processes), on a real host;
    /// null in a lab, whose parent cgroup holds only VMs.
    #[serde(default)]
    pub other_used_mib: Option<u64>,
    /// Budget minus used.
    pub free_mib: Option<u64>,
    pub host_total_mib: u64,
    pub host_available_mib: u64,
    pub cgroup: String,
    pub cgroup_version: CgroupVersion,
    pub accel: Accelerator,
    pub policy: PolicyName,
    /// The policy's free-memory state, or for policies without one the state free memory
    /// alone gives under the configured thresholds; null until used is known.
    pub state: Option<FreeState>,
    pub ksm_saved_mib: Option<u64>,
    pub swap_total_mib: u64,
    pub swap_used_mib: u64,
    pub psi_some_avg10: Option<f64>,
    /// The TCP address of the API and dashboard, if it listens on one.
    pub api_listen: Option<String>,
}

/// Something the daemon did or noticed, and why, with the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Numbers events in order from 1; ask for those after the last one seen to follow.
    pub seq: u64,
    /// Seconds since the daemon started.
    pub at_s: f64,
    pub kind: EventKind,
    /// The VM it concerns, if one.
    pub vm: Option<String>,
    /// What the scheduler carried out, for decisions.
    pub action: Option<crate::plan::Action>,
    pub reason: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The policy changed something on its own.
    Decision,
    /// An operator asked for it (balloon, set, start, stop, attach).
    Operator,
    /// A VM started, booted, stopped or was lost.
    Lifecycle,
    /// A root cause that joins guest and host signals; nothing was changed.
    Hint,
    /// Something failed around a VM or the host: a QEMU, a guest, a balloon, swap.
    Fault,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Decision,
        EventKind::Operator,
        EventKind::Lifecycle,
        EventKind::Hint,
        EventKind::Fault,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Operator => "operator",
            EventKind::Lifecycle => "lifecycle",
            EventKind::Hint => "hint",
            EventKind::Fault => "fault",
        }
    }
}

/// Error body of every failed API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
}
