//! A guest's own disk image: which format it is, told from its first bytes unless the config
//! says, so that QEMU is always told the format (it never probes), and a file that cannot boot
//! is refused before a VM is started from it.

pub use memvisor_core::config::DiskFormat;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    #[error("disk {0} is a qcow2 image that names another file (a backing file or an external data file); memvisor does not take that from the image, which a guest writing a raw disk could forge: say format = \"qcow2\" for this VM if the image is yours")]
    NamesAnotherFile(PathBuf),
}

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const SECTOR: usize = 512;
/// qcow2 header: where the backing file's name is (0: none), the version, and in version 3 the
/// incompatible features, whose bit 2 is an external data file.
const QCOW2_BACKING_OFFSET: std::ops::Range<usize> = 8..16;
const QCOW2_VERSION: std::ops::Range<usize> = 4..8;
const QCOW2_INCOMPATIBLE: std::ops::Range<usize> = 72..80;
const QCOW2_EXTERNAL_DATA: u64 = 1 << 2;

/// What the first sector of an image says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A qcow2 image; `names_another_file` if it has a backing file or an external data file.
    Qcow2 { names_another_file: bool },
    /// A raw disk that the firmware can boot: its first sector ends with the boot signature (an
    /// MBR, or a GPT disk's protective MBR).
    BootableRaw,
    /// Anything else: a raw file system, or not an image at all.
    Unknown,
}

fn be_u64(head: &[u8], range: std::ops::Range<usize>) -> u64 {
    head.get(range)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub fn read_head(head: &[u8]) -> Head {
    if head.starts_with(QCOW2_MAGIC) {
        let version = head
            .get(QCOW2_VERSION)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes);
        let external_data =
            version >= 3 && be_u64(head, QCOW2_INCOMPATIBLE) & QCOW2_EXTERNAL_DATA != 0;
        Head::Qcow2 {
            names_another_file: be_u64(head, QCOW2_BACKING_OFFSET) != 0 || external_data,
        }
    } else if head.len() >= SECTOR && head[SECTOR - 2..SECTOR] == [0x55, 0xaa] {
        Head::BootableRaw
    } else {
        Head::Unknown
    }
}

/// The format to give QEMU for the image at `path`: `declared` if the config says, else what
/// its head says, refusing what a guest could have forged. With `direct_kernel`, a raw image
/// needs no boot sector (the kernel is booted directly; the image may be a bare file system).
pub fn format(
    path: &Path,
    declared: Option<DiskFormat>,
    direct_kernel: bool,
) -> Result<DiskFormat, DiskError> {
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
    if let Some(format) = declared {
        return Ok(format);
    }
    match read_head(&head) {
        Head::Qcow2 {
            names_another_file: false,
        } => Ok(DiskFormat::Qcow2),
        Head::Qcow2 {
            names_another_file: true,
        } => Err(DiskError::NamesAnotherFile(path.into())),
        Head::BootableRaw => Ok(DiskFormat::Raw),
        Head::Unknown if direct_kernel && !head.is_empty() => Ok(DiskFormat::Raw),
        Head::Unknown => Err(DiskError::NotAnImage(path.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(backing_offset: u64, incompatible: u64) -> Vec<u8> {
        let mut head = vec![0u8; SECTOR];
        head[..4].copy_from_slice(QCOW2_MAGIC);
        head[4..8].copy_from_slice(&3u32.to_be_bytes());
        head[QCOW2_BACKING_OFFSET].copy_from_slice(&backing_offset.to_be_bytes());
        head[QCOW2_INCOMPATIBLE].copy_from_slice(&incompatible.to_be_bytes());
        head
    }

    #[test]
    fn qcow2_by_its_magic_raw_by_its_boot_signature() {
        assert_eq!(
            read_head(&qcow2(0, 0)),
            Head::Qcow2 {
                names_another_file: false
            }
        );
        for named in [qcow2(0x200, 0), qcow2(0, QCOW2_EXTERNAL_DATA)] {
            assert_eq!(
                read_head(&named),
                Head::Qcow2 {
                    names_another_file: true
                }
            );
        }
        let mut mbr = vec![0u8; SECTOR];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(read_head(&mbr), Head::BootableRaw);
        assert_eq!(read_head(&[0u8; SECTOR]), Head::Unknown);
        assert_eq!(read_head(b"#!/bin/sh\n"), Head::Unknown);
    }

    #[test]
    fn what_cannot_boot_or_could_be_forged_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a disk").unwrap();
        let forged = dir.path().join("forged.img");
        std::fs::write(&forged, qcow2(0x200, 0)).unwrap();
        let missing = dir.path().join("missing.qcow2");
        for (path, says) in [
            (missing.as_path(), "cannot be read"),
            (dir.path(), "is not a file"),
            (text.as_path(), "neither a qcow2 image nor a raw disk"),
            (forged.as_path(), "names another file"),
        ] {
            let message = format(path, None, false).unwrap_err().to_string();
            assert!(message.contains(&*path.to_string_lossy()), "{message}");
            assert!(message.contains(says), "{message}");
        }
        // Said in the config, or a bare file system booted by a kernel given directly.
        assert_eq!(
            format(&forged, Some(DiskFormat::Qcow2), false).unwrap(),
            DiskFormat::Qcow2
        );
        assert_eq!(format(&text, None, true).unwrap(), DiskFormat::Raw);
        assert!(format(&missing, Some(DiskFormat::Raw), false).is_err());
    }
}
