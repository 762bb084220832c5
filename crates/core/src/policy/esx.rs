//! Ours, after VMware ESX: entitlement from shares, reservation and limit with an idle memory
//! tax; the host's free-memory state picks the rung of the ladder (share → balloon → compress
//! and swap → refuse new VMs), and measured costs move memory between the rungs.
//!
//! A round is a few named steps: `share` (KSM, paced by what it merges), `entitle`, `grant`
//! (free memory to VMs that want more), `reclaim` (balloons, only where a guest holds memory
//! above its entitlement and above what it uses), `offload` (the host compresses and swaps
//! anonymous memory a balloon could only take through the guest's own swap) and `admit`.

use super::{floor_mib, growth_ceiling_mib, Policy, PolicyName, Settings};
use crate::entitlement::{allocate, concentrate, Claim};
use crate::ladder::{FreeState, Ladder};
use crate::plan::{Action, Admission, Plan};
use crate::reservation::{self, GUEST_FLOOR};
use crate::sharing::KsmPacer;
use crate::size::Size;
use crate::snapshot::{HostObservation, PendingVm, Snapshot, VmObservation};
use crate::working_set::{HUNGRY_GROWTH_MIB, STALLED_FAULTS_PER_S};
use std::collections::{BTreeMap, BTreeSet};

/// Changes smaller than this (MiB) are not worth a balloon round trip.
const DEAD_BAND_MIB: u64 = 16;
/// After a guest OOM kill its balloon is left alone this long (s).
const OOM_BACKOFF_S: f64 = 120.0;
/// A balloon leaves a guest what it uses and an eighth of its boot size more (at least this):
/// below that the guest pages its anonymous memory to its own disk, which costs more than the
/// host compressing it (measured: idle VMs ballooned into their swap slowed the seed's needy VM
/// to 0.78 of unconstrained, the host's own LRU swapping them to 0.93; with 32 MiB of slack a
/// 1 GiB guest holding a 450 MiB heap still paged out at 20 MiB/s).
const GUEST_SLACK_MIB: u64 = 64;
/// Host offload lowers a VM's cap by at most this much a round, and not at all while tasks on
/// the host stall for memory (PSI some avg10, %), as Meta's TMO steers memory.high.
const OFFLOAD_STEP_MIB: u64 = 128;
const OFFLOAD_PSI_LIMIT: f64 = 10.0;
/// Ahead of need a balloon leaves a VM what its guest used at its peak within this long (s):
/// memory a VM used a minute ago it is likely to use again (measured: turns, a VM ballooned
/// between its turns waited 18 s for grants on its next, at 0.84 of unconstrained against
/// static's 0.95).
const RECENT_USE_S: f64 = 120.0;
/// Long enough for a VM given memory to read back what it had paged out (a guest reads its
/// swap back at 5 to 20 MiB/s under TCG).
const THRASH_PATIENCE_S: f64 = 30.0;

/// A balloon step ahead of need is a probe. A guest that reads from its disks, within
/// REREAD_WINDOW_S of the step, at least REREAD_MIB_S and twice what it read before, is reading
/// again the page cache the step took: it gets it back while the host has room, and keeps its
/// cache ahead of need for RECENT_USE_S (measured: seed, vm1 and vm2 re-reading 400 MiB of
/// cache were ballooned to 201 MiB at 60 to 32% free and ran at 0.13 to 0.19 of unconstrained).
/// A guest that streams its disk read as much before the step, so it is not taken for one.
/// (Measured with the rule: vm1 and vm2 at 0.13 to 0.67 of unconstrained, 0.47 to 0.67 where
/// they got their cache back.)
const REREAD_MIB_S: f64 = 1.0;
const REREAD_WINDOW_S: f64 = 30.0;

/// A VM that has waited this long (s) for a host short of memory (soft or hard, never low)
/// starts anyway: memory was asked of the others for its boot all that time, and what their
/// balloons cannot give the host swaps (measured: many-small, a host its running VMs held at
/// 2.5% free kept s9 and s10 waiting for minutes).
const WAIT_LIMIT_S: f64 = 60.0;

/// Guest memory a running guest's kernel touches all the time: a cap that leaves less has its
/// QEMU fault faster than the host swaps, and the cgroup's OOM killer ends it (measured: three
/// 384 MiB VMs on 384 MiB with a 128 MiB reserve, b capped to 39 MiB as it booted was killed).
const GUEST_HOT_MIB: u64 = 64;

/// A start that began short of the room the last one took runs on at most this share of a core
/// (%) until it has settled, so that it writes no faster than KSM merges what it writes
/// (measured: vdi, d8's QEMU held by hand to a quarter of a core booted in 80 s instead of 16,
/// and the host swapped 29 MiB as it filled instead of 103).
const PACE_PERCENT: u32 = 25;
/// The least share of a core (%) a paced start runs on, however short of room: a TCG guest
/// booted in 27 to 30 s on a quarter of a core, so on a tenth it still boots well within
/// PACE_LIMIT_S.
const PACE_MIN_PERCENT: u32 = 10;
/// A paced guest's workload takes its memory over this long after its boot (s): the first
/// seconds of its work, stretched by the pace.
const PACED_SETTLE_S: f64 = 40.0;
/// A paced VM is let go this long after its launch (s), booted or not.
const PACE_LIMIT_S: f64 = 180.0;

/// A guest whose use rose is taken to be growing for this long (s): its statistics arrive
/// every second or two, so a round between two reports sees no change (measured: seed, vm3
/// filling its memory was entitled to 1024 MiB, then 954 MiB a round later, then 972).
const GROWTH_HOLD_S: f64 = 3.0;

/// A balloon lowered this recently still returns memory: a guest drops its cache over seconds
/// (measured: seed, vm1 and vm2 returned 400 MiB each within 6 s of their targets).
const BALLOON_DELIVERY_S: f64 = 10.0;

/// How long the host has room before a VM squeezed while it was short claims its cache again:
/// balloons and caps moving bring it above its soft margin for a round or two while it is still
/// short (measured: seed, vm2's claim restored at 6.8% free, granted 25 MiB and ballooned 139
/// MiB a round later, then granted again).
const ROOM_AGAIN_S: f64 = 30.0;

pub struct Esx {
    settings: Settings,
    ladder: Ladder,
    ksm: KsmPacer,
    /// VMs whose cgroup limit we lowered to make the host offload them, with that limit.
    offloaded: BTreeMap<String, u64>,
    /// VMs that stalled at a cap, with the highest cap they stalled at: until they are quiet
    /// again, a cap stays above it.
    stalled_at: BTreeMap<String, u64>,
    /// Each VM's guest OOM kills when last seen, and until when its balloon is left alone.
    oom: BTreeMap<String, (u64, f64)>,
    /// What each VM's guest used at the last round, and its last rise: one that grows is left
    /// its free memory.
    used_before: BTreeMap<String, UseSeen>,
    /// Each VM's peak guest use or working set within the last RECENT_USE_S, and when seen.
    recent_peak: BTreeMap<String, (u64, f64)>,
    /// When each VM waiting to start first asked.
    waiting_since: BTreeMap<String, f64>,
    /// VMs a balloon step ahead of need took memory from within REREAD_WINDOW_S.
    taken_ahead: BTreeMap<String, TakenAhead>,
    /// VMs seen reading again what a step took.
    rereading: BTreeMap<String, Rereading>,
    /// When each VM's balloon was last lowered: its use rises for a few seconds after as the
    /// guest reclaims, which is the balloon's doing, not the guest filling its memory.
    lowered_at: BTreeMap<String, f64>,
    /// When each VM's balloon was last lowered from rest: lowering it again on the way does
    /// not make a balloon that returns nothing count as delivering.
    delivery_started: BTreeMap<String, f64>,
    /// VMs whose balloon took memory while the host was short, until it has had room for
    /// ROOM_AGAIN_S since the last of them.
    squeezed: BTreeSet<String>,
    /// Since when the host has been in its high state.
    high_since: Option<f64>,
    /// The VM started last on an overcommitted host: how much it took of the host as it
    /// settled, and how much of that KSM merged.
    last_start: Option<StartWatch>,
    /// Whether KSM merged the pages of the start before the last one; None before two starts.
    starts_merged: Option<bool>,
    /// The start that runs paced.
    paced: Option<Paced>,
    /// VMs given their whole working sets at the latest round, where shares left several
    /// short.
    given_whole_sets: BTreeSet<String>,
    /// Since when each VM has been reading back its swap with most of what it could use.
    thrashing_since: BTreeMap<String, f64>,
    /// When each VM was last seen beyond reach (`note_thrashing`).
    beyond_reach: BTreeMap<String, f64>,
}

/// A start short of room, held to part of a core.
#[derive(Clone)]
struct Paced {
    vm: String,
    percent: u32,
    why: String,
}

/// How much host memory a starting VM took, and how much of it KSM merged since it started.
struct StartWatch {
    vm: String,
    used_then: u64,
    saved_then: u64,
    growth_mib: u64,
    merged_mib: u64,
}

impl StartWatch {
    /// `starting`: the VM still starts (settles, or runs paced).
    fn update(&mut self, s: &Snapshot, starting: bool) {
        if starting {
            self.growth_mib = self
                .growth_mib
                .max(s.host.used_mib.saturating_sub(self.used_then));
        }
        self.merged_mib = self
            .merged_mib
            .max(s.host.ksm_saved_mib.saturating_sub(self.saved_then));
    }

    /// KSM merged at least a quarter of what the VM took as it started: starting guests write
    /// pages that others hold too (vdi's desktops: about 200 of 280 MiB), not unique ones.
    fn merged(&self) -> bool {
        self.growth_mib > 0 && 4 * self.merged_mib >= self.growth_mib
    }

    /// KSM merged at least half of what the VM took as it started: the next start's writes
    /// merge too, given time (vdi's desktops: 71 to 80%). Guests that share only their system
    /// pages merge less, and waiting for room only delays them (measured: idle-anon, KSM merged
    /// 140 of the 491 MiB vm2 took, its 450 MiB heap unique; vm3 waited for room until 79 s
    /// instead of starting at about 39 s, then ran on 20% of a core for 73 s).
    fn mostly_merged(&self) -> bool {
        self.growth_mib > 0 && 2 * self.merged_mib >= self.growth_mib
    }
}

/// A VM's guest use at the last round, and when and how fast it last rose.
struct UseSeen {
    used_mib: u64,
    at_s: f64,
    rose_at_s: f64,
    rise_mib_s: f64,
    /// How far its use last rose in one round beyond what its allocation rose (a balloon
    /// letting memory out reads as use rising); kept until the next rise.
    rise_mib: u64,
    allocation_mib: u64,
    cache_mib: u64,
}

/// How a VM's memory moves this round.
struct Rise {
    /// Its guest's use rose within GROWTH_HOLD_S.
    grows: bool,
    /// How fast its use last rose, while it grows (MiB/s).
    use_mib_s: f64,
    /// How fast its guest's page cache rose since the last round (MiB/s).
    cache_mib_s: f64,
}

/// A balloon step ahead of need, as its VM was before the first one of a series.
struct TakenAhead {
    /// What its guest held then and the slack a balloon leaves: the cache it may read again,
    /// not the free memory it had.
    held_mib: u64,
    at_s: f64,
    read_rate: f64,
}

/// A VM reading again the cache a step took.
struct Rereading {
    /// What it gets back while the host has room.
    back_to_mib: u64,
    /// What it read from its disks when that was seen (MiB/s).
    read_rate: f64,
    /// Until when its cache is kept ahead of need.
    until_s: f64,
}

/// What every step of one round works from.
struct Round<'a> {
    s: &'a Snapshot,
    state: FreeState,
    why_state: String,
    /// Free memory entitlements and grants leave alone: the reserve, at least the soft margin.
    kept_free: u64,
    /// Memory held back for the first VM waiting to start: what its guest takes as it boots.
    boot_room: u64,
    /// Each VM's entitlement, in the snapshot's order.
    entitled: Vec<u64>,
    /// What shares alone would entitle each VM to.
    by_shares: Vec<u64>,
    /// Each VM given its whole working set where several were short of theirs.
    given_whole: Vec<bool>,
    /// Their names, for the reasons; empty in the common round where shares decide alone.
    given_whole_names: String,
    /// The VMs beyond reach whose entitlements went to others' whole working sets: they are
    /// granted nothing, and their balloons give what they hold beyond their entitlements.
    passed_over: BTreeSet<String>,
    /// Each VM's guest uses more than at the last round: its balloon leaves it alone.
    growing: Vec<bool>,
    /// Each VM whose use rises faster than free memory lasts while balloons deliver (its
    /// balloon not moving, not squeezed, not booting), and why, for the first of them.
    outgrows: Vec<bool>,
    /// Those of them whose guest fills its page cache, not its use.
    outgrows_with_cache: Vec<bool>,
    outgrows_why: Option<String>,
    /// How far they together outgrow free memory (MiB): what the host will be short of
    /// before the balloons deliver.
    outgrows_by: u64,
    /// Each VM growing up to its allocation, unless its balloon was just lowered: it is
    /// entitled and granted all it may have.
    filling: Vec<bool>,
    /// Every VM's guest floor fits in host memory. Where they do not, a VM without a
    /// reservation is guaranteed no host memory, as in ESX: its balloon stops at the floor and
    /// the host offloads what it holds beyond its entitlement (measured: many-small, ten floors
    /// and ten QEMUs' overhead did not fit 1 GiB, every VM was entitled to the 128 MiB floor
    /// and the busy ones paged at 0.00 of unconstrained; entitled below it, the quiet VMs'
    /// memory went to zswap and the busy ones ran at 1.11, static 0.77 with 3 VMs lost). Where
    /// they fit, the floor is kept in RAM as before (seed: no host swap).
    floors_fit: bool,
}

impl Round<'_> {
    /// Why a VM is entitled to more or less than its shares give it, if it is: where several
    /// VMs are short of their working sets, whole working sets go first.
    fn whole_sets_note(&self, name: &str) -> String {
        if self.given_whole_names.is_empty() {
            return String::new();
        }
        let Some(i) = self.s.vms.iter().position(|v| v.name == name) else {
            return String::new();
        };
        let (entitled, by_shares) = (self.entitled[i], self.by_shares[i]);
        if self.given_whole[i] {
            format!(
                "; that is its whole working set, {} MiB beyond its shares: where several VMs wait on swap short of their working sets, whole working sets go first",
                entitled.saturating_sub(by_shares)
            )
        } else if entitled < by_shares {
            format!(
                "; {by_shares} MiB by its shares, less what goes first to the whole working sets of {}",
                self.given_whole_names
            )
        } else {
            String::new()
        }
    }
}

/// Where a VM's balloon may go this round, and what beyond it the host takes instead.
struct Reclaim {
    /// The lowest target the balloon goes to.
    floor: u64,
    /// Anonymous memory the VM owes beyond its entitlement, left to the host to offload.
    anonymous_owed: u64,
    /// The balloon goes to its floor this round, not a step a round, and why.
    at_once: Option<AtOnce>,
    /// The floor is below what the guest uses: the host's swap has no room for it.
    into_guest_swap: bool,
}

/// Why a balloon goes to its floor in one round.
#[derive(Clone, Copy, PartialEq)]
enum AtOnce {
    /// Its page cache, behind a VM with more shares that outgrows free memory. Steps two
    /// balloons at a time trail the rise (measured: seed, vm1 and vm2 stepped 256 MiB each as
    /// vm3 woke, then waited for those to deliver while vm3 wrote 27 MiB/s, and the host
    /// swapped 7 to 9 MiB with no cap).
    BehindRise,
    /// Its guest fills its page cache faster than free memory lasts.
    FillsCache,
}

impl Esx {
    pub fn new(settings: Settings) -> Esx {
        Esx {
            ladder: Ladder::new(settings.thresholds),
            settings,
            ksm: KsmPacer::default(),
            offloaded: BTreeMap::new(),
            stalled_at: BTreeMap::new(),
            oom: BTreeMap::new(),
            used_before: BTreeMap::new(),
            recent_peak: BTreeMap::new(),
            waiting_since: BTreeMap::new(),
            taken_ahead: BTreeMap::new(),
            rereading: BTreeMap::new(),
            lowered_at: BTreeMap::new(),
            delivery_started: BTreeMap::new(),
            squeezed: BTreeSet::new(),
            high_since: None,
            last_start: None,
            starts_merged: None,
            paced: None,
            given_whole_sets: BTreeSet::new(),
            thrashing_since: BTreeMap::new(),
            beyond_reach: BTreeMap::new(),
        }
    }

    /// Forgets what it noted of VMs that are gone: one started again under the same name is
    /// neither capped nor squeezed for what the one before did.
    fn forget_gone(&mut self, s: &Snapshot) {
        let present: BTreeSet<&str> = s.vms.iter().map(|v| v.name.as_str()).collect();
        let here = |name: &String| present.contains(name.as_str());
        // Every VM seen has a use noted: where none is gone, there is nothing to forget.
        if self.used_before.keys().all(here) {
            return;
        }
        self.offloaded.retain(|n, _| here(n));
        self.stalled_at.retain(|n, _| here(n));
        self.oom.retain(|n, _| here(n));
        self.used_before.retain(|n, _| here(n));
        self.recent_peak.retain(|n, _| here(n));
        self.taken_ahead.retain(|n, _| here(n));
        self.rereading.retain(|n, _| here(n));
        self.lowered_at.retain(|n, _| here(n));
        self.delivery_started.retain(|n, _| here(n));
        self.squeezed.retain(|n| here(n));
        self.beyond_reach.retain(|n, _| here(n));
        self.thrashing_since.retain(|n, _| here(n));
    }

    /// Notes the VMs that read again what a balloon step ahead of need took from them.
    fn notice_rereads(&mut self, s: &Snapshot) {
        let now = s.at_s;
        self.taken_ahead
            .retain(|_, t| now - t.at_s <= REREAD_WINDOW_S);
        self.rereading.retain(|_, r| now < r.until_s);
        for vm in &s.vms {
            let rate = vm.file_read_rate();
            if rate < REREAD_MIB_S {
                continue;
            }
            if let Some(r) = self.rereading.get_mut(&vm.name) {
                r.until_s = now + RECENT_USE_S;
            } else if let Some(t) = self.taken_ahead.get(&vm.name) {
                if rate >= 2.0 * t.read_rate {
                    let reread = Rereading {
                        back_to_mib: t.held_mib,
                        read_rate: rate,
                        until_s: now + RECENT_USE_S,
                    };
                    self.taken_ahead.remove(&vm.name);
                    self.rereading.insert(vm.name.clone(), reread);
                }
            }
        }
    }

    /// Notes a balloon step ahead of need: the window for its re-reads starts again, and the
    /// first step of a series keeps what the VM held before it.
    fn note_step_ahead(&mut self, vm: &VmObservation, at_s: f64) {
        let taken = self
            .taken_ahead
            .entry(vm.name.clone())
            .or_insert(TakenAhead {
                held_mib: (held_mib(vm) + guest_slack_mib(vm)).min(vm.allocation_mib),
                at_s,
                read_rate: vm.file_read_rate(),
            });
        taken.at_s = at_s;
    }

    /// Gives a VM that reads again the cache a step ahead of need took what it held before,
    /// from half the free memory above the high threshold, in a round that needs nothing: giving back
    /// must not itself make the host short (measured: seed, give-back and need-driven reclaim
    /// took turns on vm1 every few seconds at 5 to 11% free).
    fn give_back(&self, r: &Round, plan: &mut Plan) {
        let s = r.s;
        // Half the room stays free: a VM that wakes fills memory faster than balloons take
        // cache back (measured: seed, vm1 and vm2 given back 645 MiB while vm3 idled; when vm3
        // woke the host went from high to hard within a round, and zswap took 921 MiB).
        let mut room = self.unclaimed_free_mib(r, plan) / 2;
        for vm in &s.vms {
            let Some(reread) = self.rereading.get(&vm.name) else {
                continue;
            };
            if plan.allocation_for(&vm.name).is_some() {
                continue;
            }
            let base = vm.allocation_mib.max(vm.target_mib);
            let back = reread
                .back_to_mib
                .min(growth_ceiling_mib(vm))
                .saturating_sub(base)
                .min(room);
            if back < DEAD_BAND_MIB {
                continue;
            }
            room -= back;
            plan.push(
                Action::Allocate {
                    vm: vm.name.clone(),
                    target_mib: base + back,
                },
                format!(
                    "{} memory {} -> {} MiB: read again from its disks ({:.0} MiB/s) the page cache a balloon took ahead of need; {back} MiB given back from free memory while the host has room",
                    vm.name,
                    vm.allocation_mib,
                    base + back,
                    reread.read_rate,
                ),
            );
        }
    }

