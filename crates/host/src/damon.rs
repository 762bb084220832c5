//! DAMON's sysfs interface (`/sys/kernel/mm/damon/admin`): one kdamond per monitored address
//! range, each with a `stat` scheme that matches every region accessed during an aggregation
//! interval, so that the scheme's tried bytes are the range's working set over that interval.
//! DAMON is host-wide: a kdamond someone else set up, running or not, is never written to (the
//! kernel lets kdamonds be added only by rebuilding them all), and `stop` leaves none of
//! memvisor's behind.

use memvisor_core::Size;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const SYSFS: &str = "/sys/kernel/mm/damon/admin";

/// How often DAMON checks a sampled page's accessed bit, and over how long it adds them up:
/// one aggregation per scheduling round.
const SAMPLE_US: u64 = 5_000;
const AGGREGATE_US: u64 = 1_000_000;
/// Regions DAMON splits each range into: enough to tell a few busy MiB from an idle GiB.
const MIN_REGIONS: u64 = 10;
const MAX_REGIONS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DamonError {
    #[error("DAMON's sysfs interface is not at {0}: the kernel needs CONFIG_DAMON_SYSFS")]
    Missing(PathBuf),
    #[error(
        "this kernel's DAMON offers '{available}' operations only; watching a VM's guest RAM needs '{wanted}' (CONFIG_DAMON_VADDR)"
    )]
    NoOperations {
        wanted: &'static str,
        available: String,
    },
    #[error(
        "DAMON holds kdamond 0 ({0}), set up by another tool; memvisor leaves every kdamond it did not start as it is (DAMON serves one user: once that tool has released it, nr_kdamonds 0, memvisor can use it)"
    )]
    InUse(String),
    #[error(
        "DAMON's kdamonds are no longer the ones memvisor set up (another tool rebuilt them); memvisor leaves them as they are"
    )]
    Replaced,
    #[error("cannot read {0}: {1}; memvisor must run as root to use DAMON")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write '{value}' to {path}: {source}; memvisor must run as root to use DAMON")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{0} holds '{1}', not a number")]
    Parse(PathBuf, String),
}

/// DAMON's operations sets: virtual addresses of a process, or physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operations {
    Vaddr,
    Paddr,
}

impl Operations {
    fn name(self) -> &'static str {
        match self {
            Operations::Vaddr => "vaddr",
            Operations::Paddr => "paddr",
        }
    }
}

/// An address range to watch: in `pid`'s address space (`vaddr` operations), or physical
/// memory (`paddr`) without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub pid: Option<u32>,
    pub start: u64,
    pub end: u64,
}

pub struct Damon {
    root: PathBuf,
    /// What memvisor's kdamonds watch, kdamond k the k-th range.
    watched: Vec<Range>,
}

impl Damon {
    pub fn at(root: &Path) -> Damon {
        Damon {
            root: root.to_path_buf(),
            watched: Vec::new(),
        }
    }

    /// Takes over the kdamonds an earlier memvisor (killed) set up for `ranges`, if the kernel
    /// still holds exactly those; kdamonds that are not (a reboot, another tool since) are
    /// left alone.
    pub fn adopt(&mut self, ranges: &[Range]) {
        if self.hold(ranges) {
            self.watched = ranges.to_vec();
        }
    }

    /// Whether DAMON's kdamonds are exactly the ones memvisor set up for `ranges`: a kdamond
    /// of memvisor's whose process ended stops, and another tool may then rebuild them all.
    fn hold(&self, ranges: &[Range]) -> bool {
        let is =
            |file: &str, value: &str| self.read_text(file).is_ok_and(|text| text.trim() == value);
        is("kdamonds/nr_kdamonds", &ranges.len().to_string())
            && ranges.iter().enumerate().all(|(k, range)| {
                let context = format!("kdamonds/{k}/contexts/0");
                let target = format!("{context}/targets/0");
                is(
                    &format!("{context}/operations"),
                    operations_for(range).name(),
                ) && is(&format!("{context}/schemes/0/action"), "stat")
                    && range
                        .pid
                        .is_none_or(|pid| is(&format!("{target}/pid_target"), &pid.to_string()))
                    && is(
                        &format!("{target}/regions/0/start"),
                        &range.start.to_string(),
                    )
                    && is(&format!("{target}/regions/0/end"), &range.end.to_string())
            })
    }

