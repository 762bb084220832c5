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
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let name = std::fs::read_to_string(entry.path().join("name")).ok()?;
            (name.trim() == PORT_NAME)
                .then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
        })
}