    /// The most the VM's guest used or touched within the last RECENT_USE_S: its working set
    /// counts the page cache it served its reads from (measured: seed-pg, vm3, ballooned ahead
    /// of need from 1,023 to 720 MiB between loading PostgreSQL's tables and serving them, read
    /// them again at 9 MiB/s and served 0.74 of unconstrained, though it got 948 MiB back).
    fn recent_peak_mib(&mut self, vm: &VmObservation, now_s: f64) -> u64 {
        let used = vm
            .guest_used_mib
            .unwrap_or(0)
            .max(vm.working_set_mib.unwrap_or(0));
        let peak = self
            .recent_peak
            .entry(vm.name.clone())
            .or_insert((used, now_s));
        if used >= peak.0 || now_s - peak.1 > RECENT_USE_S {
            *peak = (used, now_s);
        }
        peak.0
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

    /// The working-set estimate is the demand: above the allocation while the guest pages. A
    /// guest filling its memory while it has less than it may have claims all it may have:
    /// its estimate trails what it writes by rounds, and an entitlement that follows the
    /// estimate moves the other VMs' balloons a few MiB a round (measured: seed, vm3 writing
    /// 900 MiB was entitled 877 -> 1024 MiB over 8 s while the idle VMs gave 20 to 30 MiB a
    /// round and it paged to its disk). One that already has it all would only squeeze the
    /// others (measured: turns, the busy VM beside it was capped, 0.72 of unconstrained).
    /// A guest whose cache a balloon took while the host was short reads it back from its
    /// disk: that is the balloon's cost, not demand that entitles it to the cache again, so
    /// until the host has room it claims only what it uses (measured: seed, vm1 ballooned
    /// 456 -> 183 MiB read its cache back, counted 0% idle, was entitled to 364 MiB and granted
    /// 100 MiB a round later, while vm3 with twice its shares was capped at 858 MiB).
    fn claim(vm: &VmObservation, filling: bool, squeezed: bool, floors_fit: bool) -> Claim {
        let ceiling = growth_ceiling_mib(vm);
        Claim {
            shares: vm.shares,
            active_mib: if filling && vm.allocation_mib.max(vm.target_mib) < ceiling {
                ceiling
            } else if squeezed && !vm.is_hungry() {
                // One short of memory asks for more than its cache (measured: many-small, s5
                // squeezed as its reading phase ended claimed 132 of the 256 MiB it touched
                // next, and paged at 128 MiB). Writing out slowly is its guest making room for
                // the balloon (measured: seed, vm1 and vm2 wrote 1 to 3 MiB/s as their cache
                // was taken, and claiming their working sets they were granted 430 MiB of cache
                // back as vm3 began).
                let active = vm.active_mib();
                vm.guest_used_mib.map_or(active, |used| active.min(used))
            } else {
                vm.active_mib()
            },
            min_mib: if floors_fit {
                reserved_in_use_mib(vm).max(GUEST_FLOOR.as_mib())
            } else {
                reserved_in_use_mib(vm)
            },
            max_mib: ceiling,
        }
    }

    /// The free-memory state, and every VM's entitlement. Pages KSM merged are held by several
    /// guests but cost the host once: what they save can be entitled again, as ESX charges
    /// shared pages fractionally. What the host's own processes use is nobody's (measured: a
    /// real host with 18 GiB held by a process had every VM entitled to all of its 1 GiB at 3.5%
    /// free, and no balloon moved).
    fn entitle<'a>(&mut self, s: &'a Snapshot) -> Round<'a> {
        let host = &s.host;
        let free_pct = host.free_pct();
        let state = self.ladder.update(free_pct);
        self.high_since = (state == FreeState::High).then(|| self.high_since.unwrap_or(s.at_s));
        if self
            .high_since
            .is_some_and(|since| s.at_s - since >= ROOM_AGAIN_S)
        {
            self.squeezed.clear();
        }
        let why_state = format!(
            "host {state} ({}: {} of {} MiB)",
            self.ladder.why(free_pct),
            host.free_mib(),
            host.budget_mib
        );
        let soft_margin = (host.budget_mib as f64 * self.settings.thresholds.soft / 100.0) as u64;
        let kept_free = host.reserve_mib.max(soft_margin);
        let overhead: u64 = s.vms.iter().map(VmObservation::overhead_mib).sum();
        let boot_room = s.pending.first().map_or(0, boot_room_mib);
        let usable = (host.budget_mib + host.ksm_saved_mib)
            .saturating_sub(kept_free + overhead + boot_room + host.other_used_mib);
        let floors_fit = s.vms.iter().map(floor_mib).sum::<u64>() <= usable;
        let rises = self.note_use(s);
        let growing: Vec<bool> = rises.iter().map(|r| r.grows).collect();
        let own_rise = self.own_rises(s, &growing);
        let filling: Vec<bool> = s
            .vms
            .iter()
            .zip(&own_rise)
            .map(|(vm, &rises)| is_filling(vm, rises))
            .collect();
        let Outgrowth {
            outgrows,
            with_cache: outgrows_with_cache,
            why: outgrows_why,
            by_mib: outgrows_by,
        } = outgrowing(s, kept_free + boot_room, &own_rise, &rises);
        let claims: Vec<Claim> = s
            .vms
            .iter()
            .zip(&filling)
            .map(|(vm, &fills)| {
                let squeezed = self.squeezed.contains(&vm.name);
                Esx::claim(vm, fills, squeezed, floors_fit)
            })
            .collect();
        let by_shares = allocate(&claims, usable, self.settings.idle_tax);
        let (entitled, given_whole, passed_over) = self.whole_sets(s, &claims, &by_shares);
        let given_whole_names = self
            .given_whole_sets
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Round {
            s,
            state,
            why_state,
            kept_free,
            boot_room,
            entitled,
            by_shares,
            given_whole,
            given_whole_names,
            passed_over,
            growing,
            outgrows,
            outgrows_with_cache,
            outgrows_why,
            outgrows_by,
            filling,
            floors_fit,
        }
    }

    /// Each VM's entitlement where whole working sets go first (`entitlement::concentrate`),
    /// whether it was given its whole working set, and the VMs passed over; notes those given
    /// theirs.
    fn whole_sets(
        &mut self,
        s: &Snapshot,
        claims: &[Claim],
        by_shares: &[u64],
    ) -> (Vec<u64>, Vec<bool>, BTreeSet<String>) {
        self.note_thrashing(s);
        let beyond_reach: Vec<bool> = s
            .vms
            .iter()
            .map(|v| self.is_beyond_reach(v, s.at_s))
            .collect();
        let kept: Vec<bool> = s
            .vms
            .iter()
            .zip(&beyond_reach)
            .map(|(v, &beyond)| self.given_whole_sets.contains(&v.name) && !is_quiet(v) && !beyond)
            .collect();
        // A VM waits on swap where its guest pages to its disk or its QEMU faults back what
        // the host swapped.
        let waiting: Vec<bool> = s
            .vms
            .iter()
            .map(|v| (v.is_hungry() || faults_back(v)) && !is_quiet(v))
            .collect();
        // A VM given its whole working set owes nothing: what its guest uses and the slack a
        // balloon leaves count too.
        let whole_claims: Vec<Claim> = claims
            .iter()
            .zip(&s.vms)
            .map(|(c, v)| Claim {
                active_mib: c
                    .active_mib
                    .max(v.guest_used_mib.unwrap_or(0) + guest_slack_mib(v)),
                ..*c
            })
            .collect();
        let (entitled, given_whole) =
            concentrate(&whole_claims, by_shares, &kept, &waiting, &beyond_reach);
        self.given_whole_sets = s
            .vms
            .iter()
            .zip(&given_whole)
            .filter(|(_, &whole)| whole)
            .map(|(v, _)| v.name.clone())
            .collect();
        let passed_over = (0..s.vms.len())
            .filter(|&i| beyond_reach[i] && !given_whole[i] && entitled[i] < by_shares[i])
            .map(|i| s.vms[i].name.clone())
            .collect();
        (entitled, given_whole, passed_over)
    }

    /// Notes what each VM's guest uses and holds as page cache.
    fn note_use(&mut self, s: &Snapshot) -> Vec<Rise> {
        s.vms
            .iter()
            .map(|vm| {
                let used = vm.guest_used_mib.unwrap_or(0);
                let cache = page_cache_mib(vm);
                let seen = self.used_before.entry(vm.name.clone()).or_insert(UseSeen {
                    used_mib: used,
                    at_s: s.at_s,
                    rose_at_s: f64::NEG_INFINITY,
                    rise_mib_s: 0.0,
                    rise_mib: 0,
                    allocation_mib: vm.allocation_mib,
                    cache_mib: cache,
                });
                let cache_mib_s = if cache > seen.cache_mib + DEAD_BAND_MIB {
                    (cache - seen.cache_mib) as f64 / (s.at_s - seen.at_s).max(1.0)
                } else {
                    0.0
                };
                if used > seen.used_mib + DEAD_BAND_MIB {
                    let let_out = vm.allocation_mib.saturating_sub(seen.allocation_mib);
                    seen.rise_mib = (used - seen.used_mib).saturating_sub(let_out);
                    seen.rose_at_s = s.at_s;
                    seen.rise_mib_s = (used - seen.used_mib) as f64 / (s.at_s - seen.at_s).max(1.0);
                }
                seen.used_mib = used;
                seen.allocation_mib = vm.allocation_mib;
                seen.cache_mib = cache;
                seen.at_s = s.at_s;
                let grows = s.at_s - seen.rose_at_s <= GROWTH_HOLD_S;
                Rise {
                    grows,
                    use_mib_s: if grows { seen.rise_mib_s } else { 0.0 },
                    cache_mib_s,
                }
            })
            .collect()
    }

    /// Each growing VM whose rise is its guest's own. A guest reclaiming under a balloon just
    /// lowered uses more for a few seconds; that is not the guest filling its memory
    /// (measured: libvirt seed, vm1 ballooned 356 -> 285 MiB in soft was granted 508 MiB back a
    /// round later, its balloon let out past where it stood before), and so does one whose
    /// balloon is still inflating (measured: seed, vm2 ballooned 407 -> 177 MiB still held 242
    /// MiB 3.6 s later, counted as filling, and was granted 143 MiB while vm3 waited on zswap).
    /// Nor does a guest a balloon squeezed to its cache floor: its cache below its watermarks
    /// counts as used, so its use reaches its allocation (measured: seed, vm1 at its floor
    /// counted as filling and was granted 103 MiB while vm3 waited on zswap); it is granted
    /// memory once it pages, or once its use rises by more than a balloon's slack in a round
    /// (its own rise, as above, this round, with no balloon letting memory out): then it fills
    /// with memory of its own and is no longer squeezed, since cache below the watermarks
    /// moves its use by less (measured: burst, b squeezed in soft began its touch phase 20 s
    /// later, its use rose 280 MiB in 2 s as its cache fell 320 MiB, and it waited 4 s for a
    /// grant, until it paged).
    fn own_rises(&mut self, s: &Snapshot, growing: &[bool]) -> Vec<bool> {
        s.vms
            .iter()
            .zip(growing)
            .map(|(vm, &grows)| {
                let just_lowered = self
                    .lowered_at
                    .get(&vm.name)
                    .is_some_and(|&at| s.at_s - at <= GROWTH_HOLD_S);
                let inflating = vm.allocation_mib > vm.target_mib + DEAD_BAND_MIB;
                let own = grows && !just_lowered && !inflating;
                let deflating = vm.target_mib > vm.allocation_mib + DEAD_BAND_MIB;
                let fills = self.used_before.get(&vm.name).is_some_and(|seen| {
                    seen.rose_at_s == s.at_s && seen.rise_mib > guest_slack_mib(vm)
                });
                if own && fills && !deflating {
                    self.squeezed.remove(&vm.name);
                }
                own && !self.squeezed.contains(&vm.name)
            })
            .collect()
    }

    /// KSM at the rate its merging is worth; at the soft state's rate while a VM starts on a
    /// host its VMs could fill (the most each may have, with what the host's other processes
    /// use and its reserve, exceeds the budget; where all of it fits, no start can fill the
    /// host), unless the last start showed that starting guests' pages do not merge here
    /// (measured: turns, unique guests, 500 MiB/s for the first 10 s of every workload took the
    /// CPU the guests started with, 0.90 of unconstrained against 0.98). The boost finds what
    /// guests booted from one image share (measured: two-vm without it, KSM saved 1 MiB instead
    /// of 317 and the host swapped 71 MiB instead of none). A start is judged as a whole, by
    /// what KSM merged of what it took: a 10 s window of it may merge nothing while the guest
    /// boots (measured: vdi, such a window cut the scan to 10 MiB/s as d7 wrote its 200 MiB,
    /// and the host reached low).
    fn share(&mut self, r: &Round, plan: &mut Plan) {
        let merges = self.starts_merged.unwrap_or(true);
        let host = &r.s.host;
        let most: u64 = r.s.vms.iter().map(|v| v.max_mib).sum();
        let could_fill = most + host.other_used_mib + host.reserve_mib > host.budget_mib;
        let starting =
            r.s.vms
                .iter()
                .find(|v| self.is_starting(v))
                .map(|v| v.name.as_str())
                .filter(|_| merges && could_fill);
        let (ksm, why) = self
            .ksm
            .pace(r.s.at_s, r.s.host.ksm_saved_mib, r.state, starting);
        plan.push(ksm, format!("{}; {why}", r.why_state));
    }

    /// Grants free memory above what is kept free (and grants in flight) to VMs whose demand
    /// exceeds their allocation, up to their entitlement; returns the demand left unmet, which
    /// reclaim then takes from VMs holding more than their entitlement. A guest that is filling
    /// its memory (its use rises and reaches its allocation less the balloon's slack; a guest
    /// whose page cache moves its use by a few MiB is not) is granted its entitlement at once:
    /// grants that trail its use a round behind leave it waiting at every step (measured:
    /// turns, a VM granted 25 to 64 MiB a round as its turn began ran at 0.79 of
    /// unconstrained, against 0.92 left alone under static). A guest paging to its disk what it
    /// uses is granted what it needs from free memory even beyond its entitlement: memory no VM holds
    /// costs no VM anything, and the entitlement only bounds what is reclaimed for it
    /// (measured: reservation, app2 paged for 70 s at its entitlement while 150 MiB were free).
    /// Free memory is held back for a VM waiting to start, so that it can, and the room a VM
    /// still starting may grow into is held back from guests that would only fill it with
    /// cache (neither paging nor filling), as it is from give-back: a started guest's work
    /// takes its memory within seconds (measured: seed, vm1 and vm2 granted 350 MiB of cache
    /// back in the 5 s before vm3, paced, woke 30 s after its boot; their balloons returned it
    /// slower than vm3 wrote, and the host swapped 36 MiB with no cap). Such a guest gets none
    /// while a VM outgrows free memory: reclaim would take it back in the same round (measured:
    /// seed, vm1 granted 488 -> 542 MiB and ballooned to 166 in the round vm3's rise was seen).
    fn grant(&self, r: &Round, plan: &mut Plan) -> u64 {
        let s = r.s;
        let in_flight = grants_in_flight_mib(s);
        let mut grantable = s
            .host
            .free_mib()
            .saturating_sub(r.kept_free + in_flight + r.boot_room);
        let starting_room = self.starting_room_mib(s);
        let mut unmet = r
            .boot_room
            .saturating_sub(s.host.free_mib().saturating_sub(r.kept_free));
        let mut lendable = lendable_mib(r);
        for ((vm, &entitled), &filling) in s.vms.iter().zip(&r.entitled).zip(&r.filling) {
            // What a squeezed guest asks for is the cache its balloon took: granted, it is
            // taken again a round later (measured: seed, vm1 and vm2 ballooned to 170 MiB and
            // granted 270 MiB back every few seconds while vm3 waited on zswap). Nor one passed
            // over (measured: many-small, s3 granted 128 -> 209 MiB as s5 went to 128 MiB).
            let squeezed = self.squeezed.contains(&vm.name) && !vm.is_hungry();
            if squeezed || r.passed_over.contains(&vm.name) {
                continue;
            }
            let base = vm.allocation_mib.max(vm.target_mib);
            // An idle guest would only fill a grant with page cache.
            let due = if filling {
                entitled
            } else {
                entitled.min(demand_mib(vm).max(base))
            };
            let pages_what_it_uses = vm.is_hungry() && uses_its_allocation(vm) && !is_quiet(vm);
            let wanted = if pages_what_it_uses {
                due.max(demand_mib(vm).min(growth_ceiling_mib(vm)))
            } else {
                due
            };
            if wanted < base + DEAD_BAND_MIB {
                continue;
            }
            let keeps_room = !(filling || vm.is_hungry() || self.is_starting(vm));
            let room = if !keeps_room {
                grantable
            } else if r.outgrows_why.is_some() {
                0
            } else {
                grantable.saturating_sub(starting_room)
            };
            let grant = (wanted - base).min(room);
            // What waits (for a starting VM, or for a rise) is not unmet: nothing is reclaimed
            // for it.
            let short = due
                .saturating_sub(base + grant)
                .saturating_sub(grantable - room);
            let lent = if pages_what_it_uses && host_may_cap(vm) {
                loan_mib(r, (entitled, wanted), base + grant, lendable)
            } else {
                0
            };
            if grant + lent < DEAD_BAND_MIB {
                unmet += short;
                continue;
            }
            lendable -= lent;
            unmet += short.max(lent);
            grantable -= grant;
            plan.push(
                Action::Allocate {
                    vm: vm.name.clone(),
                    target_mib: base + grant + lent,
                },
                grant_why(vm, entitled, (grant, lent)) + &r.whole_sets_note(&vm.name),
            );
        }
        unmet
    }

    /// Notes the VMs beyond reach: those that kept thrashing on their swap for
    /// THRASH_PATIENCE_S with most of what they could use (their limit). No memory ends their
    /// wait, and what they hold would end another's, so they come after the others for whole
    /// working sets within RECENT_USE_S of that, even ballooned far below: a balloon that takes
    /// some back does not bring their working sets within reach (measured: many-small, s3
    /// touches 180 MiB in a 256 MiB guest and pages under any allocation, unconstrained too; it
    /// kept its whole set for minutes, paging at 5 MiB/s each way at 225 MiB, while s5, which
    /// runs at full speed in 235 MiB, paged at 128 MiB; let go of in the first round that saw
    /// it page less, s3 was given its set again and ballooned 256 -> 128 -> 256 MiB ten times in
    /// 140 s). Reading back alone is no sign: a VM given memory catches up on what it paged out
    /// before (s5 granted 128 -> 242 MiB read back its swap at 6 to 11 MiB/s for 14 s, writing
    /// some out as it did). Nor is paging far below what it could use, which would keep a VM
    /// out of reach for as long as it is kept short.
    fn note_thrashing(&mut self, s: &Snapshot) {
        for vm in &s.vms {
            let holds_most = 4 * vm.allocation_mib >= 3 * growth_ceiling_mib(vm);
            if !(vm.reads_back_swap() && holds_most) {
                self.thrashing_since.remove(&vm.name);
                continue;
            }
            let since = *self
                .thrashing_since
                .entry(vm.name.clone())
                .or_insert(s.at_s);
            if vm.thrashes() && s.at_s - since >= THRASH_PATIENCE_S {
                self.beyond_reach.insert(vm.name.clone(), s.at_s);
            }
        }
    }

    fn is_beyond_reach(&self, vm: &VmObservation, now_s: f64) -> bool {
        self.beyond_reach
            .get(&vm.name)
            .is_some_and(|&seen| now_s - seen <= RECENT_USE_S)
    }

    /// The room the VMs still starting may grow into: what they may hold and do not yet.
    fn starting_room_mib(&self, s: &Snapshot) -> u64 {
        s.vms
            .iter()
            .filter(|v| self.is_starting(v))
            .map(|v| {
                v.allocation_mib
                    .max(v.target_mib)
                    .saturating_sub(held_mib(v))
            })
            .sum()
    }

    /// How far a VM's balloon goes: to its entitlement, but never below what the guest uses
    /// (the host offloads that part while memory is needed), and only where the guest holds
    /// memory above that bound. Memory a guest freed is already back on the host (free page
    /// reporting): ballooning it frees nothing and only makes the VM wait for a grant on its
    /// next turn (measured: turns, a VM ballooned to 195 MiB while idle paged 15 s when its turn
    /// came). Ahead of need it also leaves what the guest used at its recent peak. A booting
    /// guest has touched little, so its balloon would free nothing ahead of need and only make
    /// it fault in through grants when its work begins (measured: seed, vm3 ballooned to 824 MiB
    /// as it booted on a host 47% free, then waited 26 s for grants); once memory is needed it
    /// goes to its entitlement at once. So does a guest that fills its page cache faster than
    /// free memory lasts (`Round::outgrows_with_cache`), before it holds that much.
    fn reclaim_bounds(
        vm: &VmObservation,
        entitled: u64,
        (need, floors_fit, fills_cache): (bool, bool, bool),
        recent_peak: u64,
    ) -> Reclaim {
        let used = if need {
            vm.guest_used_mib.unwrap_or(0)
        } else {
            recent_peak
        };
        // A reservation lent to others is still the VM's, and a guest below its floor stops
        // working: no balloon goes below either.
        let ballooned_to = entitled.max(floor_mib(vm));
        let floor = ballooned_to.max((used + guest_slack_mib(vm)).min(vm.target_mib));
        let held = held_mib(vm);
        let balloon_floor = if vm.is_booting() {
            if need {
                ballooned_to
            } else {
                vm.target_mib
            }
        } else if held > floor + DEAD_BAND_MIB || fills_cache {
            floor
        } else {
            vm.target_mib
        }
        // A limit holds whatever the host has free: a VM booted above it comes down to it.
        .min(vm.limit_mib.max(ballooned_to));
        Reclaim {
            floor: balloon_floor,
            // Below the guest floor only what the guest holds can be owed to the host.
            anonymous_owed: match (need, floors_fit) {
                (false, _) => 0,
                (true, true) => floor - ballooned_to,
                (true, false) => floor.min(held).saturating_sub(entitled),
            },
            at_once: fills_cache.then_some(AtOnce::FillsCache),
            into_guest_swap: false,
        }
    }

    /// Each VM's reclaim bounds this round; None for a VM whose balloon must not take more.
    fn bounds(&mut self, r: &Round, need: bool) -> Vec<Option<Reclaim>> {
        let s = r.s;
        let backing_off: Vec<bool> = s.vms.iter().map(|vm| self.backs_off(vm, s.at_s)).collect();
        let peaks: Vec<u64> = s
            .vms
            .iter()
            .map(|vm| self.recent_peak_mib(vm, s.at_s))
            .collect();
        let mut bounds: Vec<Option<Reclaim>> = s
            .vms
            .iter()
            .zip(&r.entitled)
            .zip(backing_off.iter().zip(&r.growing))
            .zip(peaks.iter().zip(&r.outgrows_with_cache))
            // A guest paging to its disk, growing, or that just had an OOM kill gives nothing:
            // a guest filling its free memory pages if that is taken (measured: idle-anon's
            // needy VM, ballooned as its phase began). Except one passed over while memory is
            // needed (`passed_over_bounds`).
            .map(|(((vm, &e), (&off, &grows)), (&peak, &fills_cache))| {
                let keeps_cache = !need && self.rereading.contains_key(&vm.name);
                if need && r.passed_over.contains(&vm.name) && !off {
                    return Some(passed_over_bounds(vm, e));
                }
                (!off && !grows && !vm.is_hungry() && !keeps_cache).then(|| {
                    Esx::reclaim_bounds(vm, e, (need, r.floors_fit, need && fills_cache), peak)
                })
            })
            .collect();
        // Host swap costs a VM that owes anonymous memory more than page cache costs the VMs
        // with no more shares: their balloons take it below their entitlement first (measured:
        // CI's seed, vm3 capped 31 MiB beyond its entitlement and 33 MiB of it swapped while vm1
        // and vm2, entitled to a little more than they held, kept 400 MiB of cache each). Only
        // where the host holds more than that floor: memory a guest freed is back already
        // (measured: turns, an idle c holding 138 MiB ballooned from 1,024 to 192 MiB, which
        // freed nothing, then granted back in four steps as its turn began). So does a busy VM
        // that faults back what the host swapped of it: it waits on the host at every access
        // to that part (measured: seed, vm3 not capped, entitled to all of its 1,024 MiB, held
        // 59 MiB in zswap to the end while vm1 and vm2 kept 50 MiB of cache each above their
        // floors: 0.76 of unconstrained). And a VM that outgrows free memory makes the VMs with
        // fewer shares give page cache at once: balloons that follow its entitlement move a
        // step behind its working set, which trails what it writes (measured: seed, vm3 woke at
        // 79 s, vm1's balloon followed its entitlement 565 -> 424 -> 257 -> 172 MiB over 10 s,
        // and vm3 ran at full speed only 13 to 20 s after it woke).
        let waits_on_host_swap = |vm: &VmObservation| need && !is_quiet(vm) && faults_back(vm);
        let owing_shares = s
            .vms
            .iter()
            .zip(&bounds)
            .filter(|(vm, b)| {
                let owes = host_may_cap(vm)
                    && b.as_ref().is_some_and(|b| b.anonymous_owed > DEAD_BAND_MIB);
                owes || waits_on_host_swap(vm)
            })
            .map(|(vm, _)| vm.shares)
            .max();
        let outgrowing_shares = s
            .vms
            .iter()
            .zip(&r.outgrows)
            .filter(|(_, &outgrows)| need && outgrows)
            .map(|(vm, _)| vm.shares)
            .max();
        if owing_shares.is_some() || outgrowing_shares.is_some() {
            for (vm, b) in s.vms.iter().zip(&mut bounds) {
                let behind_rise = outgrowing_shares.is_some_and(|shares| vm.shares < shares);
                let behind = owing_shares.is_some_and(|shares| vm.shares <= shares) || behind_rise;
                let gives_cache = behind
                    && !vm.is_booting()
                    && held_mib(vm) > cache_floor_mib(vm) + DEAD_BAND_MIB;
                if let Some(b) = b.as_mut().filter(|b| b.anonymous_owed == 0 && gives_cache) {
                    b.floor = b.floor.min(cache_floor_mib(vm));
                    if behind_rise {
                        b.at_once = Some(AtOnce::BehindRise);
                    }
                }
            }
        }
        owed_beyond_host_swap(s, &r.entitled, &mut bounds);
        bounds
    }

    /// Balloons VMs towards their bounds, paced; returns what each VM owes that only the host
    /// can take (anonymous memory), and what the balloons will still free on the host.
    fn reclaim(&mut self, r: &Round, need: bool, unmet: u64, plan: &mut Plan) -> (Vec<u64>, u64) {
        let s = r.s;
        let bounds = self.bounds(r, need);
        let mut over: Vec<(u64, &VmObservation, u64, &Reclaim)> = s
            .vms
            .iter()
            .zip(&r.entitled)
            .zip(&bounds)
            .filter_map(|((vm, &e), b)| b.as_ref().map(|b| (vm, e, b)))
            .filter(|(vm, _, b)| vm.target_mib > b.floor + DEAD_BAND_MIB)
            .map(|(vm, e, b)| (vm.allocation_mib.saturating_sub(b.floor), vm, e, b))
            .collect();
        // Page cache before anonymous memory a guest would page to its own disk.
        over.sort_by_key(|o| (o.3.into_guest_swap, std::cmp::Reverse(o.0)));
        // Pacing protects running guests from reclaiming all at once; a guest that has not
        // reported yet is booting and has touched little, so its balloon goes at once, as
        // does cache behind a rising VM (`Reclaim::at_once`).
        let already = s
            .vms
            .iter()
            .filter(|v| !v.is_booting() && v.allocation_mib > v.target_mib + DEAD_BAND_MIB)
            .count();
        let mut slots = self.settings.max_inflating.saturating_sub(already);
        let why = reclaim_why(r, need, unmet);
        for (_, vm, e, b) in over {
            let Reclaim { floor, at_once, .. } = *b;
            let target = if vm.is_booting() || at_once.is_some() {
                floor
            } else if slots > 0 {
                slots -= 1;
                // Free guest pages go at once; beyond them a step a round lets the guest drop
                // its cache gradually.
                let step = self.settings.step_mib.max(vm.guest_free_mib());
                floor.max(vm.target_mib.saturating_sub(step))
            } else {
                continue;
            }
            .min(growth_ceiling_mib(vm));
            if !need && !vm.is_booting() {
                self.note_step_ahead(vm, s.at_s);
            }
            if target < vm.target_mib {
                self.lowered_at.insert(vm.name.clone(), s.at_s);
                if vm.allocation_mib <= vm.target_mib + DEAD_BAND_MIB {
                    self.delivery_started.insert(vm.name.clone(), s.at_s);
                }
                // A booting guest has no cache to read back.
                if need && !vm.is_booting() {
                    self.squeezed.insert(vm.name.clone());
                    self.high_since = None;
                }
            }
            plan.push(
                Action::Allocate {
                    vm: vm.name.clone(),
                    target_mib: target,
                },
                self.balloon_why(vm, (target, e), b, &why) + &r.whole_sets_note(&vm.name),
            );
        }
        // Only memory the host holds counts (what a guest freed is back already): what a balloon
        // was not asked for yet, and what one lowered a moment ago is still returning. One that
        // did not deliver is the host's to take.
        let deliverable = s
            .vms
            .iter()
            .zip(&bounds)
            .map(|(vm, b)| {
                let asked = b.as_ref().map_or(0, |b| {
                    held_mib(vm).min(vm.target_mib).saturating_sub(b.floor)
                });
                asked + self.delivering_mib(vm, s.at_s)
            })
            .sum();
        let owed = bounds
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.anonymous_owed))
            .collect();
        (owed, deliverable)
    }

    /// Free memory above the high threshold that no grant in flight or this round, and no
    /// VM waiting to start, has claimed.
    fn unclaimed_free_mib(&self, r: &Round, plan: &Plan) -> u64 {
        let s = r.s;
        let high_margin = (s.host.budget_mib as f64 * self.settings.thresholds.high / 100.0) as u64;
        let in_flight: u64 = s
            .vms
            .iter()
            .map(|v| {
                let target = plan.allocation_for(&v.name).unwrap_or(v.target_mib);
                target.max(v.target_mib).saturating_sub(v.allocation_mib)
            })
            .sum();
        s.host
            .free_mib()
            .saturating_sub(r.kept_free.max(high_margin) + in_flight + r.boot_room)
    }

    /// What a VM's balloon, lowered from rest within BALLOON_DELIVERY_S, is still returning.
    fn delivering_mib(&self, vm: &VmObservation, now_s: f64) -> u64 {
        let in_flight = self
            .delivery_started
            .get(&vm.name)
            .is_some_and(|&at| now_s - at <= BALLOON_DELIVERY_S);
        if in_flight {
            held_mib(vm).saturating_sub(vm.target_mib)
        } else {
            0
        }
    }

    /// Why a balloon moves: the host's state, and the VM's entitlement and idleness.
    fn balloon_why(
        &self,
        vm: &VmObservation,
        (target, entitled): (u64, u64),
        &Reclaim {
            at_once,
            into_guest_swap,
            ..
        }: &Reclaim,
        why: &str,
    ) -> String {
        let idle = if vm.is_booting() {
            "booting".to_string()
        } else {
            let active = vm.active_mib().min(vm.allocation_mib);
            format!(
                "{} idle {:.0}%",
                vm.name,
                100.0 * (1.0 - active as f64 / vm.allocation_mib.max(1) as f64)
            )
        };
        let at_once_why = match at_once {
            Some(AtOnce::BehindRise) => {
                "; its page cache goes at once, while a VM with more shares outgrows free memory"
            }
            Some(AtOnce::FillsCache) => {
                "; it goes there at once: its guest fills its page cache faster than free memory lasts"
            }
            None => "",
        };
        let before_swap = if into_guest_swap {
            "; the host's swap has no room for what the VMs owe, so its guest swaps what it does \
             not touch to its own disk"
        } else if at_once != Some(AtOnce::BehindRise) && target < entitled {
            "; page cache below its entitlement goes before the host swaps the anonymous memory a \
             VM owes"
        } else {
            ""
        };
        format!(
            "{} balloon {} -> {target} MiB: {why}; entitled to {entitled} MiB ({idle}, idle memory taxed {:.0}%){before_swap}{at_once_why}",
            vm.name,
            vm.allocation_mib,
            self.settings.idle_tax * 100.0,
        )
    }

    /// The host takes what a VM owes that its balloon cannot: anonymous memory beyond its
    /// entitlement while memory is needed, and in hard whatever the balloon did not deliver.
    /// Below hard it takes no more than the host is short of (up to the high threshold, and the
    /// demand left unmet; from quiet VMs also how far rising VMs outgrow free memory) beyond
    /// what balloons will still free, first from the VMs with the fewest shares per MiB they
    /// hold, as ESX revokes, and a step a round while PSI stays low, as Meta's TMO steers
    /// memory.high. zswap is on meanwhile, so the coldest pages are compressed before anything
    /// reaches the disk.
    fn offload(
        &mut self,
        r: &Round,
        need: bool,
        unmet: u64,
        (anonymous_owed, deliverable): (&[u64], u64),
        plan: &mut Plan,
    ) {
        let high_free = (r.s.host.budget_mib as f64 * self.settings.thresholds.high / 100.0) as u64;
        let short_now = high_free.saturating_sub(r.s.host.free_mib());
        let shortfall = (short_now + unmet).saturating_sub(deliverable);
        // Quiet VMs also cover how far rising VMs will outgrow free memory.
        let ahead = (short_now.max(r.outgrows_by) + unmet).saturating_sub(deliverable);
        let unclaimed = self.unclaimed_free_mib(r, plan);
        let (mut owing, lifted) = self.lift_caps(r, need, anonymous_owed, unclaimed);
        // Quiet VMs first: what they hold costs them nothing until they wake. Then those whose
        // balloons did not deliver: that memory was judged idle already. Among the others,
        // those given their whole working sets last.
        let whole_set = |vm: &VmObservation| self.given_whole_sets.contains(&vm.name);
        owing.sort_by(|a, b| {
            let per_mib = |vm: &VmObservation| vm.shares as f64 / vm.host_rss_mib.max(1) as f64;
            (!is_quiet(a.vm))
                .cmp(&!is_quiet(b.vm))
                .then(whole_set(a.vm).cmp(&whole_set(b.vm)))
                .then((a.undelivered == 0).cmp(&(b.undelivered == 0)))
                .then(per_mib(a.vm).total_cmp(&per_mib(b.vm)))
        });
        let capped = self.step_caps(r, owing, (shortfall, ahead));
        self.switch_zswap(r, plan);
        for (action, why) in lifted.into_iter().chain(capped) {
            plan.push(action, why);
        }
    }

    /// The VMs that owe the host memory, and the lifted caps of those that no longer do.
    fn lift_caps<'a>(
        &mut self,
        r: &Round<'a>,
        need: bool,
        anonymous_owed: &[u64],
        mut unclaimed: u64,
    ) -> (Vec<Owing<'a>>, Vec<(Action, String)>) {
        let s = r.s;
        let hard = r.state >= FreeState::Hard;
        let mut owing = Vec::new();
        let mut lifted = Vec::new();
        for ((vm, &e), &anonymous) in s.vms.iter().zip(&r.entitled).zip(anonymous_owed) {
            if is_quiet(vm) {
                self.stalled_at.remove(&vm.name);
            }
            if vm.stalled_at_host_limit {
                // Whoever set it: the VM's group is memvisor's own where it can stall.
                let cap = vm.cgroup_limit_mib.unwrap_or(vm.host_rss_mib);
                self.offloaded.remove(&vm.name);
                let highest = self.stalled_at.entry(vm.name.clone()).or_default();
                *highest = (*highest).max(cap);
                lifted.push((
                    Action::CgroupLimit {
                        vm: vm.name.clone(),
                        limit_mib: None,
                    },
                    format!(
                        "{}; {} stalls at its host limit of {cap} MiB, which is below what it \
                         touches: the limit is lifted, and no cap goes that low again while it \
                         is busy",
                        r.why_state, vm.name
                    ),
                ));
                continue;
            }
            // A balloon still returning memory is not taken twice (measured: seed, vm2 capped
            // from 600 to 329 MiB in 8 s while its balloon returned the same memory, and 111 MiB
            // of its cache stayed in host swap to the end).
            // Nor a passed-over VM's: a cap would stall it (`passed_over_bounds`).
            let passed_over = r.passed_over.contains(&vm.name);
            let undelivered = if hard && !passed_over && self.delivering_mib(vm, s.at_s) == 0 {
                vm.allocation_mib.saturating_sub(vm.target_mib.max(e))
            } else {
                0
            };
            let owes = anonymous + undelivered;
            if owes > DEAD_BAND_MIB && host_may_cap(vm) {
                owing.push(Owing {
                    vm,
                    owes,
                    undelivered,
                });
                continue;
            }
            // The cap comes off once the host has room for all of the VM's memory again, so
            // that it is not capped again a round later.
            let room = s.host.free_mib() > r.kept_free + vm.host_swapped_mib + DEAD_BAND_MIB;
            let Some(&cap) = self.offloaded.get(&vm.name) else {
                continue;
            };
            if vm.is_hungry() || (!need && room) {
                self.offloaded.remove(&vm.name);
                lifted.push((
                    Action::CgroupLimit {
                        vm: vm.name.clone(),
                        limit_mib: None,
                    },
                    format!(
                        "{}; {} owes nothing: its host limit is lifted",
                        r.why_state, vm.name
                    ),
                ));
                continue;
            }
            lifted.extend(self.raise_cap(r, vm, cap, &mut unclaimed));
        }
        (owing, lifted)
    }

    /// A busy VM waits on the host's swap at every access to what it lost: while its cap stays
    /// on, it rises by what is free above the high threshold that nothing else claimed, so that
    /// the VM is not held below what it touches once the others' balloons have delivered
    /// (measured: seed, vm3 capped at 858 MiB with 215 MiB in zswap for the rest of the run
    /// while vm1 and vm2 were granted what their balloons returned). Never past all the VM's
    /// memory: pages it no longer touches stay in swap.
    fn raise_cap(
        &mut self,
        r: &Round,
        vm: &VmObservation,
        cap: u64,
        unclaimed: &mut u64,
    ) -> Option<(Action, String)> {
        let raised = (cap + *unclaimed).min(vm.host_rss_mib + vm.host_swapped_mib);
        if is_quiet(vm) || raised <= cap + DEAD_BAND_MIB {
            return None;
        }
        let spare = raised - cap;
        *unclaimed -= spare;
        self.offloaded.insert(vm.name.clone(), raised);
        Some((
            Action::CgroupLimit {
                vm: vm.name.clone(),
                limit_mib: Some(raised),
            },
            format!(
                "{}; {} owes nothing and is busy: its host limit rises with {spare} MiB free above the high threshold, to {raised} MiB",
                r.why_state, vm.name
            ),
        ))
    }

    /// Lowers the caps of the owing VMs, in order, until the shortfall is met.
    fn step_caps(
        &mut self,
        r: &Round,
        owing: Vec<Owing>,
        (shortfall, ahead): (u64, u64),
    ) -> Vec<(Action, String)> {
        let hard = r.state >= FreeState::Hard;
        let pressure = r.s.host.psi_some_avg10;
        let mut capped = Vec::new();
        let mut taken = 0;
        for Owing {
            vm,
            owes,
            undelivered,
        } in owing
        {
            let from = self
                .offloaded
                .get(&vm.name)
                .copied()
                .unwrap_or(vm.host_rss_mib);
            let stalled_floor = self
                .stalled_at
                .get(&vm.name)
                .map_or(0, |cap| cap + OFFLOAD_STEP_MIB);
            let goal = vm
                .host_rss_mib
                .saturating_sub(owes)
                .max(host_floor_mib(vm, hard, r.floors_fit))
                .max(stalled_floor);
            // In hard the host is about to swap blindly and the VMs that need memory grow
            // faster than a step a round (measured: idle-anon's needy VM filled the host in 4 s):
            // a quiet VM's cap goes where it must at once. So it does, as far as the host will
            // be short, where a VM outgrows free memory: the host has room for the compression
            // now, and the quiet VM's cold pages cost nothing until it wakes (measured:
            // idle-anon, vm3 woke on a host 15% free and filled it in 7 s while nothing moved,
            // then waited 8 s on caps lowered in hard).
            let quiet = is_quiet(vm);
            let left = if quiet { ahead } else { shortfall }.saturating_sub(taken);
            let step = if hard && quiet {
                from.saturating_sub(goal)
            } else if hard || (quiet && r.outgrows_by > 0) {
                from.saturating_sub(goal).min(left)
            } else if pressure > OFFLOAD_PSI_LIMIT {
                0
            } else {
                from.saturating_sub(goal).min(OFFLOAD_STEP_MIB).min(left)
            };
            if step < DEAD_BAND_MIB {
                continue;
            }
            taken += step;
            let limit = from - step;
            self.offloaded.insert(vm.name.clone(), limit);
            capped.push((
                Action::CgroupLimit {
                    vm: vm.name.clone(),
                    limit_mib: Some(limit),
                },
                format!(
                    "{}; {} owes {owes} MiB beyond its entitlement that {}: the host compresses and swaps its coldest pages (cgroup limit {limit} MiB){}",
                    r.why_state,
                    vm.name,
                    if undelivered > 0 {
                        "its balloon did not return"
                    } else {
                        "is anonymous (a balloon would page it to the guest's disk)"
                    },
                    r.whole_sets_note(&vm.name),
                ),
            ));
        }
        capped
    }

    /// zswap goes on before any cap: a lowered cap reclaims at once, and without zswap its
    /// pages would go straight to the disk. On an overcommitted host the kernel may also swap
    /// between two rounds: in CI's lab seed the host reached hard between rounds, and 10 MiB
    /// went to the disk before zswap was on.
    fn switch_zswap(&self, r: &Round, plan: &mut Plan) {
        let s = r.s;
        let hard = r.state >= FreeState::Hard;
        let configured: u64 = s
            .vms
            .iter()
            .map(|v| v.memory_mib.max(v.allocation_mib))
            .sum();
        let overcommitted = configured > s.host.budget_mib;
        let compress = hard || overcommitted || !self.offloaded.is_empty();
        let why = if compress && !hard && self.offloaded.is_empty() {
            format!(
                "{}; overcommitted ({configured} of {} MiB configured): what the kernel swaps before the next round is compressed, not written to disk",
                r.why_state, s.host.budget_mib
            )
        } else if compress {
            format!("{}; compress before swapping to disk", r.why_state)
        } else {
            format!("{}; no host swapping, no compression", r.why_state)
        };
        plan.push(Action::Zswap { enabled: compress }, why);
    }
}

