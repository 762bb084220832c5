//! `proxmox`: Proxmox VE's auto-ballooning as its documentation describes it. Every 10 s it
//! aims at 80% of host memory used, moving each VM's balloon by at most 100 MiB per step
//! between its minimum and its maximum, the amount split in proportion to shares. KSM is run by
//! ksmtuned, which starts it when less than 20% of memory is free.

use super::{admit_all, ceiling_mib, due, floor_mib, Policy, PolicyName};
use crate::plan::{Action, Plan};
use crate::snapshot::Snapshot;

const PERIOD_S: f64 = 10.0;
const GOAL_USED: f64 = 0.80;
const MAX_STEP_MIB: u64 = 100;

#[derive(Default)]
pub struct Proxmox {
    last_at: Option<f64>,
}

impl Policy for Proxmox {
    fn name(&self) -> PolicyName {
        PolicyName::Proxmox
    }

    fn decide(&mut self, s: &Snapshot) -> Plan {
        let mut plan = Plan::default();
        if !due(&mut self.last_at, s.at_s, PERIOD_S) {
            return plan;
        }
        let host = &s.host;
        plan.push(
            Action::Ksm {
                run: host.free_pct() < 20.0,
                pages_to_scan: 1250,
                sleep_ms: 100,
            },
            "proxmox: ksmtuned runs KSM below 20% free",
        );
        let goal = (host.budget_mib as f64 * GOAL_USED) as i64;
        let diff = goal - host.used_mib as i64;
        let grow = diff > 0;
        let movable: Vec<_> = s
            .vms
            .iter()
            .filter(|v| {
                if grow {
                    v.target_mib < ceiling_mib(v)
                } else {
                    v.target_mib > floor_mib(v)
                }
            })
            .collect();
        let total_shares: u64 = movable.iter().map(|v| v.shares as u64).sum();
        for vm in movable {
            let part = diff.unsigned_abs() * vm.shares as u64 / total_shares.max(1);
            let step = part.min(MAX_STEP_MIB);
            let target = if grow {
                (vm.target_mib + step).min(ceiling_mib(vm))
            } else {
                vm.target_mib.saturating_sub(step).max(floor_mib(vm))
            };
            if target != vm.target_mib {
                plan.push(
                    Action::Allocate {
                        vm: vm.name.clone(),
                        target_mib: target,
                    },
                    format!(
                        "proxmox: host at {} of {} MiB, goal 80%: {} {} to {target} MiB",
                        host.used_mib,
                        host.budget_mib,
                        if grow { "grow" } else { "shrink" },
                        vm.name
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
    fn steps_at_most_100_mib_every_10_seconds() {
        let mut p = Proxmox::default();
        let s = snapshot(
            0.0,
            1536,
            1500,
            vec![vm("a", 1024, 100), vm("b", 1024, 100)],
        );
        let plan = p.decide(&s);
        assert_eq!(plan.allocation_for("a"), Some(924));
        assert_eq!(plan.allocation_for("b"), Some(924));
        assert!(p
            .decide(&snapshot(5.0, 1536, 1500, vec![vm("a", 1024, 100)]))
            .decisions
            .is_empty());
        assert!(!p
            .decide(&snapshot(10.0, 1536, 1500, vec![vm("a", 1024, 100)]))
            .decisions
            .is_empty());
    }

    #[test]
    fn grows_back_below_the_goal_within_limits() {
        let mut a = vm("a", 600, 100);
        a.target_mib = 600;
        let plan = Proxmox::default().decide(&snapshot(0.0, 1536, 700, vec![a]));
        assert_eq!(plan.allocation_for("a"), Some(700));
    }
}
