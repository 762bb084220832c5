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

/// KSM settings for a host in `state` (pages scanned per wake-up, milliseconds between).
pub fn ksm_for(state: FreeState) -> Action {
    let (pages_to_scan, sleep_ms) = match state {
        FreeState::High => (1000, 50),
        FreeState::Soft => (2500, 20),
        FreeState::Hard | FreeState::Low => (5000, 10),
    };
    Action::Ksm {
        run: true,
        pages_to_scan,
        sleep_ms,
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

    #[test]
    fn pressure_scans_harder() {
        let rate = |s| match ksm_for(s) {
            Action::Ksm {
                pages_to_scan,
                sleep_ms,
                ..
            } => scan_rate_mib_s(pages_to_scan, sleep_ms),
            _ => unreachable!(),
        };
        assert!(rate(FreeState::High) < rate(FreeState::Soft));
        assert!(rate(FreeState::Soft) < rate(FreeState::Hard));
        assert_eq!(scan_rate_mib_s(5000, 20), 976);
    }
}