/// A VM that owes the host memory: anonymous memory beyond its entitlement, and in hard what
/// its balloon did not deliver.
struct Owing<'a> {
    vm: &'a VmObservation,
    owes: u64,
    undelivered: u64,
}

impl Policy for Esx {
    fn name(&self) -> PolicyName {
        PolicyName::Ours
    }

    fn free_state(&self) -> Option<FreeState> {
        Some(self.ladder.state)
    }

    fn decide(&mut self, s: &Snapshot) -> Plan {
        let mut plan = Plan::default();
        self.forget_gone(s);
        self.notice_rereads(s);
        let last_starting = self
            .last_start
            .as_ref()
            .is_some_and(|w| s.vms.iter().any(|v| v.name == w.vm && self.is_starting(v)));
        if let Some(watch) = &mut self.last_start {
            watch.update(s, last_starting);
        }
        let round = self.entitle(s);
        self.share(&round, &mut plan);
        self.pace_start(s, &mut plan);
        let unmet = self.grant(&round, &mut plan);
        let need =
            unmet > DEAD_BAND_MIB || round.state >= FreeState::Soft || round.outgrows_why.is_some();
        if need {
            // Memory is needed: cache goes by need's rules, and a probe starts over afterwards.
            self.taken_ahead.clear();
            self.rereading.clear();
        }
        let (anonymous_owed, deliverable) = self.reclaim(&round, need, unmet, &mut plan);
        self.offload(
            &round,
            need,
            unmet,
            (&anonymous_owed, deliverable),
            &mut plan,
        );
        // While VMs start the host's room is theirs: a booting guest takes its memory before
        // its balloon driver loads (measured: seed, vm1 given back 217 MiB as vm2 and vm3 booted,
        // then the host went low).
        let starting = !s.pending.is_empty() || s.vms.iter().any(|v| self.is_starting(v));
        if !need && !starting {
            self.give_back(&round, &mut plan);
        }
        self.admit(&round, &mut plan);
        plan
    }
}

/// What a guest paging to its disk what it uses and holding `holds` MiB is lent beyond free
/// memory, out of the idle memory others hold beyond their entitlements (`lendable`): the host
/// pages that, compressed, instead of the guest paging to its own disk, and once the guest no
/// longer pages the host takes back what it holds beyond its entitlement as from any VM
/// (measured: turns, c paged at its entitlement, 670 of 1024 MiB, for 10 s of its 30 s turn
/// while b beside it was capped by the host; 0.71 of unconstrained, 1.01 under static). Up to
/// what it wants; in hard, where the host swaps for it, only up to its entitlement: beyond it
/// the caps would take the loan back as soon as it stops paging.
fn loan_mib(r: &Round, (entitled, wanted): (u64, u64), holds: u64, lendable: u64) -> u64 {
    let up_to = if r.state >= FreeState::Hard {
        entitled.min(wanted)
    } else {
        wanted
    };
    up_to.saturating_sub(holds).min(lendable)
}

/// Why a VM is granted `grant` MiB of free memory and lent `lent` MiB of others' idle memory.
fn grant_why(vm: &VmObservation, entitled: u64, (grant, lent): (u64, u64)) -> String {
    let lent_why = if lent > 0 {
        format!(
            " and {lent} MiB lent from idle memory the others hold beyond their entitlements, which they give back"
        )
    } else {
        String::new()
    };
    format!(
        "{} memory {} -> {} MiB: entitled to {entitled} MiB ({}active {} MiB, shares {}); {grant} MiB granted from free memory{lent_why}",
        vm.name,
        vm.allocation_mib,
        vm.allocation_mib.max(vm.target_mib) + grant + lent,
        if vm.is_hungry() { "pages to its disk, " } else { "" },
        vm.active_mib(),
        vm.shares,
    )
}

/// Memory granted that balloons are still letting out: free now, but claimed.
fn grants_in_flight_mib(s: &Snapshot) -> u64 {
    s.vms
        .iter()
        .map(|v| v.target_mib.saturating_sub(v.allocation_mib))
        .sum()
}

/// Why balloons move this round: memory VMs need beyond what is free, a VM that outgrows free
/// memory before the host is short, the host's state, or a step ahead of need.
fn reclaim_why(r: &Round, need: bool, unmet: u64) -> String {
    if unmet > 0 {
        format!("{}; VMs need {unmet} MiB more than is free", r.why_state)
    } else if let Some(rise) = r
        .outgrows_why
        .as_ref()
        .filter(|_| r.state < FreeState::Soft)
    {
        format!("{}; {rise}", r.why_state)
    } else if need {
        r.why_state.clone()
    } else {
        format!("{}; ahead of need, page cache only", r.why_state)
    }
}

