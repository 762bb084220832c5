//! How the CLI prints what the daemon answers: tables for people, JSON for scripts.

use memvisor_core::sharing::SharingMatrix;
use memvisor_core::status::{Event, VmStatus};
use memvisor_core::translation::{FrameFlags, Mapping, Translation};

/// A changed VM's state as the daemon accepted it: whole as JSON, else the line `say` makes.
pub fn print_accepted(json: bool, status: &VmStatus, say: impl FnOnce(&VmStatus) -> String) {
    if json {
        print_json(status);
    } else {
        println!("{}", say(status));
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("status serializes")
    );
}

pub fn print_translation(asked: &str, t: &Translation) {
    let hex = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v:#x}"));
    let mapping = |m: Option<Mapping>| match m {
        None => String::new(),
        Some(m) if m.present => "present".into(),
        Some(m) if m.swapped => "swapped out".into(),
        Some(_) => "not present".into(),
    };
    let flags = |f: Option<FrameFlags>, ksm_word: &str| match f {
        None => String::new(),
        Some(f) => [
            (f.ksm, ksm_word),
            (f.ballooned, "ballooned"),
            (f.free, "free"),
            (f.anonymous, "anonymous"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(", "),
    };
    println!(
        "{} {asked} (guest side resolved by the {})",
        t.vm, t.resolved_by
    );
    let g = &t.guest;
    println!(
        "  guest virtual   {:<20} {}",
        hex(g.virtual_address),
        mapping(g.mapping)
    );
    println!(
        "  guest physical  {:<20} {}",
        hex(g.physical_address),
        flags(g.flags, "KSM")
    );
    match &t.host {
        Some(h) => {
            println!(
                "  host virtual    {:<20} {}",
                hex(Some(h.virtual_address)),
                mapping(Some(h.mapping))
            );
            let count = h
                .map_count
                .map(|c| format!(", mapped {c} time{}", if c == 1 { "" } else { "s" }))
                .unwrap_or_default();
            println!(
                "  host physical   {:<20} {}{count}",
                hex(h.physical_address),
                flags(h.flags, "shared by KSM")
            );
        }
        None => println!("  host            -                    (the guest page is not present)"),
    }
}

pub fn print_sharing(m: &SharingMatrix) {
    print!("{:<12}", "MiB shared");
    for name in &m.vms {
        print!(" {name:>10}");
    }
    println!();
    for (name, row) in m.vms.iter().zip(&m.mib) {
        print!("{name:<12}");
        for v in row {
            print!(" {v:>10.1}");
        }
        println!();
    }
    println!(
        "(row VM's memory on KSM-merged frames the column VM maps too; the diagonal: merged within the VM)\n{} merged frames stand in for {:.1} MiB more",
        m.frames, m.saved_mib
    );
}

pub fn event_line(e: &Event) -> String {
    format!("{:>8.1}s  {:<9}  {}", e.at_s, e.kind.name(), e.reason)
}

pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn print_table(vms: &[VmStatus]) {
    println!(
        "{:<10} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>7}  {:>8}  WORKLOAD",
        "NAME",
        "STATE",
        "MEM",
        "TARGET",
        "ACTUAL",
        "FREE",
        "AVAIL",
        "SWAPOUT",
        "RSS",
        "DREAD/s",
        "PAGES/S"
    );
    for v in vms {
        println!(
            "{:<10} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>7}  {:>8}  {}",
            v.name,
            v.state,
            v.memory_mib,
            opt(v.balloon_target_mib),
            opt(v.balloon_actual_mib),
            opt(v.guest_free_mib),
            opt(v.guest_available_mib),
            opt(v.guest_swap_out_mib),
            opt(v.host_rss_mib),
            opt(v.disk_read_mib_s.map(|r| format!("{r:.1}"))),
            opt(v.workload_pages_per_sec.map(|p| p as u64)),
            v.workload.clone().unwrap_or_else(|| "(attached)".into()),
        );
    }
    println!("(MiB; TARGET/ACTUAL: balloon, what the guest keeps; RSS: its QEMU's anonymous memory on the host, shared files excluded; DREAD/s: what QEMU reads from the VM's disks, MiB/s)");
}

pub fn print_stats(v: &VmStatus) {
    let value = serde_json::to_value(v).expect("status serializes");
    for (key, val) in value.as_object().expect("status is an object") {
        let shown = match val {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<26} {shown}");
    }
}
