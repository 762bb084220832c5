//! Resolves addresses through the guest's own page tables: /proc/self/pagemap for the agent's
//! memory, /proc/kpageflags for what the guest kernel does with the frame (ballooned, free).

use memvisor_core::translation::{
    decode_kpageflags, decode_pagemap, GuestAddress, GuestPage, KERNEL_SPACE, PAGE,
};
use std::os::unix::fs::FileExt;

fn word_at(path: &str, index: u64) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, index * 8)
        .map_err(|e| format!("cannot read {path} at entry {index}: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

pub fn translate(address: GuestAddress, held_chunks: &[usize]) -> Result<GuestPage, String> {
    let virtual_address = match address {
        GuestAddress::Held { page } => {
            let per_chunk = crate::memory::CHUNK as u64 / PAGE;
            let chunk = held_chunks
                .get((page / per_chunk) as usize)
                .ok_or_else(|| {
                    format!(
                        "the workload holds {} pages; held:{page} is beyond them",
                        held_chunks.len() as u64 * per_chunk
                    )
                })?;
            Some(*chunk as u64 + page % per_chunk * PAGE)
        }
        GuestAddress::Virtual { address } if address >= KERNEL_SPACE => {
            return Err(format!(
                "{address:#x} is a kernel address; the agent resolves its own (user) addresses only"
            ))
        }
        GuestAddress::Virtual { address } => Some(address),
        GuestAddress::Physical { .. } => None,
    };
    let (mapping, physical_address) = match (virtual_address, address) {
        (Some(va), _) => {
            let mapping = decode_pagemap(word_at("/proc/self/pagemap", va / PAGE)?);
            let physical = mapping.frame.map(|f| f * PAGE + va % PAGE);
            (Some(mapping), physical)
        }
        (None, GuestAddress::Physical { address }) => (None, Some(address)),
        (None, _) => unreachable!("only physical addresses have no virtual one"),
    };
    let flags = physical_address
        .and_then(|pa| word_at("/proc/kpageflags", pa / PAGE).ok())
        .map(decode_kpageflags);
    Ok(GuestPage {
        virtual_address,
        physical_address,
        mapping,
        flags,
    })
}
