//! The TOML file `memvisor up -f` reads: the host budget and the VMs to run.
//!
//! ```toml
//! [host]
//! budget = "1.5G"          # lab: memory all VMs together may use, the parent cgroup's limit
//!                          # "auto": the machine's memory, used as the kernel counts it
//!
//! [[vm]]
//! name = "vm1"
//! memory = "1G"            # boot size of guest RAM
//! max = "2G"               # optional: room to grow live with virtio-mem
//! reservation = "256M"     # optional: never reclaimed below this
//! limit = "1G"             # optional: never granted above this (default: max or memory)
//! shares = 1000            # optional: relative claim on contended memory
//! workload = "hold:512M"   # optional: what the guest agent does (see workload.rs)
//! ```

use crate::reservation::{self, GUEST_FLOOR};
use crate::size::Size;
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

/// The format of a guest's own disk image, as QEMU names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// A TCP port of a disk guest reached from the host: connections to `host` on the host's
/// loopback go to `guest` in the VM, over QEMU's user-mode network (the guest is 10.0.2.15 and
/// sees them come from 10.0.2.2). Written "HOST:GUEST", as in `forward = ["16379:6379"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

impl TryFrom<String> for PortForward {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let port = |part: &str| part.trim().parse::<u16>().ok().filter(|p| *p > 0);
        text.split_once(':')
            .and_then(|(host, guest)| Some((port(host)?, port(guest)?)))
            .map(|(host, guest)| PortForward { host, guest })
            .ok_or_else(|| {
                format!("forward '{text}' must be \"HOST:GUEST\", two TCP ports from 1 to 65535, e.g. \"16379:6379\"")
            })
    }
}

impl From<PortForward> for String {
    fn from(f: PortForward) -> String {
        format!("{}:{}", f.host, f.guest)
    }
}

/// virtio-mem plugs memory in blocks of this size on x86.
pub const VIRTIO_MEM_BLOCK: Size = Size::mib(2);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid TOML for memvisor: {0}")]
    Syntax(String),
    #[error("config has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it can really run a guest here, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub host: HostConfig,
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmConfig>,
    #[serde(default)]
    pub scheduler: crate::policy::Settings,
    #[serde(default)]
    pub api: ApiConfig,
    /// QEMUs someone else started, managed through their QMP sockets.
    #[serde(default, rename = "attach")]
    pub attached: Vec<AttachConfig>,
    #[serde(default)]
    pub discover: DiscoverConfig,
    /// The domains of a libvirt daemon, managed through libvirt's API.
    #[serde(default)]
    pub libvirt: Option<LibvirtConfig>,
}

/// A libvirt daemon whose running domains memvisor schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// Its local URI: "qemu:///system".
    pub uri: String,
    /// Globs on domain names: only the domains one matches (none given: every domain).
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs on domain names: domains left alone even where `include` matches them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Lets `translate` read guest kernel addresses through libvirt's monitor pass-through;
    /// libvirt then marks the domain tainted ("custom-monitor").
    #[serde(default)]
    pub monitor: bool,
    /// Reservations, limits and shares, by domain name.
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

/// What memvisor guarantees one libvirt domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub name: String,
    #[serde(default)]
    pub reservation: Size,
    /// Never granted above this (default: the domain's memory).
    #[serde(default)]
    pub limit: Option<Size>,
    #[serde(default = "default_shares")]
    pub shares: u32,
}

impl LibvirtConfig {
    /// Whether memvisor manages the domain `name`.
    pub fn takes(&self, name: &str) -> bool {
        let matches = |globs: &[String]| {
            globs
                .iter()
                .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(name)))
        };
        (self.include.is_empty() || matches(&self.include)) && !matches(&self.exclude)
    }

    /// What the config guarantees the domain `name`: (reservation, limit, shares).
    pub fn guarantees(&self, name: &str) -> (Size, Option<Size>, u32) {
        self.domains
            .iter()
            .find(|d| d.name == name)
            .map_or((Size::ZERO, None, default_shares()), |d| {
                (d.reservation, d.limit, d.shares)
            })
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for glob in self.include.iter().chain(&self.exclude) {
            if let Err(e) = glob::Pattern::new(glob) {
                out.push(format!("libvirt: \"{glob}\" is not a usable glob: {e}"));
            }
        }
        for d in &self.domains {
            let name = &d.name;
            out.extend(guarantee_problems(
                "libvirt domain",
                name,
                d.reservation,
                d.limit,
                d.shares,
            ));
            if !self.takes(name) {
                out.push(format!(
                    "libvirt domain {name} is declared but [libvirt] include/exclude leave it alone; include it, or drop its declaration"
                ));
            }
        }
        out
    }
}

