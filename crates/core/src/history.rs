//! What each scheduling round saw, kept for charts: the dashboard's and the bench report's.
//! A VM's configured memory is split into layers that add up to it, so a stacked chart shows
//! where every MiB of the guest is: in use, idle, merged, on host swap, or in the balloon.

use crate::ladder::FreeState;
use crate::snapshot::{Snapshot, VmObservation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistorySample {
    /// Seconds since the daemon started.
    pub at_s: f64,
    /// The host's free-memory state.
    pub state: FreeState,
    pub budget_mib: u64,
    pub used_mib: u64,
    pub ksm_saved_mib: u64,
    pub swap_used_mib: u64,
    pub vms: Vec<VmSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmSample {
    pub name: String,
    /// What QEMU holds on the host (anonymous RSS).
    pub consumed_mib: u64,
    pub layers: Layers,
    /// Pages per second of the guest's workload, if it reports one.
    pub throughput: Option<f64>,
}

/// The VM's configured memory, split; the five add up to it (boot size, or more once
/// virtio-mem plugged memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Layers {
    /// Working set, resident on the host.
    pub active_mib: u64,
    /// Allocated to the guest but not in its working set.
    pub idle_mib: u64,
    /// Merged by KSM with identical pages.
    pub shared_mib: u64,
    /// Pushed to host swap.
    pub swapped_mib: u64,
    /// Held back by the balloon.
    pub balloon_mib: u64,
}

impl Layers {
    pub fn of(vm: &VmObservation) -> Layers {
        let allocation = vm.allocation_mib;
        let swapped = vm.host_swapped_mib.min(allocation);
        let shared = vm.shared_mib.min(allocation - swapped);
        let rest = allocation - swapped - shared;
        let active = vm.active_mib().min(rest);
        Layers {
            active_mib: active,
            idle_mib: rest - active,
            shared_mib: shared,
            swapped_mib: swapped,
            balloon_mib: vm.memory_mib.saturating_sub(allocation),
        }
    }

    pub fn total_mib(&self) -> u64 {
        self.active_mib + self.idle_mib + self.shared_mib + self.swapped_mib + self.balloon_mib
    }
}

impl HistorySample {
    pub fn of(snapshot: &Snapshot, state: FreeState) -> HistorySample {
        HistorySample {
            at_s: snapshot.at_s,
            state,
            budget_mib: snapshot.host.budget_mib,
            used_mib: snapshot.host.used_mib,
            ksm_saved_mib: snapshot.host.ksm_saved_mib,
            swap_used_mib: snapshot.host.swap_used_mib,
            vms: snapshot
                .vms
                .iter()
                .map(|vm| VmSample {
                    name: vm.name.clone(),
                    consumed_mib: vm.host_rss_mib,
                    layers: Layers::of(vm),
                    throughput: vm.throughput,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::vm;
    use proptest::prelude::*;

    #[test]
    fn a_ballooned_vm_with_shared_and_swapped_pages() {
        let mut v = vm("a", 600, 200);
        v.shared_mib = 50;
        v.host_swapped_mib = 100;
        let l = Layers::of(&v);
        assert_eq!(
            l,
            Layers {
                active_mib: 200,
                idle_mib: 250,
                shared_mib: 50,
                swapped_mib: 100,
                balloon_mib: 424
            }
        );
    }

    proptest! {
        #[test]
        fn layers_always_add_up_to_the_configured_memory(
            allocation in 64u64..1024, active in 0u64..2048, shared in 0u64..2048, swapped in 0u64..2048
        ) {
            let mut v = vm("a", allocation, active);
            v.shared_mib = shared;
            v.host_swapped_mib = swapped;
            prop_assert_eq!(Layers::of(&v).total_mib(), 1024);
        }
    }
}
