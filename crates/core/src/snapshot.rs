//! What the sensors saw, in one value: the only input a policy gets. Figures are MiB.

use serde::{Deserialize, Serialize};

/// Guest paging above this (MiB/s, in plus out) is a guest paging to its own disk.
const PAGING_MIB_S: f64 = 1.0;
/// A guest reading back its swap faster than this (MiB/s) touches what it paged out.
const READ_BACK_MIB_S: f64 = 1.0;
/// A guest writing to its swap faster than this (MiB/s) writes more than it has; slower, and
/// reading nothing back, it is making room for its balloon (measured: seed, vm1 and vm2 wrote
/// 0.5 to 2.9 MiB/s as balloons took their page cache; many-small, s5 wrote 8 to 12 MiB/s as
/// it began touching 150 MiB with 128).
const WRITE_OUT_MIB_S: f64 = 4.0;

/// The busy share from which a guest that only writes to its swap is taken to be short.
const WRITING_BUSY_SHARE: f64 = 0.5;

/// Seconds after its balloon last took memory that a guest writing to its swap is
/// making room for the balloon, however busy that keeps its QEMU (measured: small-swap, vm1
/// ballooned 1,024 -> 514 MiB, below the 519 MiB it used, wrote 29 MiB/s to its swap and was
/// granted 848 MiB back a second later).
const BALLOON_PUSH_S: f64 = 10.0;

/// Whether a guest needs more memory than it has, from its swap rates (MiB/s) and the share of
/// the last round its QEMU was busy (`working_set::busy_share`): it reads back what it paged
/// out, or writes to its swap fast while busy (it makes room for memory it is writing). An idle
/// guest that only writes to its swap is making room for its balloon and does nothing with what
/// it paged out (measured: many-small, s9 and s10, idle under `cache:` and `hold:`, wrote up to
/// 7 MiB/s as they were ballooned and were given whole working sets of 256 MiB ahead of s5,
/// which waited at 128 MiB for 20 s). Nor is one that writes within BALLOON_PUSH_S of its
/// balloon taking memory.
pub fn short_of_memory(
    (swap_in_mib_s, swap_out_mib_s): (f64, f64),
    busy_share: f64,
    balloon_lowered_s_ago: Option<f64>,
) -> bool {
    let pushed = balloon_lowered_s_ago.is_some_and(|s| s <= BALLOON_PUSH_S);
    swap_in_mib_s > READ_BACK_MIB_S
        || !pushed && swap_out_mib_s > WRITE_OUT_MIB_S && busy_share >= WRITING_BUSY_SHARE
}

/// Whether a guest with these swap rates (MiB/s) pages to its own disk at all.
pub fn pages_to_disk(swap_in_rate: f64, swap_out_rate: f64) -> bool {
    swap_in_rate + swap_out_rate > PAGING_MIB_S
}

