//! The DAMON adapter against this machine's kernel, in the state the machine is in. Needs root
//! and CONFIG_DAMON_SYSFS; runs in the real-vms test group, since DAMON is host-wide and the
//! daemon's tests use it too.
//!
//! DAMON is free (no kdamond): memvisor's own kdamonds watch and leave nothing behind. Another
//! tool holds it (these build machines boot with a kdamond of their own): memvisor refuses and
//! leaves every setting of that tool's as it was. Each test says which state it found; the
//! state it did not find is covered on fixture trees in `damon.rs`.

use memvisor_host::damon::{Damon, DamonError, Range, SYSFS};
mod support;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUFFER: usize = 64 << 20;

/// Writes to every page of a 64 MiB buffer until told to stop; returns where it lies.
fn touch_in_background(stop: Arc<AtomicBool>) -> (u64, std::thread::JoinHandle<()>) {
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut buffer = vec![0u8; BUFFER];
        sender.send(buffer.as_ptr() as u64).unwrap();
        let mut round = 0u8;
        while !stop.load(Ordering::Relaxed) {
            round = round.wrapping_add(1);
            for page in buffer.chunks_mut(4096) {
                page[0] = round;
            }
            std::hint::black_box(&buffer);
        }
    });
    (receiver.recv().unwrap(), worker)
}

/// The largest "System RAM" range in /proc/iomem (root sees real addresses).
fn largest_system_ram() -> Range {
    let iomem = std::fs::read_to_string("/proc/iomem").unwrap();
    iomem
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(": System RAM"))
        .filter_map(|l| {
            let (start, end) = l.split(' ').next()?.split_once('-')?;
            Some(Range {
                pid: None,
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()? + 1,
            })
        })
        .max_by_key(|r| r.end - r.start)
        .filter(|r| r.end > r.start + 4096)
        .expect("this test must run as root: /proc/iomem shows addresses as 0 to others")
}

fn nr_kdamonds() -> String {
    std::fs::read_to_string(Path::new(SYSFS).join("kdamonds/nr_kdamonds"))
        .expect("this test needs DAMON's sysfs interface: a kernel with CONFIG_DAMON_SYSFS")
}

/// Whether DAMON is free for memvisor; if not, checks that `attempt` leaves what holds it
/// exactly as it was, and says so.
fn free_or_left_alone(attempt: impl Fn(&mut Damon) -> DamonError) -> bool {
    if nr_kdamonds().trim() == "0" {
        println!("DAMON is free on this machine: memvisor's own kdamonds are tested");
        return true;
    }
    println!(
        "DAMON is held by another tool on this machine: memvisor must leave it as it is (its own \
         kdamonds are tested on fixture trees in damon.rs)"
    );
    let before = support::damon_settings();
    let mut damon = Damon::at(Path::new(SYSFS));
    let err = attempt(&mut damon);
    damon.stop().unwrap();
    assert!(damon.watched().is_empty());
    assert_eq!(
        support::damon_settings(),
        before,
        "memvisor changed a DAMON set-up it did not make ({err})"
    );
    false
}

/// Reads what DAMON saw accessed until `enough` holds or 10 s pass; returns the last reading.
fn accessed_until(damon: &mut Damon, enough: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        let bytes = damon.accessed().unwrap()[0]
            .expect("the kdamond runs")
            .as_bytes();
        if enough(bytes) || Instant::now() > deadline {
            return bytes;
        }
    }
}

#[test]
fn watches_physical_memory_and_leaves_no_kdamond_behind() {
    let free = free_or_left_alone(|damon| {
        let err = damon.watch(&[largest_system_ram()]).unwrap_err();
        assert!(matches!(err, DamonError::InUse(_)), "{err}");
        err
    });
    if !free {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (_, worker) = touch_in_background(stop.clone());
    let ram = largest_system_ram();
    let mut damon = Damon::at(Path::new(SYSFS));
    damon.watch(&[ram]).unwrap();
    let accessed = accessed_until(&mut damon, |b| b > 0);
    damon.stop().unwrap();
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(
        accessed > 0,
        "DAMON saw no access while 64 MiB were written"
    );
    assert!(accessed <= ram.end - ram.start, "{accessed}");
    assert_eq!(nr_kdamonds().trim(), "0");
}

#[test]
fn watches_a_process_range_where_the_kernel_offers_vaddr() {
    let free = free_or_left_alone(|damon| {
        let here = Range {
            pid: Some(std::process::id()),
            start: 0,
            end: 4096,
        };
        let err = damon.watch(&[here]).unwrap_err();
        match &err {
            DamonError::NoOperations { available, .. } => assert!(!offers_vaddr(available)),
            DamonError::InUse(_) => {}
            other => panic!("{other}"),
        }
        err
    });
    if !free {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (start, worker) = touch_in_background(stop.clone());
    let busy = Range {
        pid: Some(std::process::id()),
        start,
        end: start + BUFFER as u64,
    };
    let mut damon = Damon::at(Path::new(SYSFS));
    let outcome = damon
        .watch(&[busy])
        .map(|()| accessed_until(&mut damon, |b| b >= (BUFFER / 2) as u64));
    damon.stop().unwrap();
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    match outcome {
        Ok(bytes) => assert!(
            bytes >= (BUFFER / 2) as u64,
            "DAMON saw {bytes} bytes of a 64 MiB buffer written over and over"
        ),
        Err(DamonError::NoOperations { available, .. }) => assert!(!offers_vaddr(&available)),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(nr_kdamonds().trim(), "0");
}

fn offers_vaddr(available: &str) -> bool {
    available.split_whitespace().any(|o| o == "vaddr")
}
