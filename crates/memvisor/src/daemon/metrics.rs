//! The figures of `memvisor top` in Prometheus' text exposition format (version 0.0.4), for
//! `/metrics`. Base units in names (bytes), `_total` on counters, one `vm` label per VM.
//!
//! Written by hand rather than with the prometheus-client crate: that crate encodes
//! OpenMetrics, whose counter and unit lines the classic text format (what `promtool check
//! metrics` reads) treats differently, and every figure here is read fresh at scrape time.

use memvisor_core::ladder::FreeState;
use memvisor_core::status::{EventKind, HostStatus, VmState, VmStatus};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Counters the daemon keeps itself.
pub struct Counters {
    pub events_total: BTreeMap<EventKind, u64>,
    pub rounds_total: u64,
    pub host_swap_out_bytes_total: Option<u64>,
}

enum Kind {
    Gauge,
    Counter,
}

struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<Sample<'a>>,
}

const MIB: f64 = 1048576.0;

type VmFigure = fn(&VmStatus) -> Option<f64>;

fn mib(v: Option<u64>) -> Option<f64> {
    v.map(|m| m as f64 * MIB)
}

/// Per-VM families: name, help, kind, figure. Figures not observed yet are left out.
const VM_FAMILIES: &[(&str, &str, bool, VmFigure)] = &[
    (
        "memvisor_vm_up",
        "1 while the VM's QEMU runs and answers, else 0.",
        false,
        |v| Some(f64::from(u8::from(v.state == VmState::Running))),
    ),
    (
        "memvisor_vm_configured_bytes",
        "Guest RAM the VM is configured with.",
        false,
        |v| mib(Some(v.memory_mib)),
    ),
    (
        "memvisor_vm_reservation_bytes",
        "Memory never taken from the VM.",
        false,
        |v| mib(Some(v.reservation_mib)),
    ),
    (
        "memvisor_vm_limit_bytes",
        "Memory never given to the VM beyond.",
        false,
        |v| mib(Some(v.limit_mib)),
    ),
    (
        "memvisor_vm_shares",
        "Relative claim on contended memory.",
        false,
        |v| Some(f64::from(v.shares)),
    ),
    (
        "memvisor_vm_target_bytes",
        "Memory the VM was last asked to have (balloon target plus virtio-mem requested).",
        false,
        |v| mib(v.target_mib),
    ),
    (
        "memvisor_vm_allocation_bytes",
        "Memory the guest has now: balloon actual plus virtio-mem plugged.",
        false,
        |v| mib(v.allocation_mib),
    ),
    (
        "memvisor_vm_balloon_bytes",
        "Memory the balloon holds back from the guest.",
        false,
        |v| mib(v.ballooned_mib),
    ),
    (
        "memvisor_vm_consumed_bytes",
        "Anonymous resident memory of the VM's QEMU on the host.",
        false,
        |v| mib(v.host_rss_mib),
    ),
    (
        "memvisor_vm_active_bytes",
        "Working-set estimate of the guest.",
        false,
        |v| mib(v.working_set_mib),
    ),
    (
        "memvisor_vm_shared_bytes",
        "Memory of the VM merged with other pages by KSM.",
        false,
        |v| mib(v.shared_mib),
    ),
    (
        "memvisor_vm_host_swapped_bytes",
        "Memory of the VM's QEMU in host swap.",
        false,
        |v| mib(v.host_swapped_mib),
    ),
    (
        "memvisor_vm_cap_reclaim_cpu_seconds_total",
        "CPU the host's reclaim took in memvisor's writes of the VM's host limit.",
        true,
        |v| v.cap_reclaim_cpu_s,
    ),
    (
        "memvisor_vm_overhead_bytes",
        "The QEMU process's own anonymous memory beyond guest RAM.",
        false,
        |v| mib(v.overhead_mib),
    ),
    (
        "memvisor_vm_guest_free_bytes",
        "Free memory the guest reports.",
        false,
        |v| mib(v.guest_free_mib),
    ),
    (
        "memvisor_vm_guest_available_bytes",
        "Available memory the guest reports.",
        false,
        |v| mib(v.guest_available_mib),
    ),
    (
        "memvisor_vm_guest_swap_in_bytes_total",
        "Memory the guest paged in from its own swap since boot.",
        true,
        |v| mib(v.guest_swap_in_mib),
    ),
    (
        "memvisor_vm_guest_swap_out_bytes_total",
        "Memory the guest paged out to its own swap since boot.",
        true,
        |v| mib(v.guest_swap_out_mib),
    ),
    (
        "memvisor_vm_disk_read_bytes_total",
        "What QEMU read from storage since it started: the guest's reads that missed its page cache.",
        true,
        |v| mib(v.disk_read_mib),
    ),
    (
        "memvisor_vm_guest_oom_kills_total",
        "Processes the guest's OOM killer ended since boot.",
        true,
        |v| v.guest_oom_kills.map(|k| k as f64),
    ),
    (
        "memvisor_vm_workload_pages_per_second",
        "Pages the guest agent's workload touched in its last second.",
        false,
        |v| v.workload_pages_per_sec,
    ),
];

type Sample<'a> = (Option<(&'static str, &'a str)>, f64);

