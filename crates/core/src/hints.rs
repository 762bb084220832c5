//! Root-cause hints: what an operator looking only at the guest cannot see, found by joining
//! guest and host signals of two consecutive snapshots. Pure; the daemon logs them as events.

use crate::snapshot::{Snapshot, VmObservation};
use std::collections::{BTreeMap, BTreeSet};

/// Changes smaller than this (MiB per round) are noise, not a cause.
const NOTICEABLE_MIB: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The guest pages to its own disk while its balloon holds memory back.
    BalloonTooLarge,
    /// The host is swapping the VM's memory out: the guest sees nothing, yet runs slowly.
    HostSwap,
    /// The guest writes to pages KSM merged: each write costs the host a page again.
    CopyOnWriteBreaks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub vm: String,
    pub cause: Cause,
    pub reason: String,
}

/// A cause told about a VM is not told again about it for this long (s): a guest that keeps
/// breaking shared pages would otherwise fill the event log.
const RETELL_AFTER_S: f64 = 60.0;

/// Which causes hold now, so that each is told when it starts, not every round, and when
/// each was last told.
#[derive(Debug, Default)]
pub struct Hints {
    holding: BTreeSet<(String, Cause)>,
    told_at: BTreeMap<(String, Cause), f64>,
}

impl Hints {
    pub fn update(&mut self, before: &Snapshot, now: &Snapshot) -> Vec<Hint> {
        let mut found = Vec::new();
        let elapsed_s = (now.at_s - before.at_s).max(0.0);
        for vm in &now.vms {
            let earlier = before.vms.iter().find(|v| v.name == vm.name);
            found.extend(causes(vm, earlier, elapsed_s));
        }
        let holding: BTreeSet<(String, Cause)> =
            found.iter().map(|h| (h.vm.clone(), h.cause)).collect();
        found.retain(|h| {
            let key = (h.vm.clone(), h.cause);
            let recently = self
                .told_at
                .get(&key)
                .is_some_and(|&t| now.at_s - t < RETELL_AFTER_S);
            !self.holding.contains(&key) && !recently
        });
        for h in &found {
            self.told_at.insert((h.vm.clone(), h.cause), now.at_s);
        }
        self.holding = holding;
        found
    }
}

