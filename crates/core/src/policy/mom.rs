//! `mom`: oVirt's Memory Overcommitment Manager with its published balloon rules. Every 10 s:
//! under host pressure (less than 20% free) it shrinks guests that have more than 20% of their
//! memory free, by 0.25% of their size per step, 5% when critical (less than 5% free); without
//! pressure it grows guests that have less than 20% free by 5%. KSM runs under pressure.

use super::{admit_all, ceiling_mib, due, floor_mib, Policy, PolicyName};
use crate::plan::{Action, Plan};
use crate::snapshot::Snapshot;

const PERIOD_S: f64 = 10.0;
const PRESSURE_FREE: f64 = 0.20;
const CRITICAL_FREE: f64 = 0.05;
const GUEST_FREE: f64 = 0.20;
const MIN_CHANGE: f64 = 0.0025;
const MAX_CHANGE: f64 = 0.05;

#[derive(Default)]
pub struct Mom {
    last_at: Option<f64>,
}

impl Policy for Mom {
    fn name(&self) -> PolicyName {
        PolicyName::Mom
    }

    fn decide(&mut self, s: &Snapshot) -> Plan {
        let mut plan = Plan::default();
        if !due(&mut self.last_at, s.at_s, PERIOD_S) {
            return plan;
        }
        let free = s.host.free_pct() / 100.0;
        let pressure = free < PRESSURE_FREE;
        let change = if free < CRITICAL_FREE {
            MAX_CHANGE
        } else {
            MIN_CHANGE
        };
        plan.push(
            Action::Ksm {
                run: pressure,
                pages_to_scan: 1000,
                sleep_ms: 50,
            },
            "mom: KSM runs under host pressure",
        );
        for vm in &s.vms {
            let Some(available) = vm.guest_available_mib else {
                continue;
            };
            let free_share = available as f64 / vm.allocation_mib.max(1) as f64;
            let current = vm.target_mib as f64;
            let target = if pressure && free_share > GUEST_FREE {
                // Shrink, but leave the guest 20% free.
                let keep = (vm.allocation_mib - available) as f64 / (1.0 - GUEST_FREE);
                (current * (1.0 - change)).max(keep) as u64
            } else if !pressure && free_share < GUEST_FREE {
                (current * (1.0 + MAX_CHANGE)) as u64
            } else {
                continue;
            };
            let target = target.clamp(floor_mib(vm), ceiling_mib(vm));
            if target != vm.target_mib {
                plan.push(
                    Action::Allocate {
                        vm: vm.name.clone(),
                        target_mib: target,
                    },
                    format!(
                        "mom: host {:.0}% free, {} {:.0}% free: balloon to {target} MiB",
                        free * 100.0,
                        vm.name,
                        free_share * 100.0
                    ),
                );
            }
        }
        admit_all(&mut plan, s, self.name());
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{snapshot, vm};

    #[test]
    fn shrinks_slowly_under_pressure_and_fast_when_critical() {
        let pressure = snapshot(0.0, 1536, 1300, vec![vm("a", 1024, 100)]);
        assert_eq!(
            Mom::default().decide(&pressure).allocation_for("a"),
            Some(1021)
        );
        let critical = snapshot(0.0, 1536, 1500, vec![vm("a", 1024, 100)]);
        assert_eq!(
            Mom::default().decide(&critical).allocation_for("a"),
            Some(972)
        );
    }

    #[test]
    fn grows_a_short_guest_without_pressure() {
        let mut a = vm("a", 1024, 1000);
        a.memory_mib = 2048;
        a.max_mib = 2048;
        a.limit_mib = 2048;
        let plan = Mom::default().decide(&snapshot(0.0, 4096, 1200, vec![a]));
        assert_eq!(plan.allocation_for("a"), Some(1075));
    }
}