    /// The ranges memvisor's kdamonds watch now; a restarted daemon `adopt`s them.
    pub fn watched(&self) -> &[Range] {
        &self.watched
    }

    /// Watches `ranges`, one kdamond each, in place of what this watched before. On an error
    /// no kdamond of memvisor's is left.
    pub fn watch(&mut self, ranges: &[Range]) -> Result<(), DamonError> {
        if !self.root.join("kdamonds/nr_kdamonds").exists() {
            return Err(DamonError::Missing(self.root.clone()));
        }
        self.stop()?;
        // Every kdamond left is someone else's: only read.
        if self.read("kdamonds/nr_kdamonds")? > 0 {
            return Err(self.someone_elses(ranges));
        }
        let started = self.start(ranges);
        if started.is_err() {
            // Every kdamond there is the one this just made.
            self.watched.clear();
            let _ = self.tear_down(ranges.len());
        }
        started
    }

    /// Why kdamond 0, set up by someone else, keeps memvisor from DAMON: the kernel's
    /// operations as its context lists them, if they lack what `ranges` need, else the kdamond.
    fn someone_elses(&self, ranges: &[Range]) -> DamonError {
        if let Ok(available) = self.read_text("kdamonds/0/contexts/0/avail_operations") {
            if let Some(missing) = ranges
                .iter()
                .map(operations_for)
                .find(|o| !offers(&available, *o))
            {
                return DamonError::NoOperations {
                    wanted: missing.name(),
                    available: available.trim().to_string(),
                };
            }
        }
        let state = self
            .read_text("kdamonds/0/state")
            .map_or_else(|e| e.to_string(), |s| s.trim().to_string());
        DamonError::InUse(state)
    }

    fn start(&mut self, ranges: &[Range]) -> Result<(), DamonError> {
        self.write("kdamonds/nr_kdamonds", ranges.len())?;
        for (k, range) in ranges.iter().enumerate() {
            let operations = operations_for(range);
            let kdamond = format!("kdamonds/{k}");
            self.write(&format!("{kdamond}/contexts/nr_contexts"), 1)?;
            let context = format!("{kdamond}/contexts/0");
            let available = self.read_text(&format!("{context}/avail_operations"))?;
            if !offers(&available, operations) {
                return Err(DamonError::NoOperations {
                    wanted: operations.name(),
                    available: available.trim().to_string(),
                });
            }
            self.write(&format!("{context}/operations"), operations.name())?;
            let attrs = format!("{context}/monitoring_attrs");
            self.write(&format!("{attrs}/intervals/sample_us"), SAMPLE_US)?;
            self.write(&format!("{attrs}/intervals/aggr_us"), AGGREGATE_US)?;
            self.write(&format!("{attrs}/intervals/update_us"), AGGREGATE_US)?;
            // max before min: the kernel refuses a min above the max in place.
            self.write(&format!("{attrs}/nr_regions/max"), MAX_REGIONS)?;
            self.write(&format!("{attrs}/nr_regions/min"), MIN_REGIONS)?;
            self.write(&format!("{context}/targets/nr_targets"), 1)?;
            let target = format!("{context}/targets/0");
            if let Some(pid) = range.pid {
                self.write(&format!("{target}/pid_target"), pid)?;
            }
            self.write(&format!("{target}/regions/nr_regions"), 1)?;
            self.write(&format!("{target}/regions/0/start"), range.start)?;
            self.write(&format!("{target}/regions/0/end"), range.end)?;
            self.write(&format!("{context}/schemes/nr_schemes"), 1)?;
            let scheme = format!("{context}/schemes/0");
            self.write(&format!("{scheme}/action"), "stat")?;
            // Every region accessed at least once in the interval, whatever its size or age
            // (the kernel's defaults match nothing: maxima of 0).
            for (bound, min, max) in [
                ("sz", 0, u64::MAX),
                ("nr_accesses", 1, u64::from(u32::MAX)),
                ("age", 0, u64::from(u32::MAX)),
            ] {
                self.write(&format!("{scheme}/access_pattern/{bound}/max"), max)?;
                self.write(&format!("{scheme}/access_pattern/{bound}/min"), min)?;
            }
            self.write(&format!("{kdamond}/state"), "on")?;
            self.watched = ranges[..=k].to_vec();
        }
        Ok(())
    }

