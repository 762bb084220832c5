//! translate and sharing on real guests: the same content in two VMs resolves to one host
//! frame once KSM merged it, and the sharing matrix shows the two VMs sharing it.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn translate(host: &Host, vm: &str, address: &str) -> Value {
    serde_json::from_str(&ok(host.path(), &["translate", vm, address, "--json"])).unwrap()
}

#[test]
fn identical_pages_of_two_vms_resolve_to_one_host_frame_once_merged() {
    require_vm_prerequisites();
    // See integrity.rs: smart scan can keep two identical pages apart for minutes.
    let _ksm = KsmKnobs::set(&[("smart_scan", "0")]);
    let mut host = Host::new();
    // The scheduler runs KSM (and restores its settings when the daemon stops).
    host.up_with_policy(
        "2G",
        r#"
[[vm]]
name = "a"
memory = "384M"
workload = "shared:32M"

[[vm]]
name = "b"
memory = "384M"
workload = "shared:32M"
"#,
        "ours",
    );
    // KSM merges within seconds of both guests writing their copies; follow until it has.
    let started = Instant::now();
    let (a, b) = loop {
        let both = (
            memvisor(host.path(), &["translate", "a", "held:0", "--json"]),
            memvisor(host.path(), &["translate", "b", "held:0", "--json"]),
        );
        if let (Ok(a), Ok(b)) = (
            serde_json::from_slice::<Value>(&both.0.stdout),
            serde_json::from_slice::<Value>(&both.1.stdout),
        ) {
            if a["host"]["flags"]["ksm"] == true && b["host"]["flags"]["ksm"] == true
                || started.elapsed() > Duration::from_secs(120)
            {
                break (a, b);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "translate kept failing: {}",
            String::from_utf8_lossy(&both.1.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    println!("merged after {:.0} s", started.elapsed().as_secs_f64());
    for t in [&a, &b] {
        assert_eq!(t["resolved_by"], "guest agent", "{t:#}");
        assert_eq!(t["guest"]["mapping"]["present"], true, "{t:#}");
        assert!(t["guest"]["physical_address"].is_u64(), "{t:#}");
        assert_eq!(t["host"]["mapping"]["present"], true, "{t:#}");
        assert_eq!(t["host"]["flags"]["ksm"], true, "{t:#}");
        assert!(t["host"]["map_count"].as_u64().unwrap() >= 2, "{t:#}");
    }
    assert_eq!(
        a["host"]["physical_address"], b["host"]["physical_address"],
        "one host frame for the same content in two VMs:\n{a:#}\n{b:#}"
    );
    assert_ne!(a["host"]["virtual_address"], b["host"]["virtual_address"]);
    let text = ok(host.path(), &["translate", "a", "held:0"]);
    assert!(
        text.contains("shared by KSM") && text.contains("host physical"),
        "{text}"
    );

    // A kernel address goes through QEMU's gva2gpa: the IDT's fixed cpu_entry_area mapping.
    let kernel = translate(&host, "a", "0xfffffe0000000000");
    assert_eq!(kernel["resolved_by"], "QEMU gva2gpa", "{kernel:#}");
    assert_eq!(kernel["host"]["mapping"]["present"], true, "{kernel:#}");
    let physical = translate(&host, "a", "gpa:0x100000");
    assert_eq!(physical["host"]["mapping"]["present"], true, "{physical:#}");

    // Bad addresses are refused with what to give instead.
    assert!(fails(host.path(), &["translate", "a", "heap"]).contains("held:N"));
    assert!(fails(host.path(), &["translate", "a", "held:999999"]).contains("beyond"));
    assert!(fails(host.path(), &["translate", "a", "gpa:0x7fffffff000"]).contains("outside"));
    assert!(fails(host.path(), &["translate", "nosuch", "held:0"]).contains("no VM named"));

    let m: Value = serde_json::from_str(&ok(host.path(), &["sharing", "--json"])).unwrap();
    assert_eq!(m["vms"], serde_json::json!(["a", "b"]), "{m:#}");
    let a_with_b = m["mib"][0][1].as_f64().unwrap();
    let b_with_a = m["mib"][1][0].as_f64().unwrap();
    assert!(a_with_b >= 30.0 && b_with_a >= 30.0, "{m:#}");
    assert!(m["saved_mib"].as_f64().unwrap() >= 30.0, "{m:#}");
    let text = ok(host.path(), &["sharing"]);
    assert!(
        text.contains("MiB shared") && text.contains("merged frames"),
        "{text}"
    );
}