fn causes(vm: &VmObservation, before: Option<&VmObservation>, elapsed_s: f64) -> Vec<Hint> {
    let mut hints = Vec::new();
    let mut hint = |cause, reason| {
        hints.push(Hint {
            vm: vm.name.clone(),
            cause,
            reason,
        })
    };
    let ballooned = vm.memory_mib.saturating_sub(vm.allocation_mib);
    if vm.is_hungry() && ballooned >= NOTICEABLE_MIB {
        hint(
            Cause::BalloonTooLarge,
            format!(
                "{} pages to its own swap disk (in {:.1}, out {:.1} MiB/s) while its balloon holds {ballooned} MiB: \
                 the guest is slow because the balloon took memory it uses (working set {} MiB, it has {} MiB)",
                vm.name,
                vm.guest_swap_in_rate,
                vm.guest_swap_out_rate,
                vm.active_mib(),
                vm.allocation_mib
            ),
        );
    }
    let Some(before) = before else { return hints };
    let swapped_more = vm.host_swapped_mib.saturating_sub(before.host_swapped_mib);
    if swapped_more >= NOTICEABLE_MIB {
        hint(
            Cause::HostSwap,
            format!(
                "{} is slowed by host swap: the host swapped out {} MiB of its memory, to zswap or to disk (+{swapped_more} MiB in {elapsed_s:.0} s); \
                 its guest cannot see this and reports the memory as its own{}",
                vm.name,
                vm.host_swapped_mib,
                vm.cgroup_limit_mib
                    .map(|l| format!(" (cgroup limit {l} MiB)"))
                    .unwrap_or_default()
            ),
        );
    }
    // A balloon that takes merged pages also lowers the count; only writes break sharing
    // while the guest keeps its memory.
    let unshared = before.shared_mib.saturating_sub(vm.shared_mib);
    let ballooned_meanwhile = before.allocation_mib > vm.allocation_mib;
    if unshared >= NOTICEABLE_MIB && !ballooned_meanwhile {
        hint(
            Cause::CopyOnWriteBreaks,
            format!(
                "{}'s guest wrote to {unshared} MiB of pages KSM had merged (shared {} -> {} MiB in {elapsed_s:.0} s): \
                 each copy-on-write break costs the host a page again",
                vm.name, before.shared_mib, vm.shared_mib
            ),
        );
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{self, vm};

    fn snapshot(at_s: f64, vms: Vec<VmObservation>) -> Snapshot {
        fixtures::snapshot(at_s, 1536, 1000, vms)
    }

    #[test]
    fn a_swapping_guest_with_a_large_balloon_is_told_once() {
        let mut paging = vm("vm1", 1024, 300);
        paging.allocation_mib = 400;
        paging.guest_swap_out_rate = 5.0;
        let before = snapshot(0.0, vec![paging.clone()]);
        let now = snapshot(1.0, vec![paging.clone()]);
        let mut hints = Hints::default();
        let first = hints.update(&before, &now);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].cause, Cause::BalloonTooLarge);
        assert!(
            first[0].reason.contains("balloon holds 624 MiB"),
            "{first:?}"
        );
        assert!(hints.update(&now, &now).is_empty(), "told again");
        let mut calm = paging.clone();
        calm.guest_swap_out_rate = 0.0;
        let calm = snapshot(2.0, vec![calm]);
        assert!(hints.update(&now, &calm).is_empty());
        let soon = snapshot(3.0, vec![paging.clone()]);
        assert!(
            hints.update(&calm, &soon).is_empty(),
            "told again within a minute"
        );
        let calm_later = snapshot(70.0, calm.vms.clone());
        assert!(hints.update(&soon, &calm_later).is_empty());
        let later = snapshot(71.0, vec![paging]);
        assert_eq!(
            hints.update(&calm_later, &later).len(),
            1,
            "a new episode is told"
        );
    }

    #[test]
    fn a_swapping_guest_without_a_balloon_is_not_the_balloons_fault() {
        let mut paging = vm("vm1", 1024, 1000);
        paging.guest_swap_out_rate = 5.0;
        let s = snapshot(0.0, vec![paging]);
        assert!(Hints::default().update(&s, &s).is_empty());
    }

    #[test]
    fn host_swap_growth_and_cow_breaks_are_found_between_snapshots() {
        let mut before = vm("vm2", 1024, 500);
        before.shared_mib = 200;
        let mut now = before.clone();
        now.host_swapped_mib = 64;
        now.cgroup_limit_mib = Some(400);
        now.shared_mib = 150;
        let hints = Hints::default().update(
            &snapshot(10.0, vec![before.clone()]),
            &snapshot(12.0, vec![now.clone()]),
        );
        let causes: Vec<Cause> = hints.iter().map(|h| h.cause).collect();
        assert_eq!(causes, [Cause::HostSwap, Cause::CopyOnWriteBreaks]);
        assert!(hints[0].reason.contains("64 MiB"), "{hints:?}");
        assert!(hints[0].reason.contains("cgroup limit 400 MiB"));
        assert!(hints[1].reason.contains("200 -> 150 MiB"));
        // Merged pages the balloon took are not copy-on-write breaks.
        let mut ballooned = now.clone();
        ballooned.host_swapped_mib = 0;
        ballooned.allocation_mib = 300;
        assert!(Hints::default()
            .update(
                &snapshot(0.0, vec![before.clone()]),
                &snapshot(1.0, vec![ballooned])
            )
            .is_empty());
        // Small moves are noise.
        now.host_swapped_mib = 4;
        now.shared_mib = 195;
        assert!(Hints::default()
            .update(&snapshot(0.0, vec![before]), &snapshot(1.0, vec![now]))
            .is_empty());
    }
}
