//! One round of ours (`Esx::decide`) for hosts of 10 to 10,000 VMs: the policy's cost as hosts
//! grow. `cargo bench -p memvisor-core --bench decide`; the closing line prints each size's
//! time per VM beside 1,000 VMs', so growth beyond n log n shows in one run.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memvisor_core::policy::{Esx, Policy, Settings};
use memvisor_core::snapshot::{HostObservation, Snapshot, VmObservation};
use std::hint::black_box;
use std::time::Instant;

/// A host overcommitted 2:1 and short of memory (soft), so every step of the round has work:
/// VMs idle with page cache, busy, paging, booting, with reservations and heaps.
fn snapshot(vms: usize) -> Snapshot {
    let vm = |i: usize| {
        let memory = 1024;
        let reports = !i.is_multiple_of(11);
        let used = [50, 300, 700, 1000][i % 4];
        VmObservation {
            name: format!("vm{i:05}"),
            memory_mib: memory,
            max_mib: 1536,
            reservation_mib: if i.is_multiple_of(7) { 256 } else { 0 },
            limit_mib: 1536,
            shares: [500, 1000, 2000][i % 3],
            allocation_mib: memory,
            target_mib: memory,
            guest_used_mib: reports.then_some(used),
            guest_resident_mib: reports.then_some((used + 300).min(memory)),
            guest_available_mib: Some(memory - used),
            guest_swap_in_rate: if i % 4 == 3 { 5.0 } else { 0.0 },
            guest_swap_out_rate: if i % 4 == 3 { 8.0 } else { 0.0 },
            busy_share: 1.0,
            balloon_lowered_s_ago: None,
            disk_read_rate: 0.0,
            host_rss_mib: used + 360,
            qemu_overhead_mib: Some(60),
            shared_mib: 20,
            working_set_mib: reports.then_some(used),
            throughput: None,
            cgroup_limit_mib: None,
            host_swapped_mib: 0,
            host_faults_per_s: 0.0,
            stalled_at_host_limit: false,
            guest_oom_kills: 0,
            launched_s_ago: Some(600.0),
            booted_s_ago: Some(590.0),
            host_swappable: true,
        }
    };
    let budget = vms as u64 * 512;
    Snapshot {
        at_s: 600.0,
        host: HostObservation {
            budget_mib: budget,
            used_mib: budget - budget * 3 / 100,
            reserve_mib: 256,
            psi_some_avg10: 2.0,
            swap_total_mib: budget,
            swap_used_mib: 0,
            ksm_saved_mib: budget / 20,
            other_used_mib: 0,
        },
        vms: (0..vms).map(vm).collect(),
        pending: Vec::new(),
    }
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for vms in [10, 100, 1_000, 10_000] {
        let s = snapshot(vms);
        group.bench_with_input(BenchmarkId::from_parameter(vms), &s, |b, s| {
            // A fresh policy each round: every round then balloons, grants and offloads.
            b.iter(|| Esx::new(Settings::default()).decide(black_box(s)))
        });
    }
    group.finish();
    let per_vm = |vms: usize| {
        let s = snapshot(vms);
        let rounds = (100_000 / vms).max(3);
        let started = Instant::now();
        for _ in 0..rounds {
            black_box(Esx::new(Settings::default()).decide(&s));
        }
        started.elapsed().as_secs_f64() / rounds as f64
    };
    let base = per_vm(1_000);
    println!("decide for 1,000 VMs: {:.3} ms a round", base * 1e3);
    for vms in [10, 100, 1_000, 10_000] {
        let t = per_vm(vms);
        let n_log_n = (vms as f64 * (vms as f64).log2()) / (1_000.0 * 1_000f64.log2());
        println!(
            "{vms:>6} VMs: {:>9.3} ms a round, {:.2}x the time of 1,000 VMs, n log n predicts {:.2}x",
            t * 1e3,
            t / base,
            n_log_n
        );
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
