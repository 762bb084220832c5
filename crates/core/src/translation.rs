//! Address translation for one guest page, level by level: guest virtual -> guest physical ->
//! host virtual (QEMU's guest-RAM mapping) -> host physical. Pure decoding of the kernel's
//! page-map and page-flag words and of QEMU's guest-RAM layout; the reading is done elsewhere.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

pub const PAGE: u64 = 4096;

/// Guest virtual addresses from here up belong to the kernel (x86-64 canonical upper half).
pub const KERNEL_SPACE: u64 = 0xffff_8000_0000_0000;

/// What `memvisor translate` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestAddress {
    /// Page N of the memory the guest agent's workload holds.
    Held { page: u64 },
    /// A guest virtual address: the agent's own (user) or the kernel's.
    Virtual { address: u64 },
    /// A guest physical address.
    Physical { address: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an address: give held:N (page N of the agent's workload memory), a guest virtual address such as 0x7f3a5c000000 or 0xffffffff81000000, or gpa:0x100000")]
pub struct AddressError(String);

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.replace('_', "").parse().ok(),
    }
}

impl FromStr for GuestAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressError(s.to_string());
        let s = s.trim();
        if let Some(page) = s.strip_prefix("held:") {
            return number(page)
                .map(|page| GuestAddress::Held { page })
                .ok_or_else(bad);
        }
        if let Some(address) = s.strip_prefix("gpa:") {
            return number(address)
                .map(|address| GuestAddress::Physical { address })
                .ok_or_else(bad);
        }
        number(s)
            .map(|address| GuestAddress::Virtual { address })
            .ok_or_else(bad)
    }
}

/// The form `FromStr` reads: held:N, 0xADDRESS, gpa:0xADDRESS.
impl std::fmt::Display for GuestAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestAddress::Held { page } => write!(f, "held:{page}"),
            GuestAddress::Virtual { address } => write!(f, "{address:#x}"),
            GuestAddress::Physical { address } => write!(f, "gpa:{address:#x}"),
        }
    }
}

/// One page-table level's view of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mapping {
    pub present: bool,
    pub swapped: bool,
    /// Page frame number, when present (needs root to be read).
    pub frame: Option<u64>,
    /// Mapped by this process only (false for KSM-merged and other shared pages).
    pub exclusive: bool,
}

/// Decodes one 64-bit entry of /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst).
pub fn decode_pagemap(entry: u64) -> Mapping {
    let present = entry >> 63 & 1 == 1;
    let frame = entry & ((1 << 55) - 1);
    Mapping {
        present,
        swapped: entry >> 62 & 1 == 1,
        frame: (present && frame != 0).then_some(frame),
        exclusive: entry >> 56 & 1 == 1,
    }
}

/// What /proc/kpageflags says of a frame (include/uapi/linux/kernel-page-flags.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FrameFlags {
    /// Merged by KSM: one frame stands for identical pages of several mappings.
    pub ksm: bool,
    /// Taken by a balloon (an offline page).
    pub ballooned: bool,
    /// Free in the buddy allocator.
    pub free: bool,
    pub anonymous: bool,
}

pub fn decode_kpageflags(flags: u64) -> FrameFlags {
    let bit = |n: u32| flags >> n & 1 == 1;
    FrameFlags {
        free: bit(10),
        anonymous: bit(12),
        ksm: bit(21),
        ballooned: bit(23),
    }
}

/// Offset into QEMU's main guest-RAM block of a guest physical address, for the `pc` machine:
/// RAM up to the PCI hole sits at 0, the rest above 4 GiB. None outside guest RAM.
pub fn ram_offset(gpa: u64, ram_bytes: u64) -> Option<u64> {
    const FOUR_GIB: u64 = 1 << 32;
    // QEMU's pc machine keeps 3.5 GiB below 4 GiB, or 3 GiB when the rest would not fit.
    let below_4g = if ram_bytes >= 0xe000_0000 {
        0xc000_0000
    } else {
        ram_bytes
    };
    let above_4g = ram_bytes - below_4g;
    if gpa < below_4g {
        return Some(gpa);
    }
    // Checked: a RAM size near 2^64 (only a fuzzer's) must not wrap around.
    gpa.checked_sub(FOUR_GIB)
        .filter(|&above| above < above_4g)
        .map(|above| below_4g + above)
}

