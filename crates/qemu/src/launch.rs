//! Starting a VM: the QEMU command line (built by a pure function, so it is unit-tested) and
//! the process start, inside the VM's cgroup from its first instruction.

use crate::disk::DiskFormat;
use crate::QEMU_BINARY;
use memvisor_core::config::PortForward;
use memvisor_core::status::Accelerator;
use memvisor_core::Size;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// QOM ids memvisor gives the devices it relies on.
pub const BALLOON_ID: &str = "balloon0";
pub const VIRTIO_MEM_ID: &str = "vmem0";
/// Serial numbers by which the guest's init finds its disks, whatever order they appear in.
pub const SWAP_SERIAL: &str = "memvisor-swap";
pub const SCRATCH_SERIAL: &str = "memvisor-scratch";
/// The virtio-serial port name qemu-guest-agent listens on in a disk guest.
pub const GUEST_AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// memvisor's image: no THP (the guest keeps a few MiB free above its watermarks instead of the
/// tens huge-page compaction reserves; the host backs guest RAM with small pages anyway); a
/// panic reboots (memvisor reports the restart); sysrq lets an operator crash or inspect a hung
/// guest from the monitor ('memvisor monitor vm1 "sendkey alt-sysrq-c"'); no timer check, which
/// a guest starved of CPU as it boots fails (measured: many-small, s6 booting on a host at its
/// limit panicked "IO-APIC + timer doesn't work" and was lost).
const IMAGE_APPEND: &str = "console=ttyS0 quiet panic=-1 sysrq_always_enabled memhp_default_state=online_movable transparent_hugepage=never no_timer_check";
/// Seconds between guest statistics reports.
pub const STATS_INTERVAL_S: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {QEMU_BINARY}: {0}; install it with 'apt-get install qemu-system-x86'")]
    NoQemu(std::io::Error),
    #[error("QEMU refused to start VM {name}: {stderr}")]
    Failed { name: String, stderr: String },
    #[error("QEMU started VM {name} but its pid file {path} is unreadable: {detail}")]
    PidFile {
        name: String,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot create disk {path}: {source}")]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub name: String,
    pub accel: Accelerator,
    pub cpus: u32,
    pub memory: Size,
    /// Above `memory`, a virtio-mem device can plug up to this much.
    pub max_memory: Size,
    pub boot: Boot,
    pub swap_disk: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    pub serial_log: PathBuf,
    pub pid_file: PathBuf,
}

