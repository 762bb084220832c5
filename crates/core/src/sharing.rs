//! Transparent page sharing: how hard KSM scans in each host state (scanning costs CPU that the
//! guests also want, so it is light while memory is plentiful and aggressive under pressure),
//! and which VMs share host frames with which.

use crate::ladder::FreeState;
use crate::plan::Action;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// MiB of each VM's memory on frames KSM merged: `mib[i][j]` (i ≠ j) is VM i's memory on
/// frames VM j maps too; `mib[i][i]` is VM i's memory on merged frames no other VM maps
/// (identical pages within the guest, e.g. zeroed ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharingMatrix {
    pub vms: Vec<String>,
    pub mib: Vec<Vec<f64>>,
    /// Distinct merged frames across all VMs, and the MiB they stand in for.
    pub frames: u64,
    pub saved_mib: f64,
}

/// Builds the matrix from each VM's merged frame numbers (one entry per page mapped).
pub fn matrix(vms: &[(String, Vec<u64>)]) -> SharingMatrix {
    const PAGE_MIB: f64 = 4096.0 / 1048576.0;
    let mut owners: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for (i, (_, frames)) in vms.iter().enumerate() {
        for &f in frames {
            owners.entry(f).or_default().insert(i);
        }
    }
    let n = vms.len();
    let mut mib = vec![vec![0.0; n]; n];
    for (i, (_, frames)) in vms.iter().enumerate() {
        for f in frames {
            let with = &owners[f];
            if with.len() == 1 {
                mib[i][i] += PAGE_MIB;
            }
            for &j in with.iter().filter(|&&j| j != i) {
                mib[i][j] += PAGE_MIB;
            }
        }
    }
    let pages: usize = vms.iter().map(|(_, f)| f.len()).sum();
    SharingMatrix {
        vms: vms.iter().map(|(name, _)| name.clone()).collect(),
        mib,
        frames: owners.len() as u64,
        saved_mib: pages.saturating_sub(owners.len()) as f64 * PAGE_MIB,
    }
}

/// The fastest KSM may scan in each state, MiB/s: the state says how much a merged page is
/// worth, and on a host short of memory it is worth more CPU.
pub fn max_scan_rate_mib_s(state: FreeState) -> f64 {
    match state {
        FreeState::High => 80.0,
        FreeState::Soft => 500.0,
        FreeState::Hard | FreeState::Low => 2000.0,
    }
}

/// Slowest scan: still finds identical pages that appear, at a cost ksmd hardly shows.
const MIN_SCAN_MIB_S: f64 = 4.0;
/// Where the scan starts, before it has merged anything.
const FIRST_SCAN_MIB_S: f64 = 20.0;
/// How long a rate runs before what it merged is weighed.
const WINDOW_S: f64 = 10.0;
/// Merged MiB per scanned MiB above which scanning faster pays, and below which it does not.
const WORTH_FASTER: f64 = 0.02;
const WORTH_SLOWER: f64 = 0.005;

/// KSM's scan rate, paced by what it merges: each window, the MiB it saved over the MiB it
/// scanned doubles the rate when merging pays and halves it when pages are unique (real heaps
/// and page cache), within the state's bounds. ksmd shares the cores with the guests.
#[derive(Debug, Clone, PartialEq)]
pub struct KsmPacer {
    rate_mib_s: f64,
    /// When the current window began, and KSM's saving then.
    window: Option<(f64, u64)>,
    /// What the last window yielded, merged over scanned.
    last_yield: Option<f64>,
}

impl Default for KsmPacer {
    fn default() -> Self {
        KsmPacer {
            rate_mib_s: FIRST_SCAN_MIB_S,
            window: None,
            last_yield: None,
        }
    }
}

impl KsmPacer {
    /// The scan for this round, and why. `starting`: a VM that is booting and writing pages KSM
    /// has not seen yet, worth the soft state's rate (the caller judges whether starting
    /// guests' pages merge here).
    pub fn pace(
        &mut self,
        at_s: f64,
        saved_mib: u64,
        state: FreeState,
        starting: Option<&str>,
    ) -> (Action, String) {
        match self.window {
            // A start is not judged by its windows: a booting guest writes pages that merge
            // only once they stop changing. Its rate is where the pace goes on from when the
            // start ends, while the guest still writes what it holds, and windows judge it from
            // then (measured: vdi, the scan fell from 500 MiB/s to the 3 the idle desktops had
            // left it at as d8's start ended, and the host swapped 29 to 103 MiB as d8 filled).
            _ if starting.is_some() => {
                self.rate_mib_s = self.rate_mib_s.max(max_scan_rate_mib_s(FreeState::Soft));
                self.window = Some((at_s, saved_mib));
            }
            None => self.window = Some((at_s, saved_mib)),
            Some((since, saved_then)) if at_s - since >= WINDOW_S => {
                let scanned = self.rate_mib_s * (at_s - since);
                let gained = saved_mib.saturating_sub(saved_then) as f64;
                let worth = gained / scanned.max(1.0);
                if worth >= WORTH_FASTER {
                    self.rate_mib_s *= 2.0;
                } else if worth < WORTH_SLOWER {
                    self.rate_mib_s /= 2.0;
                }
                self.last_yield = Some(worth);
                self.window = Some((at_s, saved_mib));
            }
            Some(_) => {}
        }
        let top = max_scan_rate_mib_s(state);
        self.rate_mib_s = self.rate_mib_s.clamp(MIN_SCAN_MIB_S, top);
        let rate = match starting {
            Some(_) => self.rate_mib_s.max(max_scan_rate_mib_s(FreeState::Soft)),
            None => self.rate_mib_s,
        };
        let why = match (starting, self.last_yield) {
            (Some(vm), _) => format!("while {vm} starts and writes pages not merged yet"),
            (None, None) => "until it has merged something".to_string(),
            (None, Some(worth)) => format!(
                "its last {WINDOW_S:.0} s merged {:.1}% of what it scanned",
                100.0 * worth
            ),
        };
        let (pages_to_scan, sleep_ms) = settings_for(rate);
        (
            Action::Ksm {
                run: true,
                pages_to_scan,
                sleep_ms,
            },
            format!(
                "KSM scans {} MiB/s {why}",
                scan_rate_mib_s(pages_to_scan, sleep_ms)
            ),
        )
    }
}