    /// Bytes of each watched range accessed during the last aggregation interval, in the
    /// order `watch` was given them; None for a range whose process ended (its kdamond
    /// stopped with it).
    pub fn accessed(&mut self) -> Result<Vec<Option<Size>>, DamonError> {
        if self.watched.is_empty() {
            return Ok(Vec::new());
        }
        if !self.hold(&self.watched) {
            self.watched.clear();
            return Err(DamonError::Replaced);
        }
        (0..self.watched.len())
            .map(|k| {
                if !self.is_on(k)? {
                    return Ok(None);
                }
                self.write(&format!("kdamonds/{k}/state"), "update_schemes_tried_bytes")?;
                let bytes = self.read(&format!(
                    "kdamonds/{k}/contexts/0/schemes/0/tried_regions/total_bytes"
                ))?;
                Ok(Some(Size::bytes(bytes)))
            })
            .collect()
    }

    /// Stops memvisor's kdamonds and removes them, if DAMON still holds them.
    pub fn stop(&mut self) -> Result<(), DamonError> {
        let watched = std::mem::take(&mut self.watched);
        if watched.is_empty() || !self.hold(&watched) {
            return Ok(());
        }
        self.tear_down(watched.len())
    }

    fn tear_down(&self, kdamonds: usize) -> Result<(), DamonError> {
        for k in 0..kdamonds {
            if self.is_on(k)? {
                self.write(&format!("kdamonds/{k}/state"), "off")?;
            }
        }
        self.write("kdamonds/nr_kdamonds", 0)
    }

    fn is_on(&self, kdamond: usize) -> Result<bool, DamonError> {
        Ok(self.read_text(&format!("kdamonds/{kdamond}/state"))?.trim() == "on")
    }

    fn read_text(&self, file: &str) -> Result<String, DamonError> {
        let path = self.root.join(file);
        std::fs::read_to_string(&path).map_err(|e| DamonError::Read(path, e))
    }

    fn read(&self, file: &str) -> Result<u64, DamonError> {
        let text = self.read_text(file)?;
        text.trim()
            .parse()
            .map_err(|_| DamonError::Parse(self.root.join(file), text.trim().to_string()))
    }

    fn write(&self, file: &str, value: impl ToString) -> Result<(), DamonError> {
        let path = self.root.join(file);
        let value = value.to_string();
        std::fs::write(&path, &value).map_err(|source| DamonError::Write {
            path,
            value,
            source,
        })
    }
}

/// What memvisor watches a range with: a process's addresses, else physical memory.
fn operations_for(range: &Range) -> Operations {
    match range.pid {
        Some(_) => Operations::Vaddr,
        None => Operations::Paddr,
    }
}

