//! What a guest agent (or a compromised guest) sends over its virtio-serial port, and the
//! page-map words the translation decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_core::agent::{FromGuest, ToGuest};
use memvisor_core::translation;

fuzz_target!(|data: &[u8]| {
    // Whatever parses prints to a form that parses back and prints the same.
    if let Ok(message) = serde_json::from_slice::<FromGuest>(data) {
        let printed = serde_json::to_vec(&message).expect("serializes");
        let again: FromGuest = serde_json::from_slice(&printed).expect("printed form parses");
        assert_eq!(serde_json::to_vec(&again).unwrap(), printed);
    }
    let _ = serde_json::from_slice::<ToGuest>(data);
    if data.len() >= 16 {
        let word = u64::from_le_bytes(data[..8].try_into().unwrap());
        let size = u64::from_le_bytes(data[8..16].try_into().unwrap());
        let _ = translation::decode_pagemap(word);
        let _ = translation::decode_kpageflags(word);
        if let Some(offset) = translation::ram_offset(word, size) {
            assert!(offset < size, "offset {offset} outside RAM of {size}");
        }
    }
});
