//! Finds the virtio-serial port by name. Without udev there is no /dev/virtio-ports symlink,
//! so the name is looked up in sysfs.

use memvisor_core::agent::PORT_NAME;
use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

pub fn open(wait: Duration) -> Result<File, String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(device) = find() {
            return OpenOptions::new()
                .read(true)
                .write(true)
                .open(&device)
                .map_err(|e| format!("cannot open {device}: {e}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no virtio-serial port named {PORT_NAME} appeared within {wait:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find() -> Option<String> {
    device_with("/sys/class/virtio-ports", "name", PORT_NAME)
}

/// The /dev node of the entry under `sysfs_dir` whose `attribute` file reads `value`.
pub fn device_with(sysfs_dir: &str, attribute: &str, value: &str) -> Option<String> {
    std::fs::read_dir(sysfs_dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let content = std::fs::read_to_string(entry.path().join(attribute)).ok()?;
            (content.trim() == value)
                .then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
        })
}