/// The guest's answer: where the address lives in guest physical memory and its state there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestPage {
    pub virtual_address: Option<u64>,
    pub physical_address: Option<u64>,
    /// The guest page table's view (None when the address was physical to begin with).
    pub mapping: Option<Mapping>,
    /// The guest's page flags of the frame (None if the guest cannot read them).
    pub flags: Option<FrameFlags>,
}

/// The host's side of the guest physical address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostPage {
    pub virtual_address: u64,
    pub physical_address: Option<u64>,
    pub mapping: Mapping,
    pub flags: Option<FrameFlags>,
    /// How many mappings share the frame (/proc/kpagecount): above 1 once KSM merged it.
    pub map_count: Option<u64>,
}

/// The whole chain for one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Translation {
    pub vm: String,
    pub asked: GuestAddress,
    /// How the guest virtual address was resolved: "guest agent" or "QEMU gva2gpa".
    pub resolved_by: String,
    pub guest: GuestPage,
    pub host: Option<HostPage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds_of_address() {
        assert_eq!(
            "held:3".parse::<GuestAddress>().unwrap(),
            GuestAddress::Held { page: 3 }
        );
        assert_eq!(
            "0xffff_ffff_8100_0000".parse::<GuestAddress>().unwrap(),
            GuestAddress::Virtual {
                address: 0xffff_ffff_8100_0000
            }
        );
        assert_eq!(
            "gpa:0x100000".parse::<GuestAddress>().unwrap(),
            GuestAddress::Physical { address: 0x100000 }
        );
        let e = "heap".parse::<GuestAddress>().unwrap_err().to_string();
        assert!(e.contains("'heap'") && e.contains("held:N"), "{e}");
        assert!("held:x".parse::<GuestAddress>().is_err());
        for text in ["held:3", "0xffffffff81000000", "gpa:0x100000"] {
            let address: GuestAddress = text.parse().unwrap();
            assert_eq!(address.to_string(), text, "printed as it is read");
        }
    }

    #[test]
    fn decodes_pagemap_entries() {
        let present = (1 << 63) | 0x1234;
        assert_eq!(
            decode_pagemap(present),
            Mapping {
                present: true,
                swapped: false,
                frame: Some(0x1234),
                exclusive: false
            }
        );
        let swapped = decode_pagemap((1 << 62) | 0x55);
        assert!(swapped.swapped && !swapped.present && swapped.frame.is_none());
        assert!(decode_pagemap((1 << 63) | (1 << 56) | 7).exclusive);
        // Without root the kernel hides frame numbers as 0.
        assert_eq!(decode_pagemap(1 << 63).frame, None);
    }

    #[test]
    fn decodes_page_flags() {
        let f = decode_kpageflags((1 << 21) | (1 << 12));
        assert!(f.ksm && f.anonymous && !f.ballooned && !f.free);
        assert!(decode_kpageflags(1 << 23).ballooned);
        assert!(decode_kpageflags(1 << 10).free);
    }

    #[test]
    fn maps_guest_physical_to_the_ram_block() {
        let gib = 1u64 << 30;
        assert_eq!(ram_offset(0x10_0000, gib), Some(0x10_0000));
        assert_eq!(ram_offset(gib, gib), None);
        // 4 GiB of RAM: 3 GiB below the hole, 1 GiB above 4 GiB.
        assert_eq!(ram_offset(3 * gib - 1, 4 * gib), Some(3 * gib - 1));
        assert_eq!(ram_offset(3 * gib, 4 * gib), None);
        assert_eq!(ram_offset(4 * gib + 5, 4 * gib), Some(3 * gib + 5));
        assert_eq!(ram_offset(5 * gib, 4 * gib), None);
        assert_eq!(
            ram_offset(u64::MAX, u64::MAX),
            Some(u64::MAX - (1 << 32) + 0xc000_0000)
        );
        assert_eq!(ram_offset(0xd000_0000, u64::MAX), None);
    }
}
