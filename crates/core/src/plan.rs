//! What a policy decides: actions, each with the reason an operator reads in the event log.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Give the guest this much memory: balloon below its boot size, virtio-mem above it.
    Allocate {
        vm: String,
        target_mib: u64,
    },
    /// Cap the VM's QEMU on the host (None lifts the cap); above the cap the host swaps it.
    CgroupLimit {
        vm: String,
        limit_mib: Option<u64>,
    },
    /// Hold the VM's QEMU to this share of one CPU, in percent (None lifts the hold): a start
    /// paced to what KSM merges.
    CpuLimit {
        vm: String,
        percent: Option<u32>,
    },
    Ksm {
        run: bool,
        pages_to_scan: u32,
        sleep_ms: u32,
    },
    Zswap {
        enabled: bool,
    },
    Admit {
        vm: String,
        verdict: Admission,
    },
}

impl Action {
    /// The VM the action concerns; None for host-wide ones.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Action::Allocate { vm, .. }
            | Action::CgroupLimit { vm, .. }
            | Action::CpuLimit { vm, .. }
            | Action::Admit { vm, .. } => Some(vm),
            Action::Ksm { .. } | Action::Zswap { .. } => None,
        }
    }
}

/// What admission control says to a VM asking to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Start,
    /// Not yet: asked again next round.
    Wait,
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

impl Plan {
    pub fn push(&mut self, action: Action, reason: impl Into<String>) {
        self.decisions.push(Decision {
            action,
            reason: reason.into(),
        });
    }

    pub fn allocation_for(&self, vm: &str) -> Option<u64> {
        self.decisions.iter().find_map(|d| match &d.action {
            Action::Allocate { vm: v, target_mib } if v == vm => Some(*target_mib),
            _ => None,
        })
    }

    pub fn cgroup_limit_for(&self, vm: &str) -> Option<Option<u64>> {
        self.decisions.iter().find_map(|d| match &d.action {
            Action::CgroupLimit { vm: v, limit_mib } if v == vm => Some(*limit_mib),
            _ => None,
        })
    }
}