/// What the guest boots.
#[derive(Debug, Clone, PartialEq)]
pub enum Boot {
    /// memvisor's image: its kernel and initramfs with the agent, whose port is `agent_socket`,
    /// and a scratch disk for the agent's page-cache workloads.
    Image {
        kernel: PathBuf,
        initrd: PathBuf,
        scratch_disk: PathBuf,
        agent_socket: PathBuf,
    },
    /// The guest's own OS from its own disk, through the firmware and the disk's bootloader, or
    /// through `kernel` when one is given. qemu-guest-agent's port is `guest_agent_socket`.
    Disk {
        disk: PathBuf,
        format: DiskFormat,
        /// Writes go to a throwaway overlay.
        snapshot: bool,
        kernel: Option<DirectKernel>,
        guest_agent_socket: PathBuf,
        /// TCP ports from the host's loopback into the guest, over a user-mode network card.
        forward: Vec<PortForward>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The full QEMU argument list for `spec`.
pub fn qemu_args(spec: &LaunchSpec) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    push(
        &mut args,
        &[
            "-name",
            &format!("memvisor-{},process=memvisor-{}", spec.name, spec.name),
        ],
    );
    push(&mut args, &["-machine", "pc,mem-merge=on"]);
    match spec.accel {
        Accelerator::Kvm => push(&mut args, &["-accel", "kvm", "-cpu", "host"]),
        // A bounded translation cache keeps TCG's own memory (QEMU overhead) small.
        Accelerator::Tcg => push(&mut args, &["-accel", "tcg,tb-size=16"]),
    }
    push(&mut args, &["-smp", &spec.cpus.to_string()]);
    args.extend(memory_args(spec));
    args.extend(boot_args(&spec.boot));
    push(&mut args, &["-nodefaults", "-display", "none"]);
    // memvisor's image reboots only on a panic, which memvisor reports as the VM's loss; a
    // disk guest reboots as an installed system does, when its operator says so.
    if matches!(spec.boot, Boot::Image { .. }) {
        push(&mut args, &["-no-reboot"]);
    }
    push(
        &mut args,
        &["-serial", &format!("file:{}", path(&spec.serial_log))],
    );
    push(
        &mut args,
        &[
            "-qmp",
            &format!("unix:{},server=on,wait=off", path(&spec.qmp_socket)),
        ],
    );
    push(&mut args, &[
        "-device",
        &format!(
            "virtio-balloon-pci,id={BALLOON_ID},free-page-reporting=on,deflate-on-oom=on,guest-stats-polling-interval={STATS_INTERVAL_S}"
        ),
    ]);
    for (drive, device) in drives(spec) {
        push(&mut args, &["-drive", &drive, "-device", &device]);
    }
    args.extend(network_args(&spec.boot));
    args.extend(agent_args(&spec.boot));
    push(
        &mut args,
        &["-daemonize", "-pidfile", &path(&spec.pid_file)],
    );
    args
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(strings(items));
}

/// Guest RAM: its boot size, and past it up to its maximum a virtio-mem device that starts
/// empty.
fn memory_args(spec: &LaunchSpec) -> Vec<String> {
    let mut args = Vec::new();
    let mib = spec.memory.as_mib();
    if spec.max_memory > spec.memory {
        let extra = Size::bytes(spec.max_memory.as_bytes() - spec.memory.as_bytes());
        push(
            &mut args,
            &[
                "-m",
                &format!("{mib}M,slots=1,maxmem={}M", spec.max_memory.as_mib()),
            ],
        );
        push(
            &mut args,
            &[
                "-object",
                &format!(
                    "memory-backend-ram,id={VIRTIO_MEM_ID}-ram,size={}M",
                    extra.as_mib()
                ),
            ],
        );
        push(
            &mut args,
            &[
                "-device",
                &format!(
                    "virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={VIRTIO_MEM_ID}-ram,requested-size=0"
                ),
            ],
        );
    } else {
        push(&mut args, &["-m", &format!("{mib}M")]);
    }
    args
}

/// A disk guest's user-mode network, with the ports forwarded from the host's loopback.
fn network_args(boot: &Boot) -> Vec<String> {
    let mut args = Vec::new();
    if let Boot::Disk { forward, .. } = boot {
        if !forward.is_empty() {
            let rules: String = forward
                .iter()
                .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
                .collect();
            push(&mut args, &["-netdev", &format!("user,id=net0{rules}")]);
            push(&mut args, &["-device", "virtio-net-pci,netdev=net0"]);
        }
    }
    args
}

/// The virtio-serial port memvisor's agent, or a disk guest's qemu-guest-agent, answers on.
fn agent_args(boot: &Boot) -> Vec<String> {
    let mut args = Vec::new();
    let (socket, port) = match boot {
        Boot::Image { agent_socket, .. } => (agent_socket, memvisor_core::agent::PORT_NAME),
        Boot::Disk {
            guest_agent_socket, ..
        } => (guest_agent_socket, GUEST_AGENT_PORT),
    };
    push(&mut args, &["-device", "virtio-serial-pci"]);
    push(
        &mut args,
        &[
            "-chardev",
            &format!("socket,id=agent,path={},server=on,wait=off", path(socket)),
        ],
    );
    push(
        &mut args,
        &[
            "-device",
            &format!("virtserialport,chardev=agent,name={port}"),
        ],
    );
    args
}

/// What boots: memvisor's kernel and initramfs, a kernel given for a disk guest, or (nothing
/// here) the disk's own bootloader.
fn boot_args(boot: &Boot) -> Vec<String> {
    match boot {
        Boot::Image { kernel, initrd, .. } => strings(&[
            "-kernel",
            &path(kernel),
            "-initrd",
            &path(initrd),
            "-append",
            IMAGE_APPEND,
        ]),
        Boot::Disk {
            kernel: Some(direct),
            ..
        } => {
            let mut args = strings(&["-kernel", &path(&direct.kernel), "-append", &direct.append]);
            if let Some(initrd) = &direct.initrd {
                args.extend(strings(&["-initrd", &path(initrd)]));
            }
            args
        }
        Boot::Disk { kernel: None, .. } => Vec::new(),
    }
}

/// Each disk as its -drive and its -device, the guest's own disk first (it is the boot disk).
/// cache=none: the guest caches; a second copy in the host page cache would be charged to the
/// VM's cgroup and hide what the guest really uses.
fn drives(spec: &LaunchSpec) -> Vec<(String, String)> {
    let drive = |id: &str, file: &Path, format: &str, extra: &str| {
        format!(
            "file={},if=none,id={id},format={format},cache=none,aio=threads{extra}",
            path(file)
        )
    };
    let mut drives = Vec::new();
    if let Boot::Disk {
        disk,
        format,
        snapshot,
        ..
    } = &spec.boot
    {
        let extra = if *snapshot { ",snapshot=on" } else { "" };
        drives.push((
            drive("root", disk, format.as_qemu(), extra),
            "virtio-blk-pci,drive=root,bootindex=0".to_string(),
        ));
    }
    if let Some(swap) = &spec.swap_disk {
        drives.push((
            drive("swap", swap, "raw", ""),
            format!("virtio-blk-pci,drive=swap,serial={SWAP_SERIAL}"),
        ));
    }
    if let Boot::Image { scratch_disk, .. } = &spec.boot {
        drives.push((
            drive("scratch", scratch_disk, "raw", ""),
            format!("virtio-blk-pci,drive=scratch,serial={SCRATCH_SERIAL}"),
        ));
    }
    drives
}

/// A sparse disk image of `size`: it costs host disk only as the guest writes to it.
pub fn create_disk(file: &Path, size: Size) -> Result<(), LaunchError> {
    let disk = std::fs::File::create(file).map_err(|source| LaunchError::Disk {
        path: file.into(),
        source,
    })?;
    disk.set_len(size.as_bytes())
        .map_err(|source| LaunchError::Disk {
            path: file.into(),
            source,
        })
}

/// Starts QEMU detached (it outlives the daemon) and returns its PID. With `cgroup_procs`, a
/// shell joins the cgroup and then becomes QEMU, so not one page is charged elsewhere.
pub async fn spawn(spec: &LaunchSpec, cgroup_procs: Option<&Path>) -> Result<u32, LaunchError> {
    let _ = std::fs::remove_file(&spec.pid_file);
    let mut command = match cgroup_procs {
        Some(procs) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(r#"echo $$ > "$0" && exec "$@""#)
                .arg(procs)
                .arg(QEMU_BINARY);
            c
        }
        None => Command::new(QEMU_BINARY),
    };
    command
        .args(qemu_args(spec))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.process_group(0);
    // Small pages for guest RAM let KSM merge and the balloon and free page reporting hand
    // memory back in 4 KiB pieces, as ESX breaks large pages to reclaim.
    // The daemon keeps the OOM killer away from itself; its VMs must not inherit that, or the
    // kernel would kill every other host process before a guest.
    // SAFETY: prctl, open, write and close only set flags of the child between fork and exec;
    // the path is a static C string, nothing is allocated, and all are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_thp_disable(true)?;
            // Where 0 is below what this process may set, the QEMU keeps the daemon's value.
            if let Ok(adj) = nix::fcntl::open(
                c"/proc/self/oom_score_adj",
                nix::fcntl::OFlag::O_WRONLY,
                nix::sys::stat::Mode::empty(),
            ) {
                let _ = nix::unistd::write(&adj, b"0");
            }
            Ok(())
        });
    }
    let output = command.output().await.map_err(LaunchError::NoQemu)?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        if stderr.contains("not found") && stderr.contains(QEMU_BINARY) {
            return Err(LaunchError::NoQemu(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                stderr,
            )));
        }
        return Err(LaunchError::Failed {
            name: spec.name.clone(),
            stderr,
        });
    }
    let pid_error = |detail: String| LaunchError::PidFile {
        name: spec.name.clone(),
        path: spec.pid_file.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&spec.pid_file).map_err(|e| pid_error(e.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| pid_error(format!("content '{}'", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(memory: u64, max: u64, swap: bool) -> LaunchSpec {
        LaunchSpec {
            name: "vm1".into(),
            accel: Accelerator::Tcg,
            cpus: 1,
            memory: Size::mib(memory),
            max_memory: Size::mib(max),
            boot: Boot::Image {
                kernel: "/img/vmlinuz".into(),
                initrd: "/img/initrd".into(),
                scratch_disk: "/vm/scratch.img".into(),
                agent_socket: "/vm/agent.sock".into(),
            },
            swap_disk: swap.then(|| PathBuf::from("/vm/swap.img")),
            qmp_socket: "/vm/qmp.sock".into(),
            serial_log: "/vm/serial.log".into(),
            pid_file: "/vm/qemu.pid".into(),
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn fixed_size_vm_has_balloon_disks_qmp_and_agent_port() {
        let args = qemu_args(&spec(1024, 1024, true));
        assert_eq!(after(&args, "-m"), ["1024M"]);
        assert!(args.contains(&"-no-reboot".to_string()), "a panic ends it");
        assert_eq!(after(&args, "-accel"), ["tcg,tb-size=16"]);
        let devices = after(&args, "-device").join(" ");
        assert!(devices
            .contains("virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on"));
        assert!(
            devices.contains("serial=memvisor-swap") && devices.contains("serial=memvisor-scratch")
        );
        assert!(devices.contains("virtserialport,chardev=agent,name=org.memvisor.agent"));
        assert!(!devices.contains("virtio-mem"));
        assert_eq!(
            after(&args, "-qmp"),
            ["unix:/vm/qmp.sock,server=on,wait=off"]
        );
        assert!(after(&args, "-machine")[0].contains("mem-merge=on"));
        assert!(after(&args, "-drive")
            .iter()
            .all(|d| d.contains("cache=none")));
    }

    #[test]
    fn growable_vm_gets_maxmem_and_virtio_mem() {
        let args = qemu_args(&spec(1024, 1536, false));
        assert_eq!(after(&args, "-m"), ["1024M,slots=1,maxmem=1536M"]);
        assert_eq!(
            after(&args, "-object"),
            ["memory-backend-ram,id=vmem0-ram,size=512M"]
        );
        assert!(after(&args, "-device")
            .iter()
            .any(|d| d.starts_with("virtio-mem-pci,id=vmem0")));
        assert!(!after(&args, "-device").join(" ").contains("memvisor-swap"));
    }

    #[test]
    fn a_disk_guest_boots_its_disk_through_the_firmware_with_qemu_guest_agent_beside() {
        let mut s = spec(768, 768, false);
        s.boot = Boot::Disk {
            disk: "/images/debian.qcow2".into(),
            format: DiskFormat::Qcow2,
            snapshot: true,
            kernel: None,
            guest_agent_socket: "/vm/qga.sock".into(),
            forward: vec![
                PortForward {
                    host: 16379,
                    guest: 6379,
                },
                PortForward {
                    host: 15432,
                    guest: 5432,
                },
            ],
        };
        let args = qemu_args(&s);
        assert!(after(&args, "-kernel").is_empty() && after(&args, "-append").is_empty());
        assert_eq!(
            after(&args, "-netdev"),
            ["user,id=net0,hostfwd=tcp:127.0.0.1:16379-:6379,hostfwd=tcp:127.0.0.1:15432-:5432"]
        );
        assert!(after(&args, "-device").contains(&"virtio-net-pci,netdev=net0"));
        assert!(
            !args.contains(&"-no-reboot".to_string()),
            "it reboots as a machine does"
        );
        assert_eq!(
            after(&args, "-drive"),
            ["file=/images/debian.qcow2,if=none,id=root,format=qcow2,cache=none,aio=threads,snapshot=on"]
        );
        let devices = after(&args, "-device").join(" ");
        assert!(devices.contains("virtio-blk-pci,drive=root,bootindex=0"));
        assert!(!devices.contains("memvisor-scratch") && !devices.contains("org.memvisor.agent"));
        assert!(devices.contains("name=org.qemu.guest_agent.0"));
        assert_eq!(
            after(&args, "-chardev"),
            ["socket,id=agent,path=/vm/qga.sock,server=on,wait=off"]
        );
    }

    #[test]
    fn a_disk_guest_with_a_kernel_boots_it_directly_with_its_own_command_line() {
        let mut s = spec(768, 768, true);
        s.boot = Boot::Disk {
            disk: "/images/root.img".into(),
            format: DiskFormat::Raw,
            snapshot: false,
            kernel: Some(DirectKernel {
                kernel: "/boot/vmlinuz".into(),
                initrd: Some("/boot/initrd.img".into()),
                append: "root=/dev/vda1 console=ttyS0".into(),
            }),
            guest_agent_socket: "/vm/qga.sock".into(),
            forward: Vec::new(),
        };
        let args = qemu_args(&s);
        assert!(
            after(&args, "-netdev").is_empty(),
            "no forward, no network card"
        );
        assert_eq!(after(&args, "-kernel"), ["/boot/vmlinuz"]);
        assert_eq!(after(&args, "-initrd"), ["/boot/initrd.img"]);
        assert_eq!(after(&args, "-append"), ["root=/dev/vda1 console=ttyS0"]);
        let drives = after(&args, "-drive");
        assert!(drives[0].contains("format=raw") && !drives[0].contains("snapshot"));
        assert!(drives[1].starts_with("file=/vm/swap.img"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut s = spec(512, 512, true);
        s.accel = Accelerator::Kvm;
        let args = qemu_args(&s);
        assert_eq!(after(&args, "-accel"), ["kvm"]);
        assert_eq!(after(&args, "-cpu"), ["host"]);
    }
}
