//! Ours, after VMware ESX: entitlement from shares, reservation and limit with an idle memory
//! tax; the host's free-memory state picks the rung of the ladder (share → balloon → compress
//! and swap → refuse new VMs).

use super::{ceiling_mib, floor_mib, Policy, Settings};
use crate::entitlement::{allocate, Claim};
use crate::ladder::{FreeState, Ladder};
use crate::plan::{Action, Admission, Plan};
use crate::sharing;
use crate::snapshot::{Snapshot, VmObservation};
use crate::working_set::HUNGRY_GROWTH_MIB;
use std::collections::BTreeMap;

/// Changes smaller than this (MiB) are not worth a balloon round trip.
const DEAD_BAND_MIB: u64 = 16;
/// After a guest OOM kill its balloon is left alone this long (s).
const OOM_BACKOFF_S: f64 = 120.0;

pub struct Esx {
    settings: Settings,
    ladder: Ladder,
    /// VMs whose cgroup limit we lowered to make the host swap them, with that limit.
    swapping: BTreeMap<String, u64>,
    /// Each VM's guest OOM kills when last seen, and until when its balloon is left alone.
    oom: BTreeMap<String, (u64, f64)>,
}

impl Esx {
    pub fn new(settings: Settings) -> Esx {
        Esx {
            ladder: Ladder::new(settings.thresholds),
            settings,
            swapping: BTreeMap::new(),
            oom: BTreeMap::new(),
        }
    }

    /// Notes guest OOM kills; true while the VM's balloon must not take more (its guest just
    /// killed a process for memory, so the balloon backs off however idle it looks).
    fn backs_off(&mut self, vm: &VmObservation, now_s: f64) -> bool {
        let (seen, until) = self
            .oom
            .entry(vm.name.clone())
            .or_insert((vm.guest_oom_kills, 0.0));
        if vm.guest_oom_kills > *seen {
            *seen = vm.guest_oom_kills;
            *until = now_s + OOM_BACKOFF_S;
        }
        now_s < *until
    }

    /// The working-set estimate is the demand: above the allocation while the guest pages.
    fn claim(vm: &VmObservation) -> Claim {
        Claim {
            shares: vm.shares,
            active_mib: vm.active_mib(),
            min_mib: floor_mib(vm),
            max_mib: ceiling_mib(vm),
        }
    }
}

