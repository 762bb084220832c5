//! Who is entitled to how much memory, after Waldspurger (OSDI 2002): shares decide contended
//! memory, a reservation is always kept, a limit never exceeded, and idle memory is taxed.
//!
//! A VM's claim costs it one unit per active MiB and `1 / (1 − tax)` per idle MiB, so with the
//! default 75% tax an idle MiB costs four active ones. Memory goes where shares per cost are
//! highest: the allocation equalises `shares / cost` across VMs not held at a bound, which is
//! min-funding revocation solved in one pass (bisection on the common ratio).

use serde::{Deserialize, Serialize};

pub const DEFAULT_IDLE_TAX: f64 = 0.75;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub shares: u32,
    pub active_mib: u64,
    /// Never allocate less: the reservation, or the floor that keeps the guest alive.
    pub min_mib: u64,
    /// Never allocate more: the limit, or the most the VM can hold.
    pub max_mib: u64,
}

impl Claim {
    /// The memory this claim holds when its cost reaches `cost` units.
    fn size_at(&self, cost: f64, idle_tax: f64) -> f64 {
        let active = self.active_mib as f64;
        let size = if cost <= active {
            cost
        } else {
            active + (cost - active) * (1.0 - idle_tax)
        };
        size.clamp(self.min_mib as f64, self.max_mib.max(self.min_mib) as f64)
    }

    /// The cost at which this claim reaches its maximum.
    fn cost_of_max(&self, idle_tax: f64) -> f64 {
        let active = self.active_mib as f64;
        let max = self.max_mib as f64;
        if max <= active {
            max
        } else {
            active + (max - active) / (1.0 - idle_tax)
        }
    }
}