impl<'a> Family<'a> {
    fn gauge(name: &'static str, help: &'static str, samples: Vec<Sample<'a>>) -> Family<'a> {
        Family {
            name,
            help,
            kind: Kind::Gauge,
            samples,
        }
    }

    fn counter(name: &'static str, help: &'static str, samples: Vec<Sample<'a>>) -> Family<'a> {
        Family {
            name,
            help,
            kind: Kind::Counter,
            samples,
        }
    }
}

pub fn render(host: &HostStatus, vms: &[VmStatus], counters: &Counters) -> String {
    let mut out = String::new();
    for f in host_families(host, counters)
        .into_iter()
        .chain(vm_families(vms))
    {
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (label, value) in f.samples {
            match label {
                Some((key, v)) => {
                    let _ = writeln!(out, "{}{{{key}=\"{}\"}} {value}", f.name, escape(v));
                }
                None => {
                    let _ = writeln!(out, "{} {value}", f.name);
                }
            }
        }
    }
    out
}

fn host_families<'a>(host: &HostStatus, counters: &'a Counters) -> Vec<Family<'a>> {
    let one = |v: Option<f64>| v.map(|v| (None, v)).into_iter().collect::<Vec<_>>();
    let state = host.state;
    vec![
        Family::gauge(
            "memvisor_host_budget_bytes",
            "Memory all VMs together may use (the parent cgroup's limit).",
            one(mib(Some(host.budget_mib))),
        ),
        Family::gauge(
            "memvisor_host_used_bytes",
            "Memory all VMs together use (the parent cgroup's usage).",
            one(mib(host.used_mib)),
        ),
        Family::gauge(
            "memvisor_host_free_bytes",
            "Budget minus used.",
            one(mib(host.free_mib)),
        ),
        Family::gauge(
            "memvisor_host_state",
            "1 for the host's free-memory state (high, soft, hard, low), 0 for the others.",
            if state.is_some() {
                FreeState::ALL
                    .iter()
                    .map(|&s| {
                        let on = f64::from(u8::from(state == Some(s)));
                        (Some(("state", s.name())), on)
                    })
                    .collect()
            } else {
                Vec::new()
            },
        ),
        Family::gauge(
            "memvisor_host_ksm_saved_bytes",
            "Memory KSM saves by merging identical pages.",
            one(mib(host.ksm_saved_mib)),
        ),
        Family::gauge(
            "memvisor_host_swap_used_bytes",
            "Host swap in use.",
            one(mib(Some(host.swap_used_mib))),
        ),
        Family::counter(
            "memvisor_host_swap_out_bytes_total",
            "Memory the host moved out to swap (disk and zswap) since boot.",
            one(counters.host_swap_out_bytes_total.map(|b| b as f64)),
        ),
        Family::gauge(
            "memvisor_host_memory_pressure_ratio",
            "Share of the last 10 s some task waited for memory (PSI some avg10).",
            one(host.psi_some_avg10.map(|p| p / 100.0)),
        ),
        Family::counter(
            "memvisor_events_total",
            "Events the daemon recorded, by kind.",
            counters
                .events_total
                .iter()
                .map(|(k, &n)| (Some(("kind", k.name())), n as f64))
                .collect(),
        ),
        Family::counter(
            "memvisor_scheduler_rounds_total",
            "Rounds of observe, decide, act.",
            one(Some(counters.rounds_total as f64)),
        ),
    ]
}

fn vm_families(vms: &[VmStatus]) -> Vec<Family<'_>> {
    VM_FAMILIES
        .iter()
        .map(|&(name, help, is_counter, figure)| {
            let samples = vms
                .iter()
                .filter_map(|v| figure(v).map(|x| (Some(("vm", v.name.as_str())), x)))
                .collect();
            if is_counter {
                Family::counter(name, help, samples)
            } else {
                Family::gauge(name, help, samples)
            }
        })
        .collect()
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostStatus {
        serde_json::from_value(serde_json::json!({
            "budget_mib": 1536, "used_mib": 1000, "free_mib": 536, "host_total_mib": 24000,
            "host_available_mib": 20000, "cgroup": "/sys/fs/cgroup/memory/memvisor",
            "cgroup_version": "v1", "accel": "tcg", "policy": "ours", "state": "soft",
            "ksm_saved_mib": 12, "swap_total_mib": 1024, "swap_used_mib": 0, "psi_some_avg10": 1.5
        }))
        .unwrap()
    }

    fn counters() -> Counters {
        Counters {
            events_total: EventKind::ALL.iter().map(|&k| (k, 2)).collect(),
            rounds_total: 7,
            host_swap_out_bytes_total: Some(4096),
        }
    }

    #[test]
    fn renders_units_counters_and_labels() {
        let text = render(&host(), &[], &counters());
        assert!(
            text.contains("memvisor_host_budget_bytes 1610612736\n"),
            "{text}"
        );
        assert!(text.contains("memvisor_host_state{state=\"soft\"} 1\n"));
        assert!(text.contains("memvisor_host_state{state=\"high\"} 0\n"));
        assert!(text.contains("# TYPE memvisor_events_total counter\n"));
        assert!(text.contains("memvisor_events_total{kind=\"hint\"} 2\n"));
        assert!(text.contains("memvisor_host_memory_pressure_ratio 0.015\n"));
        // Every family is typed, VM families too when there is no VM yet.
        let typed = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(typed, 10 + VM_FAMILIES.len());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
