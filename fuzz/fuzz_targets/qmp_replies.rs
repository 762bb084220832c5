//! What a QEMU (or something pretending to be one) sends on the QMP socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_qemu::{balloon, qmp};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = qmp::parse_greeting(&line);
    let _ = qmp::parse_message(&line);
    let _ = qmp::reply_id(&line);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
        let _ = balloon::parse_guest_stats(&value);
        let _ = balloon::balloon_child(&value);
    }
});
