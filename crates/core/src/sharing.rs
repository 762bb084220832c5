//! Transparent page sharing: how hard KSM scans in each host state. Scanning costs CPU that the
//! guests also want, so it is light while memory is plentiful and aggressive under pressure.

use crate::ladder::FreeState;
use crate::plan::Action;

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
