//! Shared by the host's and the daemon's end-to-end tests (the daemon's include this file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every DAMON setting of this host, with its kdamonds' pids: what another tool's DAMON set-up
/// is, to check memvisor left it as it was. Left out: the counters DAMON itself updates (stats,
/// tried regions, effective quota), and the targets' address ranges, which the tool that holds
/// DAMON on these build machines moves as the machine's memory grows (seen in one test run: its
/// region's end went from 10468982784 to 13019119616). Whatever memvisor could do to another
/// tool's kdamond (stop it, rebuild the kdamonds, set a context up) shows in the rest.
pub fn damon_settings() -> BTreeMap<PathBuf, String> {
    settings_under(Path::new("/sys/kernel/mm/damon/admin"))
}

fn settings_under(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if matches!(
            &*name,
            "stats" | "tried_regions" | "effective_bytes" | "regions"
        ) {
            continue;
        }
        if path.is_dir() {
            found.extend(settings_under(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            found.insert(path, text);
        }
    }
    found
}