impl Policy for Esx {
    fn name(&self) -> &'static str {
        "ours"
    }

    fn free_state(&self) -> Option<FreeState> {
        Some(self.ladder.state)
    }

    fn decide(&mut self, s: &Snapshot) -> Plan {
        let mut plan = Plan::default();
        let host = &s.host;
        let free_pct = host.free_pct();
        let state = self.ladder.update(free_pct);
        let why_state = format!(
            "host {state} ({}: {} of {} MiB)",
            self.ladder.why(free_pct),
            host.free_mib(),
            host.budget_mib
        );

        // A starting guest writes pages KSM has not seen yet; merged only at the high state's
        // slow rate, identical guests started one after another outran it and swapped (vdi).
        let starting = s.vms.iter().find(|v| v.is_settling());
        let ksm = sharing::ksm_for(match starting {
            Some(_) => state.max(FreeState::Soft),
            None => state,
        });
        if let Action::Ksm {
            pages_to_scan,
            sleep_ms,
            ..
        } = ksm
        {
            let rate = sharing::scan_rate_mib_s(pages_to_scan, sleep_ms);
            let why_rate = starting.map_or(String::new(), |v| {
                format!(" while {} starts and writes pages not merged yet", v.name)
            });
            plan.push(
                ksm,
                format!("{why_state}; KSM scans {rate} MiB/s{why_rate}"),
            );
        }
        let compress = state >= FreeState::Hard;
        plan.push(
            Action::Zswap { enabled: compress },
            if compress {
                format!("{why_state}; compress before swapping to disk")
            } else {
                format!("{why_state}; no host swapping, no compression")
            },
        );

        // Entitlements and grants keep the host reserve free, and at least the soft
        // threshold's margin: VMs at their entitlements never push the host into ballooning.
        let soft_margin = (host.budget_mib as f64 * self.settings.thresholds.soft / 100.0) as u64;
        let kept_free = host.reserve_mib.max(soft_margin);
        let overhead: u64 = s.vms.iter().map(VmObservation::overhead_mib).sum();
        // Pages KSM merged are held by several guests but cost the host once: what they save
        // can be entitled again, as ESX charges shared pages fractionally.
        let usable = (host.budget_mib + host.ksm_saved_mib).saturating_sub(kept_free + overhead);
        let claims: Vec<Claim> = s.vms.iter().map(Esx::claim).collect();
        let entitled = allocate(&claims, usable, self.settings.idle_tax);

        // Grants come out of memory free now (above what is kept free), minus grants in flight,
        // and only out of memory no VM's allocation can still claim: a guest filling its page
        // cache up to its allocation would otherwise take what was just granted to another
        // (measured: the seed scenario reached the budget and swapped in 3 of 7 runs).
        let in_flight: u64 = s
            .vms
            .iter()
            .map(|v| v.target_mib.saturating_sub(v.allocation_mib))
            .sum();
        let committed: u64 = s
            .vms
            .iter()
            .map(|v| v.allocation_mib.max(v.target_mib))
            .sum();
        let mut grantable = host
            .free_mib()
            .saturating_sub(kept_free + in_flight)
            .min(usable.saturating_sub(committed));
        let mut wanted = 0;
        for (vm, &entitled) in s.vms.iter().zip(&entitled) {
            let base = vm.allocation_mib.max(vm.target_mib);
            // An idle guest would only fill a grant with page cache, whose pages KSM has not
            // merged yet (measured: seed's idle VMs grown out of KSM's savings re-read their
            // caches into fresh pages and drove the host to low).
            let entitled = entitled.min(demand_mib(vm).max(base));
            if entitled < base + DEAD_BAND_MIB {
                continue;
            }
            wanted += entitled - base;
            let grant = (entitled - base).min(grantable);
            if grant < DEAD_BAND_MIB {
                continue;
            }
            grantable -= grant;
            plan.push(
                Action::Allocate {
                    vm: vm.name.clone(),
                    target_mib: base + grant,
                },
                format!(
                    "{} memory {} -> {} MiB: entitled to {entitled} MiB ({}active {} MiB, shares {}); {grant} MiB granted from free memory",
                    vm.name,
                    vm.allocation_mib,
                    base + grant,
                    if vm.is_hungry() { "pages to its disk, " } else { "" },
                    vm.active_mib(),
                    vm.shares,
                ),
            );
        }

        // The idle tax reclaims what a VM holds beyond its entitlement ahead of pressure, as
        // ESX's allocation targets do: a guest filling its page cache can outrun a balloon
        // that waits for the soft state (measured: budget full within 2 s of a cache job).
        let needy = wanted > grantable + DEAD_BAND_MIB;
        // A guest paging to its disk or one that just had an OOM kill gives nothing back.
        let backing_off: Vec<bool> = s.vms.iter().map(|vm| self.backs_off(vm, s.at_s)).collect();
        let mut over: Vec<(u64, &VmObservation, u64)> = s
            .vms
            .iter()
            .zip(&entitled)
            .zip(&backing_off)
            .filter(|((vm, _), &off)| !off && !vm.is_hungry())
            .map(|(pair, _)| pair)
            .filter(|(vm, &e)| vm.target_mib > e + DEAD_BAND_MIB)
            .map(|(vm, &e)| (vm.allocation_mib.saturating_sub(e), vm, e))
            .collect();
        over.sort_by_key(|o| std::cmp::Reverse(o.0));
        // Pacing protects running guests from reclaiming all at once; a guest that has not
        // reported yet is booting and has touched little, so its balloon goes at once.
        let already = s
            .vms
            .iter()
            .filter(|v| !v.is_booting() && v.allocation_mib > v.target_mib + DEAD_BAND_MIB)
            .count();
        let mut slots = self.settings.max_inflating.saturating_sub(already);
        let why_reclaim = if needy {
            format!("{why_state}; VMs need {wanted} MiB more than is free")
        } else {
            why_state.clone()
        };
        for (_, vm, e) in over {
            let target = if vm.is_booting() {
                e
            } else if slots > 0 {
                slots -= 1;
                // Free guest pages go at once; beyond them a step a round lets the guest drop
                // its cache or page out gradually.
                let step = self.settings.step_mib.max(vm.guest_free_mib());
                e.max(vm.target_mib.saturating_sub(step))
            } else {
                continue;
            }
            .min(ceiling_mib(vm));
            plan.push(
                Action::Allocate {
                    vm: vm.name.clone(),
                    target_mib: target,
                },
                format!(
                    "{} balloon {} -> {target} MiB: {why_reclaim}; entitled to {e} MiB ({}, idle memory taxed {:.0}%)",
                    vm.name,
                    vm.allocation_mib,
                    if vm.is_booting() {
                        "booting".to_string()
                    } else {
                        let active = vm.active_mib().min(vm.allocation_mib);
                        format!(
                            "{} idle {:.0}%",
                            vm.name,
                            100.0 * (1.0 - active as f64 / vm.allocation_mib.max(1) as f64)
                        )
                    },
                    self.settings.idle_tax * 100.0
                ),
            );
        }

        // Host swap only in hard, only the VMs whose balloon did not give back what they owe.
        for (vm, &e) in s.vms.iter().zip(&entitled) {
            let owes = vm.allocation_mib.saturating_sub(vm.target_mib.max(e));
            if state >= FreeState::Hard && owes > DEAD_BAND_MIB {
                let limit = vm.host_rss_mib.saturating_sub(owes).max(floor_mib(vm));
                if self.swapping.get(&vm.name) != Some(&limit) {
                    self.swapping.insert(vm.name.clone(), limit);
                    plan.push(
                        Action::CgroupLimit {
                            vm: vm.name.clone(),
                            limit_mib: Some(limit),
                        },
                        format!("{why_state}; {} still holds {owes} MiB beyond its entitlement that its balloon did not return: the host swaps it (cgroup limit {limit} MiB)", vm.name),
                    );
                }
            }
        }
        if state < FreeState::Hard {
            for (name, _) in std::mem::take(&mut self.swapping) {
                plan.push(
                    Action::CgroupLimit {
                        vm: name.clone(),
                        limit_mib: None,
                    },
                    format!("{why_state}; lift {name}'s host swap limit"),
                );
            }
        }

        self.admit(s, state, &why_state, &mut plan);
        plan
    }
}

