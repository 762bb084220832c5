//! Cgroups, v1 and v2 behind one interface. memvisor puts every VM it launches in a memory
//! group of its own under one parent group whose limit is the host budget; the bench also
//! holds each VM to a CPU quota through the cpu controller.

use memvisor_core::status::CgroupVersion;
use memvisor_core::Size;
use nix::time::{clock_gettime, ClockId};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_MOUNT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup {controller} controller under {mount}: mount cgroup v2 with the {controller} controller, or the v1 {controller} hierarchy at {mount}/{controller}", controller = .0.name(), mount = .1.display())]
    NoController(Controller, PathBuf),
    #[error("cannot {action} {path}: {source}{hint}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    #[error("unexpected content '{content}' in {path}")]
    Parse { path: PathBuf, content: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
        }
    }

    /// A file only a v1 hierarchy of this controller has.
    fn v1_probe(self) -> &'static str {
        match self {
            Controller::Memory => "memory.limit_in_bytes",
            Controller::Cpu => "cpu.cfs_quota_us",
        }
    }
}

/// The CFS period quotas are written against (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The quota per period that holds a group to `cores` CPUs.
pub fn cpu_quota_us(cores: f64) -> u64 {
    // The kernel refuses quotas below 1 ms.
    ((cores * CPU_PERIOD_US as f64).round() as u64).max(1_000)
}

fn limit_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    }
}

/// Where a VM's cap goes. On v2 memory.high, which throttles and reclaims past it but never
/// calls the OOM killer; v1 has only the hard limit, so its groups wait at it instead (see
/// `wait_at_limit`).
fn cap_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.high",
    }
}

/// Whether a v1 `memory.oom_control` says the group's tasks wait at its limit for memory the
/// kernel could not reclaim.
fn parse_under_oom(content: &str) -> Option<bool> {
    content
        .lines()
        .find_map(|line| match line.split_once(' ')? {
            ("under_oom", value) => Some(value.trim() == "1"),
            _ => None,
        })
}

/// The inactive file cache in a memory.stat, in bytes, with the group's children: v1 counts
/// them in its `total_` lines, v2's lines count them all.
fn parse_inactive_file(version: CgroupVersion, stat: &str) -> Option<u64> {
    let key = match version {
        CgroupVersion::V1 => "total_inactive_file",
        CgroupVersion::V2 => "inactive_file",
    };
    stat.lines().find_map(|line| match line.split_once(' ')? {
        (k, value) if k == key => value.trim().parse().ok(),
        _ => None,
    })
}

/// `nr_periods` and `nr_throttled` from a cpu.stat: both versions spell them alike.
fn parse_cpu_periods(stat: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        stat.lines().find_map(|line| match line.split_once(' ')? {
            (k, value) if k == key => value.trim().parse().ok(),
            _ => None,
        })
    };
    Some((field("nr_periods")?, field("nr_throttled")?))
}

fn usage_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    }
}

/// One controller's hierarchy: where groups live and which interface they speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: CgroupVersion,
    pub root: PathBuf,
    pub controller: Controller,
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> CgroupError {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => " (memvisor must run as root to manage cgroups)",
        io::ErrorKind::ResourceBusy => {
            " (the group still has processes, or usage is above the new limit)"
        }
        _ => "",
    };
    CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
        hint,
    }
}

fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_error("read", path, e))
}

/// The CPU the calling thread has used, in user and kernel mode.
fn thread_cpu_time() -> Duration {
    // Linux has had this clock since 2.6.12; a kernel without it reads every cost as 0.
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| io_error("write", path, e))
}

fn controllers_include(path: &Path, controller: Controller) -> bool {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().any(|c| c == controller.name()))
        .unwrap_or(false)
}

/// A process's group in the hierarchy of `version` and `controller`, from the text of
/// /proc/PID/cgroup: v1 lines are `ID:CONTROLLERS:/PATH`, the v2 line `0::/PATH`.
pub fn group_path(
    proc_cgroup: &str,
    version: CgroupVersion,
    controller: Controller,
) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == controller.name()),
            CgroupVersion::V2 => id == "0" && controllers.is_empty(),
        };
        ours.then_some(path)
    })
}

