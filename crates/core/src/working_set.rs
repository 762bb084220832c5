//! Working-set estimation, after ESX: a VM's active memory is estimated from periodic samples
//! so that the estimate rises at once when the guest needs more and falls slowly when it needs
//! less. A noisy sample (a guest that pages shows little memory in use while it waits for its
//! disk) then cannot take memory from a VM that needed it seconds ago.
//!
//! A sample is the guest RAM DAMON saw accessed where it watches; elsewhere the guest's memory
//! that is not available to it (neither free nor cache it can drop, plus its watermarks; while
//! it reads its files, its page cache too), in the share its vCPUs were busy: a guest touches
//! memory only while its vCPUs run, so one that holds a heap and idles is sampled near zero, as
//! ESX's sampling of touched pages finds it. A guest that reads back its swap, or writes to it
//! fast while busy, needs more than it has, so its sample is its allocation plus a growth step.

/// Seconds for the estimate to fall by a factor of e once the samples drop. Long enough to
/// ride out a pause; short enough that a VM done with a burst gives its memory to the next
/// within its phase (burst: 10 s left each 30 s turn mostly waiting for the balloon).
pub const DECAY_S: f64 = 5.0;

/// What a guest that pages asks for beyond its allocation: a quarter more, at least this.
pub const HUNGRY_GROWTH_MIB: u64 = 128;

/// QEMU CPU (% of one core) at and above which a VM counts as busy: all it holds may be in use.
pub const BUSY_CPU_PCT: f64 = 25.0;
/// Major faults a second of QEMU's own above which it is waiting for host swap, not idle.
pub const STALLED_FAULTS_PER_S: f64 = 50.0;

/// The share of what a guest uses that counts as active, from its QEMU's CPU, major-fault rate
/// and CPU throttling over the last round: 1 when busy or stalled on host swap, falling to 0 as
/// it idles. A QEMU its CPU quota held back in a share of the periods it ran wanted the CPU for
/// at least that share, whatever it got: a guest held to a fifth of a core never reaches the
/// CPU that counts as busy (measured: many-small, 0.18 of a core each, s8 touching 160 MiB at
/// full speed had a working set of 90 to 126 MiB, and was capped below what it touched).
pub fn busy_share(cpu_pct: f64, major_faults_per_s: f64, throttled_share: f64) -> f64 {
    if major_faults_per_s >= STALLED_FAULTS_PER_S {
        return 1.0;
    }
    (cpu_pct / BUSY_CPU_PCT)
        .max(throttled_share)
        .clamp(0.0, 1.0)
}

/// MiB/s a guest reads from its disks (its own swap aside) at and above which the page cache
/// it holds counts as touched: it serves its reads from that cache and reads again what it
/// lost, as ESX's sampling of touched pages finds a file server's cache (measured: seed-pg,
/// PostgreSQL's tables in vm3's page cache counted idle, vm3 ballooned ahead of need while it
/// served them and read its disk at 8 MiB/s, 0.66 of unconstrained with 244 MiB free).
pub const CACHE_READ_MIB_S: f64 = 1.0;

/// The memory a guest is taken to touch, in the share its vCPUs were busy: what it uses, and
/// while it reads its files all it holds, page cache included.
pub fn touched_mib(used_mib: u64, resident_mib: u64, busy_share: f64, file_read_mib_s: f64) -> u64 {
    let held = if file_read_mib_s >= CACHE_READ_MIB_S {
        resident_mib.max(used_mib)
    } else {
        used_mib
    };
    (held as f64 * busy_share).round() as u64
}

/// One sample of a VM's memory demand: a guest short of memory asks for more than it has.
pub fn sample_mib(guest_used_mib: u64, allocation_mib: u64, short: bool) -> u64 {
    if short {
        allocation_mib + (allocation_mib / 4).max(HUNGRY_GROWTH_MIB)
    } else {
        guest_used_mib
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkingSet {
    estimate_mib: Option<f64>,
}

impl WorkingSet {
    /// Takes a sample taken `elapsed_s` after the previous one; returns the new estimate.
    pub fn update(&mut self, sample_mib: u64, elapsed_s: f64) -> u64 {
        let sample = sample_mib as f64;
        let next = match self.estimate_mib {
            Some(previous) if sample < previous => {
                sample + (previous - sample) * (-elapsed_s.max(0.0) / DECAY_S).exp()
            }
            _ => sample,
        };
        self.estimate_mib = Some(next);
        next.round() as u64
    }

    pub fn estimate_mib(&self) -> Option<u64> {
        self.estimate_mib.map(|e| e.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_guest_reading_its_files_touches_its_page_cache() {
        // 300 MiB in use, 700 MiB held with the cache.
        assert_eq!(
            touched_mib(300, 700, 1.0, 0.0),
            300,
            "no reads: cache is idle"
        );
        assert_eq!(touched_mib(300, 700, 1.0, 0.5), 300, "a trickle of reads");
        assert_eq!(touched_mib(300, 700, 1.0, 8.0), 700, "a file server");
        assert_eq!(
            touched_mib(300, 700, 0.5, 8.0),
            350,
            "in the share it is busy"
        );
        assert_eq!(
            touched_mib(300, 0, 1.0, 8.0),
            300,
            "never below what it uses"
        );
    }

    #[test]
    fn rises_at_once_and_falls_slowly() {
        let mut ws = WorkingSet::default();
        assert_eq!(ws.estimate_mib(), None);
        assert_eq!(ws.update(200, 1.0), 200);
        assert_eq!(ws.update(700, 1.0), 700);
        let after_one_second = ws.update(100, 1.0);
        assert!(after_one_second > 550, "{after_one_second}");
        let mut later = after_one_second;
        for _ in 0..40 {
            later = ws.update(100, 1.0);
        }
        assert!(later < 120, "{later}");
    }

    #[test]
    fn an_idle_guest_counts_little_of_what_it_holds_unless_host_swap_stalls_it() {
        assert_eq!(busy_share(60.0, 0.0, 0.0), 1.0);
        assert_eq!(busy_share(2.5, 0.0, 0.0), 0.1);
        assert_eq!(busy_share(0.0, 0.0, 0.0), 0.0);
        // Its CPU stands still while it waits for pages the host swapped out.
        assert_eq!(busy_share(1.0, 500.0, 0.0), 1.0);
    }

    #[test]
    fn a_guest_its_cpu_quota_holds_back_is_busy() {
        // Held to 18% of a core, it runs at its quota and is throttled in 95% of its periods.
        assert_eq!(busy_share(18.0, 0.0, 0.95), 0.95);
        // Throttled now and then, its CPU tells more.
        assert_eq!(busy_share(20.0, 0.0, 0.1), 0.8);
    }

    #[test]
    fn a_paging_guest_asks_for_more_than_it_has() {
        assert_eq!(sample_mib(300, 400, false), 300);
        assert_eq!(sample_mib(300, 400, true), 528);
        assert_eq!(sample_mib(300, 2048, true), 2560);
    }

    proptest! {
        /// The estimate never leaves the range of the samples it has seen.
        #[test]
        fn stays_within_the_samples(samples in proptest::collection::vec(0u64..4096, 1..50)) {
            let mut ws = WorkingSet::default();
            for s in &samples {
                let e = ws.update(*s, 1.0);
                prop_assert!(e >= *s);
                prop_assert!(e <= *samples.iter().max().unwrap());
            }
        }
    }
}
