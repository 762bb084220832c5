//! The host-wide knobs the policy turns, KSM and zswap, with what the host had before memvisor
//! changed them (put back on shutdown, and kept across a daemon restart).

use super::DaemonError;
use memvisor_core::plan::Action;
use memvisor_core::Size;
use memvisor_host::ksm::{Ksm, KsmSettings, SYSFS};
use memvisor_host::swap::Zswap;
use std::path::Path;

pub struct HostKnobs {
    ksm: Ksm,
    zswap: Zswap,
}

impl HostKnobs {
    pub fn new() -> HostKnobs {
        HostKnobs {
            ksm: Ksm::at(Path::new(SYSFS)),
            zswap: Zswap::new(),
        }
    }

    /// Sets KSM or zswap as `action` asks; true when that changed the host's setting.
    pub fn apply(&mut self, action: &Action) -> Result<bool, DaemonError> {
        Ok(match action {
            Action::Ksm {
                run,
                pages_to_scan,
                sleep_ms,
            } => self.ksm.apply(KsmSettings {
                run: *run,
                pages_to_scan: *pages_to_scan,
                sleep_ms: *sleep_ms,
                // Smart scan skips pages that did not merge before, for several passes:
                // measured, identical guest pages stayed apart over 5 minutes with it on.
                // The scan rate the policy picks is what bounds KSM's CPU here.
                smart_scan: Some(false),
            })?,
            Action::Zswap { enabled } => {
                let before = Zswap::enabled()?;
                self.zswap.set(*enabled)?;
                before != *enabled
            }
            _ => false,
        })
    }

    /// KSM and zswap settings the host had before memvisor changed them.
    pub fn found(&self) -> (Option<KsmSettings>, Option<bool>) {
        (self.ksm.found(), self.zswap.found())
    }

    /// Takes over what an earlier daemon found, so that shutting down restores the host's.
    pub fn remember_found(&mut self, ksm: Option<KsmSettings>, zswap: Option<bool>) {
        self.ksm.remember(ksm);
        self.zswap.remember(zswap);
    }

    /// Puts back the KSM and zswap settings found when memvisor started.
    pub fn restore(&mut self) {
        if let Err(e) = self.ksm.restore() {
            tracing::error!("{e}");
        }
        if let Err(e) = self.zswap.restore() {
            tracing::error!("{e}");
        }
    }
}

/// Memory KSM saves host-wide, read without the knobs.
pub fn ksm_saved() -> Option<Size> {
    Ksm::at(Path::new(SYSFS)).saved().ok()
}