/// Each VM whose use rises faster than the host's free memory (less what is kept and what
/// grants in flight claim) lasts while balloons deliver, and why, for the first: memory is
/// needed within seconds, and balloons move fastest before the host is short, not once every
/// guest waits on it (measured: seed, vm3 woke on a host 17% free with 820 MiB to grow into;
/// the balloons began at 2% free, took 15 s to inflate on a host at its limit, and vm3 reached
/// full speed 18 to 35 s after it woke). So does a VM whose guest's page cache rises as fast
/// while its use does not, which its balloon can take (measured: seed, vm2 wrote its 400 MiB
/// of cache at 150 MiB/s after its boot, ballooned only once the host was low, and the host
/// swapped 98 MiB of vm1 with no cap). Both come from the guest's own report: what the host
/// holds of a guest rises before its report shows whether that is use or cache (measured:
/// seed, vm3's heap taken for cache as it woke, ballooned to its entitlement).
fn outgrowing(s: &Snapshot, kept: u64, own_rise: &[bool], rises: &[Rise]) -> Outgrowth {
    let free = s
        .host
        .free_mib()
        .saturating_sub(kept + grants_in_flight_mib(s));
    // A VM whose use rises is named before one whose cache grows: that is the rise balloons
    // behind it answer.
    let (mut why_use, mut why_cache) = (None, None);
    let mut coming_all = 0;
    let (outgrows, with_cache) = s
        .vms
        .iter()
        .zip(own_rise.iter().zip(rises))
        .map(|(vm, (&own, rise))| {
            // A balloon letting memory out reads as use rising too.
            let steady = !vm.is_booting() && vm.target_mib <= vm.allocation_mib + DEAD_BAND_MIB;
            let (rate, what) = if own {
                (rise.use_mib_s, "use rises")
            } else if !rise.grows {
                (rise.cache_mib_s, "page cache grows")
            } else {
                (0.0, "")
            };
            let room = vm.target_mib.saturating_sub(held_mib(vm));
            let coming = ((rate * BALLOON_DELIVERY_S) as u64).min(room);
            let outgrows = rate > 0.0 && steady && coming > free;
            if outgrows {
                coming_all += coming;
            }
            let why = if own { &mut why_use } else { &mut why_cache };
            if outgrows && why.is_none() {
                *why = Some(format!(
                    "{}'s {what} {rate:.0} MiB/s with {room} MiB to grow into, {free} MiB free",
                    vm.name
                ));
            }
            (outgrows, outgrows && !own)
        })
        .unzip();
    Outgrowth {
        outgrows,
        with_cache,
        why: why_use.or(why_cache),
        by_mib: coming_all.saturating_sub(free),
    }
}

/// The VMs that outgrow free memory, those of them that fill their page cache, why (for the
/// first), and by how much they together outgrow it (MiB).
struct Outgrowth {
    outgrows: Vec<bool>,
    with_cache: Vec<bool>,
    why: Option<String>,
    by_mib: u64,
}

/// What a VM's guest holds as page cache it can drop, by its last report.
fn page_cache_mib(vm: &VmObservation) -> u64 {
    vm.guest_resident_mib
        .zip(vm.guest_used_mib)
        .map_or(0, |(resident, used)| resident.saturating_sub(used))
}

/// Guest memory the host holds for a VM: what the guest holds, or more where QEMU holds pages
/// the guest freed (a guest without free page reporting).
fn held_mib(vm: &VmObservation) -> u64 {
    let resident = vm.guest_resident_mib.unwrap_or(vm.allocation_mib);
    let on_host = vm.host_rss_mib.saturating_sub(vm.overhead_mib());
    resident.max(on_host).min(vm.allocation_mib)
}

/// Idle memory the VMs hold beyond their entitlements that may be lent to a guest paging to its
/// disk, less what paging guests hold beyond theirs already (lent in earlier rounds, not all
/// given back yet) and, in hard, what their balloons still let out; never more than the host's
/// swap has room for, and none without host swap to take it back or while a VM waits to start,
/// whose boot comes first. Only from a VM the host may cap, whose use does not grow and that
/// does not stall at its cap (reclaim leaves the others alone), and not what the host swapped
/// of it already. In hard the host has no free memory and its caps pay for a loan: only what it
/// holds of the others in RAM above their caps' floors counts (measured: many-small, s5 and s8
/// were given their whole working sets in hard and low for minutes, and paged at 128 and 181
/// MiB, since nothing was lent there).
fn lendable_mib(r: &Round) -> u64 {
    let host = &r.s.host;
    if host.swap_total_mib == 0 || r.boot_room > 0 {
        return 0;
    }
    let hard = r.state >= FreeState::Hard;
    let (mut idle, mut lent) = (0, 0);
    for ((vm, &entitled), &grows) in r.s.vms.iter().zip(&r.entitled).zip(&r.growing) {
        if vm.is_hungry() {
            let beyond = vm
                .allocation_mib
                .max(vm.target_mib)
                .saturating_sub(entitled.max(floor_mib(vm)));
            let letting_out = vm.target_mib.saturating_sub(vm.allocation_mib);
            lent += if hard {
                beyond.max(letting_out)
            } else {
                beyond
            };
        } else if host_may_cap(vm)
            && !grows
            && !vm.stalled_at_host_limit
            && !r.passed_over.contains(&vm.name)
        {
            idle += if hard {
                let kept =
                    (entitled + vm.overhead_mib()).max(host_floor_mib(vm, hard, r.floors_fit));
                vm.host_rss_mib.saturating_sub(kept)
            } else {
                held_mib(vm)
                    .saturating_sub(vm.host_swapped_mib)
                    .saturating_sub(entitled.max(floor_mib(vm)))
            };
        }
    }
    idle.saturating_sub(lent)
        .min(host.swap_total_mib.saturating_sub(host.swap_used_mib))
}

/// Where the host's swap has no room for the anonymous memory VMs owe that is still in RAM,
/// quiet VMs' balloons take it instead, into their guests' own swap, the largest first, until
/// the rest fits with room for a step of the caps: a cap the host cannot swap below frees
/// nothing, and the host's OOM killer ends a QEMU (measured: small-swap, vm1 and vm2 owed their
/// heaps beyond their entitlements, the host's 256 MiB of swap filled as vm3 grew, and vm3 was
/// lost).
fn owed_beyond_host_swap(s: &Snapshot, entitled: &[u64], bounds: &mut [Option<Reclaim>]) {
    let room = s
        .host
        .swap_total_mib
        .saturating_sub(s.host.swap_used_mib)
        .saturating_sub(OFFLOAD_STEP_MIB);
    // What each VM owes that is still in RAM.
    let mut owing: Vec<(&VmObservation, u64, &mut Reclaim, u64)> = s
        .vms
        .iter()
        .zip(entitled)
        .zip(bounds.iter_mut())
        .filter(|((vm, _), _)| host_may_cap(vm))
        .filter_map(|((vm, &e), b)| {
            let b = b.as_mut()?;
            let in_ram = b.anonymous_owed.saturating_sub(vm.host_swapped_mib);
            (in_ram > DEAD_BAND_MIB).then_some((vm, e, b, in_ram))
        })
        .collect();
    let mut owed: u64 = owing.iter().map(|o| o.3).sum();
    owing.sort_by_key(|o| std::cmp::Reverse(o.3));
    for (vm, entitled, b, in_ram) in owing.into_iter().filter(|o| is_quiet(o.0)) {
        if owed <= room {
            break;
        }
        owed -= in_ram;
        b.floor = b.floor.min(entitled.max(floor_mib(vm)));
        b.anonymous_owed = 0;
        b.into_guest_swap = true;
        // A step a round: the guest pages what it gives to its disk.
        b.at_once = None;
    }
}

/// Whether the host may take a VM's memory through its cgroup. Not an attached QEMU's group
/// that is not its own; and not a VM whose memory is mostly merged: a cap reclaims the coldest
/// pages, the kernel's LRU does not tell merged ones apart, and every VM that mapped a merged
/// page swapped out faults in a copy of its own (measured: vdi, desktops with 280 MiB merged
/// each capped by 30 to 110 MiB; within 3 s each had 14 to 22 MiB fewer merged and 13 to 63 MiB
/// swapped; a cap kept above the merged pages did no better).
fn host_may_cap(vm: &VmObservation) -> bool {
    vm.host_swappable && 2 * vm.shared_mib <= vm.host_rss_mib
}

/// The lowest a balloon goes taking only page cache: what the guest uses and its slack, never
/// below its reservation's floor.
fn cache_floor_mib(vm: &VmObservation) -> u64 {
    let uses = vm.guest_used_mib.unwrap_or(vm.target_mib) + guest_slack_mib(vm);
    floor_mib(vm).max(uses.min(vm.target_mib))
}

/// A guest filling its memory: its use rose since the last round and reaches its allocation
/// less the balloon's slack (one whose page cache moves its use by a few MiB is not).
fn is_filling(vm: &VmObservation, growing: bool) -> bool {
    growing && uses_its_allocation(vm)
}

/// A guest whose use reaches its allocation less the balloon's slack: what it pages is memory
/// it uses, not page cache it would drop (measured: seed, idle cache VMs paging after their
/// balloons took their cache were granted all their memory back, ballooned again, and so on).
fn uses_its_allocation(vm: &VmObservation) -> bool {
    let base = vm.allocation_mib.max(vm.target_mib);
    vm.guest_used_mib.unwrap_or(0) + guest_slack_mib(vm) >= base
}

/// The least of a VM's memory the host keeps in RAM when it offloads the rest: its guest floor
/// where every floor fits; otherwise QEMU's own, the reservation and, unless the host is about
/// to swap blindly (hard), what the guest is seen to touch, below which it would wait on the
/// host's swap at every access; never less than QEMU's own and GUEST_HOT_MIB.
fn host_floor_mib(vm: &VmObservation, hard: bool, floors_fit: bool) -> u64 {
    if floors_fit {
        return floor_mib(vm);
    }
    let kept = if hard {
        vm.reservation_mib
    } else {
        vm.reservation_mib.max(vm.working_set_mib.unwrap_or(0))
    };
    vm.overhead_mib() + kept.max(GUEST_HOT_MIB)
}

/// Where the balloon of a VM passed over goes: to its entitlement, never below its floor. It
/// waits on its swap as long with less, and what it holds ends others' wait (measured:
/// many-small, s3 held 290 MiB paging at its limit while s5, given its whole set, paged at 128
/// MiB for the whole run). Its balloon takes that, not the host: a cap below what a guest
/// touches stalls it (measured: many-small, s3 capped at 111 MiB stalled at its limit in 2 s).
fn passed_over_bounds(vm: &VmObservation, entitled: u64) -> Reclaim {
    Reclaim {
        floor: entitled.max(floor_mib(vm)),
        anonymous_owed: 0,
        at_once: None,
        into_guest_swap: false,
    }
}

/// A VM faulting back what the host swapped of it: it touches those pages again, and waits on
/// the host at every access to them (pages it never touches again cost it nothing there).
fn faults_back(vm: &VmObservation) -> bool {
    vm.host_swapped_mib > DEAD_BAND_MIB && vm.host_faults_per_s >= STALLED_FAULTS_PER_S
}

/// A VM whose working set is under half of what its guest uses: it holds memory it does not
/// touch.
fn is_quiet(vm: &VmObservation) -> bool {
    match (vm.working_set_mib, vm.guest_used_mib) {
        (Some(active), Some(used)) => active < used / 2,
        _ => false,
    }
}

/// What a VM can use: its active memory and room to grow, a quarter more (at least the growth
/// a paging guest asks for), and never less than what its guest uses and the slack a balloon
/// leaves it: a guest filling its memory is granted more before it must page.
fn demand_mib(vm: &VmObservation) -> u64 {
    let active = vm.active_mib();
    let uses = vm.guest_used_mib.unwrap_or(0) + guest_slack_mib(vm);
    (active + (active / 4).max(HUNGRY_GROWTH_MIB)).max(uses)
}

/// The part of a VM's reservation that its entitlement counts: all of it once the guest holds
/// it, and until then only what the guest holds and its slack. Reserved memory a guest never
/// touched is lent to the others, as ESX lends it; no balloon goes below the reservation, so
/// the VM gets it back as soon as it uses it (measured: reservation, an idle db reserving 700
/// MiB of 1.5 GiB held the two busy VMs' entitlements to 561 and 750 MiB while the host had
/// room for both).
fn reserved_in_use_mib(vm: &VmObservation) -> u64 {
    vm.reservation_mib
        .min(vm.max_mib)
        .min(held_mib(vm) + guest_slack_mib(vm))
}

/// Why a VM starts: it fits, or it has waited long enough on a host short of memory or room.
fn start_reason(
    vm: &str,
    r: &Round,
    overcommitted: bool,
    (room, room_needed): (u64, u64),
    reserved: u64,
) -> String {
    if overcommitted && room < room_needed {
        format!(
            "{vm} starts with {room} of the {room_needed} MiB the last VM took as it started, once it has waited {WAIT_LIMIT_S:.0} s"
        )
    } else if overcommitted && r.state >= FreeState::Soft {
        format!(
            "{vm} starts on a host short of memory ({}) once it has waited {WAIT_LIMIT_S:.0} s: the others' balloons and the host's swap make room as it boots",
            r.why_state
        )
    } else {
        format!(
            "{vm} fits: reservations with it {reserved} of {} MiB",
            r.s.host.budget_mib
        )
    }
}

/// A paced VM stays paced until it has settled, or PACE_LIMIT_S after its launch.
fn still_paced(vm: &VmObservation) -> bool {
    vm.launched_s_ago.is_some_and(|s| s < PACE_LIMIT_S)
        && vm.booted_s_ago.is_none_or(|s| s < PACED_SETTLE_S)
}

/// The share of a core a start short of room runs on: PACE_PERCENT in proportion to the room
/// it has of what the last start took (measured: vdi, d8 paced to a quarter of a core with 151
/// of the 284 MiB d7 took still wrote faster than KSM merged, and the host swapped 59 MiB),
/// never below PACE_MIN_PERCENT.
fn pace_percent(room: u64, room_needed: u64) -> u32 {
    let scaled = (u64::from(PACE_PERCENT) * room / room_needed.max(1)).min(PACE_PERCENT.into());
    (scaled as u32).max(PACE_MIN_PERCENT)
}

/// What a VM waiting to start takes as its guest boots: its reservation, at least the guest
/// floor (its balloon takes the rest back while it boots).
fn boot_room_mib(p: &PendingVm) -> u64 {
    reservation::floor(Size::mib(p.reservation_mib))
        .as_mib()
        .min(p.memory_mib)
}

/// What a balloon leaves a guest beyond what it uses: an eighth of its boot size, at least
/// GUEST_SLACK_MIB.
fn guest_slack_mib(vm: &VmObservation) -> u64 {
    GUEST_SLACK_MIB.max(vm.memory_mib / 8)
}