/// A limit as the kernel writes it: v2 says `max`, v1 a huge page-aligned number.
pub fn parse_limit(content: &str) -> Option<Option<Size>> {
    let content = content.trim();
    if content == "max" {
        return Some(None);
    }
    let bytes: u64 = content.parse().ok()?;
    // v1 reports "unlimited" as PAGE_COUNTER_MAX pages, about 2^63 bytes.
    Some(if bytes >= 1 << 62 {
        None
    } else {
        Some(Size::bytes(bytes))
    })
}

impl Hierarchy {
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        Hierarchy::detect_at(Path::new(DEFAULT_MOUNT), Controller::Memory)
    }

    /// The cpu controller's hierarchy on this machine.
    pub fn detect_cpu() -> Result<Hierarchy, CgroupError> {
        Hierarchy::detect_at(Path::new(DEFAULT_MOUNT), Controller::Cpu)
    }

    /// Unified v2 when it has the controller, else the controller's v1 hierarchy, else the v2
    /// tree of a hybrid layout.
    pub fn detect_at(mount: &Path, controller: Controller) -> Result<Hierarchy, CgroupError> {
        let v1 = mount.join(controller.name());
        let candidates = [
            (
                CgroupVersion::V2,
                mount.to_path_buf(),
                mount.join("cgroup.controllers"),
            ),
            (
                CgroupVersion::V1,
                v1.clone(),
                v1.join(controller.v1_probe()),
            ),
            (
                CgroupVersion::V2,
                mount.join("unified"),
                mount.join("unified/cgroup.controllers"),
            ),
        ];
        for (version, root, probe) in candidates {
            let usable = match version {
                CgroupVersion::V1 => probe.exists(),
                CgroupVersion::V2 => controllers_include(&probe, controller),
            };
            if usable {
                return Ok(Hierarchy {
                    version,
                    root,
                    controller,
                });
            }
        }
        Err(CgroupError::NoController(controller, mount.to_path_buf()))
    }

    /// The group process `pid` is in, from /proc/PID/cgroup.
    pub fn group_of(&self, pid: u32) -> Result<Group, CgroupError> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let content = read_trimmed(&path)?;
        match group_path(&content, self.version, self.controller) {
            Some(relative) => Ok(self.group(relative.trim_start_matches('/'))),
            None => Err(CgroupError::Parse { path, content }),
        }
    }

    /// The group at `relative` (components joined with '/'), not created yet.
    pub fn group(&self, relative: &str) -> Group {
        Group {
            version: self.version,
            controller: self.controller,
            root: self.root.clone(),
            path: self.root.join(relative),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub version: CgroupVersion,
    controller: Controller,
    root: PathBuf,
    pub path: PathBuf,
}

impl Group {
    pub fn child(&self, name: &str) -> Group {
        Group {
            path: self.path.join(name),
            ..self.clone()
        }
    }

    /// Creates the group and, on v2, enables its controller on the way down to it.
    pub fn create(&self) -> Result<(), CgroupError> {
        if self.version == CgroupVersion::V2 {
            let mut dir = self.root.clone();
            let relative = self.path.strip_prefix(&self.root).unwrap_or(Path::new(""));
            for component in relative.components() {
                let control = dir.join("cgroup.subtree_control");
                if !controllers_include(&control, self.controller) {
                    write(&control, &format!("+{}", self.controller.name()))?;
                }
                dir.push(component);
                fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
            }
        } else {
            fs::create_dir_all(&self.path).map_err(|e| io_error("create", &self.path, e))?;
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Whether groups exist below this one (their processes are charged to it too).
    pub fn has_children(&self) -> bool {
        fs::read_dir(&self.path).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
    }

    /// Writes a memory limit file (None: unlimited, as each version spells it).
    fn write_limit(&self, file: &str, limit: Option<Size>) -> Result<(), CgroupError> {
        let value = match (limit, self.version) {
            (Some(size), _) => size.as_bytes().to_string(),
            (None, CgroupVersion::V1) => "-1".to_string(),
            (None, CgroupVersion::V2) => "max".to_string(),
        };
        write(&self.path.join(file), &value)
    }

    fn read_limit(&self, file: &str) -> Result<Option<Size>, CgroupError> {
        let path = self.path.join(file);
        let content = read_trimmed(&path)?;
        parse_limit(&content).ok_or(CgroupError::Parse { path, content })
    }

    pub fn set_limit(&self, limit: Option<Size>) -> Result<(), CgroupError> {
        self.write_limit(limit_file(self.version), limit)
    }

    pub fn limit(&self) -> Result<Option<Size>, CgroupError> {
        self.read_limit(limit_file(self.version))
    }

    /// Caps the group's memory (None: no cap), past which the kernel reclaims and swaps its
    /// coldest pages. Returns the CPU the write took: a cap below what the group holds makes
    /// the kernel reclaim down to it at once, in the writing thread (compressing into zswap
    /// where that is on), so that is what taking the memory cost the host.
    pub fn set_cap(&self, cap: Option<Size>) -> Result<Duration, CgroupError> {
        let before = thread_cpu_time();
        self.write_limit(cap_file(self.version), cap)?;
        Ok(thread_cpu_time().saturating_sub(before))
    }

    pub fn cap(&self) -> Result<Option<Size>, CgroupError> {
        self.read_limit(cap_file(self.version))
    }

    /// On v1, the group's tasks wait at its limit, where they would be killed, until it is
    /// raised: a VM thrashing under a cap below what it touches (the kernel reclaims nothing
    /// it does not need again at once) stalls instead of being lost. v2's caps never kill.
    pub fn wait_at_limit(&self) -> Result<(), CgroupError> {
        match self.version {
            CgroupVersion::V1 => write(&self.path.join("memory.oom_control"), "1"),
            CgroupVersion::V2 => Ok(()),
        }
    }

    /// Whether the group's tasks wait at its v1 limit now (never on v2).
    pub fn stalled_at_limit(&self) -> Result<bool, CgroupError> {
        if self.version == CgroupVersion::V2 {
            return Ok(false);
        }
        let path = self.path.join("memory.oom_control");
        let content = read_trimmed(&path)?;
        parse_under_oom(&content).ok_or(CgroupError::Parse { path, content })
    }

    pub fn usage(&self) -> Result<Size, CgroupError> {
        let path = self.path.join(usage_file(self.version));
        let content = read_trimmed(&path)?;
        content
            .parse()
            .map(Size::bytes)
            .map_err(|_| CgroupError::Parse { path, content })
    }

    /// What the group holds that its reclaim would not drop first: its usage less the file
    /// cache on the inactive list, as the kernel's own working-set figure (and Kubernetes') has
    /// it. A QEMU's host page cache of its disk images (a `snapshot=on` overlay is written
    /// through it, whatever `cache=none` says) is charged to its group, and the kernel drops
    /// it before any guest memory once the group reaches its limit.
    pub fn in_use(&self) -> Result<Size, CgroupError> {
        let path = self.path.join("memory.stat");
        let content = read_trimmed(&path)?;
        let inactive_file = parse_inactive_file(self.version, &content)
            .ok_or(CgroupError::Parse { path, content })?;
        Ok(Size::bytes(
            self.usage()?.as_bytes().saturating_sub(inactive_file),
        ))
    }

    /// Holds the group's processes to `cores` CPUs' worth of time per period (None: no hold).
    pub fn set_cpu_quota(&self, cores: Option<f64>) -> Result<(), CgroupError> {
        let quota = cores.map(cpu_quota_us);
        match self.version {
            CgroupVersion::V1 => {
                write(
                    &self.path.join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                )?;
                let quota = quota.map_or("-1".to_string(), |q| q.to_string());
                write(&self.path.join("cpu.cfs_quota_us"), &quota)
            }
            CgroupVersion::V2 => {
                let quota = quota.map_or("max".to_string(), |q| q.to_string());
                write(
                    &self.path.join("cpu.max"),
                    &format!("{quota} {CPU_PERIOD_US}"),
                )
            }
        }
    }

    /// The CPU periods in which the group's processes ran, and those of them in which its
    /// quota held them back, since the group was made.
    pub fn cpu_periods(&self) -> Result<(u64, u64), CgroupError> {
        let path = self.path.join("cpu.stat");
        let content = read_trimmed(&path)?;
        parse_cpu_periods(&content).ok_or(CgroupError::Parse { path, content })
    }

    /// The CPUs' worth of time the group's processes may use per period (None: no hold).
    pub fn cpu_quota(&self) -> Result<Option<f64>, CgroupError> {
        let (quota, period, path) = match self.version {
            CgroupVersion::V1 => {
                let path = self.path.join("cpu.cfs_quota_us");
                let period = read_trimmed(&self.path.join("cpu.cfs_period_us"))?;
                (read_trimmed(&path)?, period, path)
            }
            CgroupVersion::V2 => {
                let path = self.path.join("cpu.max");
                let content = read_trimmed(&path)?;
                let (quota, period) = content.split_once(' ').unwrap_or((&content, ""));
                (quota.to_string(), period.to_string(), path)
            }
        };
        if quota == "max" || quota == "-1" {
            return Ok(None);
        }
        match (quota.parse::<f64>(), period.parse::<f64>()) {
            (Ok(q), Ok(p)) if p > 0.0 => Ok(Some(q / p)),
            _ => Err(CgroupError::Parse {
                path,
                content: format!("{quota} {period}"),
            }),
        }
    }

    /// The group at the same place in another controller's hierarchy.
    pub fn in_hierarchy(&self, hierarchy: &Hierarchy) -> Group {
        let relative = self.path.strip_prefix(&self.root).unwrap_or(&self.path);
        hierarchy.group(&relative.to_string_lossy())
    }

    /// The file a process writes its PID to in order to join this group.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        write(&self.procs_file(), &pid.to_string())
    }

    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.procs_file();
        let content = read_trimmed(&path)?;
        content
            .lines()
            .map(|l| {
                l.trim().parse().map_err(|_| CgroupError::Parse {
                    path: path.clone(),
                    content: l.to_string(),
                })
            })
            .collect()
    }

    /// Removes an empty group; a group that is already gone is fine.
    /// Removes the group and any child groups left in it (a VM whose QEMU died leaves one).
    pub fn remove(&self) -> Result<(), CgroupError> {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    Group {
                        path: entry.path(),
                        ..self.clone()
                    }
                    .remove()?;
                }
            }
        }
        // A QEMU that just exited leaves its threads in the group for a moment while its
        // memory is freed: the group is busy until then.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.path) {
                Err(e)
                    if e.kind() == io::ErrorKind::ResourceBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("remove", &self.path, e))
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_group_is_read_from_either_hierarchy() {
        // This machine: v1 memory, v2 mounted beside it without the controller.
        let hybrid =
            "12:memory:/machine/qemu-1-web.libvirt-qemu\n11:cpu,cpuacct:/machine\n0::/init.scope\n";
        assert_eq!(
            group_path(hybrid, CgroupVersion::V1, Controller::Memory),
            Some("/machine/qemu-1-web.libvirt-qemu")
        );
        assert_eq!(
            group_path(hybrid, CgroupVersion::V1, Controller::Cpu),
            Some("/machine")
        );
        // A systemd host on v2 only (fixture): Proxmox puts a VM in qemu.slice/ID.scope.
        let unified = "0::/qemu.slice/101.scope\n";
        assert_eq!(
            group_path(unified, CgroupVersion::V2, Controller::Memory),
            Some("/qemu.slice/101.scope")
        );
        assert_eq!(
            group_path(unified, CgroupVersion::V1, Controller::Memory),
            None
        );
        assert_eq!(group_path("", CgroupVersion::V2, Controller::Memory), None);
    }

    #[test]
    fn cpu_periods_are_read_alike_from_either_version() {
        // v1, as this machine's cpu hierarchy writes it; v2 (fixture) puts usage first.
        let v1 = "nr_periods 120\nnr_throttled 90\nthrottled_time 5000\nnr_bursts 0\nburst_time 0";
        assert_eq!(parse_cpu_periods(v1), Some((120, 90)));
        let v2 = "usage_usec 10\nuser_usec 8\nsystem_usec 2\nnr_periods 7\nnr_throttled 0\nthrottled_usec 0";
        assert_eq!(parse_cpu_periods(v2), Some((7, 0)));
        // v2's root group has no quota, and its cpu.stat no periods.
        assert_eq!(parse_cpu_periods("usage_usec 10\nuser_usec 8"), None);
    }

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        dir
    }

    #[test]
    fn parses_limits_of_both_versions() {
        assert_eq!(parse_limit("max\n"), Some(None));
        assert_eq!(parse_limit("9223372036854771712"), Some(None));
        assert_eq!(parse_limit("1073741824"), Some(Some(Size::mib(1024))));
        assert_eq!(parse_limit("lots"), None);
    }

    #[test]
    fn removing_a_group_removes_child_groups_left_behind() {
        let tree = tempfile::tempdir().unwrap();
        for child in ["memvisor/vm1", "memvisor/vm2"] {
            fs::create_dir_all(tree.path().join(child)).unwrap();
        }
        let h = Hierarchy {
            version: CgroupVersion::V1,
            root: tree.path().to_path_buf(),
            controller: Controller::Memory,
        };
        assert!(h.group("memvisor").has_children());
        assert!(!h.group("memvisor/vm1").has_children());
        h.group("memvisor").remove().unwrap();
        assert!(!tree.path().join("memvisor").exists());
    }

    #[test]
    fn detects_unified_v2() {
        let tree = fixture(&[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", ""),
        ]);
        let h = Hierarchy::detect_at(tree.path(), Controller::Memory).unwrap();
        assert_eq!(
            h,
            Hierarchy {
                version: CgroupVersion::V2,
                root: tree.path().to_path_buf(),
                controller: Controller::Memory,
            }
        );
    }

    #[test]
    fn detects_v1_even_beside_an_empty_unified_tree() {
        let tree = fixture(&[
            ("memory/memory.limit_in_bytes", "9223372036854771712"),
            ("unified/cgroup.controllers", ""),
        ]);
        let h = Hierarchy::detect_at(tree.path(), Controller::Memory).unwrap();
        assert_eq!(h.version, CgroupVersion::V1);
        assert_eq!(h.root, tree.path().join("memory"));
    }

    #[test]
    fn no_memory_controller_is_a_clear_error() {
        let tree = fixture(&[("cgroup.controllers", "cpu io")]);
        let err = Hierarchy::detect_at(tree.path(), Controller::Memory)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup memory controller"), "{err}");
    }

    #[test]
    fn v2_create_enables_memory_on_every_ancestor_and_writes_v2_files() {
        let tree = fixture(&[
            ("cgroup.controllers", "cpu memory"),
            ("cgroup.subtree_control", "cpu"),
        ]);
        let h = Hierarchy::detect_at(tree.path(), Controller::Memory).unwrap();
        let parent = h.group("memvisor");
        let vm = parent.child("vm1");
        // The kernel creates the interface files of a new group; the fixture stands in for it.
        fs::create_dir_all(&vm.path).unwrap();
        fs::write(parent.path.join("cgroup.subtree_control"), "").unwrap();
        vm.create().unwrap();
        assert_eq!(
            fs::read_to_string(tree.path().join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        assert_eq!(
            fs::read_to_string(parent.path.join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );

        vm.set_limit(Some(Size::mib(512))).unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("memory.max")).unwrap(),
            "536870912"
        );
        assert_eq!(vm.limit().unwrap(), Some(Size::mib(512)));
        vm.set_limit(None).unwrap();
        assert_eq!(vm.limit().unwrap(), None);

        // A VM's cap is memory.high, which never calls the OOM killer: nothing to wait at.
        vm.set_cap(Some(Size::mib(300))).unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("memory.high")).unwrap(),
            "314572800"
        );
        assert_eq!(vm.cap().unwrap(), Some(Size::mib(300)));
        assert_eq!(vm.limit().unwrap(), None, "the hard limit is left alone");
        vm.wait_at_limit().unwrap();
        assert!(!vm.path.join("memory.oom_control").exists());
        assert!(!vm.stalled_at_limit().unwrap());

        fs::write(vm.path.join("memory.current"), "4096\n").unwrap();
        assert_eq!(vm.usage().unwrap(), Size::bytes(4096));
        // v2's memory.stat counts the children in every line.
        fs::write(
            vm.path.join("memory.stat"),
            "anon 2048\nfile 2048\nactive_file 1024\ninactive_file 1024\n",
        )
        .unwrap();
        assert_eq!(vm.in_use().unwrap(), Size::bytes(3072));
        fs::write(vm.procs_file(), "12\n34\n").unwrap();
        assert_eq!(vm.pids().unwrap(), vec![12, 34]);
    }

    #[test]
    fn v1_writes_v1_files() {
        let tree = fixture(&[("memory/memory.limit_in_bytes", "9223372036854771712")]);
        let vm = Hierarchy::detect_at(tree.path(), Controller::Memory)
            .unwrap()
            .group("memvisor/vm1");
        vm.create().unwrap();
        vm.set_limit(None).unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("memory.limit_in_bytes")).unwrap(),
            "-1"
        );
        vm.set_cap(Some(Size::mib(300))).unwrap();
        assert_eq!(
            vm.limit().unwrap(),
            Some(Size::mib(300)),
            "v1 caps are the limit"
        );
        vm.wait_at_limit().unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("memory.oom_control")).unwrap(),
            "1"
        );
        // What the kernel shows in place of what was written.
        fs::write(
            vm.path.join("memory.oom_control"),
            "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(vm.stalled_at_limit().unwrap());
        assert_eq!(
            parse_under_oom("oom_kill_disable 0\nunder_oom 0\n"),
            Some(false)
        );
        assert_eq!(parse_under_oom("oom_kill_disable 0\n"), None);
        fs::write(vm.path.join("memory.usage_in_bytes"), "8192").unwrap();
        assert_eq!(vm.usage().unwrap(), Size::bytes(8192));
        // v1's own lines leave the children out; its total_ lines count them.
        fs::write(
            vm.path.join("memory.stat"),
            "cache 0\ninactive_file 0\ntotal_cache 6144\ntotal_inactive_file 4096\n",
        )
        .unwrap();
        assert_eq!(vm.in_use().unwrap(), Size::bytes(4096));
        fs::write(vm.path.join("memory.stat"), "cache 0\n").unwrap();
        assert!(
            matches!(vm.in_use(), Err(CgroupError::Parse { .. })),
            "a memory.stat without the line is named, not read as no cache"
        );
    }

    #[test]
    fn cpu_quotas_in_both_versions() {
        assert_eq!(cpu_quota_us(0.6), 60_000);
        assert_eq!(cpu_quota_us(0.0), 1_000, "the kernel's minimum");

        let tree = fixture(&[
            ("memory/memory.limit_in_bytes", "9223372036854771712"),
            ("cpu/cpu.cfs_quota_us", "-1"),
        ]);
        let vm = Hierarchy::detect_at(tree.path(), Controller::Cpu)
            .unwrap()
            .group("memvisor/vm1");
        assert_eq!(vm.path, tree.path().join("cpu/memvisor/vm1"));
        vm.create().unwrap();
        vm.set_cpu_quota(Some(1.5)).unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("cpu.cfs_quota_us")).unwrap(),
            "150000"
        );
        assert_eq!(
            fs::read_to_string(vm.path.join("cpu.cfs_period_us")).unwrap(),
            "100000"
        );
        assert_eq!(vm.cpu_quota().unwrap(), Some(1.5));
        vm.set_cpu_quota(None).unwrap();
        assert_eq!(vm.cpu_quota().unwrap(), None);
        // A VM's memory group names its group in the cpu hierarchy.
        let memory = Hierarchy::detect_at(tree.path(), Controller::Memory).unwrap();
        let cpu = Hierarchy::detect_at(tree.path(), Controller::Cpu).unwrap();
        assert_eq!(memory.group("memvisor/vm1").in_hierarchy(&cpu), vm);

        let tree = fixture(&[
            ("cgroup.controllers", "cpu memory"),
            ("cgroup.subtree_control", "memory"),
        ]);
        let vm = Hierarchy::detect_at(tree.path(), Controller::Cpu)
            .unwrap()
            .group("vm1");
        fs::create_dir_all(&vm.path).unwrap();
        vm.create().unwrap();
        assert_eq!(
            fs::read_to_string(tree.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        vm.set_cpu_quota(Some(0.25)).unwrap();
        assert_eq!(
            fs::read_to_string(vm.path.join("cpu.max")).unwrap(),
            "25000 100000"
        );
        assert_eq!(vm.cpu_quota().unwrap(), Some(0.25));
        vm.set_cpu_quota(None).unwrap();
        assert_eq!(vm.cpu_quota().unwrap(), None);
        fs::write(vm.path.join("cpu.max"), "lots 100000").unwrap();
        assert!(vm.cpu_quota().unwrap_err().to_string().contains("lots"));
    }

    #[test]
    fn no_cpu_controller_names_the_controller() {
        let tree = fixture(&[("memory/memory.limit_in_bytes", "0")]);
        let err = Hierarchy::detect_at(tree.path(), Controller::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup cpu controller"), "{err}");
    }
}
