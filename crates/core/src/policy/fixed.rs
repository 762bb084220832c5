//! `static`: what a host without overcommit management does. Every VM keeps its configured
//! size, nothing is reclaimed or shared; when the host runs out, its kernel swaps or kills.

use super::{admit_all, Policy, PolicyName};
use crate::plan::{Action, Plan};
use crate::snapshot::Snapshot;

pub struct Static;

impl Policy for Static {
    fn name(&self) -> PolicyName {
        PolicyName::Static
    }

    fn decide(&mut self, s: &Snapshot) -> Plan {
        let mut plan = Plan::default();
        plan.push(
            Action::Ksm {
                run: false,
                pages_to_scan: 100,
                sleep_ms: 20,
            },
            "static: no page sharing",
        );
        for vm in &s.vms {
            if vm.target_mib != vm.memory_mib {
                plan.push(
                    Action::Allocate {
                        vm: vm.name.clone(),
                        target_mib: vm.memory_mib,
                    },
                    format!(
                        "static: {} keeps its configured {} MiB",
                        vm.name, vm.memory_mib
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
    fn restores_configured_sizes_and_nothing_else() {
        let mut shrunk = vm("a", 512, 100);
        shrunk.target_mib = 512;
        let plan = Static.decide(&snapshot(0.0, 1536, 1530, vec![shrunk, vm("b", 1024, 100)]));
        assert_eq!(plan.allocation_for("a"), Some(1024));
        assert_eq!(plan.allocation_for("b"), None);
    }
}
