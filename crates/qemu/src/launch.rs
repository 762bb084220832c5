//! Starting a VM: the QEMU command line (built by a pure function, so it is unit-tested) and
//! the process start, inside the VM's cgroup from its first instruction.

use crate::QEMU_BINARY;
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
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub swap_disk: Option<PathBuf>,
    pub scratch_disk: PathBuf,
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub serial_log: PathBuf,
    pub pid_file: PathBuf,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The full QEMU argument list for `spec`.
pub fn qemu_args(spec: &LaunchSpec) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    let mib = spec.memory.as_mib();
    push(&[
        "-name",
        &format!("memvisor-{},process=memvisor-{}", spec.name, spec.name),
    ]);
    push(&["-machine", "pc,mem-merge=on"]);
    match spec.accel {
        Accelerator::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // A bounded translation cache keeps TCG's own memory (QEMU overhead) small.
        Accelerator::Tcg => push(&["-accel", "tcg,tb-size=16"]),
    }
    push(&["-smp", &spec.cpus.to_string()]);
    if spec.max_memory > spec.memory {
        let extra = Size::bytes(spec.max_memory.as_bytes() - spec.memory.as_bytes());
        push(&[
            "-m",
            &format!("{mib}M,slots=1,maxmem={}M", spec.max_memory.as_mib()),
        ]);
        push(&[
            "-object",
            &format!(
                "memory-backend-ram,id={VIRTIO_MEM_ID}-ram,size={}M",
                extra.as_mib()
            ),
        ]);
        push(&[
            "-device",
            &format!(
                "virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={VIRTIO_MEM_ID}-ram,requested-size=0"
            ),
        ]);
    } else {
        push(&["-m", &format!("{mib}M")]);
    }
    push(&[
        "-kernel",
        &path(&spec.kernel),
        "-initrd",
        &path(&spec.initrd),
    ]);
    // Without THP the guest keeps a few MiB free above its watermarks instead of the tens that
    // huge-page compaction reserves; the host backs guest RAM with small pages anyway.
    // A panic reboots the guest (memvisor reports the restart); sysrq lets an operator crash
    // or inspect a hung guest from the monitor ('memvisor monitor vm1 "sendkey alt-sysrq-c"').
    push(&[
        "-append",
        "console=ttyS0 quiet panic=-1 sysrq_always_enabled memhp_default_state=online_movable transparent_hugepage=never",
    ]);
    push(&["-nodefaults", "-display", "none", "-no-reboot"]);
    push(&["-serial", &format!("file:{}", path(&spec.serial_log))]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path(&spec.qmp_socket)),
    ]);
    push(&[
        "-device",
        &format!(
            "virtio-balloon-pci,id={BALLOON_ID},free-page-reporting=on,deflate-on-oom=on,guest-stats-polling-interval={STATS_INTERVAL_S}"
        ),
    ]);
    let mut disk = |id: &str, file: &Path, serial: &str| {
        // cache=none: the guest caches; a second copy in the host page cache would be charged
        // to the VM's cgroup and hide what the guest really uses.
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id={id},format=raw,cache=none,aio=threads",
                path(file)
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive={id},serial={serial}"),
        ]);
    };
    if let Some(swap) = &spec.swap_disk {
        disk("swap", swap, SWAP_SERIAL);
    }
    disk("scratch", &spec.scratch_disk, SCRATCH_SERIAL);
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=agent,path={},server=on,wait=off",
            path(&spec.agent_socket)
        ),
    ]);
    push(&[
        "-device",
        &format!(
            "virtserialport,chardev=agent,name={}",
            memvisor_core::agent::PORT_NAME
        ),
    ]);
    push(&["-daemonize", "-pidfile", &path(&spec.pid_file)]);
    args
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
    // SAFETY: prctl only sets a flag on the child between fork and exec; it allocates nothing
    // and is async-signal-safe.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from));
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
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd".into(),
            swap_disk: swap.then(|| PathBuf::from("/vm/swap.img")),
            scratch_disk: "/vm/scratch.img".into(),
            qmp_socket: "/vm/qmp.sock".into(),
            agent_socket: "/vm/agent.sock".into(),
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
    fn kvm_uses_the_host_cpu() {
        let mut s = spec(512, 512, true);
        s.accel = Accelerator::Kvm;
        let args = qemu_args(&s);
        assert_eq!(after(&args, "-accel"), ["kvm"]);
        assert_eq!(after(&args, "-cpu"), ["host"]);
    }
}
