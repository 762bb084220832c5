//! A guest's own disk image: which format it is, told from its first sector, so that QEMU is
//! told the format (a raw image is never probed) and a file that cannot boot is refused before
//! a VM is started from it.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_qemu(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {path} cannot be read: {source}; give the path of a qcow2 or raw disk image")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk {0} is not a file; give the path of a qcow2 or raw disk image")]
    NotAFile(PathBuf),
    #[error("disk {0} is neither a qcow2 image nor a raw disk with a boot sector (no 0x55AA signature); give a bootable image, e.g. one 'memvisor image debian' builds")]
    NotAnImage(PathBuf),
}

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const SECTOR: usize = 512;

/// The format of an image whose first sector is `head`, if it is one a guest can boot from: a
/// qcow2 image, or a raw disk whose first sector ends with the boot signature (an MBR, or the
/// protective MBR of a GPT disk).
pub fn format_of(head: &[u8]) -> Option<DiskFormat> {
    if head.starts_with(QCOW2_MAGIC) {
        Some(DiskFormat::Qcow2)
    } else if head.len() >= SECTOR && head[SECTOR - 2..SECTOR] == [0x55, 0xaa] {
        Some(DiskFormat::Raw)
    } else {
        None
    }
}

/// The format of the image at `path`, or why a guest cannot boot from it.
pub fn detect(path: &Path) -> Result<DiskFormat, DiskError> {
    let unreadable = |source| DiskError::Unreadable {
        path: path.into(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(DiskError::NotAFile(path.into()));
    }
    let mut head = Vec::with_capacity(SECTOR);
    std::fs::File::open(path)
        .and_then(|f| f.take(SECTOR as u64).read_to_end(&mut head))
        .map_err(unreadable)?;
    format_of(&head).ok_or_else(|| DiskError::NotAnImage(path.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_by_its_magic_raw_by_its_boot_signature() {
        let mut qcow2 = b"QFI\xfb\x00\x00\x00\x03".to_vec();
        qcow2.resize(SECTOR, 0);
        assert_eq!(format_of(&qcow2), Some(DiskFormat::Qcow2));
        let mut mbr = vec![0u8; SECTOR];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(format_of(&mbr), Some(DiskFormat::Raw));
        assert_eq!(format_of(&[0u8; SECTOR]), None);
        assert_eq!(format_of(b"#!/bin/sh\n"), None);
        assert_eq!(format_of(&[]), None);
    }

    #[test]
    fn a_missing_path_a_directory_and_a_text_file_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a disk").unwrap();
        let missing = dir.path().join("missing.qcow2");
        for (path, says) in [
            (missing.as_path(), "cannot be read"),
            (dir.path(), "is not a file"),
            (text.as_path(), "neither a qcow2 image nor a raw disk"),
        ] {
            let message = detect(path).unwrap_err().to_string();
            assert!(message.contains(&*path.to_string_lossy()), "{message}");
            assert!(message.contains(says), "{message}");
        }
    }
}