/// A QEMU started by someone else (Proxmox, libvirt-less scripts, by hand), declared by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachConfig {
    pub name: String,
    /// Its QMP socket.
    pub qmp: PathBuf,
    #[serde(default)]
    pub reservation: Size,
    /// Never granted above this (default: the memory it booted with).
    #[serde(default)]
    pub limit: Option<Size>,
    #[serde(default = "default_shares")]
    pub shares: u32,
}

/// Where QEMUs started by others are looked for while the daemon runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverConfig {
    /// A glob of QMP sockets, e.g. Proxmox's "/var/run/qemu-server/*.qmp". Each QEMU found is
    /// attached, named as QEMU's -name says or else as its socket's file is named.
    #[serde(default)]
    pub qmp: Option<String>,
}

/// The API beyond its Unix socket (which is always there, mode 0600).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// TCP address for the dashboard, /metrics and the API, e.g. "127.0.0.1:8680"; off when
    /// absent. Every TCP request needs the token the daemon keeps in DIR/api-token.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow `listen` on an address other hosts can reach (the token still applies).
    #[serde(default)]
    pub allow_remote: bool,
}

/// The memory the VMs share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The machine's memory (MemTotal); used memory is what the kernel counts in use
    /// (MemTotal - MemAvailable), host processes included: a real host. As in the lab, the
    /// reserve is kept out of the VMs' entitlements, so VMs share MemTotal less the reserve.
    Auto,
    /// A lab host of this size: the limit of the parent cgroup that holds the VMs, whose usage
    /// is the used memory.
    Fixed(Size),
}