/// What a VM can use: its active memory and room to grow, a quarter more (at least the growth
/// a paging guest asks for).
fn demand_mib(vm: &VmObservation) -> u64 {
    let active = vm.active_mib();
    active + (active / 4).max(HUNGRY_GROWTH_MIB)
}

impl Esx {
    /// Reservations must fit. On an overcommitted host VMs also start one at a time, each once
    /// the one before has booted and run a few seconds, and only while free memory is high: a
    /// booting guest touches memory before its balloon driver loads, and its workload may fill
    /// memory faster than KSM merges it (measured: eight guests started at once filled a 1 GiB
    /// budget in 15 s; each started once the previous one's balloon driver answered, six
    /// reached the low state). In low no VM starts: they wait until memory is freed.
    fn admit(&self, s: &Snapshot, state: FreeState, why_state: &str, plan: &mut Plan) {
        let host = &s.host;
        let mut reserved: u64 =
            host.reserve_mib + s.vms.iter().map(|v| v.reservation_mib).sum::<u64>();
        let mut configured: u64 = s.vms.iter().map(|v| v.memory_mib).sum();
        let mut settling = s
            .vms
            .iter()
            .find(|v| v.is_settling())
            .map(|v| v.name.clone());
        for p in &s.pending {
            let overcommitted = configured + p.memory_mib > host.budget_mib;
            let (verdict, reason) = if reserved + p.reservation_mib > host.budget_mib {
                (
                    Admission::Refuse,
                    format!(
                        "{}'s reservation of {} MiB does not fit: {} MiB already reserved (incl. host reserve {} MiB) of a {} MiB budget; lower its reservation, stop a VM or raise the budget",
                        p.name, p.reservation_mib, reserved, host.reserve_mib, host.budget_mib
                    ),
                )
            } else if state >= FreeState::Low {
                (
                    Admission::Wait,
                    format!(
                        "{} waits: {why_state}; no VM starts until memory is freed",
                        p.name
                    ),
                )
            } else if let (true, Some(other)) = (overcommitted, &settling) {
                (
                    Admission::Wait,
                    format!(
                        "{} waits for {other} to boot and settle: on an overcommitted host ({} of {} MiB configured) VMs start one at a time",
                        p.name,
                        configured + p.memory_mib,
                        host.budget_mib
                    ),
                )
            } else if overcommitted && state >= FreeState::Soft {
                (Admission::Wait, format!("{} waits: {why_state}", p.name))
            } else {
                reserved += p.reservation_mib;
                configured += p.memory_mib;
                settling = Some(p.name.clone());
                (
                    Admission::Start,
                    format!(
                        "{} fits: reservations with it {reserved} of {} MiB",
                        p.name, host.budget_mib
                    ),
                )
            };
            plan.push(
                Action::Admit {
                    vm: p.name.clone(),
                    verdict,
                },
                reason,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{snapshot, vm};
    use crate::snapshot::PendingVm;

    fn ours() -> Esx {
        Esx::new(Settings::default())
    }

    fn allocations(plan: &Plan) -> Vec<(String, u64)> {
        plan.decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::Allocate { vm, target_mib } => Some((vm.clone(), *target_mib)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plenty_of_free_memory_reclaims_nothing() {
        let s = snapshot(
            0.0,
            4096,
            1000,
            vec![vm("a", 1024, 100), vm("b", 1024, 900)],
        );
        let plan = ours().decide(&s);
        assert!(allocations(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn soft_state_balloons_the_idle_vm_not_the_busy_one() {
        // 1536 MiB budget, 40 MiB free (2.6%): soft.
        let s = snapshot(
            0.0,
            1536,
            1496,
            vec![vm("idle", 1024, 100), vm("busy", 700, 650)],
        );
        let plan = ours().decide(&s);
        let a = allocations(&plan);
        assert!(a.iter().any(|(n, t)| n == "idle" && *t < 1024), "{plan:?}");
        assert!(!a.iter().any(|(n, t)| n == "busy" && *t < 700), "{plan:?}");
        assert!(plan.decisions.iter().all(|d| !d.reason.is_empty()));
    }

    #[test]
    fn a_guest_that_pages_or_had_an_oom_kill_is_not_ballooned() {
        // Soft state; both VMs look idle against their entitlement.
        let paging = || {
            let mut v = vm("paging", 1024, 100);
            v.guest_swap_in_rate = 5.0;
            v
        };
        let s = |at_s, kills| {
            let mut oomed = vm("oomed", 1024, 100);
            oomed.guest_oom_kills = kills;
            snapshot(at_s, 2100, 2060, vec![paging(), oomed])
        };
        let mut p = ours();
        let taken = |plan: &Plan, name: &str| {
            allocations(plan)
                .iter()
                .any(|(n, t)| n == name && *t < 1024)
        };
        let plan = p.decide(&s(0.0, 0));
        assert!(!taken(&plan, "paging"), "{plan:?}");
        assert!(taken(&plan, "oomed"), "before any OOM kill: {plan:?}");
        let plan = p.decide(&s(1.0, 1));
        assert!(!taken(&plan, "oomed"), "right after an OOM kill: {plan:?}");
        let plan = p.decide(&s(100.0, 1));
        assert!(!taken(&plan, "oomed"), "within the back-off: {plan:?}");
        let plan = p.decide(&s(122.0, 1));
        assert!(taken(&plan, "oomed"), "after the back-off: {plan:?}");
    }

    #[test]
    fn a_hungry_vm_is_granted_memory_taken_from_an_idle_one() {
        let hungry = || {
            let mut v = vm("needy", 1024, 1000);
            v.memory_mib = 2048;
            v.max_mib = 2048;
            v.limit_mib = 2048;
            v.guest_swap_out_rate = 20.0;
            v.working_set_mib = Some(crate::working_set::sample_mib(1000, 1024, true));
            v
        };
        let s = snapshot(0.0, 2048, 2000, vec![vm("idle", 1024, 100), hungry()]);
        let mut p = ours();
        let plan = p.decide(&s);
        let a = allocations(&plan);
        assert!(a.iter().any(|(n, t)| n == "idle" && *t < 1024), "{plan:?}");
        // Once the idle VM gave its memory back, the needy one grows past its boot size.
        let mut idle = vm("idle", 768, 100);
        idle.target_mib = 768;
        let s = snapshot(1.0, 2048, 1100, vec![idle, hungry()]);
        let plan = p.decide(&s);
        assert!(
            allocations(&plan)
                .iter()
                .any(|(n, t)| n == "needy" && *t > 1024),
            "{plan:?}"
        );
    }

    #[test]
    fn grants_never_promise_memory_another_allocation_can_still_fill() {
        let hungry = || {
            let mut v = vm("needy", 700, 690);
            v.guest_swap_out_rate = 20.0;
            v.working_set_mib = Some(crate::working_set::sample_mib(690, 700, true));
            v
        };
        // The cache VM holds 400 MiB of its 700: 316 MiB are free now, but it may fill them.
        let s = snapshot(0.0, 1536, 1220, vec![vm("cache", 700, 400), hungry()]);
        let grown = |plan: &Plan| {
            allocations(plan)
                .into_iter()
                .find(|(n, _)| n == "needy")
                .map(|(_, t)| t)
        };
        let plan = ours().decide(&s);
        assert_eq!(grown(&plan), None, "{plan:?}");
        // Once its balloon took 200 MiB, what no allocation claims can be granted, no more.
        let s = snapshot(1.0, 1536, 1020, vec![vm("cache", 500, 400), hungry()]);
        let plan = ours().decide(&s);
        let usable = 1536 - 1536 * 4 / 100 - 2 * 60;
        let granted = grown(&plan).expect("a grant once memory is uncommitted");
        assert!(granted > 700 && granted <= usable - 500, "{plan:?}");
    }

    #[test]
    fn ksm_scans_harder_while_a_vm_starts() {
        let scan = |vms| {
            ours()
                .decide(&snapshot(0.0, 4096, 1000, vms))
                .decisions
                .into_iter()
                .find_map(|d| match d.action {
                    Action::Ksm { pages_to_scan, .. } => Some((pages_to_scan, d.reason)),
                    _ => None,
                })
                .unwrap()
        };
        let (calm, _) = scan(vec![vm("a", 512, 200)]);
        let mut starting = vm("b", 512, 200);
        starting.launched_s_ago = Some(8.0);
        let (busy, why) = scan(vec![vm("a", 512, 200), starting]);
        assert!(busy > calm, "{why}");
        assert!(why.contains("while b starts"), "{why}");
    }

    #[test]
    fn idle_vms_are_not_grown_beyond_what_they_use() {
        // Plenty free: the busy VM grows towards its demand, the idle one stays where it is.
        let s = snapshot(
            0.0,
            4096,
            1000,
            vec![vm("idle", 400, 40), vm("busy", 400, 380)],
        );
        let a = allocations(&ours().decide(&s));
        assert_eq!(a, vec![("busy".to_string(), 380 + 128)]);
    }

    #[test]
    fn memory_saved_by_sharing_is_entitled_again() {
        let vms = || {
            (0..4)
                .map(|i| vm(&format!("d{i}"), 256, 250))
                .collect::<Vec<_>>()
        };
        let entitled_total = |saved: u64| {
            let mut s = snapshot(0.0, 1024, 1000, vms());
            s.host.ksm_saved_mib = saved;
            let plan = ours().decide(&s);
            let cut: u64 = allocations(&plan).iter().map(|(_, t)| 256 - t).sum();
            4 * 256 - cut
        };
        assert!(entitled_total(600) > entitled_total(0));
    }

    #[test]
    fn never_below_reservation_or_above_limit() {
        let mut reserved = vm("r", 1024, 50);
        reserved.reservation_mib = 600;
        let mut limited = vm("l", 1024, 1000);
        limited.limit_mib = 512;
        limited.guest_swap_out_rate = 50.0;
        let s = snapshot(0.0, 1536, 1530, vec![reserved, limited, vm("x", 1024, 50)]);
        let plan = ours().decide(&s);
        for (n, t) in allocations(&plan) {
            match n.as_str() {
                "r" => assert!(t >= 600, "{plan:?}"),
                "l" => assert!(t <= 512, "{plan:?}"),
                _ => assert!(t >= crate::policy::GUEST_FLOOR_MIB),
            }
        }
    }

    #[test]
    fn no_more_than_max_inflating_balloons_move_at_once() {
        let vms = (0..6).map(|i| vm(&format!("v{i}"), 1024, 100)).collect();
        let s = snapshot(0.0, 4096, 4050, vms);
        let plan = ours().decide(&s);
        assert_eq!(allocations(&plan).len(), 2, "{plan:?}");
    }

    #[test]
    fn booting_guests_go_to_their_entitlement_at_once_outside_the_pacing() {
        let mut vms: Vec<_> = (0..6).map(|i| vm(&format!("v{i}"), 512, 100)).collect();
        for v in &mut vms[2..] {
            v.guest_resident_mib = None;
            v.guest_used_mib = None;
            v.working_set_mib = None;
        }
        let s = snapshot(0.0, 1024, 1000, vms);
        let plan = ours().decide(&s);
        let a = allocations(&plan);
        let booting: Vec<_> = a.iter().filter(|(n, _)| n.as_str() >= "v2").collect();
        assert_eq!(booting.len(), 4, "{plan:?}");
        assert!(booting.iter().all(|(_, t)| *t < 512 - 256), "{plan:?}");
        assert_eq!(a.len(), 6, "{plan:?}");
    }

    #[test]
    fn ballooning_in_soft_never_swaps() {
        let s = snapshot(
            0.0,
            1536,
            1490,
            vec![vm("a", 1024, 100), vm("b", 1024, 100)],
        );
        let plan = ours().decide(&s);
        assert!(plan.decisions.iter().all(|d| !matches!(
            d.action,
            Action::CgroupLimit {
                limit_mib: Some(_),
                ..
            } | Action::Zswap { enabled: true }
        )));
    }

    #[test]
    fn hard_state_swaps_only_the_vm_whose_balloon_did_not_deliver() {
        // a was asked to shrink (target 300) but still holds 1024; b is at its target.
        let mut stuck = vm("a", 1024, 100);
        stuck.target_mib = 300;
        stuck.host_rss_mib = 1100;
        let mut done = vm("b", 300, 250);
        done.target_mib = 300;
        let s = snapshot(0.0, 1536, 1520, vec![stuck, done]);
        let mut p = ours();
        let plan = p.decide(&s);
        let limits: Vec<_> = plan
            .decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::CgroupLimit { vm, limit_mib } => Some((vm.clone(), *limit_mib)),
                _ => None,
            })
            .collect();
        assert_eq!(limits.len(), 1, "{plan:?}");
        assert_eq!(limits[0].0, "a");
        assert!(limits[0].1.unwrap() < 1100);
        // Memory recovers: the limit is lifted at once.
        let s = snapshot(1.0, 1536, 1000, vec![vm("a", 400, 100), vm("b", 300, 250)]);
        let plan = p.decide(&s);
        assert!(plan.decisions.iter().any(|d| d.action
            == Action::CgroupLimit {
                vm: "a".into(),
                limit_mib: None
            }));
    }

    #[test]
    fn admission_refuses_what_does_not_fit_and_says_why() {
        let mut a = vm("a", 1024, 100);
        a.reservation_mib = 1024;
        let mut s = snapshot(0.0, 1536, 600, vec![a]);
        s.pending = vec![pending("small", 256, 256), pending("big", 256, 512)];
        let admits = admissions(&ours().decide(&s));
        assert_eq!(admits[0].0, "small");
        assert_eq!(admits[0].1, Admission::Start);
        assert_eq!(admits[1].1, Admission::Refuse);
        assert!(admits[1].2.contains("does not fit"), "{}", admits[1].2);
    }

    fn pending(name: &str, memory_mib: u64, reservation_mib: u64) -> PendingVm {
        PendingVm {
            name: name.into(),
            memory_mib,
            reservation_mib,
        }
    }

    fn admissions(plan: &Plan) -> Vec<(String, Admission, String)> {
        plan.decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::Admit { vm, verdict } => Some((vm.clone(), *verdict, d.reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn overcommitted_hosts_boot_one_vm_at_a_time() {
        let mut booting = vm("a", 1024, 0);
        booting.guest_resident_mib = None;
        booting.launched_s_ago = Some(4.0);
        let mut s = snapshot(0.0, 1536, 300, vec![booting.clone()]);
        s.pending = vec![pending("b", 1024, 0)];
        let admits = admissions(&ours().decide(&s));
        assert_eq!(admits[0].1, Admission::Wait);
        assert!(
            admits[0].2.contains("waits for a to boot and settle"),
            "{}",
            admits[0].2
        );
        // An attached VM that reports no balloon statistics is not starting: it holds no one.
        booting.launched_s_ago = None;
        let mut s = snapshot(0.0, 1536, 300, vec![booting]);
        s.pending = vec![pending("b", 1024, 0)];
        assert_eq!(admissions(&ours().decide(&s))[0].1, Admission::Start);

        // a's balloon driver reports, but its guest booted 3 s ago: its workload may still be
        // taking memory.
        let mut settling = vm("a", 1024, 200);
        settling.launched_s_ago = Some(12.0);
        settling.booted_s_ago = Some(3.0);
        let mut s = snapshot(0.0, 1536, 300, vec![settling.clone()]);
        s.pending = vec![pending("b", 1024, 0)];
        assert_eq!(admissions(&ours().decide(&s))[0].1, Admission::Wait);

        // Once a has run 10 s, b starts, and c, asking in the same round, waits for b.
        settling.booted_s_ago = Some(10.0);
        let mut s = snapshot(0.0, 1536, 300, vec![settling]);
        s.pending = vec![pending("b", 1024, 0), pending("c", 1024, 0)];
        let admits = admissions(&ours().decide(&s));
        assert_eq!(admits[0].1, Admission::Start);
        assert_eq!(admits[1].1, Admission::Wait);
        assert!(
            admits[1].2.contains("waits for b to boot and settle"),
            "{}",
            admits[1].2
        );
    }

    #[test]
    fn hosts_with_room_for_every_vm_start_them_together() {
        let mut booting = vm("a", 1024, 0);
        booting.guest_resident_mib = None;
        let mut s = snapshot(0.0, 4096, 300, vec![booting]);
        s.pending = vec![pending("b", 1024, 0), pending("c", 1024, 0)];
        let admits = admissions(&ours().decide(&s));
        assert!(admits.iter().all(|a| a.1 == Admission::Start), "{admits:?}");
    }

    #[test]
    fn overcommitted_hosts_start_no_vm_while_short_of_memory() {
        // 3% free: soft.
        let mut s = snapshot(0.0, 1000, 970, vec![vm("a", 1024, 900)]);
        s.pending = vec![pending("b", 512, 0)];
        let admits = admissions(&ours().decide(&s));
        assert_eq!(admits[0].1, Admission::Wait);
        assert!(
            admits[0].2.contains("b waits: host soft"),
            "{}",
            admits[0].2
        );
    }

    #[test]
    fn in_low_no_vm_starts_until_memory_is_freed() {
        let mut s = snapshot(0.0, 1536, 1535, vec![vm("a", 1024, 1000)]);
        s.pending = vec![pending("n", 256, 0)];
        let admits = admissions(&ours().decide(&s));
        assert_eq!(admits[0].1, Admission::Wait);
        assert!(
            admits[0].2.contains("until memory is freed"),
            "{}",
            admits[0].2
        );
    }
}
