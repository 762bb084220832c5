//! A real Debian 12 guest disk, built from Debian's packages with mmdebstrap: systemd, the stock
//! kernel with its virtio_balloon, qemu-guest-agent, redis and PostgreSQL. No memvisor agent runs
//! inside. It boots as an installed system does: the firmware runs the disk's MBR, syslinux on
//! the boot partition loads the kernel and its initramfs, systemd mounts the root partition.
//! Cached by its inputs, like the busybox image.
//!
//! Every tool works on files (mkfs.ext4 -d, mtools, sfdisk on an image file): no loop device
//! and no mount on the host, so a build changes nothing outside the cache.

use crate::apt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Bumped when the disk's layout or its files change in a way the package list does not show.
const LAYOUT_VERSION: &str = "4";
const SUITE: &str = "bookworm";
/// What the guest runs: an init, the kernel, the host's way in (qemu-guest-agent), a DHCP
/// client for user networking (systemd-networkd), and the servers the benchmarks drive.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "qemu-guest-agent",
    "iproute2",
    "procps",
    "redis-server",
    "postgresql",
];
/// The host tools a build runs, each with the Debian package that has it.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("syslinux", "syslinux"),
    ("sfdisk", "fdisk"),
    ("qemu-img", "qemu-utils"),
];
const SYSLINUX_MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";
const ROOT_LABEL: &str = "memvisor-root";
const MIB: u64 = 1 << 20;
/// The boot partition holds the kernel and its initramfs (about 40 MiB together).
const BOOT_MIB: u64 = 128;
/// The root partition: the system takes about 1 GiB, the rest is room for the servers' data.
const ROOT_MIB: u64 = 8192;
/// The kernel's command line: hot-plugged (virtio-mem) memory comes online as movable, so it
/// can be unplugged again, as in memvisor's own image.
const KERNEL_APPEND: &str =
    "root=LABEL=memvisor-root rw console=ttyS0 quiet memhp_default_state=online_movable";

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("cannot run {tool}: {source}; install it with 'apt-get install {package}'")]
    Tool {
        tool: &'static str,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("'{command}' failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(transparent)]
    Apt(#[from] apt::AptError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Debian root has no {0} under /boot: did linux-image-amd64 install?")]
    NoKernel(&'static str),
    #[error("no Debian guest disk in {0}: run 'memvisor image debian' first")]
    NotBuilt(PathBuf),
    #[error("the Debian disk manifest {path} is unreadable: {detail}; run 'memvisor image debian' again")]
    BadManifest { path: PathBuf, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DebianError {
    let path = path.to_path_buf();
    move |source| DebianError::Io { path, source }
}

/// A built disk: a qcow2 image to boot with `disk = PATH` (and `snapshot = true` to share it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebianDisk {
    pub key: String,
    pub disk: PathBuf,
    /// Each package asked for, with the version apt installed.
    pub packages: Vec<String>,
    pub kernel: String,
    pub disk_bytes: u64,
}

pub struct DebianReport {
    pub disk: DebianDisk,
    pub cached: bool,
    pub seconds: f64,
}

fn disks_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("debian")
}

/// Where the disk built last always is, for configs: a link to it that each build moves.
pub fn stable_path(cache_dir: &Path) -> PathBuf {
    disks_dir(cache_dir).join("debian.qcow2")
}

/// The disk built last.
pub fn current(cache_dir: &Path) -> Result<DebianDisk, DebianError> {
    let dir = disks_dir(cache_dir);
    let key = std::fs::read_to_string(dir.join("current"))
        .map_err(|_| DebianError::NotBuilt(cache_dir.into()))?;
    read_manifest(&dir.join(key.trim()).join("manifest.json"))
}

fn read_manifest(path: &Path) -> Result<DebianDisk, DebianError> {
    let bad = |detail: String| DebianError::BadManifest {
        path: path.into(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let disk: DebianDisk = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !disk.disk.is_file() {
        return Err(bad(format!("its disk {} is missing", disk.disk.display())));
    }
    Ok(disk)
}

/// Builds the disk, or finds it cached: the key hashes the layout and the version of every
/// package asked for, as apt would install it today.
pub fn build(cache_dir: &Path) -> Result<DebianReport, DebianError> {
    let started = Instant::now();
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION.as_bytes());
    for name in PACKAGES {
        hasher.update(apt::candidate(name)?.sha256.as_bytes());
    }
    let key = apt::hex(&hasher.finalize())[..16].to_string();
    let dir = disks_dir(cache_dir).join(&key);
    let manifest = dir.join("manifest.json");
    let cached = manifest.exists();
    let disk = if cached {
        read_manifest(&manifest)?
    } else {
        for (tool, package) in TOOLS {
            which(tool).ok_or(DebianError::Tool {
                tool,
                package,
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        }
        assemble(cache_dir, &key, &dir)?
    };
    let pointer = disks_dir(cache_dir).join("current");
    std::fs::write(&pointer, &key).map_err(io(&pointer))?;
    let stable = stable_path(cache_dir);
    let staged = stable.with_extension("link");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(Path::new(&key).join("debian.qcow2"), &staged)
        .and_then(|()| std::fs::rename(&staged, &stable))
        .map_err(io(&stable))?;
    // A disk is a GiB: the ones built before this are not kept.
    if let Ok(entries) = std::fs::read_dir(disks_dir(cache_dir)) {
        for entry in entries.flatten() {
            if entry.path().is_dir() && entry.file_name() != key.as_str() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(DebianReport {
        disk,
        cached,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn run(tool: &'static str, args: &[&str]) -> Result<String, DebianError> {
    let package = TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or("", |(_, p)| p);
    let program = which(tool).unwrap_or_else(|| tool.into());
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| DebianError::Tool {
            tool,
            package,
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // mmdebstrap explains itself in its last lines.
        let tail: Vec<&str> = stderr.trim().lines().rev().take(6).collect();
        return Err(DebianError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The apt sources the host uses, which the guest is built from.
fn host_sources() -> Vec<String> {
    let mut sources = vec![
        "/etc/apt/sources.list".to_string(),
        "/etc/apt/sources.list.d/debian.sources".to_string(),
    ];
    sources.retain(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
    sources
}

/// mmdebstrap's arguments: a minimal system with `PACKAGES`, from the host's apt sources
/// (whose release files may be older than their Valid-Until on a mirror snapshot).
pub fn mmdebstrap_args(root: &Path, sources: &[String]) -> Vec<String> {
    let mut args = vec![
        "--variant=minbase".to_string(),
        format!("--include={}", PACKAGES.join(",")),
        "--aptopt=Acquire::Check-Valid-Until \"false\"".to_string(),
        "--aptopt=Acquire::Check-Date \"false\"".to_string(),
        "--quiet".to_string(),
        SUITE.to_string(),
        root.display().to_string(),
    ];
    args.extend(sources.iter().cloned());
    args
}

/// The files the guest gets beyond its packages, as (path in the root, content).
pub fn guest_files() -> Vec<(&'static str, String)> {
    vec![
        ("etc/hostname", "memvisor-debian\n".into()),
        // The swap disk memvisor gives a VM (serial memvisor-swap) becomes the guest's swap:
        // systemd makes it a swap area when it has none, and boots on without it (a device
        // timeout shorter than the default fired at once under TCG, before udev saw the disk).
        (
            "etc/fstab",
            format!(
                "LABEL={ROOT_LABEL} / ext4 defaults,noatime 0 1\n/dev/disk/by-id/virtio-memvisor-swap none swap sw,nofail,x-systemd.makefs 0 0\n"
            ),
        ),
        // User networking's DHCP, for the servers' forwarded ports.
        (
            "etc/systemd/network/20-wired.network",
            "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n".into(),
        ),
        // PostgreSQL answers the host's forwarded port too (its cluster's postgresql.conf
        // includes conf.d).
        (
            "etc/postgresql/15/main/conf.d/memvisor.conf",
            "listen_addresses = '*'\n".into(),
        ),
        ("boot/syslinux.cfg", syslinux_cfg()),
    ]
}

/// Lines appended to the packages' own configuration files, as (path in the root, lines). The
/// servers answer clients on the host, whose connections arrive from user networking's
/// gateway, 10.0.2.2; nothing but the host reaches that network.
fn guest_appends() -> Vec<(&'static str, &'static str)> {
    vec![
        // The data set lives in memory only: a snapshot's fork would copy it on write.
        (
            "etc/redis/redis.conf",
            "\n# memvisor: reached from the host's forwarded port\nbind 0.0.0.0\nprotected-mode no\nsave \"\"\n",
        ),
        (
            "etc/postgresql/15/main/pg_hba.conf",
            "\n# memvisor: the host's benchmark clients\nhost all all 10.0.2.2/32 trust\n",
        ),
    ]
}

/// syslinux's configuration on the boot partition: boot the one kernel at once.
pub fn syslinux_cfg() -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT debian\nPROMPT 0\nTIMEOUT 0\n\nLABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {KERNEL_APPEND}\n"
    )
}

/// The partition table, as sfdisk reads it: a bootable FAT boot partition, then the root.
pub fn partition_table() -> String {
    let sectors = |mib: u64| mib * MIB / 512;
    format!(
        "label: dos\nstart={}, size={}, type=c, bootable\nstart={}, size={}, type=83\n",
        sectors(1),
        sectors(BOOT_MIB),
        sectors(1 + BOOT_MIB),
        sectors(ROOT_MIB),
    )
}

/// Units a benchmark guest is better without: timers that wake at random and fetch or index.
const QUIET_TIMERS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];

fn assemble(cache_dir: &Path, key: &str, dir: &Path) -> Result<DebianDisk, DebianError> {
    let work = cache_dir.join(format!("work-debian-{key}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let root = work.join("root");
    let args = mmdebstrap_args(&root, &host_sources());
    run(
        "mmdebstrap",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    configure(&root)?;
    let (boot, kernel) = boot_partition(&root, &work)?;
    let root_img = work.join("root.img");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-L",
            ROOT_LABEL,
            "-d",
            &root.display().to_string(),
            &root_img.display().to_string(),
            &format!("{ROOT_MIB}M"),
        ],
    )?;
    let raw = work.join("disk.raw");
    let file = std::fs::File::create(&raw).map_err(io(&raw))?;
    file.set_len((1 + BOOT_MIB + ROOT_MIB) * MIB)
        .map_err(io(&raw))?;
    drop(file);
    sfdisk(&raw, &partition_table())?;
    place(&boot, &raw, 1)?;
    place(&root_img, &raw, 1 + BOOT_MIB)?;
    write_mbr_code(&raw)?;

    let staging = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let qcow2 = staging.join("debian.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            &raw.display().to_string(),
            &qcow2.display().to_string(),
        ],
    )?;
    let disk = DebianDisk {
        key: key.to_string(),
        disk: dir.join("debian.qcow2"),
        packages: installed_versions(&root)?,
        kernel,
        disk_bytes: std::fs::metadata(&qcow2).map_err(io(&qcow2))?.len(),
    };
    let manifest = serde_json::to_string_pretty(&disk).expect("disk manifest serializes");
    std::fs::write(staging.join("manifest.json"), manifest).map_err(io(&staging))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(disk)
}

/// The guest's own files beyond its packages, its services, and root's empty password.
fn configure(root: &Path) -> Result<(), DebianError> {
    for (path, content) in guest_files() {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&file, content).map_err(io(&file))?;
    }
    for (path, lines) in guest_appends() {
        let file = root.join(path);
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        std::fs::write(&file, text + lines).map_err(io(&file))?;
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(io(&wants))?;
    let networkd = wants.join("systemd-networkd.service");
    let _ = std::fs::remove_file(&networkd);
    std::os::unix::fs::symlink("/lib/systemd/system/systemd-networkd.service", &networkd)
        .map_err(io(&networkd))?;
    for timer in QUIET_TIMERS {
        let _ = std::fs::remove_file(
            root.join("etc/systemd/system/timers.target.wants")
                .join(timer),
        );
    }
    // The console logs in as root without a password: a test guest on a private socket.
    let shadow = root.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow).map_err(io(&shadow))?;
    std::fs::write(&shadow, text.replacen("root:*:", "root::", 1)).map_err(io(&shadow))
}

/// The FAT boot partition's image in `work`: the root's kernel and initramfs, syslinux's
/// configuration and syslinux itself. Returns it and the kernel's release.
fn boot_partition(root: &Path, work: &Path) -> Result<(PathBuf, String), DebianError> {
    let (vmlinuz, kernel) = boot_file(root, "vmlinuz-")?;
    let (initrd, _) = boot_file(root, "initrd.img-")?;
    let boot = work.join("boot.img");
    let boot_str = boot.display().to_string();
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-n",
            "BOOT",
            &boot_str,
            &(BOOT_MIB * 1024).to_string(),
        ],
    )?;
    for (from, to) in [
        (vmlinuz, "::vmlinuz"),
        (initrd, "::initrd.img"),
        (root.join("boot/syslinux.cfg"), "::syslinux.cfg"),
    ] {
        run("mcopy", &["-i", &boot_str, &from.display().to_string(), to])?;
    }
    run("syslinux", &["--install", &boot_str])?;
    Ok((boot, kernel))
}

/// The one file in the root's /boot whose name starts with `prefix`, and what follows it (the
/// kernel's release).
fn boot_file(root: &Path, prefix: &'static str) -> Result<(PathBuf, String), DebianError> {
    let boot = root.join("boot");
    std::fs::read_dir(&boot)
        .map_err(io(&boot))?
        .filter_map(Result::ok)
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix(prefix)?.to_string();
            Some((e.path(), release))
        })
        .ok_or(DebianError::NoKernel(prefix))
}

fn sfdisk(disk: &Path, table: &str) -> Result<(), DebianError> {
    use std::io::Write;
    let mut child = Command::new(which("sfdisk").unwrap_or_else(|| "sfdisk".into()))
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| DebianError::Tool {
            tool: "sfdisk",
            package: "fdisk",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(table.as_bytes()).map_err(io(disk))?;
    }
    let out = child.wait_with_output().map_err(io(disk))?;
    if !out.status.success() {
        return Err(DebianError::Failed {
            command: format!("sfdisk {}", disk.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Copies `part` into `disk` at `offset_mib`, leaving the runs of zeros as holes.
fn place(part: &Path, disk: &Path, offset_mib: u64) -> Result<(), DebianError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut from = std::fs::File::open(part).map_err(io(part))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io(disk))?;
    let mut block = vec![0u8; MIB as usize];
    let mut at = offset_mib * MIB;
    loop {
        let read = from.read(&mut block).map_err(io(part))?;
        if read == 0 {
            return Ok(());
        }
        if block[..read].iter().any(|b| *b != 0) {
            to.seek(SeekFrom::Start(at)).map_err(io(disk))?;
            to.write_all(&block[..read]).map_err(io(disk))?;
        }
        at += read as u64;
    }
}

/// syslinux's MBR code goes into the first 440 bytes; the partition table after it stays.
fn write_mbr_code(disk: &Path) -> Result<(), DebianError> {
    use std::io::Write;
    let mbr = Path::new(SYSLINUX_MBR);
    let code = std::fs::read(mbr).map_err(io(mbr))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io(disk))?;
    to.write_all(&code[..code.len().min(440)]).map_err(io(disk))
}

/// Each package of `PACKAGES` with its installed version, from the root's dpkg status.
fn installed_versions(root: &Path) -> Result<Vec<String>, DebianError> {
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).map_err(io(&status))?;
    Ok(PACKAGES
        .iter()
        .map(|name| {
            let version = text
                .split("\n\n")
                .find(|s| s.lines().any(|l| l == format!("Package: {name}")))
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Version: ")))
                .unwrap_or("?");
            format!("{name} {version}")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_table_puts_a_bootable_fat_partition_before_the_root() {
        let table = partition_table();
        assert!(table.starts_with("label: dos\n"));
        assert!(table.contains("start=2048, size=262144, type=c, bootable"));
        assert!(table.contains(&format!("start={}, size=", 2048 + 262144)));
    }

    #[test]
    fn syslinux_boots_the_stock_kernel_on_the_labelled_root_with_a_serial_console() {
        let cfg = syslinux_cfg();
        assert!(cfg.contains("LINUX /vmlinuz") && cfg.contains("INITRD /initrd.img"));
        assert!(cfg.contains("root=LABEL=memvisor-root") && cfg.contains("console=ttyS0"));
        let fstab = &guest_files()[1].1;
        assert!(fstab.starts_with("LABEL=memvisor-root / ext4"));
    }

    #[test]
    fn mmdebstrap_installs_every_package_from_the_hosts_sources() {
        let args = mmdebstrap_args(
            Path::new("/cache/root"),
            &["/etc/apt/sources.list.d/debian.sources".into()],
        );
        assert!(args.contains(&"--variant=minbase".to_string()));
        let include = args.iter().find(|a| a.starts_with("--include=")).unwrap();
        for p in [
            "linux-image-amd64",
            "qemu-guest-agent",
            "systemd-sysv",
            "redis-server",
        ] {
            assert!(include.contains(p), "{include}");
        }
        assert_eq!(
            args[args.len() - 3..],
            [
                "bookworm",
                "/cache/root",
                "/etc/apt/sources.list.d/debian.sources"
            ]
        );
    }

    #[test]
    fn memvisors_swap_disk_is_made_swap_and_a_guest_without_it_boots_on() {
        let fstab = &guest_files()[1].1;
        let swap = fstab.lines().find(|l| l.contains(" swap ")).unwrap();
        assert!(swap.starts_with("/dev/disk/by-id/virtio-memvisor-swap "));
        assert!(swap.contains("x-systemd.makefs") && swap.contains("nofail"));
    }
}
