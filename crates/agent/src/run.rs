//! The workload loop: works in short slices so a new workload or a verify request is picked up
//! within a fraction of a second, and counts pages for the throughput report.

use crate::memory::{self, Content, Held, CHUNK, PAGE};
use memvisor_core::agent::{oom_kills_in_vmstat, AgentReport, FromGuest};
use memvisor_core::workload::{Load, Workload};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCRATCH_SERIAL: &str = "memvisor-scratch";
const TOUCHES_PER_SLICE: usize = 2048;

struct Current {
    workload: Workload,
    since: Instant,
    generation: u64,
}

#[derive(Clone)]
pub struct Shared {
    current: Arc<Mutex<Current>>,
    verify: Arc<AtomicBool>,
    pages: Arc<AtomicU64>,
    held_mib: Arc<AtomicU64>,
    /// Start of every 1 MiB chunk the workload holds, private first, for `translate held:N`.
    pub held_chunks: Arc<Mutex<Vec<usize>>>,
    phase: Arc<Mutex<String>>,
    last: Arc<Mutex<(Instant, u64)>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            current: Arc::new(Mutex::new(Current {
                workload: Workload::default(),
                since: Instant::now(),
                generation: 0,
            })),
            verify: Arc::new(AtomicBool::new(false)),
            pages: Arc::new(AtomicU64::new(0)),
            held_mib: Arc::new(AtomicU64::new(0)),
            held_chunks: Arc::new(Mutex::new(Vec::new())),
            phase: Arc::new(Mutex::new("idle".into())),
            last: Arc::new(Mutex::new((Instant::now(), 0))),
        }
    }

    pub fn set_workload(&self, workload: Workload) {
        let mut c = self.current.lock().expect("workload lock");
        if c.workload != workload {
            *c = Current {
                workload,
                since: Instant::now(),
                generation: c.generation + 1,
            };
        }
    }

    pub fn request_verify(&self) {
        self.verify.store(true, Ordering::SeqCst);
    }

    pub fn report(&self, booted: Instant) -> AgentReport {
        let pages = self.pages.load(Ordering::Relaxed);
        let mut last = self.last.lock().expect("rate lock");
        let seconds = last.0.elapsed().as_secs_f64().max(1e-3);
        let rate = (pages - last.1) as f64 / seconds;
        *last = (Instant::now(), pages);
        AgentReport {
            workload: self
                .current
                .lock()
                .expect("workload lock")
                .workload
                .to_string(),
            phase: self.phase.lock().expect("phase lock").clone(),
            pages_per_sec: rate.round(),
            pages: Some(pages),
            oom_kills: oom_kills(),
            held_mib: self.held_mib.load(Ordering::Relaxed),
            uptime_s: booted.elapsed().as_secs_f64(),
        }
    }
}

/// The scratch disk, found by the serial number the host gave it.
fn scratch_disk() -> Option<String> {
    crate::port::device_with("/sys/block", "serial", SCRATCH_SERIAL)
}

/// Page-cache traffic on the scratch disk: write `mib` once, then read it round and round.
/// What is written is unique to each page and to this boot, as real files are.
struct Cache {
    disk: File,
    salt: u64,
    mib: u64,
    written: u64,
    read_at: u64,
    buffer: Vec<u8>,
}

impl Cache {
    fn open(mib: u64, salt: u64) -> Option<Cache> {
        let path = scratch_disk()?;
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ok()?;
        Some(Cache {
            disk,
            salt,
            mib,
            written: 0,
            read_at: 0,
            buffer: vec![0; CHUNK],
        })
    }

    fn restart(&mut self, mib: u64) {
        self.mib = mib;
        self.written = 0;
        self.read_at = 0;
        let _ = self.disk.seek(SeekFrom::Start(0));
    }