impl Esx {
    /// Reservations must fit. On an overcommitted host VMs also start one at a time, each once
    /// the one before has booted and run a few seconds, and only while free memory is high: a
    /// booting guest touches memory before its balloon driver loads, and its workload may fill
    /// memory faster than KSM merges it (measured: eight guests started at once filled a 1 GiB
    /// budget in 15 s; each started once the previous one's balloon driver answered, six
    /// reached the low state). Where most of a starting guest's pages merge, each also waits for
    /// as much room as the one before took of the host as it settled: what a guest writes before
    /// KSM merges it (measured: vdi, the eighth desktop started at 7% free and the host swapped
    /// 69 MiB as it booted). The first VM waiting has room for its boot held back from grants and
    /// reclaimed for it. In soft or hard, or short of that room, one starts once it has waited
    /// WAIT_LIMIT_S; so it does in low where the host's swap has room for all of its memory: a
    /// host whose VMs hold all of it stays low with every balloon at its floor, and a VM that
    /// waited for memory to be freed there never started (measured: many-small, s9 and s10
    /// waited 180 s each at 0.1% free and were refused).
    fn admit(&mut self, r: &Round, plan: &mut Plan) {
        let s = r.s;
        let host = &s.host;
        self.waiting_since
            .retain(|name, _| s.pending.iter().any(|p| &p.name == name));
        let room = host.free_mib().saturating_sub(r.kept_free);
        let room_needed = self
            .last_start
            .as_ref()
            .filter(|w| w.mostly_merged())
            .map_or(0, |w| w.growth_mib);
        let mut reserving: Vec<(&str, Size)> = s
            .vms
            .iter()
            .map(|v| (v.name.as_str(), Size::mib(v.reservation_mib)))
            .collect();
        let mut configured: u64 = s.vms.iter().map(|v| v.memory_mib).sum();
        let mut settling = s
            .vms
            .iter()
            .find(|v| self.is_starting(v))
            .map(|v| v.name.clone());
        for p in &s.pending {
            let waited = s.at_s - *self.waiting_since.entry(p.name.clone()).or_insert(s.at_s);
            let overcommitted = configured + p.memory_mib > host.budget_mib;
            let with_it = reserving
                .iter()
                .copied()
                .chain([(p.name.as_str(), Size::mib(p.reservation_mib))]);
            let fits = reservation::fit(
                Size::mib(host.budget_mib),
                Size::mib(host.reserve_mib),
                with_it,
            );
            let waits = self.wait_reason(
                p,
                r,
                configured + p.memory_mib,
                settling.as_deref(),
                waited,
                (room, room_needed),
            );
            let (verdict, reason) = if let Err(e) = &fits {
                (
                    Admission::Refuse,
                    format!("{}'s reservation does not fit: {e}", p.name),
                )
            } else if let Some(why) = waits {
                (Admission::Wait, why)
            } else {
                reserving.push((p.name.as_str(), Size::mib(p.reservation_mib)));
                configured += p.memory_mib;
                settling = Some(p.name.clone());
                if overcommitted {
                    self.watch_start(&p.name, host);
                }
                let reserved = fits.map_or(0, Size::as_mib);
                let why = start_reason(&p.name, r, overcommitted, (room, room_needed), reserved);
                if overcommitted && room < room_needed {
                    self.paced = Some(Paced {
                        vm: p.name.clone(),
                        percent: pace_percent(room, room_needed),
                        why: why.clone(),
                    });
                }
                (Admission::Start, why)
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

    /// Why `p`, whose reservation fits, must wait, if it must: `configured` is what all VMs are
    /// configured with once it runs, `settling` the VM still starting, `room` the free memory
    /// beyond what is kept free and the room the last start took.
    fn wait_reason(
        &self,
        p: &PendingVm,
        r: &Round,
        configured: u64,
        settling: Option<&str>,
        waited: f64,
        (room, room_needed): (u64, u64),
    ) -> Option<String> {
        let (state, why_state, budget) = (r.state, r.why_state.as_str(), r.s.host.budget_mib);
        let overcommitted = configured > budget;
        if state >= FreeState::Low {
            let host = &r.s.host;
            let swap_free = host.swap_total_mib.saturating_sub(host.swap_used_mib);
            if swap_free < p.memory_mib {
                return Some(format!(
                    "{} waits: {why_state}; the host's swap has {swap_free} MiB free, less than its {} MiB: it starts once memory is freed",
                    p.name, p.memory_mib
                ));
            }
            if waited < WAIT_LIMIT_S {
                return Some(format!(
                    "{} waits: {why_state}; it starts once it has waited {WAIT_LIMIT_S:.0} s, its boot swapped by the host if nothing is freed before",
                    p.name
                ));
            }
        }
        if let (true, Some(other)) = (overcommitted, settling) {
            return Some(format!(
                "{} waits for {other} to boot and settle: on an overcommitted host ({configured} of {budget} MiB configured) VMs start one at a time",
                p.name
            ));
        }
        if !overcommitted || waited >= WAIT_LIMIT_S {
            return None;
        }
        if state >= FreeState::Soft {
            return Some(format!("{} waits: {why_state}", p.name));
        }
        (room < room_needed).then(|| {
            let last = self.last_start.as_ref().map_or("", |w| w.vm.as_str());
            format!(
                "{} waits for room: {last} took {room_needed} MiB of the host as it started, before KSM merged it, and {room} MiB are free beyond the {} kept free",
                p.name, r.kept_free
            )
        })
    }

    /// A VM that settles after its boot, or whose start runs paced.
    fn is_starting(&self, vm: &VmObservation) -> bool {
        vm.is_settling()
            || self.paced.as_ref().is_some_and(|paced| paced.vm == vm.name) && still_paced(vm)
    }

    /// Holds a VM that started short of room to part of a core while it boots and settles:
    /// what it writes before KSM merges it then comes slower than KSM scans, instead of all in
    /// the seconds after its boot. Asked every round (the VM runs only a round or so after its
    /// admission, and a write that failed is tried again); lifted once it has settled.
    fn pace_start(&mut self, s: &Snapshot, plan: &mut Plan) {
        let Some(Paced {
            vm: name,
            percent,
            why,
        }) = self.paced.clone()
        else {
            return;
        };
        if s.pending.iter().any(|p| p.name == name) {
            return;
        }
        let Some(vm) = s.vms.iter().find(|v| v.name == name) else {
            self.paced = None;
            return;
        };
        let (percent, reason) = if still_paced(vm) {
            (
                Some(percent),
                format!(
                    "{name} runs on {percent}% of a core while it starts: it started with less room than the last start took, and KSM merges what it writes only as fast as it scans ({why})"
                ),
            )
        } else {
            self.paced = None;
            (
                None,
                format!("{name} has started: its CPU is its own again"),
            )
        };
        plan.push(Action::CpuLimit { vm: name, percent }, reason);
    }

    /// Watches a VM starting on an overcommitted host; the start before it is judged by what
    /// KSM merged of it.
    fn watch_start(&mut self, vm: &str, host: &HostObservation) {
        let watch = StartWatch {
            vm: vm.to_string(),
            used_then: host.used_mib,
            saved_then: host.ksm_saved_mib,
            growth_mib: 0,
            merged_mib: 0,
        };
        if let Some(last) = self.last_start.replace(watch) {
            self.starts_merged = Some(last.merged());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{snapshot, vm};

    fn ours() -> Esx {
        Esx::new(Settings::default())
    }

    /// A decision that puts a host limit on a VM.
    fn is_cap(d: &crate::plan::Decision) -> bool {
        matches!(
            d.action,
            Action::CgroupLimit {
                limit_mib: Some(_),
                ..
            }
        )
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

    /// The cgroup limits a plan lowers, per VM.
    fn caps(plan: &Plan) -> Vec<(String, u64)> {
        plan.decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::CgroupLimit {
                    vm,
                    limit_mib: Some(limit),
                } => Some((vm.clone(), *limit)),
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
    fn a_vm_that_pages_is_granted_free_memory_at_once_while_the_host_has_room() {
        // The two-VM config: web idles with 200 MiB of page cache in its 512; db, which may grow
        // to 768 MiB, pages with a 640 MiB working set. 472 MiB of 1024 are free.
        let mut web = vm("web", 512, 36);
        web.guest_resident_mib = Some(236);
        let mut db = vm("db", 512, 500);
        db.max_mib = 768;
        db.limit_mib = 768;
        db.guest_swap_out_rate = 28.0;
        db.working_set_mib = Some(640);
        let s = snapshot(0.0, 1024, 552, vec![web, db]);
        let plan = ours().decide(&s);
        let a = allocations(&plan);
        let db_target = a.iter().find(|(n, _)| n == "db").map(|(_, t)| *t);
        assert!(db_target.is_some_and(|t| t >= 640), "{plan:?}");
    }

    #[test]
    fn idle_vms_whose_freed_memory_is_back_on_the_host_are_left_alone() {
        // Between turns a VM holds little: what it freed went back through free page reporting.
        // Its balloon stays where it is while the host has room, ready for its next turn.
        let mut resting = vm("resting", 1024, 60);
        resting.host_rss_mib = 140;
        let s = snapshot(0.0, 1536, 900, vec![resting, vm("busy", 1024, 700)]);
        let a = allocations(&ours().decide(&s));
        assert!(!a.iter().any(|(n, _)| n == "resting"), "{a:?}");
    }

    #[test]
    fn short_of_memory_a_balloon_still_leaves_free_memory_already_back_on_the_host() {
        // Two turns overlap (soft); c idles with 975 MiB allocated and 60 held: ballooning it
        // frees nothing now and would make it wait for a grant on its turn.
        let mut c = vm("c", 975, 60);
        c.host_rss_mib = 140;
        let s = snapshot(
            0.0,
            1536,
            1490,
            vec![c, vm("a", 1024, 700), vm("b", 1024, 700)],
        );
        let a = allocations(&ours().decide(&s));
        assert!(!a.iter().any(|(n, _)| n == "c"), "{a:?}");
    }

    #[test]
    fn a_guest_filling_its_memory_is_granted_more_before_it_pages() {
        // Its turn began: 700 of its 742 MiB in use and rising, no paging yet, the host has room.
        let mut filling = vm("filling", 742, 700);
        filling.working_set_mib = Some(500);
        let s = snapshot(0.0, 2048, 900, vec![filling, vm("idle", 512, 60)]);
        let a = allocations(&ours().decide(&s));
        let target = a.iter().find(|(n, _)| n == "filling").map(|(_, t)| *t);
        assert!(target.is_some_and(|t| t >= 700 + 128), "{a:?}");
    }

    #[test]
    fn a_guest_whose_use_rises_as_its_balloon_inflates_is_not_granted_it_back() {
        let squeezed = |allocation, used| {
            let mut v = vm("squeezed", allocation, used);
            v.working_set_mib = Some(170);
            v.host_rss_mib = allocation + 60;
            v
        };
        let mut p = ours();
        // Soft: the idle VM's balloon comes down.
        let a = allocations(&p.decide(&snapshot(
            0.0,
            1536,
            1480,
            vec![squeezed(612, 200), vm("busy", 1024, 1000)],
        )));
        let lowered = a.iter().find(|(n, _)| n == "squeezed").map(|(_, t)| *t);
        assert!(lowered.is_some_and(|t| t < 612), "{a:?}");
        // A round later the host has room again and the guest, reclaiming, uses 40 MiB more.
        let a = allocations(&p.decide(&snapshot(
            1.5,
            1536,
            1000,
            vec![squeezed(lowered.unwrap(), 240), vm("busy", 1024, 1000)],
        )));
        // At most what it uses and a balloon's slack; not all it may have.
        assert!(
            !a.iter().any(|(n, t)| n == "squeezed" && *t > 240 + 128),
            "{a:?}"
        );
    }

    #[test]
    fn a_guest_whose_use_rises_is_granted_its_entitlement_at_once() {
        let rising = |used| {
            let mut v = vm("rising", 722, used);
            v.working_set_mib = Some(used);
            v
        };
        let at = |at_s, used| snapshot(at_s, 2048, 900, vec![rising(used), vm("idle", 512, 60)]);
        let mut p = ours();
        p.decide(&at(0.0, 550));
        let a = allocations(&p.decide(&at(1.0, 620)));
        let target = a.iter().find(|(n, _)| n == "rising").map(|(_, t)| *t);
        // Room for all of its 1024 MiB: no step-by-step grants trailing its use.
        assert_eq!(target, Some(1024), "{a:?}");
        // A guest whose use ticks up far below its allocation is given nothing.
        let mut p = ours();
        p.decide(&at(0.0, 40));
        let a = allocations(&p.decide(&at(1.0, 70)));
        assert!(!a.iter().any(|(n, _)| n == "rising"), "{a:?}");
    }

    #[test]
    fn ahead_of_need_a_vm_keeps_what_it_used_within_the_last_two_minutes() {
        // Its turn is over: it used 750 MiB, now 60; the freed pages are still on the host.
        let between_turns = |used| {
            let mut v = vm("turns", 1024, used);
            v.guest_resident_mib = Some(used + 400);
            v
        };
        let at = |at_s, used| {
            let others = vm("busy", 1024, 700);
            snapshot(at_s, 1536, 1200, vec![between_turns(used), others])
        };
        let mut p = ours();
        p.decide(&at(0.0, 750));
        let taken_below = |plan: &Plan| {
            allocations(plan)
                .iter()
                .filter(|(n, _)| n == "turns")
                .map(|(_, t)| *t)
                .min()
        };
        let plan = p.decide(&at(60.0, 60));
        assert!(
            taken_below(&plan).is_none_or(|t| t >= 750 + 128),
            "a minute after its turn: {plan:?}"
        );
        let plan = p.decide(&at(200.0, 60));
        assert!(
            taken_below(&plan).is_some_and(|t| t < 750),
            "idle for minutes, its free memory is taken ahead of need: {plan:?}"
        );
    }

    #[test]
    fn ahead_of_need_a_file_server_keeps_the_cache_it_served_reads_from() {
        // It uses 300 MiB and holds 950 with its cache; it served reads from all of it (its
        // working set), then paused between two runs of its clients.
        let server = |working_set| {
            let mut v = vm("server", 1024, 300);
            v.guest_resident_mib = Some(950);
            v.working_set_mib = Some(working_set);
            v
        };
        let at = |at_s, working_set| {
            snapshot(
                at_s,
                1536,
                1100,
                vec![server(working_set), vm("other", 512, 100)],
            )
        };
        let server_target = |plan: &Plan| {
            allocations(plan)
                .iter()
                .find(|(n, _)| n == "server")
                .map(|(_, t)| *t)
        };
        let mut p = ours();
        p.decide(&at(0.0, 950));
        let plan = p.decide(&at(30.0, 300));
        assert!(
            server_target(&plan).is_none_or(|t| t >= 950),
            "its cache is taken seconds after it served from it: {plan:?}"
        );
        let plan = p.decide(&at(200.0, 300));
        assert!(
            server_target(&plan).is_some_and(|t| t < 950),
            "idle for minutes, its cache is taken ahead of need: {plan:?}"
        );
    }

    #[test]
    fn ahead_of_need_only_page_cache_is_taken() {
        // High state: cache holds 400 MiB of its 1024 beyond the 50 it uses.
        let mut cache = vm("cache", 1024, 50);
        cache.guest_resident_mib = Some(450);
        let mut anon = vm("anon", 1024, 450);
        anon.guest_resident_mib = Some(450);
        let s = snapshot(0.0, 1536, 1100, vec![cache, anon, vm("needy", 1024, 100)]);
        let plan = ours().decide(&s);
        let a = allocations(&plan);
        let target = |name: &str| a.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
        assert!(target("cache").is_some_and(|t| t < 1024 - 200), "{plan:?}");
        // The anonymous VM's balloon never goes below what its guest uses.
        assert!(target("anon").is_none_or(|t| t >= 450), "{plan:?}");
        assert!(plan
            .decisions
            .iter()
            .any(|d| d.reason.contains("ahead of need")));
    }

    #[test]
    fn a_guest_reading_again_the_cache_taken_ahead_of_need_gets_it_back_and_keeps_it() {
        // High state; `busy` uses its memory. The other two hold 650 MiB of page cache beyond
        // the 50 MiB they use and report their free pages to the host: `cache` re-reads its
        // cache from memory, `stream` reads its disk at 30 MiB/s all along.
        let guest = |name: &str, allocation: u64, read_rate: f64| {
            let mut v = vm(name, allocation, 50);
            v.guest_resident_mib = Some(allocation.min(700));
            v.host_rss_mib = allocation.min(700) + 60;
            v.disk_read_rate = read_rate;
            v
        };
        let target = |plan: &Plan, name: &str| {
            allocations(plan)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
        };
        let round = |esx: &mut Esx, at_s: f64, used: u64, cache: (u64, f64), stream: (u64, f64)| {
            esx.decide(&snapshot(
                at_s,
                2048,
                used,
                vec![
                    guest("cache", cache.0, cache.1),
                    guest("stream", stream.0, stream.1),
                    vm("busy", 1024, 900),
                ],
            ))
        };
        let mut esx = ours();
        // Free pages go first, then a step of cache.
        let plan = round(&mut esx, 0.0, 1100, (1024, 0.0), (1024, 30.0));
        assert_eq!(target(&plan, "cache"), Some(700), "{plan:?}");
        assert_eq!(target(&plan, "stream"), Some(700), "{plan:?}");
        let plan = round(&mut esx, 2.0, 1100, (700, 0.0), (700, 30.0));
        let cache_to = target(&plan, "cache").expect("a step of cache ahead of need");
        let stream_to = target(&plan, "stream").expect("a step of cache ahead of need");
        assert!(cache_to < 700 && stream_to < 700, "{plan:?}");

        // `cache` reads again what the step took, and gets back what it held and a balloon's
        // slack (not the free pages it had); `stream` reads no more than before.
        let plan = round(&mut esx, 5.0, 1000, (cache_to, 25.0), (stream_to, 30.0));
        assert_eq!(target(&plan, "cache"), Some(700 + 128), "{plan:?}");
        assert!(
            target(&plan, "stream").is_none_or(|t| t <= stream_to),
            "{plan:?}"
        );
        assert!(plan
            .decisions
            .iter()
            .any(|d| d.reason.contains("read again from its disks (25 MiB/s)")));

        // Given back, it re-reads from memory, and no step takes its cache ahead of need.
        let plan = round(&mut esx, 60.0, 1100, (828, 0.0), (stream_to, 30.0));
        assert_eq!(target(&plan, "cache"), None, "{plan:?}");

        // Once the host is short its cache is taken like any other.
        let plan = round(&mut esx, 70.0, 1990, (828, 0.0), (stream_to, 30.0));
        assert!(target(&plan, "cache").is_some_and(|t| t < 828), "{plan:?}");
    }

    /// Soft: two VMs hold 450 MiB of heap each they no longer touch, the third needs memory.
    fn two_vms_owe_anonymous_memory() -> Snapshot {
        let idle = |name: &str| {
            let mut v = vm(name, 1024, 450);
            v.host_rss_mib = 510;
            v
        };
        let mut needy = vm("needy", 1024, 900);
        needy.shares = 2000;
        needy.host_rss_mib = 960;
        snapshot(0.0, 1536, 1490, vec![idle("vm1"), idle("vm2"), needy])
    }

    #[test]
    fn anonymous_memory_owed_is_offloaded_by_the_host_not_ballooned_into_guest_swap() {
        let s = two_vms_owe_anonymous_memory();
        let mut p = ours();
        let plan = p.decide(&s);
        for (n, t) in allocations(&plan) {
            assert!(
                n == "needy" || t >= 450,
                "{n} ballooned to {t} into its swap: {plan:?}"
            );
        }
        let limits: Vec<_> = plan
            .decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::CgroupLimit {
                    vm,
                    limit_mib: Some(l),
                } => Some((vm.clone(), *l, d.reason.clone())),
                _ => None,
            })
            .collect();
        // 46 MiB free, 92 at the high threshold: the host takes what it is short of, from the
        // VMs with the fewest shares per MiB, never the needy one with twice their shares.
        let taken: u64 = limits.iter().map(|(_, l, _)| 510 - l).sum();
        assert!((16..=92).contains(&taken), "{limits:?}");
        assert!(
            limits
                .iter()
                .all(|(n, _, why)| n != "needy" && why.contains("anonymous")),
            "{limits:?}"
        );
        assert!(plan
            .decisions
            .iter()
            .any(|d| d.action == Action::Zswap { enabled: true }));
        // While the host's tasks stall for memory, the caps hold instead of going lower.
        let mut s = s.clone();
        s.host.psi_some_avg10 = 30.0;
        let held = p.decide(&s);
        assert!(
            !held
                .decisions
                .iter()
                .any(|d| matches!(d.action, Action::CgroupLimit { .. })),
            "{held:?}"
        );
    }

    #[test]
    fn anonymous_memory_the_host_swap_has_no_room_for_goes_to_quiet_guests_swap() {
        // Two quiet VMs hold little more than their guests use, far above their entitlements.
        let quiet = |allocations: [u64; 2]| {
            let mut s = two_vms_owe_anonymous_memory();
            for (v, a) in s.vms.iter_mut().zip(allocations) {
                (v.allocation_mib, v.target_mib) = (a, a);
                v.guest_used_mib = Some(a - 10);
                v.guest_resident_mib = Some(a - 10);
                v.guest_available_mib = Some(10);
                v.host_rss_mib = a + 60;
                v.working_set_mib = Some(40);
            }
            s
        };
        let below_use = |s: &Snapshot, plan: &Plan| -> Vec<String> {
            let used = |name: &str| s.vms.iter().find(|v| v.name == name)?.guest_used_mib;
            allocations(plan)
                .into_iter()
                .filter(|(n, t)| n != "needy" && used(n).is_some_and(|u| *t < u))
                .map(|(n, _)| n)
                .collect()
        };
        // With room in the host's swap, their anonymous memory goes there, compressed.
        let roomy = quiet([460, 460]);
        let plan = ours().decide(&roomy);
        assert!(below_use(&roomy, &plan).is_empty(), "{plan:?}");
        assert!(!caps(&plan).is_empty(), "{plan:?}");
        // With 60 MiB free in it, their balloons take it into their guests' swap instead, and
        // the host caps no VM.
        let mut full = roomy.clone();
        full.host.swap_used_mib = 964;
        let plan = ours().decide(&full);
        assert_eq!(below_use(&full, &plan), ["vm1", "vm2"], "{plan:?}");
        assert!(caps(&plan).is_empty(), "{plan:?}");
        assert!(
            plan.decisions
                .iter()
                .filter(|d| matches!(&d.action, Action::Allocate { vm, .. } if vm != "needy"))
                .all(|d| d.reason.contains("its own disk")),
            "{plan:?}"
        );
        // Room for the debts of vm1 (230 MiB) and the busy needy VM (69) and a step of the
        // caps: vm2, which owes more, goes to its guest's swap; vm1's is left to the host.
        let mut part = quiet([400, 460]);
        part.host.swap_used_mib = 1024 - OFFLOAD_STEP_MIB - 300;
        let plan = ours().decide(&part);
        assert_eq!(below_use(&part, &plan), ["vm2"], "{plan:?}");
        assert!(caps(&plan).iter().all(|(n, _)| n != "vm2"), "{plan:?}");
        // What the host swapped of a VM already takes no more room.
        let mut swapped = full.clone();
        for v in &mut swapped.vms[..2] {
            v.host_swapped_mib = 400;
        }
        let plan = ours().decide(&swapped);
        assert!(below_use(&swapped, &plan).is_empty(), "{plan:?}");
        // A busy VM is never ballooned below what its guest uses: that would page it.
        let mut busy = full.clone();
        for v in &mut busy.vms[..2] {
            v.working_set_mib = v.guest_used_mib;
        }
        let plan = ours().decide(&busy);
        assert!(below_use(&busy, &plan).is_empty(), "{plan:?}");
        // A host without swap has no room at all.
        let mut no_swap = roomy.clone();
        (no_swap.host.swap_total_mib, no_swap.host.swap_used_mib) = (0, 0);
        let plan = ours().decide(&no_swap);
        assert_eq!(below_use(&no_swap, &plan), ["vm1", "vm2"], "{plan:?}");
    }

    #[test]
    fn a_vm_stalled_at_its_host_limit_is_let_go_and_not_capped_as_low_while_busy() {
        let mut s = two_vms_owe_anonymous_memory();
        let mut p = ours();
        let capped = caps(&p.decide(&s));
        let &(_, cap) = capped
            .iter()
            .find(|(vm, _)| vm == "vm1")
            .expect("vm1 capped");

        // vm1 touches all it holds again: the kernel reclaims nothing it does not need at
        // once, and on v1 its QEMU waits at the limit.
        s.at_s += 1.0;
        s.vms[0].cgroup_limit_mib = Some(cap);
        s.vms[0].stalled_at_host_limit = true;
        let plan = p.decide(&s);
        let lift = plan
            .decisions
            .iter()
            .find(|d| {
                d.action
                    == Action::CgroupLimit {
                        vm: "vm1".into(),
                        limit_mib: None,
                    }
            })
            .unwrap_or_else(|| panic!("vm1's limit is not lifted: {plan:?}"));
        assert!(lift.reason.contains("stalls at its host limit"), "{lift:?}");
        assert!(caps(&plan).iter().all(|(vm, _)| vm != "vm1"), "{plan:?}");

        // Let go, it runs; the host is still short, and vm1 busy: it is capped no lower
        // than a step above where it stalled.
        s.at_s += 1.0;
        s.vms[0].cgroup_limit_mib = None;
        s.vms[0].stalled_at_host_limit = false;
        let plan = p.decide(&s);
        assert!(
            caps(&plan)
                .iter()
                .all(|&(ref vm, limit)| vm != "vm1" || limit >= cap + OFFLOAD_STEP_MIB),
            "{cap} {plan:?}"
        );

        // Quiet again, it may be capped as low as before.
        s.at_s += 1.0;
        s.vms[0].working_set_mib = Some(50);
        let plan = p.decide(&s);
        assert!(
            caps(&plan)
                .iter()
                .any(|&(ref vm, limit)| vm == "vm1" && limit < cap + OFFLOAD_STEP_MIB),
            "{cap} {plan:?}"
        );
    }

    #[test]
    fn the_host_takes_no_merged_pages_from_a_vm() {
        // vdi: desktops whose memory KSM merged, on a host short of memory as another boots.
        let desktop = |name: &str| {
            let mut v = vm(name, 512, 300);
            v.host_rss_mib = 330;
            v.shared_mib = 310;
            v
        };
        let mut s = snapshot(
            0.0,
            1024,
            1000,
            (1..=7).map(|i| desktop(&format!("d{i}"))).collect(),
        );
        s.host.ksm_saved_mib = 1500;
        // d8 started last: nothing of it merged yet, 200 MiB of page cache beside what it uses.
        let mut last = vm("d8", 320, 100);
        (last.memory_mib, last.max_mib, last.limit_mib) = (512, 512, 512);
        last.guest_resident_mib = Some(300);
        last.working_set_mib = Some(300);
        last.host_rss_mib = 360;
        s.vms.push(last);
        let plan = ours().decide(&s);
        assert!(caps(&plan).iter().all(|(vm, _)| vm == "d8"), "{plan:?}");
        // Nor does d8 give page cache below its entitlement as if the desktops owed the host.
        let cache_floor = cache_floor_mib(&s.vms[7]);
        let d8: Vec<u64> = allocations(&plan)
            .into_iter()
            .filter_map(|(vm, target)| (vm == "d8").then_some(target))
            .collect();
        assert!(
            d8.iter().all(|&t| t > cache_floor),
            "{cache_floor} {d8:?} {plan:?}"
        );
    }

    #[test]
    fn the_host_swaps_nothing_while_balloons_can_still_free_page_cache() {
        // The seed: vm1 and vm2 hold 400 MiB of page cache each, vm3 uses 900 and is short.
        let cache = |name: &str| {
            let mut v = vm(name, 1024, 50);
            v.guest_resident_mib = Some(450);
            v.host_rss_mib = 510;
            v
        };
        let mut vm3 = vm("vm3", 1024, 900);
        vm3.shares = 2000;
        let s = snapshot(0.0, 1536, 1500, vec![cache("vm1"), cache("vm2"), vm3]);
        let plan = ours().decide(&s);
        assert!(!plan.decisions.iter().any(is_cap), "{plan:?}");
        assert!(
            allocations(&plan)
                .iter()
                .any(|(n, t)| n == "vm1" && *t < 1024),
            "{plan:?}"
        );
    }

    #[test]
    fn with_equal_shares_the_host_swaps_nothing_while_balloons_can_still_free_page_cache() {
        // CI's seed in soft: vm1 and vm2, near their entitlement (they just read their cache),
        // still hold 420 MiB of page cache each; vm3 stopped growing at 900 MiB, beyond its own.
        let cache = |name: &str| {
            let mut v = vm(name, 660, 200);
            v.guest_resident_mib = Some(620);
            v.working_set_mib = Some(600);
            v.host_rss_mib = 720;
            v
        };
        let mut s = snapshot(
            0.0,
            2600,
            2522,
            vec![cache("vm1"), cache("vm2"), vm("vm3", 1024, 900)],
        );
        s.host.other_used_mib = 200;
        let plan = ours().decide(&s);
        assert!(!plan.decisions.iter().any(is_cap), "{plan:?}");
        let below_entitlement: Vec<&str> = plan
            .decisions
            .iter()
            .filter(|d| d.reason.contains("page cache below its entitlement"))
            .filter_map(|d| match &d.action {
                Action::Allocate { vm, target_mib } if *target_mib < 652 => Some(vm.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(below_entitlement, ["vm1", "vm2"], "{plan:?}");
    }

    #[test]
    fn an_idle_vm_whose_freed_memory_is_back_on_the_host_gives_no_cache_for_another_s_debt() {
        // turns at an overlap: a and b touch what they use, the host is low, and c idles with
        // 60 MiB resident (138 MiB on the host with its kernel's own): its balloon would free
        // nothing and only make c wait for grants when its turn comes.
        let busy = |name: &str, active: u64| {
            let mut v = vm(name, 1024, 760);
            v.working_set_mib = Some(active);
            v.host_rss_mib = 1024 + 41;
            v.qemu_overhead_mib = Some(41);
            v
        };
        let mut c = vm("c", 1024, 60);
        c.host_rss_mib = 179;
        c.qemu_overhead_mib = Some(41);
        c.working_set_mib = Some(5);
        let mut s = snapshot(0.0, 1536, 1533, vec![busy("a", 550), busy("b", 740), c]);
        s.host.ksm_saved_mib = 180;
        let plan = ours().decide(&s);
        assert!(
            !allocations(&plan).iter().any(|(n, _)| n == "c"),
            "{plan:?}"
        );
        // The busy VMs give what they owe instead.
        assert!(
            allocations(&plan)
                .iter()
                .chain(&caps(&plan))
                .any(|(n, target)| n == "a" && *target < 1024),
            "{plan:?}"
        );
    }

    #[test]
    fn a_guest_that_is_filling_its_memory_keeps_it() {
        // Soft. "ramp" used 200 MiB a round ago and 400 now: its free memory is about to be used.
        let mut p = ours();
        let s = |used| {
            snapshot(
                0.0,
                1536,
                1490,
                vec![vm("ramp", 1024, used), vm("idle", 1024, 100)],
            )
        };
        p.decide(&s(200));
        let a = allocations(&p.decide(&s(400)));
        assert!(!a.iter().any(|(n, _)| n == "ramp"), "{a:?}");
        assert!(a.iter().any(|(n, _)| n == "idle"), "{a:?}");
    }

    #[test]
    fn a_guest_filling_its_memory_is_entitled_to_all_it_may_have_at_once() {
        // vm3 writes its memory: its use rose 450 -> 620 MiB of the 700 it has, while its
        // working-set estimate still says 600. The cache VMs use 60 MiB each.
        let mut p = ours();
        let s = |used| {
            let cache = |name: &str| {
                let mut v = vm(name, 400, 60);
                v.guest_resident_mib = Some(390);
                v.host_rss_mib = 450;
                v
            };
            let mut vm3 = vm("vm3", 700, used);
            vm3.shares = 2000;
            vm3.working_set_mib = Some(600);
            snapshot(0.0, 1536, 1100, vec![cache("vm1"), cache("vm2"), vm3])
        };
        p.decide(&s(450));
        let a = allocations(&p.decide(&s(620)));
        let vm3 = a.iter().find(|(n, _)| n == "vm3").map(|(_, t)| *t);
        assert!(vm3.is_some_and(|t| t >= 950), "{a:?}");
    }

    #[test]
    fn a_vm_whose_cgroup_is_not_its_own_is_never_capped() {
        let idle = |name: &str, swappable| {
            let mut v = vm(name, 1024, 450);
            v.host_rss_mib = 510;
            v.working_set_mib = Some(20);
            v.host_swappable = swappable;
            v
        };
        let mut needy = vm("needy", 1024, 900);
        needy.shares = 2000;
        let s = snapshot(
            0.0,
            1536,
            1516,
            vec![idle("shared", false), idle("own", true), needy],
        );
        let capped: Vec<String> = ours()
            .decide(&s)
            .decisions
            .iter()
            .filter_map(|d| match &d.action {
                Action::CgroupLimit { vm, .. } => Some(vm.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(capped, ["own"]);
    }

    #[test]
    fn in_hard_the_host_takes_what_is_owed_at_once_with_zswap_on_first() {
        let idle = |name: &str| {
            let mut v = vm(name, 1024, 450);
            v.host_rss_mib = 510;
            v.working_set_mib = Some(20);
            v
        };
        let mut needy = vm("needy", 1024, 900);
        needy.shares = 2000;
        // 1.3% free: hard, 72 MiB short of the high threshold (92 MiB free).
        let s = snapshot(0.0, 1536, 1516, vec![idle("vm1"), idle("vm2"), needy]);
        let plan = ours().decide(&s);
        let zswap = plan
            .decisions
            .iter()
            .position(|d| d.action == Action::Zswap { enabled: true });
        let first_cap = plan.decisions.iter().position(is_cap);
        assert!(
            zswap.is_some() && first_cap.is_some() && zswap < first_cap,
            "{plan:?}"
        );
        let taken: u64 = plan
            .decisions
            .iter()
            .filter_map(|d| match d.action {
                Action::CgroupLimit {
                    limit_mib: Some(l), ..
                } => Some(510 - l),
                _ => None,
            })
            .sum();
        assert!(taken >= 72, "{plan:?}");
        // The quiet VMs give all they owe, which covers the shortfall: the busy one keeps its.
        assert!(
            !plan
                .decisions
                .iter()
                .any(|d| matches!(&d.action, Action::CgroupLimit { vm, .. } if vm == "needy")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_vm_grows_past_its_boot_size_through_virtio_mem_up_to_its_limit() {
        let mut grower = vm("grower", 1024, 1000);
        grower.max_mib = 1536;
        grower.limit_mib = 1536;
        grower.guest_swap_out_rate = 20.0;
        grower.working_set_mib = Some(1200);
        let s = snapshot(0.0, 4096, 1300, vec![grower, vm("idle", 512, 50)]);
        let a = allocations(&ours().decide(&s));
        assert!(
            a.iter()
                .any(|(n, t)| n == "grower" && *t > 1024 && *t <= 1536),
            "{a:?}"
        );
    }

    #[test]
    fn ksm_scans_harder_while_a_vm_starts_on_a_host_it_could_fill() {
        let scan = |budget, other_used_mib, vms| {
            let mut s = snapshot(0.0, budget, 1000, vms);
            s.host.other_used_mib = other_used_mib;
            ours()
                .decide(&s)
                .decisions
                .into_iter()
                .find_map(|d| match d.action {
                    Action::Ksm { pages_to_scan, .. } => Some((pages_to_scan, d.reason)),
                    _ => None,
                })
                .unwrap()
        };
        let (calm, _) = scan(2000, 0, vec![vm("a", 512, 200)]);
        let mut starting = vm("b", 512, 200);
        starting.launched_s_ago = Some(8.0);
        let (busy, why) = scan(2000, 0, vec![vm("a", 512, 200), starting.clone()]);
        assert!(busy > calm, "{why}");
        assert!(why.contains("while b starts"), "{why}");
        // Where all the VMs may have fits the budget, no start can fill the host...
        let (roomy, why) = scan(4096, 0, vec![vm("a", 512, 200), starting.clone()]);
        assert_eq!(roomy, calm, "{why}");
        // ...unless the host's own processes use the rest.
        let (crowded, why) = scan(4096, 2500, vec![vm("a", 512, 200), starting]);
        assert_eq!(crowded, busy, "{why}");
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
        // Each holds 150 MiB of page cache beyond the 100 it uses.
        let vms = || {
            (0..4)
                .map(|i| {
                    let mut v = vm(&format!("d{i}"), 256, 100);
                    v.guest_resident_mib = Some(250);
                    v
                })
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
                _ => assert!(t >= GUEST_FLOOR.as_mib()),
            }
        }
    }

    #[test]
    fn quiet_vms_go_below_the_guest_floor_on_the_host_when_floors_do_not_fit() {
        // Ten 256 MiB VMs on 1 GiB at 1.4% free (hard): ten 128 MiB floors and 30 MiB of QEMU
        // each do not fit. Four hold 150 MiB they no longer touch, three page with a 200 MiB
        // working set, three read 60 MiB of cache.
        let small = |name: &str, allocation: u64, used: u64, active: u64| {
            let mut v = vm(name, allocation, used);
            v.memory_mib = 256;
            v.max_mib = 256;
            v.limit_mib = 256;
            v.qemu_overhead_mib = Some(30);
            v.host_rss_mib = allocation + 30;
            v.working_set_mib = Some(active);
            v
        };
        let mut vms = Vec::new();
        for i in 1..=4 {
            vms.push(small(&format!("quiet{i}"), 190, 150, 10));
        }
        for i in 1..=3 {
            let mut busy = small(&format!("busy{i}"), 140, 135, 200);
            busy.guest_swap_in_rate = 20.0;
            vms.push(busy);
        }
        for i in 1..=3 {
            vms.push(small(&format!("cache{i}"), 140, 60, 60));
        }
        let s = snapshot(0.0, 1024, 1010, vms);
        let mut p = ours();
        let round = p.entitle(&s);
        let entitled =
            |name: &str| round.entitled[s.vms.iter().position(|v| v.name == name).unwrap()];
        assert!(entitled("quiet1") < 64, "{:?}", round.entitled);
        assert!(
            entitled("busy1") > entitled("cache1"),
            "{:?}",
            round.entitled
        );
        let plan = p.decide(&s);
        let caps = caps(&plan);
        // The quiet VMs' cold pages go to the host, below the guest floor but never below QEMU's
        // own and what a guest's kernel touches (in hard, the working set is not spared); no
        // balloon goes below the floor, and the busy VMs keep all they hold.
        assert!(
            caps.iter()
                .any(|(vm, limit)| vm.starts_with("quiet") && *limit < 30 + 128),
            "{plan:?}"
        );
        assert!(
            caps.iter().all(|(_, limit)| *limit >= 30 + GUEST_HOT_MIB),
            "{plan:?}"
        );
        assert!(
            !caps.iter().any(|(vm, _)| vm.starts_with("busy")),
            "{plan:?}"
        );
        assert!(
            allocations(&plan).iter().all(|(_, t)| *t >= 128),
            "{plan:?}"
        );
    }

    #[test]
    fn reserved_memory_a_guest_never_touched_is_lent_to_a_vm_that_pages() {
        // db reserves 700 MiB and holds 100 (free page reporting gave the rest back), other
        // holds 600 of 750; app pages at 561 MiB with a 701 MiB working set while 150 MiB are
        // free.
        let mut db = vm("db", 1024, 60);
        db.reservation_mib = 700;
        db.guest_resident_mib = Some(100);
        db.host_rss_mib = 160;
        let mut app = vm("app", 561, 540);
        app.working_set_mib = Some(701);
        app.guest_swap_out_rate = 20.0;
        let mut other = vm("other", 750, 560);
        other.guest_resident_mib = Some(600);
        other.host_rss_mib = 620;
        let s = snapshot(0.0, 1536, 1386, vec![db, other, app]);
        let plan = ours().decide(&s);
        let granted = allocations(&plan);
        assert!(
            granted.iter().any(|(n, t)| n == "app" && *t >= 640),
            "{plan:?}"
        );
        // Its entitlement is an equal share with other of all db does not hold (without the
        // loan, of all beyond db's 700 MiB: under 300 MiB each).
        let entitled: u64 = plan
            .decisions
            .iter()
            .find(|d| matches!(&d.action, Action::Allocate { vm, .. } if vm == "app"))
            .and_then(|d| d.reason.split("entitled to ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(entitled >= 500, "{plan:?}");
        // Lent, not taken: where db holds 900 MiB of page cache, its balloon takes some of it
        // and never goes below its reservation.
        let mut s = s;
        s.vms[0].guest_resident_mib = Some(900);
        s.vms[0].host_rss_mib = 960;
        s.host.used_mib = 1500;
        let db: Vec<u64> = allocations(&ours().decide(&s))
            .into_iter()
            .filter_map(|(n, t)| (n == "db").then_some(t))
            .collect();
        assert!(
            !db.is_empty() && db.iter().all(|t| (700..1024).contains(t)),
            "{db:?}"
        );
    }

    #[test]
    fn a_paging_vm_is_granted_free_memory_beyond_its_entitlement() {
        // Two equal VMs on 2 GiB: each is entitled to about half, but b holds little of its
        // 1 GiB, so the host has room for all a pages for.
        let mut a = vm("a", 900, 880);
        a.working_set_mib = Some(1100);
        a.max_mib = 1400;
        a.limit_mib = 1400;
        a.guest_swap_in_rate = 30.0;
        let mut b = vm("b", 1024, 900);
        b.working_set_mib = Some(900);
        let s = snapshot(0.0, 2048, 1400, vec![a, b]);
        let plan = ours().decide(&s);
        let a_target = allocations(&plan)
            .into_iter()
            .find(|(n, _)| n == "a")
            .map(|(_, t)| t);
        assert!(a_target.is_some_and(|t| t > 1100), "{plan:?}");
        // Nothing is reclaimed from b for it: b is at its entitlement.
        assert!(allocations(&plan).iter().all(|(n, _)| n == "a"), "{plan:?}");
    }

    #[test]
    fn a_vm_paging_what_it_uses_is_lent_idle_memory_others_hold_beyond_their_entitlement() {
        // c pages at 647 MiB with 808 active; b holds 950 MiB it no longer touches. 136 MiB
        // are free, less than c needs.
        let snapshot_with = |used: u64, swap_total: u64| {
            let mut c = vm("c", 647, 600);
            c.working_set_mib = Some(808);
            c.guest_swap_in_rate = 20.0;
            let mut b = vm("b", 1024, 950);
            b.working_set_mib = Some(600);
            let mut s = snapshot(0.0, 1536, used, vec![vm("a", 300, 250), b, c]);
            s.host.swap_total_mib = swap_total;
            s
        };
        let given_to_c = |plan: &Plan| {
            allocations(plan)
                .into_iter()
                .find(|(n, _)| n == "c")
                .map_or(647, |(_, t)| t)
        };
        let plan = ours().decide(&snapshot_with(1400, 1024));
        let lent = plan
            .decisions
            .iter()
            .find(|d| d.action.vm() == Some("c"))
            .expect("c is given memory");
        // Up to its demand: its active memory and a quarter more.
        assert_eq!(
            lent.action,
            Action::Allocate {
                vm: "c".into(),
                target_mib: 1010
            },
            "{plan:?}"
        );
        assert!(
            lent.reason.contains("MiB lent from idle memory"),
            "{lent:?}"
        );
        // b gives it back: its host limit comes down in the same round (b's memory is
        // anonymous, so its balloon stays).
        assert!(
            caps(&plan)
                .iter()
                .any(|(vm, limit)| vm == "b" && *limit < 1024 + 60),
            "{plan:?}"
        );
        // In hard the host swaps for the loan: c is lent up to its entitlement, no further.
        let mut hard = snapshot_with(1510, 1024);
        let entitled = ours().entitle(&hard).entitled[2];
        let plan = ours().decide(&hard);
        assert!(entitled < 647 && given_to_c(&plan) == 647, "{plan:?}");
        let c = &mut hard.vms[2];
        (c.allocation_mib, c.target_mib, c.host_rss_mib) = (400, 400, 460);
        c.guest_used_mib = Some(380);
        let entitled = ours().entitle(&hard).entitled[2];
        assert!(entitled > 400 + DEAD_BAND_MIB, "{entitled}");
        let plan = ours().decide(&hard);
        assert_eq!(given_to_c(&plan), entitled, "{plan:?}");
        assert!(
            plan.decisions.iter().any(|d| d.reason.contains("lent")),
            "{plan:?}"
        );
        // b's cap comes down in the same round by at least what was lent.
        assert!(
            caps(&plan)
                .iter()
                .any(|(vm, limit)| vm == "b" && *limit + (entitled - 400) <= 1024 + 60),
            "{plan:?}"
        );
        // Nothing is lent where the host could not take it back: without swap.
        let plan = ours().decide(&snapshot_with(1400, 0));
        assert!(given_to_c(&plan) < 1010, "{plan:?}");
        assert!(
            plan.decisions.iter().all(|d| !d.reason.contains("lent")),
            "{plan:?}"
        );
    }

    #[test]
    fn in_hard_a_loan_is_what_the_host_holds_above_its_caps_floors_and_fits_its_swap() {
        // Ten small VMs on 1 GiB: their floors do not fit. b, quiet, holds 150 MiB of RAM with
        // 40 of QEMU's own; c pages at 128 MiB; the others' groups are not theirs to cap.
        let mut c = vm("c", 128, 120);
        c.working_set_mib = Some(256);
        c.guest_swap_in_rate = 20.0;
        let mut b = vm("b", 256, 200);
        b.working_set_mib = Some(10);
        b.host_rss_mib = 150;
        b.qemu_overhead_mib = Some(40);
        let mut vms = vec![b, c];
        vms.extend((0..8).map(|i| vm(&format!("q{i}"), 128, 60)));
        for (i, v) in vms.iter_mut().enumerate() {
            (v.memory_mib, v.max_mib, v.limit_mib) = (256, 256, 256);
            v.host_swappable = i < 2;
        }
        let s = snapshot(0.0, 1024, 1015, vms);
        let lendable = |s: &Snapshot| {
            let round = ours().entitle(s);
            assert!(round.state >= FreeState::Hard && !round.floors_fit);
            assert!(round.entitled[0] <= GUEST_HOT_MIB, "{:?}", round.entitled);
            lendable_mib(&round)
        };
        // What b's cap may take: all but its QEMU's own and the 64 MiB a guest touches all the
        // time, which is more than its entitlement.
        assert_eq!(lendable(&s), 150 - 40 - GUEST_HOT_MIB);
        // Not what c's balloon still lets out of a loan made a round before.
        let mut letting_out = s.clone();
        letting_out.vms[1].target_mib = 150;
        assert_eq!(lendable(&letting_out), 46 - 22);
        // No more than the host's swap has room for.
        let mut swap_full = s.clone();
        swap_full.host.swap_used_mib = 1000;
        assert_eq!(lendable(&swap_full), 24);
        // Nothing from a VM that stalls at its cap: the cap comes off.
        let mut stalled = s;
        stalled.vms[0].stalled_at_host_limit = true;
        assert_eq!(lendable(&stalled), 0);
    }

    #[test]
    fn memory_lent_is_not_lent_twice_nor_taken_from_a_vm_whose_use_grows() {
        let snapshot_with = |c_allocation: u64, b_used: u64| {
            let mut c = vm("c", c_allocation, 600);
            c.working_set_mib = Some(808);
            c.guest_swap_in_rate = 20.0;
            let mut b = vm("b", 1024, b_used);
            b.working_set_mib = Some(600);
            snapshot(0.0, 1536, 1400, vec![vm("a", 300, 250), b, c])
        };
        let mut ours = ours();
        let s = snapshot_with(647, 950);
        let round = ours.entitle(&s);
        let (first, c_entitled) = (lendable_mib(&round), round.entitled[2]);
        assert!(first > 363, "{first}");
        // A round later c holds 1010 MiB, 363 more, its loan not given back yet: only the rest
        // is lent.
        let s = snapshot_with(1010, 950);
        let round = ours.entitle(&s);
        assert_eq!(round.entitled[2], c_entitled);
        assert_eq!(
            lendable_mib(&round),
            first.saturating_sub(1010 - c_entitled.max(647))
        );
        // b's use grows: reclaim leaves it alone, so only a may lend.
        let s = snapshot_with(647, 1000);
        let round = ours.entitle(&s);
        let a_beyond = 250u64.saturating_sub(round.entitled[0].max(128));
        assert_eq!(lendable_mib(&round), a_beyond);
    }

    #[test]
    fn a_vm_paging_after_its_cache_was_ballooned_gets_no_more_than_its_entitlement() {
        // a uses 300 of 450 MiB and pages (its cache refaults): it is granted up to its
        // entitlement at most, never its whole memory back.
        let mut a = vm("a", 450, 300);
        a.working_set_mib = Some(900);
        a.guest_swap_in_rate = 30.0;
        let s = snapshot(0.0, 1536, 1000, vec![a, vm("b", 900, 850)]);
        let plan = ours().decide(&s);
        for d in &plan.decisions {
            if let Action::Allocate { vm, target_mib } = &d.action {
                let entitled: u64 = d
                    .reason
                    .split("entitled to ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(vm != "a" || *target_mib <= entitled.max(450), "{plan:?}");
            }
        }
    }

    #[test]
    fn a_vm_waiting_to_start_has_memory_freed_for_its_boot() {
        // 1 GiB, 10 MiB free (low): idle holds 400 MiB of page cache it does not use, busy
        // pages for more. n waits; memory is freed for it, and none of it is granted.
        let mut idle = vm("idle", 512, 60);
        idle.guest_resident_mib = Some(460);
        idle.working_set_mib = Some(40);
        let mut busy = vm("busy", 400, 390);
        busy.working_set_mib = Some(500);
        busy.guest_swap_out_rate = 10.0;
        let mut s = snapshot(0.0, 1024, 1014, vec![idle, busy]);
        s.pending = vec![pending("n", 256, 0)];
        let plan = ours().decide(&s);
        assert_eq!(admissions(&plan)[0].1, Admission::Wait);
        let moves = allocations(&plan);
        assert!(
            moves.iter().any(|(n, t)| n == "idle" && *t < 512),
            "{plan:?}"
        );
        assert!(moves.iter().all(|(n, _)| n != "busy"), "{plan:?}");

        // Once the room is free, n starts and the room is not granted away meanwhile.
        let mut s = snapshot(0.0, 1024, 860, s.vms.clone());
        s.pending = vec![pending("n", 256, 0)];
        let plan = ours().decide(&s);
        assert_eq!(admissions(&plan)[0].1, Admission::Start, "{plan:?}");
        let busy_gets = allocations(&plan)
            .into_iter()
            .find(|(n, _)| n == "busy")
            .map_or(0, |(_, t)| t - 400);
        assert!(busy_gets + 128 <= 164, "{plan:?}");
    }

    #[test]
    fn what_host_processes_use_is_not_entitled_to_any_vm() {
        // A real host: 24 GiB, 800 MiB free (soft), 20 GiB held by processes that are not VMs.
        // Two idle VMs hold 900 MiB of page cache each beside a busy one.
        let idle = |name| {
            let mut v = vm(name, 1024, 100);
            v.guest_resident_mib = Some(1000);
            v.working_set_mib = Some(60);
            v
        };
        let mut s = snapshot(
            0.0,
            24_576,
            23_776,
            vec![idle("a"), idle("b"), vm("busy", 1024, 900)],
        );
        s.host.other_used_mib = 20_500;
        let plan = ours().decide(&s);
        let moves = allocations(&plan);
        assert!(
            ["a", "b"]
                .iter()
                .all(|n| moves.iter().any(|(m, t)| m == n && *t < 1024)),
            "{plan:?}"
        );
        assert!(moves.iter().all(|(n, _)| n != "busy"), "{plan:?}");
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
    fn booting_guests_keep_their_balloons_while_the_host_has_room() {
        let mut booting = vm("b", 1024, 0);
        booting.guest_resident_mib = None;
        booting.guest_used_mib = None;
        booting.working_set_mib = None;
        let idle = vec![vm("a", 512, 100), vm("c", 512, 100), booting];
        let plan = ours().decide(&snapshot(0.0, 1536, 900, idle.clone()));
        assert!(allocations(&plan).iter().all(|(n, _)| n != "b"), "{plan:?}");
        // A limit below its boot size holds at once, room or not.
        let mut limited = idle.clone();
        limited[2].limit_mib = 512;
        let plan = ours().decide(&snapshot(0.0, 1536, 900, limited));
        assert!(
            allocations(&plan).contains(&("b".to_string(), 512)),
            "{plan:?}"
        );
        // Once the host is short, it goes to its entitlement like any other.
        let plan = ours().decide(&snapshot(0.0, 1536, 1500, idle));
        assert!(
            allocations(&plan)
                .iter()
                .any(|(n, t)| n == "b" && *t < 1024),
            "{plan:?}"
        );
    }

    #[test]
    fn ballooning_in_soft_never_swaps_and_compresses_only_on_an_overcommitted_host() {
        let zswap = |plan: &Plan| {
            plan.decisions.iter().find_map(|d| match d.action {
                Action::Zswap { enabled } => Some(enabled),
                _ => None,
            })
        };
        let s = snapshot(
            0.0,
            1536,
            1490,
            vec![vm("a", 1024, 100), vm("b", 1024, 100)],
        );
        let plan = ours().decide(&s);
        assert!(!plan.decisions.iter().any(is_cap), "{plan:?}");
        // 2048 of 1536 MiB configured: the kernel may swap before the next round.
        assert_eq!(zswap(&plan), Some(true), "{plan:?}");
        let small = |name| VmObservation {
            memory_mib: 700,
            max_mib: 700,
            limit_mib: 700,
            ..vm(name, 700, 100)
        };
        let s = snapshot(0.0, 1536, 1490, vec![small("a"), small("b")]);
        assert_eq!(zswap(&ours().decide(&s)), Some(false));
    }

    /// The seed as vm3 fills the host: vm1 and vm2 hold 900 MiB of page cache each and touch
    /// little of it, vm3 with twice their shares writes 900 MiB.
    fn seed_at_vm3_peak(at_s: f64, cache_held: u64) -> Snapshot {
        let cache = |name: &str| {
            let mut v = vm(name, 1024, 50);
            v.guest_resident_mib = Some(cache_held);
            v.host_rss_mib = cache_held + 60;
            v.working_set_mib = Some(20);
            v
        };
        let mut vm3 = vm("vm3", 1024, 900);
        vm3.shares = 2000;
        snapshot(at_s, 1536, 1534, vec![cache("vm1"), cache("vm2"), vm3])
    }

    #[test]
    fn the_host_takes_nothing_a_balloon_is_still_returning() {
        let mut p = ours();
        let first = p.decide(&seed_at_vm3_peak(0.0, 900));
        let targets = allocations(&first);
        assert!(
            targets.iter().any(|(n, t)| n == "vm1" && *t < 900),
            "{first:?}"
        );
        // A round later the guests are still dropping their cache: nothing is capped.
        let lowered = |at_s: f64| {
            let mut s = seed_at_vm3_peak(at_s, 900);
            for v in &mut s.vms {
                if let Some((_, t)) = targets.iter().find(|(n, _)| *n == v.name) {
                    v.target_mib = *t;
                }
            }
            s
        };
        let second = p.decide(&lowered(2.0));
        assert!(caps(&second).is_empty(), "{second:?}");
        // A balloon that has returned nothing long after it was lowered did not deliver: the
        // host takes it.
        let stuck = p.decide(&lowered(2.0 + BALLOON_DELIVERY_S + 1.0));
        let capped: Vec<String> = caps(&stuck).into_iter().map(|(n, _)| n).collect();
        assert!(capped.iter().any(|n| n == "vm1"), "{stuck:?}");
        assert!(!capped.iter().any(|n| n == "vm3"), "{stuck:?}");
    }

    #[test]
    fn cache_a_balloon_took_while_the_host_was_short_does_not_entitle_its_guest_again() {
        let mut p = ours();
        let plan = p.decide(&seed_at_vm3_peak(0.0, 900));
        assert!(
            allocations(&plan).iter().any(|(n, _)| n == "vm1"),
            "{plan:?}"
        );
        // vm1 reads its cache back from its disk: all it holds counts as touched.
        let reading = |at_s: f64, used_mib: u64| {
            let mut s = seed_at_vm3_peak(at_s, 400);
            s.host.used_mib = used_mib;
            s.vms[0].allocation_mib = 450;
            s.vms[0].target_mib = 450;
            s.vms[0].working_set_mib = Some(400);
            s
        };
        // Until the host has had room for a while, it is not granted the cache back, as a fresh
        // policy would.
        let mut with_free = reading(2.0, 1000);
        with_free.vms[0].allocation_mib = 120;
        with_free.vms[0].target_mib = 120;
        let granted = |plan: &Plan| {
            allocations(plan)
                .into_iter()
                .any(|(n, t)| n == "vm1" && t > 120)
        };
        assert!(granted(&ours().decide(&with_free)));
        assert!(!granted(&p.decide(&with_free)));
        let entitled = |p: &mut Esx, s: &Snapshot| p.entitle(s).entitled[0];
        let short = reading(2.0, 1534);
        let (squeezed, fresh) = (entitled(&mut p, &short), entitled(&mut ours(), &short));
        assert!(squeezed + 100 < fresh, "{squeezed} against {fresh}");
        // A round with room is not room yet: balloons and caps moving make it for a moment.
        let room = |at_s: f64| reading(at_s, 800);
        assert!(entitled(&mut p, &room(4.0)) + 100 < entitled(&mut ours(), &room(4.0)));
        // Once the host has had room for a while, what the guest reads counts again.
        let later = room(4.0 + ROOM_AGAIN_S);
        assert_eq!(entitled(&mut p, &later), entitled(&mut ours(), &later));
    }

    #[test]
    fn a_guest_ballooned_as_it_boots_keeps_its_claim() {
        let mut booting = vm("boot", 1024, 0);
        booting.guest_used_mib = None;
        booting.guest_resident_mib = None;
        booting.working_set_mib = None;
        let s = |at_s: f64| {
            let mut busy = vm("busy", 1024, 400);
            busy.shares = 2000;
            snapshot(at_s, 1536, 1530, vec![busy, booting.clone()])
        };
        let mut p = ours();
        let plan = p.decide(&s(0.0));
        assert!(
            allocations(&plan).iter().any(|(n, _)| n == "boot"),
            "{plan:?}"
        );
        assert_eq!(
            p.entitle(&s(1.0)).entitled[1],
            ours().entitle(&s(1.0)).entitled[1]
        );
    }

    #[test]
    fn page_cache_goes_before_a_busy_vm_waits_on_host_swap() {
        // The seed at vm3's peak: vm3 entitled to all it has, 59 MiB of it left in zswap; vm1
        // and vm2 at their entitlements, with cache above what they use.
        let cache = |name: &str| {
            let mut v = vm(name, 240, 60);
            v.guest_resident_mib = Some(232);
            v.host_rss_mib = 290;
            v.working_set_mib = Some(110);
            v
        };
        let mut vm3 = vm("vm3", 1024, 950);
        vm3.shares = 2000;
        vm3.host_rss_mib = 1003;
        vm3.working_set_mib = Some(958);
        let at_peak = |swapped: u64, faults_per_s: f64| {
            let mut vm3 = vm3.clone();
            vm3.host_swapped_mib = swapped;
            vm3.host_faults_per_s = faults_per_s;
            let mut s = snapshot(0.0, 1536, 1510, vec![cache("vm1"), cache("vm2"), vm3]);
            s.host.ksm_saved_mib = 200;
            s
        };
        let lowered = |plan: &Plan| {
            allocations(plan)
                .into_iter()
                .filter(|(n, t)| n != "vm3" && *t < 240)
                .count()
        };
        assert_eq!(lowered(&ours().decide(&at_peak(0, 0.0))), 0);
        // Pages it never faults back cost it nothing in swap.
        assert_eq!(lowered(&ours().decide(&at_peak(59, 0.0))), 0);
        let plan = ours().decide(&at_peak(59, 2000.0));
        assert_eq!(lowered(&plan), 2, "{plan:?}");
        assert!(caps(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn page_cache_goes_at_once_while_a_vm_with_more_shares_outgrows_free_memory() {
        // The seed as vm3 wakes: vm1 and vm2 read their cache, so it counts as active.
        let reader = |name: &str| {
            let mut v = vm(name, 500, 60);
            v.guest_resident_mib = Some(460);
            v.working_set_mib = Some(400);
            v
        };
        let waking = |at_s: f64, used_mib: u64, shares: u32| {
            let mut vm3 = vm("vm3", 1024, used_mib);
            vm3.shares = shares;
            vm3.host_rss_mib = used_mib + 60;
            snapshot(at_s, 1536, 1480, vec![reader("vm1"), reader("vm2"), vm3])
        };
        let vm1_target = |rising: bool, shares: u32| {
            let mut p = ours();
            p.entitle(&waking(0.0, if rising { 100 } else { 300 }, shares));
            let plan = p.decide(&waking(1.0, 300, shares));
            allocations(&plan)
                .into_iter()
                .find(|(n, _)| n == "vm1")
                .map_or(500, |(_, t)| t)
        };
        let (steady, rising) = (vm1_target(false, 2000), vm1_target(true, 2000));
        assert!(rising + 50 < steady, "{rising} against {steady}");
        // Beside a VM with as many shares, vm1's entitlement decides.
        assert!(vm1_target(true, 1000) > rising + 50);
    }

    #[test]
    fn behind_a_vm_that_outgrows_free_memory_balloons_give_their_cache_in_one_round() {
        // The seed as vm3 wakes, with vm1 and vm2 holding 640 MiB of cache above what they use:
        // a step of 256 MiB each, then a wait for it to deliver, trails vm3's rise.
        let reader = |name: &str| {
            let mut v = vm(name, 760, 60);
            v.guest_resident_mib = Some(700);
            v.working_set_mib = Some(400);
            v
        };
        let waking = |at_s: f64, used_mib: u64| {
            let mut vm3 = vm("vm3", 1024, used_mib);
            vm3.shares = 2000;
            vm3.host_rss_mib = used_mib + 60;
            snapshot(at_s, 2048, 1900, vec![reader("vm1"), reader("vm2"), vm3])
        };
        let mut p = ours();
        p.entitle(&waking(0.0, 100));
        let plan = p.decide(&waking(1.0, 300));
        let cache_floor = 60 + 1024 / 8;
        let targets: Vec<u64> = allocations(&plan)
            .into_iter()
            .filter(|(n, _)| n != "vm3")
            .map(|(_, t)| t)
            .collect();
        assert_eq!(targets, vec![cache_floor, cache_floor], "{plan:?}");
    }

    #[test]
    fn no_cache_is_granted_in_the_round_a_vm_outgrows_free_memory() {
        // The seed as vm3 wakes: vm1 and vm2 read back their cache, entitled to more than they
        // have; 601 MiB are free.
        let reader = |name: &str| {
            let mut v = vm(name, 488, 60);
            v.guest_resident_mib = Some(480);
            v.working_set_mib = Some(480);
            v
        };
        let waking = |at_s: f64, used_mib: u64| {
            let mut vm3 = vm("vm3", 1024, used_mib);
            vm3.shares = 2000;
            vm3.guest_resident_mib = Some(used_mib);
            vm3.host_rss_mib = used_mib + 60;
            snapshot(at_s, 1800, 1199, vec![reader("vm1"), reader("vm2"), vm3])
        };
        let mut p = ours();
        p.entitle(&waking(0.0, 100));
        let plan = p.decide(&waking(1.0, 300));
        let targets = allocations(&plan);
        for name in ["vm1", "vm2"] {
            let moves: Vec<u64> = targets
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .collect();
            assert!(moves.len() == 1 && moves[0] < 488, "{name}: {plan:?}");
        }
    }

    #[test]
    fn a_vm_that_rises_with_more_room_to_grow_than_is_free_needs_memory_at_once() {
        // The seed as vm3 wakes, 9% of the host free: vm1 and vm2 read their cache.
        let reader = |name: &str| {
            let mut v = vm(name, 570, 60);
            v.guest_resident_mib = Some(500);
            v.host_rss_mib = 570;
            v.working_set_mib = Some(500);
            v
        };
        let waking = |at_s: f64, used_mib: u64, budget_mib: u64| {
            let mut vm3 = vm("vm3", 1024, used_mib);
            vm3.shares = 2000;
            vm3.guest_resident_mib = Some(used_mib);
            vm3.host_rss_mib = used_mib + 60;
            vm3.working_set_mib = Some(used_mib);
            let used = 2 * 570 + used_mib + 60;
            snapshot(
                at_s,
                budget_mib,
                used,
                vec![reader("vm1"), reader("vm2"), vm3],
            )
        };
        let lowered = |before_mib: u64, budget_mib: u64| {
            let mut p = ours();
            p.decide(&waking(0.0, before_mib, budget_mib));
            let plan = p.decide(&waking(1.0, 200, budget_mib));
            let lowered = allocations(&plan)
                .into_iter()
                .filter(|(n, t)| n != "vm3" && *t < 570)
                .count();
            assert!(!allocations(&plan).iter().any(|(n, _)| n == "vm3"));
            lowered
        };
        assert_eq!(lowered(200, 1536), 0);
        assert_eq!(lowered(80, 1536), 2);
        // A rise the host has room for needs nothing.
        assert_eq!(lowered(80, 3072), 0);
        // Nor does a balloon letting memory out, which reads as use rising.
        let outgrows = |allocation_mib: u64| {
            let mut p = ours();
            p.entitle(&waking(0.0, 80, 1536));
            let mut s = waking(1.0, 200, 1536);
            s.vms[2].allocation_mib = allocation_mib;
            p.entitle(&s).outgrows[2]
        };
        assert!(outgrows(1024));
        assert!(!outgrows(600));
    }

    #[test]
    fn a_vm_filling_its_page_cache_faster_than_free_memory_lasts_is_ballooned_while_the_host_has_room(
    ) {
        // The seed as vm2's cache reader writes its file beside vm1 at its entitlement: vm2's
        // guest reports its use flat and its cache rising 150 MiB/s.
        let at = |at_s: f64, vm2_reported: u64, vm2_held: u64| {
            let mut vm1 = vm("vm1", 651, 120);
            vm1.guest_resident_mib = Some(640);
            vm1.working_set_mib = Some(600);
            vm1.host_rss_mib = 700;
            let mut vm2 = vm("vm2", 1024, 136);
            vm2.guest_resident_mib = Some(vm2_reported);
            vm2.working_set_mib = Some(vm2_reported);
            vm2.host_rss_mib = vm2_held + 60;
            snapshot(at_s, 1536, 700 + vm2_held + 60, vec![vm1, vm2])
        };
        let vm2_target = |reported_before: u64, reported: u64| {
            let mut p = ours();
            p.decide(&at(0.0, reported_before, 340));
            allocations(&p.decide(&at(1.0, reported, 490)))
                .into_iter()
                .find(|(n, _)| n == "vm2")
                .map_or(1024, |(_, t)| t)
        };
        // 275 MiB free, 214 beyond the soft margin: its balloon goes to its entitlement before
        // the host is short, and before vm2 holds that much.
        assert!(vm2_target(340, 490) < 720, "{}", vm2_target(340, 490));
        // The host holds 150 MiB more of it, but its guest has not reported what: that may be
        // the heap of a VM whose work began, which a balloon must not take.
        assert_eq!(vm2_target(340, 340), 1024);
        // Its cache as large as a round before: it keeps it while the host has room.
        assert_eq!(vm2_target(490, 490), 1024);
    }

    #[test]
    fn the_room_a_starting_vm_may_grow_into_is_not_granted_as_cache() {
        // The seed 25 s after vm3's boot: vm1 reads its cache back, vm3 holds 184 of its 1024
        // MiB and will write 900 MiB once it wakes; 486 MiB are free.
        let round = |vm3_booted_s_ago: f64, vm1_pages: bool| {
            let mut vm1 = vm("vm1", 389, 330);
            vm1.working_set_mib = Some(420);
            vm1.host_rss_mib = 449;
            if vm1_pages {
                vm1.guest_swap_out_rate = 8.0;
            }
            let mut vm3 = vm("vm3", 1024, 120);
            vm3.shares = 2000;
            vm3.host_rss_mib = 184;
            vm3.launched_s_ago = Some(vm3_booted_s_ago + 30.0);
            vm3.booted_s_ago = Some(vm3_booted_s_ago);
            let s = snapshot(10.0, 1536, 1050, vec![vm1, vm3]);
            let mut p = ours();
            p.paced = Some(Paced {
                vm: "vm3".into(),
                percent: 21,
                why: String::new(),
            });
            allocations(&p.decide(&s))
        };
        let granted = |plan: Vec<(String, u64)>| {
            plan.iter()
                .find(|(n, _)| n == "vm1")
                .map_or(0, |(_, t)| t.saturating_sub(389))
        };
        // Paced, vm3 still starts: vm1's cache waits, and nothing is reclaimed for it.
        assert_eq!(round(25.0, false), vec![]);
        // Once vm3 has started, vm1 gets its cache back from free memory.
        assert!(granted(round(45.0, false)) > 50);
        // A guest paging to its disk is granted while vm3 starts too.
        assert!(granted(round(25.0, true)) > 50);
    }

    #[test]
    fn quiet_vms_holding_anonymous_memory_are_offloaded_as_soon_as_a_vm_outgrows_free_memory() {
        // idle-anon as vm3 wakes: vm1 and vm2 hold 450 MiB of a heap they no longer touch, on a
        // host 15% free.
        let idle = |name: &str| {
            let mut v = vm(name, 1024, 450);
            v.guest_resident_mib = Some(570);
            v.host_rss_mib = 632;
            v.working_set_mib = Some(60);
            v
        };
        let waking = |at_s: f64, used_mib: u64| {
            let mut vm3 = vm("vm3", 1024, used_mib);
            vm3.shares = 2000;
            vm3.guest_resident_mib = Some(used_mib);
            vm3.host_rss_mib = used_mib + 60;
            // KSM merged 120 MiB of the guests' boot pages.
            snapshot(
                at_s,
                1536,
                1192 + used_mib,
                vec![idle("vm1"), idle("vm2"), vm3],
            )
        };
        let mut p = ours();
        assert!(caps(&p.decide(&waking(0.0, 120))).is_empty());
        // vm3 rises 60 MiB/s with 104 MiB free: the host is not short yet, and will be.
        let plan = p.decide(&waking(2.0, 240));
        assert_eq!(p.ladder.state, FreeState::High);
        let capped = caps(&plan);
        assert_eq!(
            capped.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["vm1", "vm2"]
        );
        let taken: u64 = capped.iter().map(|(_, limit)| 632 - limit).sum();
        assert!(taken > 2 * OFFLOAD_STEP_MIB, "{capped:?}");
    }

    #[test]
    fn where_two_vms_wait_on_swap_one_gets_its_whole_working_set_and_keeps_it() {
        // peaks: p1 and p2 touch 760 MiB each on 1.2 GiB, and both fault back what the host
        // swapped of them.
        let peak = |at_s: f64| {
            let thrashing = |name: &str| {
                let mut v = vm(name, 1024, 800);
                v.working_set_mib = Some(760);
                v.host_rss_mib = 560;
                v.host_swapped_mib = 300;
                v.host_faults_per_s = 2000.0;
                v
            };
            snapshot(at_s, 1229, 1200, vec![thrashing("p1"), thrashing("p2")])
        };
        let mut p = ours();
        let first = peak(0.0);
        let round = p.entitle(&first);
        assert!(round.by_shares[0] < 700 && round.by_shares[1] < 700);
        assert!(round.entitled[0] >= 760, "{:?}", round.entitled);
        assert!(round.entitled[1] < round.by_shares[1]);
        let plan = p.decide(&peak(1.0));
        let capped = caps(&plan);
        assert!(
            !capped.is_empty() && capped.iter().all(|(n, _)| n == "p2"),
            "{plan:?}"
        );
        assert!(
            plan.decisions.iter().any(|d| d
                .reason
                .contains("less what goes first to the whole working sets of p1")),
            "{plan:?}"
        );
        // p1 waits no more; it keeps its working set while p2 still waits.
        let mut s = peak(2.0);
        s.vms[0].host_faults_per_s = 0.0;
        s.vms[0].host_rss_mib = 860;
        let round = p.entitle(&s);
        assert!(round.entitled[0] >= 760, "{:?}", round.entitled);
        assert_eq!(round.given_whole, [true, false]);
        // Once it goes quiet, it keeps no more than its shares give it.
        s.at_s = 3.0;
        s.vms[0].working_set_mib = Some(100);
        let round = p.entitle(&s);
        assert_eq!(round.given_whole, [false, false]);
        assert_eq!(round.entitled, round.by_shares);
    }

    #[test]
    fn a_vm_paging_with_all_it_may_hold_gives_way_to_a_whole_working_set() {
        // many-small: s3 pages at its 256 MiB limit and had its whole set; s5 pages at 128 MiB;
        // the idle ones hold their floors. The host is in hard.
        let small = |name: &str, allocation: u64, used: u64| {
            let mut v = vm(name, allocation, used);
            (v.memory_mib, v.max_mib, v.limit_mib) = (256, 256, 256);
            v.qemu_overhead_mib = Some(30);
            v.host_rss_mib = allocation + 30;
            v
        };
        let paging = |mut v: VmObservation, rss: u64| {
            (v.guest_swap_in_rate, v.guest_swap_out_rate) = (5.0, 5.0);
            v.working_set_mib = Some(v.allocation_mib + HUNGRY_GROWTH_MIB);
            v.host_rss_mib = rss;
            v
        };
        let mut vms = vec![
            paging(small("s3", 256, 250), 290),
            paging(small("s5", 128, 124), 160),
        ];
        vms.extend((0..5).map(|i| small(&format!("idle{i}"), 128, 40)));
        let s = snapshot(0.0, 1024, 1010, vms);
        let mut p = ours();
        p.given_whole_sets.insert("s3".into());
        // It may be catching up on what it paged out before: it keeps its set a while.
        p.decide(&s);
        assert!(p.given_whole_sets.contains("s3"));
        let mut s = s.clone();
        s.at_s = THRASH_PATIENCE_S;
        let plan = p.decide(&s);
        assert_eq!(p.given_whole_sets, BTreeSet::from(["s5".to_string()]));
        assert!(
            allocations(&plan)
                .iter()
                .any(|(n, target)| n == "s3" && *target < 256),
            "{plan:?}"
        );
        assert!(!caps(&plan).iter().any(|(n, _)| n == "s3"), "{plan:?}");
        // Ballooned below its limit and paging still, it is not given its set back.
        let mut later = s.clone();
        later.at_s = THRASH_PATIENCE_S + 5.0;
        later.vms[0] = paging(small("s3", 160, 155), 190);
        later.host.used_mib = 700;
        let plan = p.decide(&later);
        assert_eq!(p.given_whole_sets, BTreeSet::from(["s5".to_string()]));
        let granted = allocations(&plan);
        assert!(
            granted.iter().any(|(n, t)| n == "s5" && *t > 128)
                && !granted.iter().any(|(n, t)| n == "s3" && *t > 160),
            "{plan:?}"
        );
        // A round where it pages less does not bring it back within reach.
        later.at_s = THRASH_PATIENCE_S + 8.0;
        later.vms[0].guest_swap_in_rate = 0.0;
        later.vms[0].guest_swap_out_rate = 0.0;
        p.decide(&later);
        later.at_s = THRASH_PATIENCE_S + 10.0;
        later.vms[0].guest_swap_in_rate = 5.0;
        later.vms[0].guest_swap_out_rate = 5.0;
        p.decide(&later);
        assert!(
            !p.given_whole_sets.contains("s3"),
            "{:?}",
            p.given_whole_sets
        );
        // Paging far below its limit does not renew that: once RECENT_USE_S has passed since it
        // thrashed near its limit, it is within reach again.
        later.at_s = THRASH_PATIENCE_S + RECENT_USE_S + 1.0;
        let plan = p.decide(&later);
        assert!(!p.is_beyond_reach(&later.vms[0], later.at_s), "{plan:?}");
        // Paging below its limit, s3 waits for what it lacks as before, and keeps its memory.
        let mut p = ours();
        let mut below = s.clone();
        below.vms[0] = paging(small("s3", 200, 195), 230);
        p.given_whole_sets.insert("s3".into());
        let plan = p.decide(&below);
        assert!(p.given_whole_sets.contains("s3"), "{plan:?}");
        assert!(!caps(&plan).iter().any(|(n, _)| n == "s3"), "{plan:?}");
        // With shares enough for all it holds, it gives nothing to others' whole sets.
        let mut p = ours();
        p.beyond_reach.insert("s3".into(), 0.0);
        let mut favoured = s.clone();
        favoured.vms[0] = paging(small("s3", 256, 250), 290);
        favoured.vms[0].shares = 4000;
        favoured.vms[2] = paging(small("s6", 128, 124), 160);
        let plan = p.decide(&favoured);
        assert!(!p.given_whole_sets.is_empty(), "{plan:?}");
        assert!(
            !allocations(&plan)
                .iter()
                .any(|(n, t)| n == "s3" && *t < 256),
            "{plan:?}"
        );
    }

    #[test]
    fn only_a_vm_that_keeps_thrashing_with_most_of_what_it_could_use_is_beyond_reach() {
        // many-small: s3 had its whole set and pages at 225 MiB of the 256 it could use, as it
        // does under any allocation; s5 pages at 128 MiB. The host is in hard.
        let paging = |name: &str, allocation: u64, (swap_in, swap_out): (f64, f64)| {
            let mut v = vm(name, allocation, allocation - 5);
            (v.memory_mib, v.max_mib, v.limit_mib) = (256, 256, 256);
            v.qemu_overhead_mib = Some(30);
            v.host_rss_mib = allocation + 30;
            (v.guest_swap_in_rate, v.guest_swap_out_rate) = (swap_in, swap_out);
            v.working_set_mib = Some(allocation + HUNGRY_GROWTH_MIB);
            v
        };
        let kept_after = |s3: VmObservation| {
            let mut vms = vec![s3, paging("s5", 128, (5.0, 5.0))];
            vms.extend((0..5).map(|i| vm(&format!("idle{i}"), 128, 40)));
            for v in &mut vms[2..] {
                (v.memory_mib, v.max_mib, v.limit_mib) = (256, 256, 256);
            }
            let mut p = ours();
            p.given_whole_sets.insert("s3".into());
            for at_s in [0.0, THRASH_PATIENCE_S - 5.0, THRASH_PATIENCE_S] {
                p.decide(&snapshot(at_s, 1024, 1010, vms.clone()));
            }
            p.given_whole_sets.contains("s3")
        };
        assert!(!kept_after(paging("s3", 225, (5.0, 5.0))), "it thrashes");
        assert!(
            kept_after(paging("s3", 225, (5.0, 0.0))),
            "it catches up on what it paged out before"
        );
        assert!(
            kept_after(paging("s3", 225, (0.0, 2.0))),
            "it may be making room for page cache"
        );
        assert!(
            kept_after(paging("s3", 180, (5.0, 5.0))),
            "far below what it could use, it waits for memory"
        );
        // So does a 2 GiB VM ballooned to 1 GiB, whose working set follows its allocation.
        let mut big = vm("big", 1024, 1000);
        (big.memory_mib, big.max_mib, big.limit_mib) = (2048, 2048, 2048);
        (big.guest_swap_in_rate, big.guest_swap_out_rate) = (5.0, 5.0);
        big.working_set_mib = Some(1024 + 256);
        let mut p = ours();
        for at_s in [0.0, THRASH_PATIENCE_S] {
            p.note_thrashing(&snapshot(at_s, 4096, 3000, vec![big.clone()]));
        }
        assert!(!p.is_beyond_reach(&big, THRASH_PATIENCE_S));
        big.allocation_mib = 1600;
        for at_s in [0.0, THRASH_PATIENCE_S] {
            p.note_thrashing(&snapshot(at_s, 4096, 3000, vec![big.clone()]));
        }
        assert!(p.is_beyond_reach(&big, THRASH_PATIENCE_S));
    }

    #[test]
    fn a_squeezed_vm_paging_to_its_disk_claims_its_working_set() {
        // many-small: s5's balloon took its page cache as its reading phase ended; in its
        // touching phase it pages at 128 MiB, of which it uses 68, beside s3 paging too.
        let paging = |name: &str, allocation: u64, used: u64| {
            let mut v = vm(name, allocation, used);
            (v.memory_mib, v.max_mib, v.limit_mib) = (256, 256, 256);
            (v.guest_swap_in_rate, v.guest_swap_out_rate) = (5.0, 5.0);
            v.working_set_mib = Some(allocation + HUNGRY_GROWTH_MIB);
            v
        };
        let mut vms = vec![paging("s5", 128, 68), paging("s3", 160, 155)];
        vms.extend((0..5).map(|i| vm(&format!("idle{i}"), 128, 40)));
        let mut p = ours();
        p.squeezed.insert("s5".into());
        let s = snapshot(0.0, 1024, 1010, vms);
        let round = p.entitle(&s);
        // The whole working sets' pool goes to it first: what it touches, not 68 MiB and a
        // balloon's slack.
        assert!(round.entitled[0] > 224, "{:?}", round.entitled);
        // Writing out slowly, it makes room for its balloon and claims what it uses.
        let mut s = s.clone();
        (s.vms[0].guest_swap_in_rate, s.vms[0].guest_swap_out_rate) = (0.0, 2.0);
        let round = p.entitle(&s);
        assert!(round.entitled[0] < 160, "{:?}", round.entitled);
    }

    #[test]
    fn a_guest_whose_balloon_is_still_inflating_is_not_filling() {
        let filling = |p: &mut Esx, at_s: f64, v: &VmObservation| {
            p.entitle(&snapshot(at_s, 1536, 1000, vec![v.clone()]))
                .filling[0]
        };
        // Its use rises to its allocation as it reclaims under the balloon.
        let mut a = vm("a", 375, 100);
        a.target_mib = 177;
        let mut p = ours();
        filling(&mut p, 0.0, &a);
        a.allocation_mib = 242;
        a.guest_used_mib = Some(200);
        assert!(!filling(&mut p, 10.0, &a));
        // Once it stands at its target, a guest using all of it and more than before fills.
        a.target_mib = 242;
        a.guest_used_mib = Some(100);
        let mut p = ours();
        filling(&mut p, 0.0, &a);
        a.guest_used_mib = Some(200);
        assert!(filling(&mut p, 1.0, &a));
    }

    #[test]
    fn a_guest_squeezed_to_its_cache_floor_is_not_filling() {
        // Its cache below the watermarks counts as used: its use reaches its allocation.
        let at = |at_s: f64, used_mib: u64, allocation_mib: u64| {
            let mut s = seed_at_vm3_peak(at_s, 190);
            s.vms[0].allocation_mib = allocation_mib;
            s.vms[0].target_mib = allocation_mib;
            s.vms[0].guest_used_mib = Some(used_mib);
            s
        };
        let at_floor = |at_s: f64, used_mib: u64| at(at_s, used_mib, 190);
        let filling = |p: &mut Esx, from_mib: u64| {
            p.entitle(&at_floor(20.0, from_mib));
            p.entitle(&at_floor(21.0, 180)).filling[0]
        };
        let squeezed = || {
            let mut p = ours();
            p.decide(&seed_at_vm3_peak(0.0, 900));
            assert!(p.squeezed.contains("vm1"));
            p
        };
        assert!(filling(&mut ours(), 100));
        let mut p = squeezed();
        assert!(!filling(&mut p, 100));
        // A rise of more than a balloon's slack in a round is memory of its own.
        assert!(p.squeezed.contains("vm1"));
        assert!(filling(&mut p, 20));
        assert!(!p.squeezed.contains("vm1"));
        // Not where a balloon let out as much, nor a rise seen while its balloon was just
        // lowered, a round later.
        let mut p = squeezed();
        p.entitle(&at_floor(20.0, 20));
        p.entitle(&at(21.0, 180, 400));
        assert!(p.squeezed.contains("vm1"));
        let mut p = squeezed();
        p.entitle(&at_floor(1.0, 20));
        p.entitle(&at_floor(2.0, 180));
        p.entitle(&at_floor(3.5, 180));
        assert!(p.squeezed.contains("vm1"));
    }

    #[test]
    fn what_was_noted_of_a_vm_that_is_gone_is_forgotten() {
        let mut p = ours();
        p.decide(&seed_at_vm3_peak(0.0, 900));
        assert!(p.squeezed.contains("vm1") && p.lowered_at.contains_key("vm1"));
        let mut s = seed_at_vm3_peak(1.0, 900);
        s.vms.remove(0);
        p.decide(&s);
        assert!(!p.squeezed.contains("vm1"));
        assert!(!p.lowered_at.contains_key("vm1"));
        assert!(!p.used_before.contains_key("vm1"));
        assert!(p.used_before.contains_key("vm2"));
    }

    #[test]
    fn a_busy_vm_that_owes_nothing_has_its_cap_raised_by_what_is_free() {
        let idle = |name: &str| {
            let mut v = vm(name, 300, 100);
            v.working_set_mib = Some(20);
            v
        };
        let mut busy = vm("busy", 1024, 900);
        busy.working_set_mib = Some(1000);
        busy.host_rss_mib = 858;
        busy.host_swapped_mib = 450;
        busy.cgroup_limit_mib = Some(858);
        let s = snapshot(0.0, 2048, 1576, vec![idle("a"), idle("b"), busy.clone()]);
        let mut p = ours();
        p.offloaded.insert("busy".into(), 858);
        let raised = caps(&p.decide(&s));
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].0, "busy");
        assert!((858 + 300..=858 + 450).contains(&raised[0].1), "{raised:?}");
        // Never past all the VM's memory, however long the host has room.
        for _ in 0..3 {
            p.decide(&s);
        }
        assert_eq!(p.offloaded.get("busy"), Some(&(858 + 450)));
        assert!(caps(&p.decide(&s)).is_empty());
        // A quiet VM's cap stays: what it lost costs it nothing until it wakes.
        busy.working_set_mib = Some(100);
        let s = snapshot(0.0, 2048, 1576, vec![idle("a"), idle("b"), busy]);
        let mut p = ours();
        p.offloaded.insert("busy".into(), 858);
        let plan = p.decide(&s);
        assert!(
            !plan
                .decisions
                .iter()
                .any(|d| matches!(d.action, Action::CgroupLimit { .. })),
            "{plan:?}"
        );
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
    fn a_vm_kept_waiting_by_a_short_host_starts_after_the_wait_limit_in_low_only_with_swap_for_it()
    {
        let short = |at_s, used| {
            let mut s = snapshot(at_s, 1000, used, vec![vm("a", 1024, 900)]);
            s.pending = vec![pending("b", 512, 0)];
            s.host.swap_used_mib = 600;
            s
        };
        let mut ours = ours();
        // 3% free: soft.
        assert_eq!(
            admissions(&ours.decide(&short(0.0, 970)))[0].1,
            Admission::Wait
        );
        assert_eq!(
            admissions(&ours.decide(&short(59.0, 970)))[0].1,
            Admission::Wait
        );
        // In low, with 424 MiB of swap free for its 512, it waits on, however long.
        let admits = admissions(&ours.decide(&short(61.0, 995)));
        assert_eq!(admits[0].1, Admission::Wait);
        assert!(
            admits[0]
                .2
                .contains("swap has 424 MiB free, less than its 512 MiB"),
            "{}",
            admits[0].2
        );
        let mut swap_for_it = short(61.5, 995);
        swap_for_it.host.swap_used_mib = 500;
        assert_eq!(
            admissions(&ours.decide(&swap_for_it))[0].1,
            Admission::Start
        );
        let admits = admissions(&ours.decide(&short(62.0, 975)));
        assert_eq!(admits[0].1, Admission::Start, "{admits:?}");
        assert!(
            admits[0].2.contains("once it has waited 60 s"),
            "{}",
            admits[0].2
        );
    }

    #[test]
    fn where_starting_guests_merge_the_next_waits_for_the_room_the_last_one_took() {
        let mut ours = ours();
        let last = b_waits_for_room(&mut ours);
        assert!(
            last[0].2.contains("waits for room: a took 262 MiB"),
            "{}",
            last[0].2
        );
        // After the wait limit it starts with the room there is, as on a host short of memory.
        let admits = admissions(&ours.decide(&room_round(62.0, 900, 200)));
        assert_eq!(admits[0].1, Admission::Start, "{admits:?}");
        assert!(
            admits[0].2.contains("once it has waited"),
            "{}",
            admits[0].2
        );
    }

    /// x runs; a boots in 5 s and takes 262 MiB of the host as it settles; KSM has saved
    /// `saved` MiB; b waits to start.
    fn room_round(at_s: f64, used: u64, saved: u64) -> Snapshot {
        let mut a = vm("a", 512, 300);
        a.launched_s_ago = Some(at_s);
        a.booted_s_ago = (at_s >= 5.0).then_some(at_s - 5.0);
        let mut s = snapshot(at_s, 1024, used, vec![vm("x", 300, 200), a]);
        s.host.ksm_saved_mib = saved;
        s.pending = vec![pending("b", 512, 0)];
        s
    }

    /// Starts a, then asks b to start for 60 s while the host has less room than a took;
    /// returns the last admissions.
    fn b_waits_for_room(ours: &mut Esx) -> Vec<(String, Admission, String)> {
        let (at_s, last) = b_asks_to_start(ours, 200);
        assert_eq!(last[0].1, Admission::Wait, "at {at_s} s: {last:?}");
        last
    }

    /// Starts a, of which KSM merges `merged` MiB, then asks b to start every 2 s for 60 s
    /// while the host has less room than a took; returns when b started, or the last round,
    /// and that round's admissions.
    fn b_asks_to_start(ours: &mut Esx, merged: u64) -> (f64, Vec<(String, Admission, String)>) {
        let mut first = snapshot(0.0, 1024, 300, vec![vm("x", 300, 200)]);
        first.pending = vec![pending("a", 512, 0)];
        assert_eq!(admissions(&ours.decide(&first))[0].1, Admission::Start);
        let mut last = (0.0, Vec::new());
        for t in (1..=60).step_by(2).map(f64::from) {
            let used = match t {
                t if t <= 8.0 => 300 + (t * 300.0 / 8.0) as u64,
                t if t < 15.0 => 450,
                // The others grew meanwhile: 12% free, 84 MiB beyond what is kept free.
                _ => 900,
            };
            let saved = ((t * merged as f64 / 16.0) as u64).min(merged);
            last = (t, admissions(&ours.decide(&room_round(t, used, saved))));
            if last.1[0].1 == Admission::Start {
                break;
            }
        }
        last
    }

    #[test]
    fn where_starting_guests_merge_little_the_next_does_not_wait_for_room() {
        // idle-anon: KSM merged the guest's system pages, its heap is unique.
        let (at_s, admits) = b_asks_to_start(&mut ours(), 80);
        assert_eq!(admits[0].1, Admission::Start, "{admits:?}");
        assert!(at_s <= 15.0, "b started at {at_s} s: {admits:?}");
        assert!(!admits[0].2.contains("room"), "{}", admits[0].2);
    }

    #[test]
    fn a_start_short_of_room_runs_paced_until_it_has_settled() {
        let mut ours = ours();
        b_waits_for_room(&mut ours);
        ours.decide(&room_round(62.0, 900, 200));
        let mut with_b = |since: f64, booted_s_ago: Option<f64>| {
            let mut s = room_round(62.0 + since, 900, 200);
            s.pending = vec![pending("c", 512, 0)];
            let mut b = vm("b", 512, 100);
            b.launched_s_ago = Some(since);
            b.booted_s_ago = booted_s_ago;
            s.vms.push(b);
            ours.decide(&s)
        };
        let holds = |plan: &Plan| -> Vec<(Option<u32>, String)> {
            plan.decisions
                .iter()
                .filter_map(|d| match &d.action {
                    Action::CpuLimit { vm, percent } if vm == "b" => {
                        Some((*percent, d.reason.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let ksm = |plan: &Plan| {
            plan.decisions
                .iter()
                .find(|d| matches!(d.action, Action::Ksm { .. }))
                .map(|d| d.reason.clone())
                .unwrap()
        };
        // Held from its launch until 40 s after its boot, with KSM scanning as for a start,
        // and c waits for it.
        for (since, booted) in [(1.0, None), (60.0, Some(20.0)), (80.0, Some(39.0))] {
            let plan = with_b(since, booted);
            let held = holds(&plan);
            assert_eq!(held.len(), 1, "at {since} s: {plan:?}");
            // With a third of the room the last start took, the least share of a core.
            assert_eq!(held[0].0, Some(PACE_MIN_PERCENT));
            assert!(held[0].1.contains("84 of the 262 MiB"), "{}", held[0].1);
            assert!(ksm(&plan).contains("while b starts"), "{}", ksm(&plan));
            let waits = &admissions(&plan)[0];
            assert!(waits.2.contains("c waits for b to boot"), "{}", waits.2);
        }
        // Then let go, once.
        let plan = with_b(82.0, Some(41.0));
        assert_eq!(holds(&plan)[0].0, None, "{plan:?}");
        assert!(holds(&with_b(84.0, Some(43.0))).is_empty());
    }

    #[test]
    fn the_shorter_of_room_a_start_is_the_smaller_share_of_a_core_it_runs_on() {
        let shares: Vec<u32> = [(280, 284), (151, 284), (84, 262), (0, 284)]
            .into_iter()
            .map(|(room, needed)| pace_percent(room, needed))
            .collect();
        assert_eq!(shares, [24, 13, PACE_MIN_PERCENT, PACE_MIN_PERCENT]);
    }

    #[test]
    fn a_start_that_never_boots_is_let_go_after_the_pace_limit() {
        let mut ours = ours();
        b_waits_for_room(&mut ours);
        ours.decide(&room_round(62.0, 900, 200));
        let mut s = room_round(62.0 + PACE_LIMIT_S, 900, 200);
        s.pending.clear();
        let mut b = vm("b", 512, 100);
        b.launched_s_ago = Some(PACE_LIMIT_S);
        s.vms.push(b);
        let lifted = ours.decide(&s).decisions.into_iter().any(|d| {
            d.action
                == Action::CpuLimit {
                    vm: "b".into(),
                    percent: None,
                }
        });
        assert!(lifted);
    }

    /// Starts a, b and c one after the other, each taking 200 MiB of which KSM merges
    /// `merged`; returns KSM's scan rate while c boots.
    fn scan_while_the_third_starts(merged: u64) -> u64 {
        let mut ours = ours();
        let mut running = vec![vm("x", 300, 200)];
        let (mut at_s, mut used, mut saved) = (0.0, 300, 0);
        let mut rate = 0;
        for name in ["a", "b", "c"] {
            let mut s = snapshot(at_s, 1024, used, running.clone());
            s.host.ksm_saved_mib = saved;
            s.pending = vec![pending(name, 512, 0)];
            assert_eq!(
                admissions(&ours.decide(&s))[0].1,
                Admission::Start,
                "{name}"
            );
            running.push(vm(name, 200, 150));
            for since in 1..=12 {
                at_s += 1.0;
                let starting = running.last_mut().unwrap();
                starting.launched_s_ago = Some(since as f64);
                starting.booted_s_ago = (since >= 2).then_some(since as f64 - 2.0);
                used += if since <= 4 { 50 } else { 0 };
                if since == 8 {
                    used -= merged;
                    saved += merged;
                }
                let mut s = snapshot(at_s, 1024, used, running.clone());
                s.host.ksm_saved_mib = saved;
                let plan = ours.decide(&s);
                if name == "c" && since == 1 {
                    rate = plan
                        .decisions
                        .iter()
                        .find_map(|d| match d.action {
                            Action::Ksm {
                                pages_to_scan,
                                sleep_ms,
                                ..
                            } => Some(crate::sharing::scan_rate_mib_s(pages_to_scan, sleep_ms)),
                            _ => None,
                        })
                        .unwrap();
                }
            }
            running.last_mut().unwrap().booted_s_ago = Some(60.0);
        }
        rate
    }

    #[test]
    fn a_start_is_scanned_fast_unless_the_one_before_merged_nothing() {
        assert_eq!(scan_while_the_third_starts(150), 500);
        assert!(scan_while_the_third_starts(0) < 80);
    }

    #[test]
    fn in_low_a_vm_with_swap_for_it_starts_after_the_wait_limit() {
        let low = |at_s| {
            let mut s = snapshot(at_s, 1536, 1535, vec![vm("a", 1024, 1000)]);
            s.pending = vec![pending("n", 256, 0)];
            s
        };
        let mut ours = ours();
        let admits = admissions(&ours.decide(&low(0.0)));
        assert_eq!(admits[0].1, Admission::Wait);
        assert!(
            admits[0].2.contains("starts once it has waited 60 s"),
            "{}",
            admits[0].2
        );
        assert_eq!(admissions(&ours.decide(&low(59.0)))[0].1, Admission::Wait);
        assert_eq!(admissions(&ours.decide(&low(60.0)))[0].1, Admission::Start);
    }
}