/// Whether an `avail_operations` list holds `operations`.
fn offers(available: &str, operations: Operations) -> bool {
    available.split_whitespace().any(|o| o == operations.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The directories the kernel makes for `kdamonds` kdamonds (a fixture cannot make
    /// them on a write of nr_kdamonds), offering `operations`.
    fn fixture(kdamonds: usize, operations: &str) -> tempfile::TempDir {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        fs::create_dir_all(root.join("kdamonds")).unwrap();
        fs::write(root.join("kdamonds/nr_kdamonds"), "0\n").unwrap();
        for k in 0..kdamonds {
            let context = root.join(format!("kdamonds/{k}/contexts/0"));
            for dir in [
                "monitoring_attrs/intervals",
                "monitoring_attrs/nr_regions",
                "targets/0/regions/0",
                "schemes/0/access_pattern/sz",
                "schemes/0/access_pattern/nr_accesses",
                "schemes/0/access_pattern/age",
                "schemes/0/tried_regions",
            ] {
                fs::create_dir_all(context.join(dir)).unwrap();
            }
            fs::write(context.join("avail_operations"), format!("{operations}\n")).unwrap();
            fs::write(root.join(format!("kdamonds/{k}/state")), "off\n").unwrap();
        }
        tree
    }

    fn read(tree: &tempfile::TempDir, file: &str) -> String {
        fs::read_to_string(tree.path().join(file)).unwrap()
    }

    #[test]
    fn watches_each_range_with_its_own_kdamond_and_reads_what_was_accessed() {
        let tree = fixture(2, "vaddr\nfvaddr\npaddr");
        let mut damon = Damon::at(tree.path());
        let ranges = [
            Range {
                pid: Some(100),
                start: 0x7f00_0000_0000,
                end: 0x7f00_4000_0000,
            },
            Range {
                pid: Some(200),
                start: 0x7e00_0000_0000,
                end: 0x7e00_2000_0000,
            },
        ];
        damon.watch(&ranges).unwrap();
        assert_eq!(read(&tree, "kdamonds/nr_kdamonds"), "2");
        let second = "kdamonds/1/contexts/0";
        assert_eq!(read(&tree, &format!("{second}/operations")), "vaddr");
        assert_eq!(
            read(&tree, &format!("{second}/targets/0/pid_target")),
            "200"
        );
        assert_eq!(
            read(&tree, &format!("{second}/targets/0/regions/0/end")),
            (0x7e00_2000_0000u64).to_string()
        );
        assert_eq!(read(&tree, &format!("{second}/schemes/0/action")), "stat");
        assert_eq!(
            read(
                &tree,
                &format!("{second}/schemes/0/access_pattern/nr_accesses/min")
            ),
            "1"
        );
        assert_eq!(read(&tree, "kdamonds/1/state"), "on");

        for (k, mib) in [(0, 300), (1, 20)] {
            fs::write(
                tree.path().join(format!(
                    "kdamonds/{k}/contexts/0/schemes/0/tried_regions/total_bytes"
                )),
                format!("{}\n", mib << 20),
            )
            .unwrap();
        }
        assert_eq!(
            damon.accessed().unwrap(),
            vec![Some(Size::mib(300)), Some(Size::mib(20))]
        );
        assert_eq!(
            read(&tree, "kdamonds/0/state"),
            "update_schemes_tried_bytes"
        );

        // The second VM's QEMU ended: its kdamond stopped on its own.
        fs::write(tree.path().join("kdamonds/0/state"), "on\n").unwrap();
        fs::write(tree.path().join("kdamonds/1/state"), "off\n").unwrap();
        assert_eq!(damon.accessed().unwrap(), vec![Some(Size::mib(300)), None]);
        fs::write(tree.path().join("kdamonds/0/state"), "on\n").unwrap();
        damon.stop().unwrap();
        assert_eq!(read(&tree, "kdamonds/0/state"), "off");
        assert_eq!(read(&tree, "kdamonds/nr_kdamonds"), "0");
        assert!(damon.accessed().unwrap().is_empty());
    }

    #[test]
    fn a_kernel_without_the_operations_is_named_and_left_as_found() {
        let tree = fixture(1, "paddr");
        let mut damon = Damon::at(tree.path());
        let range = Range {
            pid: Some(100),
            start: 0,
            end: 1 << 30,
        };
        let err = damon.watch(&[range]).unwrap_err();
        assert!(matches!(err, DamonError::NoOperations { .. }), "{err}");
        assert!(
            err.to_string().contains("offers 'paddr' operations only"),
            "{err}"
        );
        assert_eq!(read(&tree, "kdamonds/nr_kdamonds"), "0");
        assert!(damon.watched().is_empty());
    }

    /// Every file of a sysfs tree with its contents and when it was last written (a write of
    /// the same value, `1` to nr_kdamonds say, rebuilds a real kernel's kdamonds).
    fn contents(tree: &Path) -> Vec<(PathBuf, String, std::time::SystemTime)> {
        let mut files = Vec::new();
        for entry in fs::read_dir(tree).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(contents(&path));
            } else {
                let written = fs::metadata(&path).unwrap().modified().unwrap();
                files.push((path.clone(), fs::read_to_string(&path).unwrap(), written));
            }
        }
        files.sort();
        files
    }

    /// kdamond 0 set up by another tool, as these build machines boot: a `pageout` scheme
    /// on physical memory, in `state`.
    fn someone_elses_kdamond(operations: &str, state: &str) -> tempfile::TempDir {
        let tree = fixture(1, operations);
        let kdamond = tree.path().join("kdamonds/0");
        fs::write(tree.path().join("kdamonds/nr_kdamonds"), "1\n").unwrap();
        fs::write(kdamond.join("state"), format!("{state}\n")).unwrap();
        fs::write(kdamond.join("contexts/0/operations"), "paddr\n").unwrap();
        fs::write(kdamond.join("contexts/0/schemes/0/action"), "pageout\n").unwrap();
        fs::write(
            kdamond.join("contexts/0/targets/0/regions/0/end"),
            "4294967296\n",
        )
        .unwrap();
        tree
    }

    fn some_range() -> Range {
        Range {
            pid: Some(1),
            start: 0,
            end: 4096,
        }
    }

    #[test]
    fn kdamonds_someone_else_set_up_are_left_exactly_as_found_running_or_not() {
        for state in ["on", "off"] {
            let tree = someone_elses_kdamond("vaddr\npaddr", state);
            let before = contents(tree.path());
            let mut damon = Damon::at(tree.path());
            let physical = Range {
                pid: None,
                ..some_range()
            };
            for range in [some_range(), physical] {
                let err = damon.watch(&[range]).unwrap_err();
                assert!(matches!(&err, DamonError::InUse(s) if s == state), "{err}");
                assert!(err.to_string().contains("set up by another tool"), "{err}");
            }
            assert!(damon.accessed().unwrap().is_empty());
            damon.stop().unwrap();
            assert!(damon.watched().is_empty());
            assert_eq!(
                contents(tree.path()),
                before,
                "kdamond 0 {state} was changed"
            );
        }
    }

    #[test]
    fn someone_elses_kdamond_on_a_kernel_without_vaddr_names_the_missing_operations() {
        // These build machines' state: kdamond 0 of the boot's own, and `paddr` only.
        let tree = someone_elses_kdamond("paddr", "on");
        let before = contents(tree.path());
        let err = Damon::at(tree.path()).watch(&[some_range()]).unwrap_err();
        assert!(
            err.to_string().contains("offers 'paddr' operations only"),
            "{err}"
        );
        assert_eq!(contents(tree.path()), before);
    }

    #[test]
    fn kdamonds_another_tool_rebuilt_after_memvisors_stopped_are_not_touched() {
        let tree = fixture(1, "vaddr\npaddr");
        let mut damon = Damon::at(tree.path());
        damon.watch(&[some_range()]).unwrap();
        // memvisor's kdamond stopped with its process; another tool rebuilt kdamond 0.
        let kdamond = tree.path().join("kdamonds/0");
        fs::write(kdamond.join("contexts/0/operations"), "paddr\n").unwrap();
        fs::write(kdamond.join("contexts/0/schemes/0/action"), "pageout\n").unwrap();
        fs::write(kdamond.join("state"), "on\n").unwrap();
        let before = contents(tree.path());
        assert!(matches!(damon.accessed(), Err(DamonError::Replaced)));
        assert!(damon.watched().is_empty());
        damon.stop().unwrap();
        assert_eq!(contents(tree.path()), before);
    }

    #[test]
    fn a_restarted_daemon_takes_over_only_kdamonds_that_watch_what_it_left() {
        let tree = fixture(1, "vaddr");
        let range = Range {
            pid: Some(4242),
            start: 0x7f00_0000_0000,
            end: 0x7f00_4000_0000,
        };
        Damon::at(tree.path()).watch(&[range]).unwrap();

        let mut restarted = Damon::at(tree.path());
        let other_process = Range {
            pid: Some(4243),
            ..range
        };
        restarted.adopt(&[other_process]);
        assert!(restarted.watched().is_empty());
        restarted.adopt(&[range, range]);
        assert!(restarted.watched().is_empty());
        restarted.stop().unwrap();
        assert_eq!(
            read(&tree, "kdamonds/0/state"),
            "on",
            "not adopted, not stopped"
        );

        restarted.adopt(&[range]);
        assert_eq!(restarted.watched(), &[range]);
        restarted.stop().unwrap();
        assert_eq!(read(&tree, "kdamonds/0/state"), "off");
        assert_eq!(read(&tree, "kdamonds/nr_kdamonds"), "0");
    }

    #[test]
    fn a_kernel_without_damon_is_named() {
        let tree = tempfile::tempdir().unwrap();
        let err = Damon::at(&tree.path().join("damon/admin"))
            .watch(&[])
            .unwrap_err();
        assert!(err.to_string().contains("CONFIG_DAMON_SYSFS"), "{err}");
    }
}