impl Budget {
    /// The budget on a machine with `mem_total` of RAM.
    pub fn on(self, mem_total: Size) -> Size {
        match self {
            Budget::Fixed(size) => size,
            Budget::Auto => mem_total,
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Auto => f.write_str("auto"),
            Budget::Fixed(size) => size.fmt(f),
        }
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    fn from_str(text: &str) -> Result<Budget, String> {
        if text.trim() == "auto" {
            return Ok(Budget::Auto);
        }
        text.parse()
            .map(Budget::Fixed)
            .map_err(|e| format!("{e}; or \"auto\" for the machine's memory"))
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Budget, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub budget: Budget,
    /// Name of the parent cgroup that holds every launched VM.
    #[serde(default = "default_cgroup")]
    pub cgroup: String,
    #[serde(default)]
    pub accel: Accel,
    /// Kept out of every VM's entitlement, for the host itself and QEMU's own growth.
    #[serde(default = "default_reserve")]
    pub reserve: Size,
    /// A swap file of this size is switched on for the VMs while memvisor runs (0: none).
    #[serde(default)]
    pub swap: Size,
}

fn default_reserve() -> Size {
    Size::mib(64)
}

fn default_cgroup() -> String {
    "memvisor".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    pub memory: Size,
    #[serde(default)]
    pub max: Option<Size>,
    #[serde(default)]
    pub reservation: Size,
    #[serde(default)]
    pub limit: Option<Size>,
    #[serde(default = "default_shares")]
    pub shares: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Size of the guest's swap disk (serial `memvisor-swap`); 0 for none. Default: 512 MiB for
    /// memvisor's image, whose init uses it; none for a `disk` guest, which has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Size>,
    #[serde(default)]
    pub workload: Workload,
    /// Boot the guest's own OS from this disk image (qcow2 or raw) through the firmware and the
    /// disk's bootloader, instead of memvisor's image. No memvisor agent runs inside: the
    /// balloon's statistics and the host are all the scheduler sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    /// With `disk`: its format. Told from the image when absent, except for a qcow2 image that
    /// names another file (a backing file or an external data file): a guest that could write
    /// the first sector of a raw disk could forge one, so such an image needs it said here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// With `disk`: the guest's writes go to a throwaway overlay, so that many VMs can boot one
    /// image and the image stays as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// With `disk`: boot this kernel directly instead of the disk's bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// With `kernel`: its initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// With `kernel`: its command line (default "console=ttyS0"; the root is usually needed too,
    /// e.g. "root=/dev/vda1 console=ttyS0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// With `disk`: TCP ports forwarded from the host's loopback into the guest, "HOST:GUEST",
    /// over a user-mode network card (the guest needs a DHCP client). Empty: no network card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<PortForward>,
}

fn default_shares() -> u32 {
    1000
}
fn default_cpus() -> u32 {
    1
}
/// memvisor's image turns this swap disk on at boot.
const IMAGE_SWAP: Size = Size::mib(512);

impl VmConfig {
    pub fn max_memory(&self) -> Size {
        self.max.unwrap_or(self.memory).max(self.memory)
    }

    pub fn effective_limit(&self) -> Size {
        self.limit.unwrap_or_else(|| self.max_memory())
    }

    /// Whether a VM that booted with `boot` has a virtio-mem device to grow past it (its size
    /// may since have been set to its max).
    pub fn can_grow_past(&self, boot: Size) -> bool {
        self.max_memory() > boot
    }

    pub fn swap(&self) -> Size {
        self.swap.unwrap_or(if self.disk.is_some() {
            Size::ZERO
        } else {
            IMAGE_SWAP
        })
    }

    /// A VM another tool started, before its QEMU says how much memory it has.
    pub fn started_elsewhere(name: String) -> VmConfig {
        VmConfig {
            name,
            memory: Size::ZERO,
            max: None,
            reservation: Size::ZERO,
            limit: None,
            shares: default_shares(),
            cpus: 1,
            swap: Some(Size::ZERO),
            workload: Default::default(),
            disk: None,
            format: None,
            snapshot: false,
            kernel: None,
            initrd: None,
            append: None,
            forward: Vec::new(),
        }
    }

    /// Whether memvisor's agent runs in the guest: only in memvisor's own image.
    pub fn has_agent(&self) -> bool {
        self.disk.is_none()
    }

    /// Every problem with this VM's settings, each said so that the fix is plain.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = &self.name;
        if let Err(e) = check_name(name) {
            out.push(e);
        }
        if self.memory < GUEST_FLOOR {
            out.push(format!(
                "vm {name}: memory {} is below the {GUEST_FLOOR} a Linux guest needs",
                self.memory
            ));
        }
        if !self
            .memory
            .as_bytes()
            .is_multiple_of(Size::mib(1).as_bytes())
        {
            out.push(format!(
                "vm {name}: memory {} is not a whole number of MiB",
                self.memory
            ));
        }
        if let Some(max) = self.max {
            if max < self.memory {
                out.push(format!(
                    "vm {name}: max {max} is below memory {}; raise max or drop it",
                    self.memory
                ));
            } else if !(max.as_bytes() - self.memory.as_bytes())
                .is_multiple_of(VIRTIO_MEM_BLOCK.as_bytes())
            {
                out.push(format!(
                    "vm {name}: max {max} minus memory {} must be a multiple of {VIRTIO_MEM_BLOCK} (virtio-mem block size)",
                    self.memory
                ));
            }
        }
        let limit = self.effective_limit();
        if limit > self.max_memory() {
            out.push(format!(
                "vm {name}: limit {limit} is above the most the VM can have ({}); lower the limit or raise max",
                self.max_memory()
            ));
        }
        if self.reservation > limit {
            out.push(format!("vm {name}: reservation {} is above its limit {limit}; a VM cannot be guaranteed more than it may have", self.reservation));
        } else if self.reservation > self.memory {
            out.push(format!(
                "vm {name}: reservation {} is above its memory {}",
                self.reservation, self.memory
            ));
        }
        if !(1..=1_000_000).contains(&self.shares) {
            out.push(format!(
                "vm {name}: shares {} must be between 1 and 1000000",
                self.shares
            ));
        }
        if !(1..=64).contains(&self.cpus) {
            out.push(format!(
                "vm {name}: cpus {} must be between 1 and 64",
                self.cpus
            ));
        }
        out.extend(workload_problems(name, &self.workload, self));
        out.extend(self.boot_problems());
        out
    }

    fn boot_problems(&self) -> Vec<String> {
        let name = &self.name;
        let mut out = Vec::new();
        match &self.disk {
            None => {
                let only_with_disk = [
                    ("snapshot", self.snapshot),
                    ("format", self.format.is_some()),
                    ("kernel", self.kernel.is_some()),
                    ("initrd", self.initrd.is_some()),
                    ("append", self.append.is_some()),
                    ("forward", !self.forward.is_empty()),
                ];
                for (field, _) in only_with_disk.iter().filter(|(_, set)| *set) {
                    out.push(format!("vm {name}: {field} applies only to a VM with a disk; add disk = \"PATH\" or drop {field}"));
                }
            }
            Some(disk) => {
                if !disk.is_absolute() {
                    out.push(format!(
                        "vm {name}: disk {} is not an absolute path",
                        disk.display()
                    ));
                }
                if self.workload != Workload::default() {
                    out.push(format!("vm {name}: workload '{}' needs memvisor's agent, which runs only in memvisor's own image, not in a disk guest; drop workload or disk", self.workload));
                }
                if self.kernel.is_none() && (self.initrd.is_some() || self.append.is_some()) {
                    out.push(format!("vm {name}: initrd and append need kernel; without it the disk's own bootloader boots the guest"));
                }
            }
        }
        out
    }
}

impl AttachConfig {
    /// Every problem with this declaration that can be seen before its QEMU answers.
    pub fn problems(&self) -> Vec<String> {
        let name = &self.name;
        let mut out = guarantee_problems("attach", name, self.reservation, self.limit, self.shares);
        if !self.qmp.is_absolute() {
            out.push(format!(
                "attach {name}: qmp {} is not an absolute path",
                self.qmp.display()
            ));
        }
        out
    }
}

/// What is wrong with the name and guarantees of a VM another tool started (`kind`: how the
/// config declares it).
fn guarantee_problems(
    kind: &str,
    name: &str,
    reservation: Size,
    limit: Option<Size>,
    shares: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = check_name(name) {
        out.push(format!("{kind} {e}"));
    }
    if let Some(limit) = limit.filter(|l| *l < reservation) {
        out.push(format!(
            "{kind} {name}: reservation {reservation} is above its limit {limit}"
        ));
    }
    if !(1..=1_000_000).contains(&shares) {
        out.push(format!(
            "{kind} {name}: shares {shares} must be between 1 and 1000000"
        ));
    }
    out
}

/// Why `workload` cannot run in `config`'s VM, if it cannot: it may hold up to the most the VM
/// can have (virtio-mem grows it past its boot size), and cache up to its scratch disk, which
/// is the size of its boot memory.
pub fn workload_problems(vm: &str, workload: &Workload, config: &VmConfig) -> Vec<String> {
    let mut out = Vec::new();
    let (memory, most) = (config.memory, config.max_memory());
    let peak = workload.peak_anonymous();
    if peak >= most {
        let room = if most > memory {
            format!("the {most} the VM can grow to")
        } else {
            format!("the VM's {memory}")
        };
        out.push(format!(
            "vm {vm}: workload '{workload}' holds up to {peak}, which does not fit in {room}; make it smaller"
        ));
    }
    if workload.peak_cache() > memory {
        out.push(format!(
            "vm {vm}: workload '{workload}' caches {}, more than the scratch disk ({memory}, the VM's memory)",
            workload.peak_cache()
        ));
    }
    out
}

/// VM names become directory, cgroup and QEMU names, so they must be plain.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name '{name}' is not allowed: use 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not depend on the machine; with a fixed budget, that is all.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Budget::Fixed(budget) = self.host.budget {
            problems.extend(self.budget_problems(budget));
        }
        if let Err(e) = check_name(&self.host.cgroup) {
            problems.push(format!("host cgroup {e}"));
        }
        problems.extend(self.name_problems());
        problems.extend(self.vms.iter().flat_map(VmConfig::problems));
        problems.extend(self.attached.iter().flat_map(|a| a.problems()));
        if let Some(libvirt) = &self.libvirt {
            problems.extend(libvirt.problems());
        }
        problems.extend(self.shared_disk_problems());
        problems.extend(self.forward_problems());
        if let Some(glob) = &self.discover.qmp {
            if !glob.starts_with('/') {
                problems.push(format!(
                    "discover qmp \"{glob}\" is not an absolute path; give the sockets' full path, e.g. \"/var/run/qemu-server/*.qmp\""
                ));
            }
        }
        problems.extend(self.scheduler.problems());
        if let Some(addr) = self.api.listen {
            if !addr.ip().is_loopback() && !self.api.allow_remote {
                problems.push(format!(
                    "api listen {addr} is reachable from other hosts; use 127.0.0.1:PORT, or set allow_remote = true in [api] if you mean it"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every VM, attached QEMU and libvirt domain needs a name of its own.
    fn name_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for vm in &self.vms {
            if !seen.insert(vm.name.as_str()) {
                problems.push(format!(
                    "vm {} is declared twice; VM names must be unique",
                    vm.name
                ));
            }
        }
        for a in &self.attached {
            if !seen.insert(a.name.as_str()) {
                problems.push(format!(
                    "attach {} is already the name of a VM; VM names must be unique",
                    a.name
                ));
            }
        }
        for d in self.libvirt.iter().flat_map(|l| &l.domains) {
            if !seen.insert(d.name.as_str()) {
                problems.push(format!(
                    "libvirt domain {} is already the name of a VM; VM names must be unique (exclude the domain in [libvirt], or rename one of them)",
                    d.name
                ));
            }
        }
        problems
    }

    /// Two VMs may boot one disk only if neither keeps its writes.
    fn shared_disk_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let shares_a_disk = |other: &VmConfig| {
                other.disk.is_some() && other.disk == vm.disk && !(vm.snapshot && other.snapshot)
            };
            if let Some(other) = self.vms[..i].iter().find(|o| shares_a_disk(o)) {
                problems.push(format!(
                    "vm {} and vm {} boot the same disk and one of them keeps its writes; give each its own disk, or set snapshot = true on both",
                    other.name, vm.name
                ));
            }
        }
        problems
    }

    /// Each host port is forwarded to one guest only.
    fn forward_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut forwarded = HashMap::new();
        for vm in &self.vms {
            for f in &vm.forward {
                if let Some(other) = forwarded.insert(f.host, &vm.name) {
                    let who = if *other == vm.name {
                        format!("vm {other} forwards")
                    } else {
                        format!("vm {other} and vm {} both forward", vm.name)
                    };
                    problems.push(format!(
                        "{who} host port {}; give each forward its own host port",
                        f.host
                    ));
                }
            }
        }
        problems
    }

    /// The budget on a machine with `mem_total` of RAM, once the VMs' reservations are known to
    /// fit in it.
    pub fn budget_on(&self, mem_total: Size) -> Result<Size, ConfigError> {
        let budget = self.host.budget.on(mem_total);
        let problems = self.budget_problems(budget);
        if problems.is_empty() {
            Ok(budget)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn budget_problems(&self, budget: Size) -> Vec<String> {
        let mut problems = Vec::new();
        let reserve = self.host.reserve;
        let for_vms = Size::bytes(budget.as_bytes().saturating_sub(reserve.as_bytes()));
        match self.host.budget {
            Budget::Fixed(_) if budget < GUEST_FLOOR => problems.push(format!(
                "host budget {budget} is below {GUEST_FLOOR}, too small for any VM"
            )),
            Budget::Auto if for_vms < GUEST_FLOOR => problems.push(format!(
                "host budget auto: the machine's memory {budget} less the reserve {reserve} leaves {for_vms}, below the {GUEST_FLOOR} a VM needs; lower [host] reserve"
            )),
            _ => {}
        }
        let reservations = self.vms.iter().map(|v| (v.name.as_str(), v.reservation));
        let attached = self
            .attached
            .iter()
            .map(|a| (a.name.as_str(), a.reservation));
        let domains = self
            .libvirt
            .iter()
            .flat_map(|l| &l.domains)
            .map(|d| (d.name.as_str(), d.reservation));
        if let Err(e) = reservation::fit(
            budget,
            self.host.reserve,
            reservations.chain(attached).chain(domains),
        ) {
            problems.push(e.to_string());
        }
        problems
    }

    pub fn vm(&self, name: &str) -> Option<&VmConfig> {
        self.vms.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [host]
        budget = "1.5G"

        [[vm]]
        name = "vm1"
        memory = "1G"
        max = "1536M"
        reservation = "256M"
        workload = "hold:512M"

        [[vm]]
        name = "vm2"
        memory = "512M"
        shares = 2000
    "#;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_disk_guest_boots_its_own_os_with_no_swap_disk_unless_asked() {
        let c = Config::parse(
            r#"
            [host]
            budget = "2G"
            [[vm]]
            name = "deb"
            memory = "768M"
            disk = "/var/lib/images/debian.qcow2"
            snapshot = true
            [[vm]]
            name = "deb2"
            memory = "768M"
            disk = "/var/lib/images/deb2.img"
            format = "raw"
            swap = "256M"
            kernel = "/boot/vmlinuz"
            append = "root=/dev/vda1 console=ttyS0"
        "#,
        )
        .unwrap();
        let (deb, deb2) = (&c.vms[0], &c.vms[1]);
        assert!(!deb.has_agent() && deb.snapshot);
        assert_eq!((deb.swap(), deb2.swap()), (Size::ZERO, Size::mib(256)));
        assert_eq!((deb.format, deb2.format), (None, Some(DiskFormat::Raw)));
        assert_eq!(Config::parse(GOOD).unwrap().vms[0].swap(), Size::mib(512));
    }

    #[test]
    fn disk_settings_without_a_disk_and_agent_workloads_on_a_disk_are_refused() {
        let p = problems(
            r#"
            [host]
            budget = "2G"
            [[vm]]
            name = "a"
            memory = "512M"
            snapshot = true
            kernel = "/boot/vmlinuz"
            [[vm]]
            name = "b"
            memory = "512M"
            disk = "images/b.qcow2"
            workload = "hold:100M"
            append = "quiet"
        "#,
        );
        let text = p.join("\n");
        assert!(
            text.contains("vm a: snapshot applies only to a VM with a disk"),
            "{text}"
        );
        assert!(text.contains("vm a: kernel applies only"), "{text}");
        assert!(
            text.contains("vm b: disk images/b.qcow2 is not an absolute path"),
            "{text}"
        );
        assert!(
            text.contains("vm b: workload 'hold:100MiB' needs memvisor's agent"),
            "{text}"
        );
        assert!(
            text.contains("vm b: initrd and append need kernel"),
            "{text}"
        );
        assert_eq!(p.len(), 5, "{text}");
    }

    #[test]
    fn forwarded_ports_need_a_disk_guest_and_a_host_port_of_their_own() {
        let disk = |name: &str, forward: &str| {
            format!("[[vm]]\nname = \"{name}\"\nmemory = \"512M\"\ndisk = \"/img/{name}.qcow2\"\nforward = [{forward}]\n")
        };
        let host = "[host]\nbudget = \"2G\"\n";
        let c = Config::parse(&format!(
            "{host}{}",
            disk("a", r#""16379:6379", "15432:5432""#)
        ))
        .unwrap();
        assert_eq!(
            c.vms[0].forward,
            [
                PortForward {
                    host: 16379,
                    guest: 6379
                },
                PortForward {
                    host: 15432,
                    guest: 5432
                }
            ]
        );
        let p = problems(&format!(
            "{host}{}{}[[vm]]\nname = \"c\"\nmemory = \"512M\"\nforward = [\"8080:80\"]\n",
            disk("a", r#""16379:6379", "16379:6380""#),
            disk("b", r#""16379:6379""#)
        ));
        let text = p.join("\n");
        assert!(
            text.contains("vm a forwards host port 16379; give each forward its own host port"),
            "{text}"
        );
        assert!(
            text.contains("vm a and vm b both forward host port 16379"),
            "{text}"
        );
        assert!(
            text.contains("vm c: forward applies only to a VM with a disk"),
            "{text}"
        );
        assert_eq!(p.len(), 3, "{text}");
        for bad in ["6379", "0:6379", "16379:70000", "redis:6379"] {
            let e = Config::parse(&format!("{host}{}", disk("a", &format!("\"{bad}\""))))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("forward '{bad}' must be \"HOST:GUEST\"")),
                "{e}"
            );
        }
    }

    #[test]
    fn two_vms_may_share_a_disk_only_if_neither_keeps_its_writes() {
        let vms = |snapshot_a: bool, snapshot_b: bool| {
            format!(
                "[host]\nbudget = \"2G\"\n[[vm]]\nname = \"a\"\nmemory = \"512M\"\ndisk = \"/img/d.qcow2\"\nsnapshot = {snapshot_a}\n[[vm]]\nname = \"b\"\nmemory = \"512M\"\ndisk = \"/img/d.qcow2\"\nsnapshot = {snapshot_b}\n"
            )
        };
        assert!(Config::parse(&vms(true, true)).is_ok());
        for (a, b) in [(true, false), (false, true), (false, false)] {
            let p = problems(&vms(a, b));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains("vm a and vm b boot the same disk"), "{p:?}");
        }
    }

    #[test]
    fn parses_a_good_config_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.host.budget, Budget::Fixed(Size::mib(1536)));
        assert_eq!(c.host.cgroup, "memvisor");
        assert_eq!(c.host.accel, Accel::Auto);
        let vm1 = c.vm("vm1").unwrap();
        assert!(vm1.can_grow_past(vm1.memory));
        assert_eq!(vm1.effective_limit(), Size::mib(1536));
        let vm2 = c.vm("vm2").unwrap();
        assert_eq!(
            (vm2.shares, vm2.cpus, vm2.swap()),
            (2000, 1, Size::mib(512))
        );
        assert_eq!(vm2.workload, Workload::default());
    }

    #[test]
    fn the_api_listens_on_loopback_unless_told_otherwise() {
        let c =
            Config::parse("[host]\nbudget = \"1G\"\n[api]\nlisten = \"127.0.0.1:8680\"").unwrap();
        assert_eq!(c.api.listen, Some("127.0.0.1:8680".parse().unwrap()));
        assert_eq!(Config::parse(GOOD).unwrap().api.listen, None);
        let p = problems("[host]\nbudget = \"1G\"\n[api]\nlisten = \"0.0.0.0:8680\"");
        assert!(p[0].contains("allow_remote"), "{p:?}");
        Config::parse(
            "[host]\nbudget = \"1G\"\n[api]\nlisten = \"0.0.0.0:8680\"\nallow_remote = true",
        )
        .unwrap();
    }

    #[test]
    fn reservation_above_limit_is_named() {
        let p = problems(
            r#"[host]
            budget = "4G"
            [[vm]]
            name = "a"
            memory = "1G"
            reservation = "800M"
            limit = "600M""#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("reservation 800MiB is above its limit 600MiB"),
            "{p:?}"
        );
    }

    #[test]
    fn budget_below_reservations_is_named() {
        let p = problems(
            r#"[host]
            budget = "1G"
            [[vm]]
            name = "a"
            memory = "1G"
            reservation = "768M"
            [[vm]]
            name = "b"
            memory = "1G"
            reservation = "512M""#,
        );
        assert!(
            p[0].contains(
                "below the sum of reservations 1344MiB (a 768MiB + b 512MiB + host reserve 64MiB)"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn an_auto_budget_is_the_machines_memory_once_reservations_and_the_reserve_fit() {
        let text = r#"[host]
            budget = "auto"
            reserve = "1G"
            [[vm]]
            name = "a"
            memory = "1G"
            reservation = "768M""#;
        let c = Config::parse(text).expect("nothing to check before the machine is known");
        assert_eq!(c.host.budget, Budget::Auto);
        assert_eq!(c.budget_on(Size::mib(4096)).unwrap(), Size::mib(4096));
        let err = c.budget_on(Size::mib(1700)).unwrap_err().to_string();
        assert!(
            err.contains("host budget 1700MiB is below the sum of reservations 1792MiB"),
            "{err}"
        );
        let err = c.budget_on(Size::mib(1100)).unwrap_err().to_string();
        assert!(
            err.contains("memory 1100MiB less the reserve 1GiB leaves 76MiB, below the 128MiB"),
            "{err}"
        );
        assert!(err.contains("lower [host] reserve"), "{err}");
    }

    #[test]
    fn a_budget_that_is_neither_a_size_nor_auto_is_refused_with_both_forms() {
        let err = Config::parse("[host]\nbudget = \"most\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"auto\""), "{err}");
        assert_eq!("auto".parse(), Ok(Budget::Auto));
        assert_eq!(Budget::Auto.to_string(), "auto");
    }

    #[test]
    fn libvirt_domains_are_chosen_by_globs_and_given_guarantees_by_name() {
        let c = Config::parse(
            r#"[host]
            budget = "auto"
            [libvirt]
            uri = "qemu:///system"
            include = ["web-*", "db"]
            exclude = ["web-scratch"]
            [[libvirt.domain]]
            name = "db"
            reservation = "512M"
            shares = 2000"#,
        )
        .unwrap();
        let l = c.libvirt.as_ref().unwrap();
        assert!(l.takes("web-1") && l.takes("db"));
        assert!(!l.takes("web-scratch") && !l.takes("other"));
        assert!(
            !l.monitor,
            "the monitor pass-through taints a domain: opt-in"
        );
        assert_eq!(l.guarantees("db"), (Size::mib(512), None, 2000));
        assert_eq!(l.guarantees("web-1"), (Size::ZERO, None, 1000));

        let err = Config::parse(
            r#"[host]
            budget = "2G"
            [[vm]]
            name = "db"
            memory = "512M"
            [libvirt]
            uri = "qemu:///system"
            exclude = ["[oops"]
            [[libvirt.domain]]
            name = "db"
            [[libvirt.domain]]
            name = "big"
            reservation = "4G""#,
        )
        .unwrap_err()
        .to_string();
        for problem in [
            "libvirt domain db is already the name of a VM",
            "\"[oops\" is not a usable glob",
            "big 4GiB",
        ] {
            assert!(err.contains(problem), "{problem}: {err}");
        }
    }

    #[test]
    fn qemus_started_elsewhere_are_declared_or_looked_for() {
        let c = Config::parse(
            r#"[host]
            budget = "auto"
            [[attach]]
            name = "pve101"
            qmp = "/var/run/qemu-server/101.qmp"
            reservation = "256M"
            shares = 2000
            [discover]
            qmp = "/var/run/qemu-server/*.qmp""#,
        )
        .unwrap();
        assert_eq!(c.attached[0].name, "pve101");
        assert_eq!(c.attached[0].reservation, Size::mib(256));
        assert_eq!(c.attached[0].limit, None);
        assert_eq!(
            c.discover.qmp.as_deref(),
            Some("/var/run/qemu-server/*.qmp")
        );
        let p = problems(
            r#"[host]
            budget = "1G"
            [[vm]]
            name = "a"
            memory = "256M"
            [[attach]]
            name = "a"
            qmp = "a.qmp"
            reservation = "512M"
            limit = "256M"
            [discover]
            qmp = "*.qmp""#,
        );
        let all = p.join("\n");
        for needle in [
            "attach a is already the name of a VM",
            "qmp a.qmp is not an absolute path",
            "reservation 512MiB is above its limit 256MiB",
            "discover qmp \"*.qmp\" is not an absolute path",
        ] {
            assert!(all.contains(needle), "missing '{needle}' in:\n{all}");
        }
    }

    #[test]
    fn a_vm_that_can_grow_may_hold_more_than_it_boots_with() {
        // The demo's config: vm3 boots with 1 GiB, may grow to 1.5 GiB and writes 1.2 GiB.
        let demo = Config::parse(include_str!("../../../examples/seed.toml")).unwrap();
        let vm3 = demo.vm("vm3").unwrap();
        assert!(vm3.can_grow_past(vm3.memory));
        let p = problems(
            r#"[host]
            budget = "4G"
            [[vm]]
            name = "a"
            memory = "1G"
            max = "1536M"
            workload = "hold:1600M""#,
        );
        assert!(
            p.iter()
                .any(|p| p.contains("does not fit in the 1536MiB the VM can grow to")),
            "{p:?}"
        );
    }

    #[test]
    fn collects_every_problem_at_once() {
        let p = problems(
            r#"[host]
            budget = "2G"
            [[vm]]
            name = "Bad/Name"
            memory = "64M"
            max = "32M"
            workload = "hold:1G"
            [[vm]]
            name = "x"
            memory = "256M"
            [[vm]]
            name = "x"
            memory = "256M"
            shares = 0"#,
        );
        let all = p.join("\n");
        for needle in [
            "not allowed",
            "below the 128MiB",
            "max 32MiB is below",
            "does not fit",
            "declared twice",
            "shares 0",
        ] {
            assert!(all.contains(needle), "missing '{needle}' in:\n{all}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_refused() {
        assert!(matches!(
            Config::parse("[host\nbudget=1"),
            Err(ConfigError::Syntax(_))
        ));
        let err = Config::parse("[host]\nbudget = \"1G\"\nbudgte = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("budgte"), "{err}");
        let err = Config::parse("[host]\nbudget = \"1024\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no unit"), "{err}");
    }
}