    /// One MiB of work; returns pages moved.
    fn step(&mut self) -> u64 {
        let result = if self.written < self.mib {
            let first_page = self.written * (CHUNK / PAGE) as u64;
            memory::fill_file_pages(&mut self.buffer, self.salt, first_page);
            let r = self.disk.write_all(&self.buffer);
            self.written += 1;
            r
        } else {
            if self.read_at >= self.mib {
                self.read_at = 0;
                let _ = self.disk.seek(SeekFrom::Start(0));
            }
            self.read_at += 1;
            self.disk.read_exact(&mut self.buffer)
        };
        if result.is_err() {
            let _ = self.disk.seek(SeekFrom::Start(0));
            self.read_at = 0;
        }
        (CHUNK / PAGE) as u64
    }
}

pub fn work(shared: Shared, results: Sender<FromGuest>) {
    let mut generation = u64::MAX;
    let salt = memory::boot_salt();
    let mut private = Held::new(Content::Private(salt));
    let mut common = Held::new(Content::Shared);
    let mut cache: Option<Cache> = None;
    let mut cursor = 0usize;
    let mut step_index = usize::MAX;
    let mut held_sizes = (0, 0);
    loop {
        if shared.verify.swap(false, Ordering::SeqCst) {
            let (p1, c1) = private.verify();
            let (p2, c2) = common.verify();
            let _ = results.send(FromGuest::Verified {
                pages: p1 + p2,
                corrupt: c1 + c2,
            });
        }
        let (load, seconds, in_step, new_generation, index) = {
            let c = shared.current.lock().expect("workload lock");
            let (index, in_step) = c.workload.step_at(c.since.elapsed().as_secs());
            let step = c.workload.steps[index];
            (step.load, step.seconds, in_step, c.generation, index)
        };
        if new_generation != generation || index != step_index {
            generation = new_generation;
            step_index = index;
            cursor = 0;
            // The disk stays open: the last close of a block device drops its page cache, and
            // the cache a step leaves behind is what an idle guest really holds.
            if let (Some(c), Load::Cache(size)) = (cache.as_mut(), load) {
                c.restart(size.as_mib());
            }
            *shared.phase.lock().expect("phase lock") = load.name().to_string();
        }
        let (mut done, mut pause) = hold_memory(
            load,
            seconds,
            in_step,
            (&mut private, &mut common),
            &mut cursor,
        );
        if let Load::Cache(size) = load {
            if cache.is_none() {
                cache = Cache::open(size.as_mib(), !salt);
            }
            if let Some(c) = cache.as_mut() {
                done += c.step();
                pause = Duration::ZERO;
            }
        }
        shared.pages.fetch_add(done, Ordering::Relaxed);
        let sizes = (private.mib(), common.mib());
        if sizes != held_sizes {
            held_sizes = sizes;
            shared.held_mib.store(sizes.0 + sizes.1, Ordering::Relaxed);
            *shared.held_chunks.lock().expect("chunks lock") = private
                .chunk_addresses()
                .chain(common.chunk_addresses())
                .collect();
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

/// Holds and touches the memory one step of the workload asks for: the pages it wrote or
/// touched, and how long to pause before the next slice (none while it touches memory).
fn hold_memory(
    load: Load,
    seconds: Option<u64>,
    in_step: u64,
    (private, common): (&mut Held, &mut Held),
    cursor: &mut usize,
) -> (u64, Duration) {
    let mib = |s: memvisor_core::Size| s.as_mib() as usize;
    let mut done = 0;
    let mut pause = Duration::from_millis(100);
    match load {
        Load::Idle | Load::Cache(_) => {
            private.resize(0);
            common.resize(0);
        }
        Load::Hold(size) => {
            common.resize(0);
            done += private.resize(mib(size));
        }
        Load::Ramp(size) => {
            common.resize(0);
            let total = seconds.unwrap_or(1).max(1);
            let target = (size.as_mib() * in_step.min(total) / total) as usize;
            done += private.resize(target.max(private.mib() as usize).min(mib(size)));
        }
        Load::Touch { total, active } => {
            common.resize(0);
            done += private.resize(mib(total));
            done += private.touch(mib(active), TOUCHES_PER_SLICE, cursor);
            pause = Duration::ZERO;
        }
        Load::Shared(size) => {
            private.resize(0);
            done += common.resize(mib(size));
        }
    }
    (done, pause)
}

fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|t| oom_kills_in_vmstat(&t))
        .unwrap_or(0)
}
