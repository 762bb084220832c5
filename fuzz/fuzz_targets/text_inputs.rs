//! Every parser of text an operator or the host hands memvisor: configs, sizes, workloads,
//! addresses, and the /proc and cgroup files it reads. None may panic; what parses must
//! print back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_core::config::Config;
use memvisor_core::translation::GuestAddress;
use memvisor_core::workload::Workload;
use memvisor_core::Size;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(text);
    if let Ok(size) = text.parse::<Size>() {
        assert_eq!(
            size.to_string().parse::<Size>().ok(),
            Some(size),
            "{text:?}"
        );
    }
    if let Ok(workload) = text.parse::<Workload>() {
        let again: Workload = workload
            .to_string()
            .parse()
            .expect("a printed workload parses");
        assert_eq!(again, workload, "{text:?}");
    }
    let _ = text.parse::<GuestAddress>();
    let _ = memvisor_host::meminfo::parse(text);
    let _ = memvisor_host::cgroup::parse_limit(text);
    let _ = memvisor_host::pressure::parse_some_avg10(text);
    let _ = memvisor_host::swap::parse_vmstat(text);
    let _ = memvisor_host::swap::is_active(
        text,
        std::path::Path::new("/var/lib/memvisor/host-swap.img"),
    );
});
