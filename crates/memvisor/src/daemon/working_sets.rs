//! Where working sets come from: DAMON watching each QEMU's guest RAM where the kernel offers
//! it (`vaddr` operations), the guests' own statistics elsewhere. A host that cannot use DAMON
//! is told why once, and memvisor does not ask DAMON again until it restarts.

use memvisor_core::Size;
use memvisor_host::damon::{Damon, Range};
use std::collections::BTreeMap;
use std::path::Path;

/// A running VM as DAMON needs to know it.
pub struct Watchable {
    pub name: String,
    pub pid: u32,
    pub guest_ram: Size,
}

pub struct AccessSensor {
    damon: Damon,
    /// The VMs (with their QEMUs) the kdamonds were set up for.
    set_up_for: Vec<(String, u32)>,
    /// The VMs watched, in kdamond order: those whose guest RAM was found.
    watched: Vec<String>,
    unusable: bool,
}

impl AccessSensor {
    pub fn new() -> AccessSensor {
        AccessSensor {
            damon: Damon::at(Path::new(memvisor_host::damon::SYSFS)),
            set_up_for: Vec::new(),
            watched: Vec::new(),
            unusable: false,
        }
    }

    /// Takes over the kdamonds a killed daemon left watching `ranges`, if they still do.
    pub fn adopt(&mut self, ranges: &[Range]) {
        self.damon.adopt(ranges);
    }

    /// What memvisor's kdamonds watch, for a restarted daemon to take over.
    pub fn watched(&self) -> Vec<Range> {
        self.damon.watched().to_vec()
    }

    /// Guest RAM each VM accessed during the last second, watching `vms` first where they
    /// changed. The error says once why working sets come from guest statistics instead.
    pub fn sense(&mut self, vms: &[Watchable]) -> Result<BTreeMap<String, Size>, String> {
        if self.unusable {
            return Ok(BTreeMap::new());
        }
        let result = self.watch(vms).and_then(|()| {
            let accessed = self.damon.accessed().map_err(|e| e.to_string())?;
            Ok(self
                .watched
                .iter()
                .zip(accessed)
                .filter_map(|(name, bytes)| Some((name.clone(), bytes?)))
                .collect())
        });
        if result.is_err() {
            self.unusable = true;
            self.set_up_for.clear();
            self.watched.clear();
            let _ = self.damon.stop();
        }
        result.map_err(|e| {
            format!("working sets come from guest statistics, not DAMON: {e}; restart the daemon to try DAMON again")
        })
    }

    fn watch(&mut self, vms: &[Watchable]) -> Result<(), String> {
        let wanted: Vec<(String, u32)> = vms.iter().map(|v| (v.name.clone(), v.pid)).collect();
        if wanted == self.set_up_for {
            return Ok(());
        }
        // A VM whose guest RAM is not one anonymous mapping (a file backend) keeps its
        // guest's statistics; the others are still watched.
        let (names, ranges): (Vec<String>, Vec<Range>) = vms
            .iter()
            .filter_map(|vm| {
                let start = memvisor_host::pagemap::guest_ram_start(vm.pid, vm.guest_ram).ok()?;
                let range = Range {
                    pid: Some(vm.pid),
                    start,
                    end: start + vm.guest_ram.as_bytes(),
                };
                Some((vm.name.clone(), range))
            })
            .unzip();
        self.watched.clear();
        self.damon.watch(&ranges).map_err(|e| e.to_string())?;
        self.watched = names;
        self.set_up_for = wanted;
        Ok(())
    }

    /// Stops memvisor's kdamonds, as the daemon shuts down.
    pub fn stop(&mut self) {
        if let Err(e) = self.damon.stop() {
            tracing::error!("{e}");
        }
        self.set_up_for.clear();
        self.watched.clear();
    }
}