/// Splits `available_mib` among the claims; the result is in the claims' order.
/// If even the minimums do not fit, every VM gets its minimum: reservations were admitted.
pub fn allocate(claims: &[Claim], available_mib: u64, idle_tax: f64) -> Vec<u64> {
    let idle_tax = idle_tax.clamp(0.0, 0.99);
    let available = available_mib as f64;
    let total_at = |ratio: f64| -> f64 {
        claims
            .iter()
            .map(|c| c.size_at(ratio * c.shares as f64, idle_tax))
            .sum()
    };
    let ratio_at_max = claims
        .iter()
        .map(|c| c.cost_of_max(idle_tax) / c.shares.max(1) as f64)
        .fold(0.0, f64::max);
    let ratio = if total_at(ratio_at_max) <= available {
        ratio_at_max
    } else {
        let (mut lo, mut hi) = (0.0, ratio_at_max);
        for _ in 0..64 {
            let mid = (lo + hi) / 2.0;
            if total_at(mid) <= available {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    claims
        .iter()
        .map(|c| c.size_at(ratio * c.shares as f64, idle_tax).floor() as u64)
        .collect()
}

/// Where two or more VMs wait on swap (`waiting`) and shares leave each short of its working
/// set (lacking more than an eighth of it), every one of them waits at each access beyond what
/// it holds, and runs at the speed of that swap, not in proportion to what it has. As Denning's
/// working-set principle has it, memory then goes to whole working sets: as many of the short
/// VMs as their entitlements together cover get all they touch, in order of shares, then those
/// that had theirs at the last round (`kept`: they wait no more, and stay first, so that memory
/// does not swing between VMs), then the smallest. A VM that kept thrashing with most of what
/// it could use (`beyond_reach`) comes after the others of its shares: no memory ends its wait,
/// and what it holds would end another's. The others keep their minimum, and the first of them
/// what is left. Every other VM keeps its entitlement. Returns, in the claims' order, the
/// entitlements (which sum to `entitled`'s) and whether each VM got its whole working set.
pub fn concentrate(
    claims: &[Claim],
    entitled: &[u64],
    kept: &[bool],
    waiting: &[bool],
    beyond_reach: &[bool],
) -> (Vec<u64>, Vec<bool>) {
    let whole = |c: &Claim| c.active_mib.min(c.max_mib).max(c.min_mib);
    let mut short: Vec<usize> = (0..claims.len())
        .filter(|&i| {
            (waiting[i] || kept[i]) && entitled[i] + whole(&claims[i]) / 8 < whole(&claims[i])
        })
        .collect();
    let mut given_whole = vec![false; claims.len()];
    if short.len() < 2 {
        return (entitled.to_vec(), given_whole);
    }
    short.sort_by_key(|&i| {
        (
            std::cmp::Reverse(claims[i].shares),
            beyond_reach[i],
            !kept[i],
            whole(&claims[i]),
            i,
        )
    });
    let mut pool: u64 = short.iter().map(|&i| entitled[i]).sum();
    let mut got = entitled.to_vec();
    for &i in &short {
        got[i] = claims[i].min_mib.min(entitled[i]);
        pool -= got[i];
    }
    for &i in &short {
        let lacks = whole(&claims[i]) - got[i];
        if lacks <= pool {
            got[i] += lacks;
            pool -= lacks;
            given_whole[i] = true;
        }
    }
    if let Some(&first) = short.iter().find(|&&i| !given_whole[i]) {
        got[first] += pool;
    }
    (got, given_whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(shares: u32, active: u64, min: u64, max: u64) -> Claim {
        Claim {
            shares,
            active_mib: active,
            min_mib: min,
            max_mib: max,
        }
    }

    #[test]
    fn plenty_gives_everyone_their_maximum() {
        let got = allocate(
            &[claim(1000, 100, 64, 1024), claim(1000, 900, 64, 1024)],
            4096,
            0.75,
        );
        assert_eq!(got, vec![1024, 1024]);
    }

    #[test]
    fn equal_shares_and_activity_split_evenly() {
        let got = allocate(
            &[claim(1000, 1024, 0, 1024), claim(1000, 1024, 0, 1024)],
            1000,
            0.75,
        );
        assert_eq!(got, vec![500, 500]);
    }

    #[test]
    fn shares_split_contended_memory_in_proportion() {
        let got = allocate(
            &[claim(2000, 2048, 0, 2048), claim(1000, 2048, 0, 2048)],
            1500,
            0.0,
        );
        assert!((got[0] as i64 - 1000).abs() <= 1, "{got:?}");
        assert!((got[1] as i64 - 500).abs() <= 1, "{got:?}");
    }

    #[test]
    fn idle_memory_is_reclaimed_before_active() {
        // Same shares and size; one VM touches 800 MiB, the other 100 MiB.
        let got = allocate(
            &[claim(1000, 800, 64, 1024), claim(1000, 100, 64, 1024)],
            1200,
            0.75,
        );
        assert!(got[0] >= 800, "the busy VM keeps its working set: {got:?}");
        assert!(
            got[1] < 400,
            "the idle VM gives up its idle memory: {got:?}"
        );
        let untaxed = allocate(
            &[claim(1000, 800, 64, 1024), claim(1000, 100, 64, 1024)],
            1200,
            0.0,
        );
        assert_eq!(
            untaxed,
            vec![600, 600],
            "without the tax, shares alone split evenly"
        );
    }

    #[test]
    fn minimums_hold_even_when_they_do_not_fit() {
        let got = allocate(
            &[claim(1000, 500, 400, 1024), claim(1000, 500, 400, 1024)],
            600,
            0.75,
        );
        assert_eq!(got, vec![400, 400]);
    }

    #[test]
    fn short_vms_get_whole_working_sets_in_order_of_shares_then_of_the_last_round() {
        // Two VMs touch 700 MiB each on 1 GiB: shares would give each 500, and both would wait
        // on swap.
        let peaks = [claim(1000, 700, 128, 1024), claim(1000, 700, 128, 1024)];
        let split = allocate(&peaks, 1000, 0.75);
        assert_eq!(split, vec![500, 500]);
        let both = [true, true];
        assert_eq!(
            concentrate(&peaks, &split, &[false, false], &both, &[false; 2]),
            (vec![700, 300], vec![true, false])
        );
        // The one that had its working set keeps it, and waits no more.
        assert_eq!(
            concentrate(&peaks, &split, &[false, true], &[true, false], &[false; 2]).0,
            vec![300, 700]
        );
        // More shares go first, whatever the last round gave.
        let mut favoured = peaks;
        favoured[1].shares = 2000;
        assert_eq!(
            concentrate(&favoured, &split, &[true, false], &both, &[false; 2]).0,
            vec![300, 700]
        );
    }

    #[test]
    fn one_short_vm_a_small_lack_or_a_vm_that_waits_on_nothing_changes_nothing() {
        let both = [true, true];
        let idle_and_busy = [claim(1000, 100, 64, 1024), claim(1000, 900, 64, 1024)];
        assert_eq!(
            concentrate(
                &idle_and_busy,
                &[300, 700],
                &[false, false],
                &both,
                &[false; 2]
            )
            .0,
            vec![300, 700]
        );
        let nearly = [claim(1000, 520, 64, 1024), claim(1000, 520, 64, 1024)];
        assert_eq!(
            concentrate(&nearly, &[500, 500], &[false, false], &both, &[false; 2]).0,
            vec![500, 500]
        );
        let peaks = [claim(1000, 700, 128, 1024), claim(1000, 700, 128, 1024)];
        assert_eq!(
            concentrate(
                &peaks,
                &[500, 500],
                &[false, false],
                &[true, false],
                &[false; 2]
            )
            .0,
            vec![500, 500]
        );
    }

    #[test]
    fn as_many_whole_working_sets_as_fit_and_the_rest_to_the_next() {
        // Five VMs of 250 MiB working sets on 800 MiB: two fit whole, the others keep their
        // minimum, and the first of them the rest.
        let small = [claim(1000, 250, 60, 256); 5];
        let split = allocate(&small, 800, 0.75);
        assert_eq!(split, vec![160; 5]);
        assert_eq!(
            concentrate(&small, &split, &[false; 5], &[true; 5], &[false; 5]),
            (
                vec![250, 250, 180, 60, 60],
                vec![true, true, false, false, false]
            )
        );
    }

    #[test]
    fn the_first_short_vm_may_get_more_than_its_shares_and_still_lack_its_whole_set() {
        let claims = [
            claim(1000, 100, 0, 4096),
            claim(1000, 1000, 0, 4096),
            claim(1000, 2000, 0, 4096),
        ];
        assert_eq!(
            concentrate(
                &claims,
                &[80, 800, 100],
                &[false; 3],
                &[true; 3],
                &[false; 3]
            ),
            (vec![100, 880, 0], vec![true, false, false])
        );
    }

    #[test]
    fn a_vm_that_waits_with_all_it_may_hold_comes_after_the_others() {
        // Three VMs short of 250 MiB working sets on room for two; the first had its set at the
        // last round. Then it waits with all it may hold, and goes last.
        let small = [claim(1000, 250, 60, 256); 3];
        let split = [190; 3];
        let kept = [true, false, false];
        assert_eq!(
            concentrate(&small, &split, &kept, &[true; 3], &[false; 3]),
            (vec![250, 250, 70], vec![true, true, false])
        );
        assert_eq!(
            concentrate(&small, &split, &kept, &[true; 3], &[true, false, false]),
            (vec![70, 250, 250], vec![false, true, true])
        );
    }

    proptest! {
        #[test]
        fn bounds_hold_and_nothing_is_overgiven(
            vms in prop::collection::vec((1u32..5000, 0u64..2048, 0u64..512, 0u64..2048), 1..8),
            available in 0u64..8192,
            tax in 0.0f64..0.95,
        ) {
            let claims: Vec<Claim> = vms
                .iter()
                .map(|&(s, a, min, extra)| claim(s, a, min, min + extra))
                .collect();
            let got = allocate(&claims, available, tax);
            for (c, g) in claims.iter().zip(&got) {
                prop_assert!(*g >= c.min_mib && *g <= c.max_mib, "{c:?} got {g}");
            }
            let total: u64 = got.iter().sum();
            let minimums: u64 = claims.iter().map(|c| c.min_mib).sum();
            prop_assert!(total <= available.max(minimums), "gave {total} of {available}");
        }

        #[test]
        fn concentrating_keeps_bounds_and_totals(
            vms in prop::collection::vec(
                (1u32..5000, 0u64..2048, 0u64..512, 0u64..2048, any::<[bool; 3]>()),
                1..8,
            ),
            available in 0u64..8192,
        ) {
            let claims: Vec<Claim> = vms
                .iter()
                .map(|&(s, a, min, extra, _)| claim(s, a, min, min + extra))
                .collect();
            let flag = |k: usize| vms.iter().map(|v| v.4[k]).collect::<Vec<bool>>();
            let entitled = allocate(&claims, available, 0.75);
            let (got, _) = concentrate(&claims, &entitled, &flag(0), &flag(1), &flag(2));
            for (c, g) in claims.iter().zip(&got) {
                prop_assert!(*g >= c.min_mib && *g <= c.max_mib, "{c:?} got {g}");
            }
            prop_assert_eq!(got.iter().sum::<u64>(), entitled.iter().sum::<u64>());
        }

        #[test]
        fn more_shares_never_get_less(
            active in 0u64..2048, available in 256u64..4096, low in 1u32..1000, extra in 1u32..1000,
        ) {
            let claims = [claim(low + extra, active, 64, 2048), claim(low, active, 64, 2048)];
            let got = allocate(&claims, available, 0.75);
            prop_assert!(got[0] + 1 >= got[1], "{got:?}");
        }
    }
}