/// KSM's knobs for a rate: 50 wake-ups a second, fewer once a wake-up would scan under 100
/// pages.
fn settings_for(rate_mib_s: f64) -> (u32, u32) {
    let pages_per_s = rate_mib_s * 256.0;
    let pages = (pages_per_s / 50.0).round() as u32;
    if pages >= 100 {
        (pages, 20)
    } else {
        (100, (100_000.0 / pages_per_s.max(1.0)).round() as u32)
    }
}

/// Pages scanned per second with these settings, in MiB: what the reason says.
pub fn scan_rate_mib_s(pages_to_scan: u32, sleep_ms: u32) -> u64 {
    (pages_to_scan as u64 * 4096 * 1000 / sleep_ms.max(1) as u64) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_counts_what_each_vm_shares_with_each_other() {
        // Frame 1: a and b; frame 2: a, b and c; frame 3: twice within c.
        let m = matrix(&[
            ("a".into(), vec![1, 2]),
            ("b".into(), vec![1, 2]),
            ("c".into(), vec![2, 3, 3]),
        ]);
        let page = 4096.0 / 1048576.0;
        assert_eq!(m.vms, ["a", "b", "c"]);
        assert_eq!(m.mib[0], [0.0, 2.0 * page, page]);
        assert_eq!(m.mib[2], [page, page, 2.0 * page]);
        assert_eq!(m.frames, 3);
        assert_eq!(m.saved_mib, 4.0 * page);
    }

    fn rate(action: &Action) -> u64 {
        match *action {
            Action::Ksm {
                pages_to_scan,
                sleep_ms,
                ..
            } => scan_rate_mib_s(pages_to_scan, sleep_ms),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_scan_slows_while_pages_are_unique_and_speeds_up_while_they_merge() {
        let mut pacer = KsmPacer::default();
        let first = rate(&pacer.pace(0.0, 0, FreeState::High, None).0);
        assert_eq!(first, 19);
        // 10 s at 20 MiB/s scanned 200 MiB and merged nothing: half as fast, down to the floor.
        let (slower, why) = pacer.pace(10.0, 0, FreeState::High, None);
        assert_eq!(rate(&slower), 10, "{why}");
        assert!(why.contains("merged 0.0%"), "{why}");
        for t in [20.0, 30.0, 40.0, 50.0] {
            pacer.pace(t, 0, FreeState::High, None);
        }
        assert_eq!(rate(&pacer.pace(51.0, 0, FreeState::High, None).0), 3);
        // Identical guests: 40 MiB merged of 40 scanned doubles it, up to the state's bound.
        let mut saved = 0;
        for t in (6..30).map(|w| w as f64 * 10.0) {
            saved += 40;
            pacer.pace(t, saved, FreeState::High, None);
        }
        assert_eq!(rate(&pacer.pace(291.0, saved, FreeState::High, None).0), 80);
        assert!(rate(&pacer.pace(292.0, saved, FreeState::Hard, None).0) <= 80);
    }

    #[test]
    fn a_starting_vm_scans_at_the_soft_rate_and_pressure_allows_more() {
        let mut pacer = KsmPacer::default();
        let (boost, why) = pacer.pace(0.0, 0, FreeState::High, Some("d2"));
        assert_eq!(rate(&boost), 500);
        assert!(why.contains("while d2 starts"), "{why}");
        assert!(max_scan_rate_mib_s(FreeState::High) < max_scan_rate_mib_s(FreeState::Soft));
        assert!(max_scan_rate_mib_s(FreeState::Soft) < max_scan_rate_mib_s(FreeState::Hard));
        assert_eq!(scan_rate_mib_s(5000, 20), 976);
    }

    #[test]
    fn after_a_start_the_scan_goes_on_from_the_boost_and_slows_only_as_windows_merge_nothing() {
        let mut pacer = KsmPacer::default();
        for t in 0..5 {
            pacer.pace(t as f64 * 10.0, 0, FreeState::Low, None);
        }
        assert_eq!(rate(&pacer.pace(50.0, 0, FreeState::Low, None).0), 3);
        // 30 s of start merge nothing yet; that is not held against the scan.
        for t in [60.0, 70.0, 80.0] {
            pacer.pace(t, 0, FreeState::Low, Some("d8"));
        }
        let (after, why) = pacer.pace(85.0, 0, FreeState::Low, None);
        assert_eq!(rate(&after), 500, "{why}");
        // The guest's pages now merge: the scan speeds up within the state's bound.
        assert_eq!(rate(&pacer.pace(90.0, 300, FreeState::Low, None).0), 1000);
        // Nothing more merges: it halves each window, not at once.
        assert_eq!(rate(&pacer.pace(100.0, 300, FreeState::Low, None).0), 500);
        assert_eq!(rate(&pacer.pace(110.0, 300, FreeState::Low, None).0), 250);
        // On a host with room the state's bound caps it as before.
        assert_eq!(rate(&pacer.pace(111.0, 300, FreeState::High, None).0), 80);
    }
}
