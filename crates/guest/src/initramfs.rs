//! The initramfs: a cpio "newc" archive the kernel unpacks as its root, and the init script in it.

use crate::modules::module_name;
use std::io::{self, Write};

/// Where the agent lives inside the guest.
pub const AGENT_PATH: &str = "sbin/memvisor-agent";

pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    CharDevice { major: u32, minor: u32 },
}

pub struct Entry {
    pub path: String,
    pub node: Node,
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            node: Node::Dir,
        }
    }

    pub fn file(path: &str, data: Vec<u8>, executable: bool) -> Entry {
        Entry {
            path: path.into(),
            node: Node::File { data, executable },
        }
    }
}

/// Writes `entries` as a newc archive. Times and owners are fixed so equal inputs give equal bytes.
pub fn write_archive<W: Write>(entries: &[Entry], mut out: W) -> io::Result<W> {
    for (i, entry) in entries.iter().enumerate() {
        let builder = cpio::newc::Builder::new(&entry.path)
            .ino(i as u32 + 1)
            .uid(0)
            .gid(0)
            .mtime(0);
        let (builder, data): (_, &[u8]) = match &entry.node {
            Node::Dir => (builder.mode(0o040755).nlink(2), &[]),
            Node::File { data, executable } => (
                builder
                    .mode(if *executable { 0o100755 } else { 0o100644 })
                    .nlink(1),
                data,
            ),
            Node::CharDevice { major, minor } => (
                builder
                    .mode(0o020600)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is over 4 GiB", entry.path),
            )
        })?;
        let mut writer = builder.write(out, size);
        writer.write_all(data)?;
        out = writer.finish()?;
    }
    cpio::newc::trailer(out)
}

/// The guest's PID 1: mount the kernel filesystems, load modules in `modules` order (paths in
/// dependency order), turn on swap on the disk with the swap serial, then keep the agent running.
pub fn init_script(modules: &[String], swap_serial: &str) -> String {
    let names: Vec<String> = modules.iter().map(|m| module_name(m)).collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do
  insmod /lib/modules/$m.ko || echo "memvisor-init: insmod $m failed"
done
for d in /sys/block/vd*; do
  [ "$(cat $d/serial 2>/dev/null)" = "{swap_serial}" ] || continue
  mkswap /dev/${{d##*/}} >/dev/null && swapon /dev/${{d##*/}} && echo "memvisor-init: swap on ${{d##*/}}"
done
echo "memvisor-init: ready after $(cut -d' ' -f1 /proc/uptime) s"
while true; do
  /{agent}
  echo "memvisor-init: agent exited ($?), restarting"
  sleep 1
done
"#,
        modules = names.join(" "),
        agent = AGENT_PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trips_through_a_cpio_reader() {
        let entries = vec![
            Entry::dir("bin"),
            Entry::file("bin/hello", b"#!/bin/sh\necho hi\n".to_vec(), true),
            Entry {
                path: "dev/console".into(),
                node: Node::CharDevice { major: 5, minor: 1 },
            },
        ];
        let bytes = write_archive(&entries, Vec::new()).unwrap();
        let mut reader = cpio::NewcReader::new(&bytes[..]).unwrap();
        assert_eq!(
            (reader.entry().name(), reader.entry().mode()),
            ("bin", 0o040755)
        );
        let rest = reader.finish().unwrap();
        reader = cpio::NewcReader::new(rest).unwrap();
        assert_eq!(reader.entry().name(), "bin/hello");
        assert_eq!(reader.entry().mode(), 0o100755);
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut content).unwrap();
        assert_eq!(content, b"#!/bin/sh\necho hi\n");
        let rest = reader.finish().unwrap();
        reader = cpio::NewcReader::new(rest).unwrap();
        assert_eq!(
            (reader.entry().rdev_major(), reader.entry().rdev_minor()),
            (5, 1)
        );
        let rest = reader.finish().unwrap();
        assert!(cpio::NewcReader::new(rest).unwrap().entry().is_trailer());
        assert_eq!(
            bytes,
            write_archive(&entries, Vec::new()).unwrap(),
            "same input, same bytes"
        );
    }

    #[test]
    fn init_loads_modules_in_order_and_runs_the_agent() {
        let script = init_script(
            &[
                "kernel/a/virtio_ring.ko".into(),
                "kernel/a/virtio.ko".into(),
            ],
            "memvisor-swap",
        );
        assert!(script.contains("for m in virtio_ring virtio; do"));
        assert!(script.contains(r#"= "memvisor-swap" ]"#));
        assert!(script.contains("/sbin/memvisor-agent"));
    }
}
