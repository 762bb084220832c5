//! Policies: a snapshot in, a plan out, no I/O. Ours and the baselines it is measured against
//! share this interface so that the benchmark runs them on the same scenario.

mod esx;
mod fixed;
mod mom;
mod proxmox;

use crate::ladder::{FreeState, Thresholds};
use crate::plan::{Action, Admission, Plan};
use crate::size::Size;
use crate::snapshot::{Snapshot, VmObservation};
use serde::{Deserialize, Serialize};

pub use esx::Esx;
pub use fixed::Static;
pub use mom::Mom;
pub use proxmox::Proxmox;

pub trait Policy: Send {
    fn name(&self) -> PolicyName;
    /// Decides what to change now. `&mut self` holds only what the policy remembers between
    /// rounds (its free-memory state, when it last acted); time comes from the snapshot.
    fn decide(&mut self, snapshot: &Snapshot) -> Plan;
    /// The host's free-memory state as this policy sees it, if it keeps one.
    fn free_state(&self) -> Option<FreeState> {
        None
    }
}

/// A policy, as the config, the API and the bench name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PolicyName {
    Ours,
    Static,
    Proxmox,
    Mom,
    /// Changes nothing by itself: for operators who move balloons with `memvisor balloon`.
    Manual,
}

impl PolicyName {
    /// The policies the benchmark compares.
    pub const COMPARED: [PolicyName; 4] = [
        PolicyName::Ours,
        PolicyName::Static,
        PolicyName::Proxmox,
        PolicyName::Mom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Ours => "ours",
            PolicyName::Static => "static",
            PolicyName::Proxmox => "proxmox",
            PolicyName::Mom => "mom",
            PolicyName::Manual => "manual",
        }
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for PolicyName {
    type Err = UnknownPolicy;

    fn from_str(name: &str) -> Result<PolicyName, UnknownPolicy> {
        [PolicyName::Manual]
            .into_iter()
            .chain(PolicyName::COMPARED)
            .find(|p| p.as_str() == name)
            .ok_or_else(|| UnknownPolicy(name.to_string()))
    }
}

impl Serialize for PolicyName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PolicyName, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown policy '{0}': choose one of ours, static, proxmox, mom (or manual)")]
pub struct UnknownPolicy(pub String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub policy: PolicyName,
    /// Share of a VM's idle memory that counts against it (0 ≤ tax < 1).
    pub idle_tax: f64,
    pub thresholds: Thresholds,
    /// At most this many VMs inflate their balloons at the same time.
    pub max_inflating: usize,
    /// The most a balloon takes from one VM in one round beyond the guest's free memory, MiB.
    pub step_mib: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: PolicyName::Ours,
            idle_tax: crate::entitlement::DEFAULT_IDLE_TAX,
            thresholds: Thresholds::default(),
            max_inflating: 2,
            step_mib: 256,
        }
    }
}

impl Settings {
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.thresholds.problems();
        if !(0.0..1.0).contains(&self.idle_tax) {
            out.push(format!(
                "scheduler idle_tax {} must be at least 0 and below 1 (0.75 taxes idle memory 75%)",
                self.idle_tax
            ));
        }
        if self.max_inflating == 0 {
            out.push("scheduler max_inflating must be at least 1".into());
        }
        if self.step_mib < 16 {
            out.push("scheduler step_mib must be at least 16".into());
        }
        out
    }
}

/// The policy `settings` name, ready to decide.
pub fn from_settings(settings: &Settings) -> Box<dyn Policy> {
    match settings.policy {
        PolicyName::Ours => Box::new(Esx::new(settings.clone())),
        PolicyName::Static => Box::new(Static),
        PolicyName::Proxmox => Box::new(Proxmox::default()),
        PolicyName::Mom => Box::new(Mom::default()),
        PolicyName::Manual => Box::new(Manual),
    }
}

/// Baselines without admission control let every pending VM start.
fn admit_all(plan: &mut Plan, s: &Snapshot, policy: PolicyName) {
    for p in &s.pending {
        plan.push(
            Action::Admit {
                vm: p.name.clone(),
                verdict: Admission::Start,
            },
            format!("{policy}: no admission control"),
        );
    }
}

/// Baselines that act on a fixed period: true (and remembered) when a round is due at `at_s`.
fn due(last_at: &mut Option<f64>, at_s: f64, period_s: f64) -> bool {
    if last_at.is_some_and(|t| at_s - t < period_s) {
        return false;
    }
    *last_at = Some(at_s);
    true
}

pub struct Manual;

impl Policy for Manual {
    fn name(&self) -> PolicyName {
        PolicyName::Manual
    }

    fn decide(&mut self, _: &Snapshot) -> Plan {
        Plan::default()
    }
}

/// The least a policy may leave a VM: its reservation, and never under the guest floor.
pub fn floor_mib(vm: &VmObservation) -> u64 {
    crate::reservation::floor(Size::mib(vm.reservation_mib))
        .as_mib()
        .min(vm.max_mib)
}

/// The most a balloon-only policy may give a VM: its configured size, and never above its limit.
pub fn ceiling_mib(vm: &VmObservation) -> u64 {
    vm.limit_mib.min(vm.memory_mib).min(vm.max_mib)
}

/// The most ours gives a VM: its limit, past its boot size through virtio-mem up to its max.
pub fn growth_ceiling_mib(vm: &VmObservation) -> u64 {
    vm.limit_mib.min(vm.max_mib)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::snapshot::{HostObservation, Snapshot, VmObservation};

    pub fn vm(name: &str, allocation: u64, used: u64) -> VmObservation {
        VmObservation {
            name: name.into(),
            memory_mib: 1024,
            max_mib: 1024,
            reservation_mib: 0,
            limit_mib: 1024,
            shares: 1000,
            allocation_mib: allocation,
            target_mib: allocation,
            guest_used_mib: Some(used),
            guest_resident_mib: Some(used),
            guest_available_mib: Some(allocation.saturating_sub(used)),
            guest_swap_in_rate: 0.0,
            guest_swap_out_rate: 0.0,
            busy_share: 1.0,
            balloon_lowered_s_ago: None,
            disk_read_rate: 0.0,
            // A guest without free page reporting: QEMU holds all it was given.
            host_rss_mib: allocation + 60,
            qemu_overhead_mib: Some(60),
            shared_mib: 0,
            working_set_mib: Some(used),
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

    pub fn snapshot(at_s: f64, budget: u64, used: u64, vms: Vec<VmObservation>) -> Snapshot {
        Snapshot {
            at_s,
            host: HostObservation {
                budget_mib: budget,
                used_mib: used,
                reserve_mib: 0,
                psi_some_avg10: 0.0,
                swap_total_mib: 1024,
                swap_used_mib: 0,
                ksm_saved_mib: 0,
                other_used_mib: 0,
            },
            vms,
            pending: Vec::new(),
        }
    }
}
