//! Page frames behind a process's memory: /proc/PID/pagemap, /proc/kpageflags and
//! /proc/kpagecount (root only: others read frame numbers as 0).

use memvisor_core::translation::{decode_kpageflags, decode_pagemap, FrameFlags, Mapping, PAGE};
use memvisor_core::Size;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PagemapError {
    #[error("cannot read {path}: {source} (memvisor must run as root to see page frames)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "process {pid} has no anonymous mapping of {size}: is it a QEMU with that much guest RAM?"
    )]
    NoGuestRam { pid: u32, size: Size },
}

/// A file of little-endian 64-bit words indexed by page or frame number.
struct Words {
    path: PathBuf,
    file: std::fs::File,
}

impl Words {
    fn open(path: PathBuf) -> Result<Words, PagemapError> {
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Words { path, file }),
            Err(source) => Err(PagemapError::Read { path, source }),
        }
    }

    fn read(&self, first: u64, words: &mut [u64]) -> Result<(), PagemapError> {
        let mut bytes = vec![0u8; words.len() * 8];
        self.file
            .read_exact_at(&mut bytes, first * 8)
            .map_err(|source| PagemapError::Read {
                path: self.path.clone(),
                source,
            })?;
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        Ok(())
    }

    fn word(&self, index: u64) -> Result<u64, PagemapError> {
        let mut word = [0];
        self.read(index, &mut word)?;
        Ok(word[0])
    }
}

/// Where `pid` maps guest RAM of `size`: its anonymous mapping of exactly that length.
pub fn guest_ram_start(pid: u32, size: Size) -> Result<u64, PagemapError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = std::fs::read_to_string(&path).map_err(|source| PagemapError::Read {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .filter(|l| l.split_whitespace().nth(5).is_none())
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (end - start == size.as_bytes()).then_some(start)
        })
        .next()
        .ok_or(PagemapError::NoGuestRam { pid, size })
}

fn pagemap_of(pid: u32) -> Result<Words, PagemapError> {
    Words::open(format!("/proc/{pid}/pagemap").into())
}

/// The page-table entry of `address` in `pid`.
pub fn mapping(pid: u32, address: u64) -> Result<Mapping, PagemapError> {
    Ok(decode_pagemap(pagemap_of(pid)?.word(address / PAGE)?))
}

pub fn frame_flags(frame: u64) -> Result<FrameFlags, PagemapError> {
    Ok(decode_kpageflags(
        Words::open("/proc/kpageflags".into())?.word(frame)?,
    ))
}

/// How many mappings share `frame`.
pub fn map_count(frame: u64) -> Result<u64, PagemapError> {
    Words::open("/proc/kpagecount".into())?.word(frame)
}

/// Frames KSM merged among `pages` pages of `pid` from `start`, one entry per page (a frame
/// twice when two of the process's pages share it).
pub fn merged_frames(pid: u32, start: u64, pages: u64) -> Result<Vec<u64>, PagemapError> {
    const BATCH: u64 = 4096;
    // Opened once: a gibibyte of guest RAM is 262,144 pages to look up.
    let pagemap = pagemap_of(pid)?;
    let kpageflags = Words::open("/proc/kpageflags".into())?;
    let mut merged = Vec::new();
    let mut words = vec![0u64; BATCH as usize];
    let mut done = 0;
    while done < pages {
        let n = BATCH.min(pages - done) as usize;
        pagemap.read(start / PAGE + done, &mut words[..n])?;
        for &word in &words[..n] {
            let m = decode_pagemap(word);
            // A merged frame is mapped more than once: skip the (many) exclusive pages.
            if let (Some(frame), false) = (m.frame, m.exclusive) {
                if decode_kpageflags(kpageflags.word(frame)?).ksm {
                    merged.push(frame);
                }
            }
        }
        done += n as u64;
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_anonymous_mapping_and_its_frames() {
        let size = Size::mib(3);
        let buffer = vec![7u8; size.as_bytes() as usize];
        // A Vec this large is its own anonymous mapping, rounded to pages; look for a page-
        // aligned start within it instead of relying on its exact length.
        let address = (buffer.as_ptr() as u64).div_ceil(PAGE) * PAGE;
        let m = mapping(std::process::id(), address).unwrap();
        assert!(m.present && !m.swapped, "{m:?}");
        assert!(m.frame.is_some(), "no frame number: run the tests as root");
        assert!(map_count(m.frame.unwrap()).unwrap() >= 1);
        assert!(!frame_flags(m.frame.unwrap()).unwrap().ksm);
        assert!(matches!(
            guest_ram_start(std::process::id(), Size::mib(123_457)),
            Err(PagemapError::NoGuestRam { .. })
        ));
        drop(buffer);
    }
}
