//! Measures how real memory compresses, page by page as zswap does, with lzo and zstd, so that
//! the agent's content (memvisor_core::content) can be fitted to it.
//!
//! cargo run --release -p memvisor-core --example compressibility -- \
//!     [--pid PID]... [--files PATH]... [--generated heap|files]...
//!
//! --pid reads a live process's anonymous memory (root, /proc/PID/mem); --files reads files as
//! the page cache holds them; --generated measures the agent's own content.

use memvisor_core::content::{self, PAGE};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAX_PAGES: usize = 50_000;

#[derive(Default)]
struct Tally {
    pages: usize,
    zero: usize,
    duplicate: usize,
    lzo: usize,
    zstd: usize,
    seen: HashSet<u64>,
}

impl Tally {
    fn add(&mut self, page: &[u8], lzo: &mut rust_lzo::LZOContext) {
        self.pages += 1;
        if page.iter().all(|&b| b == 0) {
            self.zero += 1;
            return;
        }
        let hash = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(page)
        };
        if !self.seen.insert(hash) {
            self.duplicate += 1;
        }
        let mut out = vec![0u8; rust_lzo::worst_compress(PAGE)];
        self.lzo += lzo.compress_to_slice(page, &mut out).0.len().min(PAGE);
        self.zstd += zstd::bulk::compress(page, 3).expect("zstd").len().min(PAGE);
    }

    fn print(&self, source: &str) {
        let stored = (self.pages - self.zero) * PAGE;
        println!(
            "{source:<40} {:>7} {:>6.1} {:>6.1} {:>6.2} {:>6.2}",
            self.pages,
            100.0 * self.zero as f64 / self.pages.max(1) as f64,
            100.0 * self.duplicate as f64 / (self.pages - self.zero).max(1) as f64,
            stored as f64 / self.lzo.max(1) as f64,
            stored as f64 / self.zstd.max(1) as f64,
        );
    }
}

fn process(pid: &str, tally: &mut Tally, lzo: &mut rust_lzo::LZOContext) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem (run as root)");
    let mut page = vec![0u8; PAGE];
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let anonymous = fields.len() == 5 || fields.get(5) == Some(&"[heap]");
        if !anonymous || !fields[1].starts_with("rw") {
            continue;
        }
        let (start, end) = fields[0].split_once('-').expect("range");
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        for at in (start..end).step_by(PAGE) {
            if tally.pages >= MAX_PAGES {
                return;
            }
            if mem.seek(SeekFrom::Start(at)).is_ok() && mem.read_exact(&mut page).is_ok() {
                tally.add(&page, lzo);
            }
        }
    }
}

fn files(path: &Path, tally: &mut Tally, lzo: &mut rust_lzo::LZOContext) {
    if tally.pages >= MAX_PAGES {
        return;
    }
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            files(&entry, tally, lzo);
        }
    } else if path.is_file() && !path.is_symlink() {
        let Ok(data) = std::fs::read(path) else {
            return;
        };
        for chunk in data.chunks(PAGE) {
            let mut page = [0u8; PAGE];
            page[..chunk.len()].copy_from_slice(chunk);
            tally.add(&page, lzo);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!(
            "usage: compressibility [--pid PID]... [--files PATH]... [--generated heap|files]..."
        );
        std::process::exit(2);
    }
    println!(
        "{:<40} {:>7} {:>6} {:>6} {:>6} {:>6}",
        "SOURCE", "PAGES", "ZERO%", "DUP%", "LZO", "ZSTD"
    );
    let mut lzo = rust_lzo::LZOContext::new();
    for pair in args.chunks(2) {
        let mut tally = Tally::default();
        match pair[0].as_str() {
            "--pid" => process(&pair[1], &mut tally, &mut lzo),
            "--files" => files(Path::new(&pair[1]), &mut tally, &mut lzo),
            "--generated" => {
                let mix = match pair[1].as_str() {
                    "heap" => content::HEAP,
                    "files" => content::FILES,
                    other => panic!("--generated {other}: give heap or files"),
                };
                let mut page = [0u8; PAGE];
                for index in 0..10_000 {
                    content::fill(&mut page, content::tag(7, index), mix);
                    tally.add(&page, &mut lzo);
                }
            }
            other => panic!("unknown option {other}"),
        }
        tally.print(&format!("{} {}", pair[0], pair[1]));
    }
}
