//! A libvirt daemon for the tests, started from Debian's packages as a host without systemd
//! runs it, and domains that boot the project's guests. Whatever a test started or created it
//! stops and removes again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";
const SOCKET: &str = "/run/libvirt/libvirt-sock";
/// Where QEMU, running as libvirt's own user, may read the guests' files.
const IMAGES: &str = "/var/lib/libvirt/images";

pub fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .expect("virsh runs")
}

/// virsh's output, or the test fails with what virsh said.
pub fn virsh_ok(args: &[&str]) -> String {
    let out = virsh(args);
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A figure of `virsh dominfo`, in KiB ("Used memory", "Max memory").
pub fn dominfo_kib(domain: &str, field: &str) -> u64 {
    let info = virsh_ok(&["dominfo", domain]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in dominfo: {info}"))
}

/// A libvirtd: the one running, or one started here and stopped on drop. memory cgroups libvirt
/// makes for its domains' partition are removed once it is stopped, if they were not there.
pub struct Libvirtd {
    started: bool,
    partitions: Vec<PathBuf>,
}

fn answers() -> bool {
    Path::new(SOCKET).exists() && virsh(&["version"]).status.success()
}

fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill(pid: u32) {
    Command::new("kill").arg(pid.to_string()).status().unwrap();
    wait_until(&format!("pid {pid} gone"), Duration::from_secs(30), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

impl Libvirtd {
    pub fn start() -> Libvirtd {
        super::require_tool("libvirtd", "libvirt-daemon-system");
        super::require_tool("virsh", "libvirt-clients");
        let partitions = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("machine"))
            .filter(|p| !p.exists())
            .collect();
        if answers() {
            return Libvirtd {
                started: false,
                partitions: Vec::new(),
            };
        }
        if pid_of("virtlogd").is_none() {
            assert!(Command::new("virtlogd")
                .arg("-d")
                .status()
                .unwrap()
                .success());
        }
        let daemon = Libvirtd {
            started: true,
            partitions,
        };
        daemon.launch();
        daemon
    }

    fn launch(&self) {
        assert!(Command::new("libvirtd")
            .arg("-d")
            .status()
            .unwrap()
            .success());
        wait_until("libvirtd answering", Duration::from_secs(60), answers);
    }

    /// Stops libvirtd (its domains run on) and starts it again.
    pub fn restart(&self) {
        kill(pid_of("libvirtd").expect("libvirtd runs"));
        self.launch();
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        for daemon in ["libvirtd", "virtlogd"] {
            if let Some(pid) = pid_of(daemon) {
                kill(pid);
            }
        }
        for partition in &self.partitions {
            let _ = std::fs::remove_dir(partition);
        }
    }
}

/// What a test domain boots.
pub enum Guest {
    /// memvisor's busybox kernel and initramfs (its agent waits for a host that never comes).
    Busybox,
    /// The project's Debian disk, through an overlay of its own.
    Debian,
}

/// A persistent domain defined and started here, destroyed and undefined on drop, its files
/// with it.
pub struct TestDomain {
    pub name: String,
    dir: PathBuf,
}

impl TestDomain {
    pub fn start(name: &str, memory_mib: u64, guest: Guest) -> TestDomain {
        TestDomain::start_growable(name, memory_mib, 0, guest)
    }

    /// A domain that boots with `memory_mib` and may grow by `plug_mib` through a virtio-mem
    /// device (none when 0).
    pub fn start_growable(name: &str, memory_mib: u64, plug_mib: u64, guest: Guest) -> TestDomain {
        let dir = PathBuf::from(IMAGES).join(format!("memvisor-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let domain = TestDomain {
            name: name.to_string(),
            dir,
        };
        let xml = domain.xml(memory_mib, plug_mib, guest);
        let file = domain.dir.join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        virsh_ok(&["define", file.to_str().unwrap()]);
        domain.boot();
        domain
    }

    pub fn boot(&self) {
        virsh_ok(&["start", &self.name]);
    }

    pub fn destroy(&self) {
        virsh_ok(&["destroy", &self.name]);
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn xml(&self, memory_mib: u64, plug_mib: u64, guest: Guest) -> String {
        let dir = self.dir.display();
        let (os, devices) = match guest {
            Guest::Busybox => {
                let image = super::cache_dir().join("images").join(
                    std::fs::read_to_string(super::cache_dir().join("current"))
                        .unwrap()
                        .trim(),
                );
                for file in ["vmlinuz", "initrd.cpio"] {
                    std::fs::copy(image.join(file), self.dir.join(file)).unwrap();
                }
                (
                    format!("<kernel>{dir}/vmlinuz</kernel><initrd>{dir}/initrd.cpio</initrd><cmdline>console=ttyS0 quiet panic=-1 memhp_default_state=online_movable</cmdline>"),
                    format!("<channel type='unix'><source mode='bind' path='{dir}/agent.sock'/><target type='virtio' name='org.memvisor.agent'/></channel>"),
                )
            }
            Guest::Debian => {
                let overlay = self.dir.join("disk.qcow2");
                let made = Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .arg(super::debian_disk())
                    .arg(&overlay)
                    .status()
                    .unwrap();
                assert!(made.success());
                // The Debian disk turns on a swap disk with this serial, as memvisor gives one.
                let swap = self.dir.join("swap.img");
                std::fs::File::create(&swap)
                    .unwrap()
                    .set_len(256 << 20)
                    .unwrap();
                (
                    "<boot dev='hd'/>".to_string(),
                    format!("<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
                             <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/><source file='{}'/><target dev='vdb' bus='virtio'/><serial>memvisor-swap</serial></disk>\
                             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>", overlay.display(), swap.display()),
                )
            }
        };
        // Memory devices need a guest NUMA cell, and a slot for each.
        let (max, numa, plug) = if plug_mib == 0 {
            (String::new(), String::new(), String::new())
        } else {
            (
                format!("<maxMemory slots='1' unit='MiB'>{}</maxMemory>", memory_mib + plug_mib),
                format!("<cpu><numa><cell id='0' cpus='0' memory='{memory_mib}' unit='MiB'/></numa></cpu>"),
                format!("<memory model='virtio-mem'><target><size unit='MiB'>{plug_mib}</size><node>0</node><block unit='KiB'>2048</block><requested unit='KiB'>0</requested></target></memory>"),
            )
        };
        let total_mib = memory_mib + plug_mib;
        format!(
            "<domain type='qemu'><name>{name}</name>{max}<memory unit='MiB'>{total_mib}</memory><currentMemory unit='MiB'>{memory_mib}</currentMemory><vcpu>1</vcpu>{numa}\
             <os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>\
             <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <serial type='file'><source path='{dir}/console.log'/><target port='0'/></serial>\
             <memballoon model='virtio' autodeflate='on' freePageReporting='on'><stats period='1'/></memballoon>\
             {devices}{plug}</devices></domain>",
            name = self.name
        )
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