/// MiB/s a guest reads from its disks beyond its own swap, from what its QEMU reads from
/// storage and what the guest swaps in: files, among them page cache it lost and reads again.
pub fn file_read_rate(disk_read_rate: f64, swap_in_rate: f64) -> f64 {
    (disk_read_rate - swap_in_rate).max(0.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the scheduler started; policies pace themselves with it, not with a clock.
    pub at_s: f64,
    pub host: HostObservation,
    pub vms: Vec<VmObservation>,
    /// VMs asking to start, in order; the plan admits or refuses each.
    #[serde(default)]
    pub pending: Vec<PendingVm>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostObservation {
    pub budget_mib: u64,
    /// What every VM together is charged (the parent cgroup's usage).
    pub used_mib: u64,
    /// Kept free for the host itself; never entitled to a VM.
    pub reserve_mib: u64,
    /// Share of the last 10 s in which some task waited for memory (PSI "some avg10", %).
    pub psi_some_avg10: f64,
    pub swap_total_mib: u64,
    pub swap_used_mib: u64,
    pub ksm_saved_mib: u64,
    /// Memory in use that no managed VM holds: the host's own processes, on a real host. In a
    /// lab the parent cgroup holds only VMs, and this is 0.
    #[serde(default)]
    pub other_used_mib: u64,
}

impl HostObservation {
    pub fn free_mib(&self) -> u64 {
        self.budget_mib.saturating_sub(self.used_mib)
    }

    pub fn free_pct(&self) -> f64 {
        if self.budget_mib == 0 {
            return 0.0;
        }
        100.0 * self.free_mib() as f64 / self.budget_mib as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmObservation {
    pub name: String,
    /// Boot size of guest RAM.
    pub memory_mib: u64,
    /// The most it can have: boot size plus what virtio-mem can plug.
    pub max_mib: u64,
    pub reservation_mib: u64,
    pub limit_mib: u64,
    pub shares: u32,
    /// What the guest has now: balloon actual plus virtio-mem plugged.
    pub allocation_mib: u64,
    /// The allocation last asked for.
    pub target_mib: u64,
    /// Guest memory in use that it cannot drop (total − available − ballooned), if reported.
    pub guest_used_mib: Option<u64>,
    /// Guest memory holding data, cache included (total − free − ballooned), if reported.
    pub guest_resident_mib: Option<u64>,
    pub guest_available_mib: Option<u64>,
    /// MiB/s the guest pages in from and out to its own swap disk.
    pub guest_swap_in_rate: f64,
    pub guest_swap_out_rate: f64,
    /// The share of the last round its QEMU was busy (`working_set::busy_share`); 1 where it
    /// was not measured.
    #[serde(default = "fully")]
    pub busy_share: f64,
    /// Seconds since its balloon last took memory (asked to, or seen inflating), unless
    /// raised since.
    #[serde(default)]
    pub balloon_lowered_s_ago: Option<f64>,
    /// MiB/s its QEMU reads from storage: the guest's disks (its own swap included), and
    /// QEMU's memory coming back from the host's swap.
    #[serde(default)]
    pub disk_read_rate: f64,
    pub host_rss_mib: u64,
    /// QEMU's own memory outside guest RAM, if measured.
    pub qemu_overhead_mib: Option<u64>,
    /// Pages of this VM merged by KSM.
    pub shared_mib: u64,
    /// Estimated demand (working_set.rs): rises at once, falls slowly; above the allocation
    /// while the guest pages.
    pub working_set_mib: Option<u64>,
    /// Pages per second the guest's workload does, if it has an agent.
    pub throughput: Option<f64>,
    /// The VM's own cgroup limit now (None: unlimited, only the host budget applies).
    pub cgroup_limit_mib: Option<u64>,
    /// QEMU's memory in host swap.
    #[serde(default)]
    pub host_swapped_mib: u64,
    /// Major faults a second of its QEMU: guest memory coming back from the host's swap (and
    /// the few file pages QEMU itself maps).
    #[serde(default)]
    pub host_faults_per_s: f64,
    /// Its QEMU waits at its cgroup limit: the kernel found nothing there to reclaim that the
    /// VM does not touch again at once (v1 only; it would have been killed there).
    #[serde(default)]
    pub stalled_at_host_limit: bool,
    /// Processes the guest's OOM killer ended since boot.
    #[serde(default)]
    pub guest_oom_kills: u64,
    /// Seconds since memvisor launched the VM's QEMU (None: attached or taken over).
    #[serde(default)]
    pub launched_s_ago: Option<f64>,
    /// Seconds since its guest finished booting (its agent answered), once it has.
    #[serde(default)]
    pub booted_s_ago: Option<f64>,
    /// Whether the host may cap its QEMU's cgroup: false for an attached QEMU whose group is
    /// not its own.
    #[serde(default = "yes")]
    pub host_swappable: bool,
}

fn yes() -> bool {
    true
}

fn fully() -> f64 {
    1.0
}

/// A guest's workload takes its memory in the first seconds after boot.
const SETTLE_S: f64 = 10.0;
/// A launched guest that never reports stops counting as starting after this long.
const START_GRACE_S: f64 = 120.0;

impl VmObservation {
    /// The QEMU process's own memory beyond guest RAM (device state, code cache): measured,
    /// else estimated as what it holds beyond the guest's data.
    pub fn overhead_mib(&self) -> u64 {
        self.qemu_overhead_mib.unwrap_or_else(|| {
            self.host_rss_mib
                .saturating_sub(self.guest_resident_mib.unwrap_or(self.allocation_mib))
        })
    }

    /// The guest wants more than it has (`short_of_memory`). (Its available memory is no
    /// sign: a ballooned guest's watermarks, sized for its boot memory, leave little of it
    /// available while it runs well.)
    pub fn is_hungry(&self) -> bool {
        short_of_memory(
            (self.guest_swap_in_rate, self.guest_swap_out_rate),
            self.busy_share,
            self.balloon_lowered_s_ago,
        )
    }

    /// A guest that reads back from its own swap disk: it touches again what it paged out.
    pub fn reads_back_swap(&self) -> bool {
        self.guest_swap_in_rate > READ_BACK_MIB_S
    }

    /// A guest that reads back from its swap and writes to it as it does: it evicts some of
    /// what it touches to read back the rest. One that only reads back is catching up on what
    /// it paged out before it was given memory.
    pub fn thrashes(&self) -> bool {
        self.reads_back_swap() && self.guest_swap_out_rate > PAGING_MIB_S
    }

    /// MiB/s the guest reads from its disks beyond its own swap.
    pub fn file_read_rate(&self) -> f64 {
        file_read_rate(self.disk_read_rate, self.guest_swap_in_rate)
    }

    /// A guest that has not reported yet is booting: it has touched little so far, and its
    /// balloon driver is not loaded yet.
    pub fn is_booting(&self) -> bool {
        self.guest_resident_mib.is_none()
    }

    /// Launched a moment ago and not yet settled: still booting, or booted less than
    /// `SETTLE_S` ago, so what it will take is not known yet.
    pub fn is_settling(&self) -> bool {
        self.launched_s_ago.is_some_and(|s| s < START_GRACE_S)
            && self.booted_s_ago.is_none_or(|s| s < SETTLE_S)
    }

    /// Guest memory that is free now: a balloon takes it at once, without making the guest
    /// drop anything.
    pub fn guest_free_mib(&self) -> u64 {
        self.guest_resident_mib
            .map_or(0, |r| self.allocation_mib.saturating_sub(r))
    }

    /// The guest's active memory: the working set if estimated, else what it has in use, else
    /// everything it holds (unknown is treated as active so that nothing is taken on a guess).
    /// A paging guest's working set exceeds its allocation: that is its demand.
    pub fn active_mib(&self) -> u64 {
        self.working_set_mib
            .or(self.guest_used_mib)
            .unwrap_or(self.allocation_mib)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingVm {
    pub name: String,
    pub memory_mib: u64,
    pub reservation_mib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_guest_writing_to_its_swap_is_not_short_of_memory() {
        let short = |rates, busy| short_of_memory(rates, busy, None);
        assert!(short((5.0, 0.0), 0.0), "it reads back what it paged out");
        assert!(short((0.0, 8.0), 1.0), "it writes more than it has");
        assert!(
            !short((0.0, 8.0), 0.1),
            "idle, it makes room for its balloon"
        );
        assert!(
            !short((0.0, 2.0), 1.0),
            "busy, it makes room for its balloon"
        );
        assert!(!short((0.5, 0.5), 1.0), "a trickle");
    }

    #[test]
    fn a_busy_guest_writing_to_its_swap_as_its_balloon_takes_memory_is_not_short_of_memory() {
        assert!(
            !short_of_memory((0.0, 29.0), 1.0, Some(1.0)),
            "its balloon was just lowered"
        );
        assert!(
            short_of_memory((0.0, 29.0), 1.0, Some(30.0)),
            "its balloon has not moved for 30 s"
        );
        assert!(
            short_of_memory((5.0, 29.0), 1.0, Some(1.0)),
            "it reads back what its balloon pushed out"
        );
    }
}
