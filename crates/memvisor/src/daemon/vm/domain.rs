//! A libvirt domain as its VM task reaches it: through the daemon's current libvirt connection,
//! which is replaced when libvirtd restarts and is missing while it is away.

use super::super::DaemonError;
use memvisor_libvirt::{DomainRef, Libvirt, VirtioMem};
use std::sync::{Arc, Mutex};

/// The daemon's connection to libvirtd, shared with every domain's task.
#[derive(Clone)]
pub struct Connection {
    uri: String,
    current: Arc<Mutex<Option<Arc<Libvirt>>>>,
}

impl Connection {
    pub fn new(uri: &str) -> Connection {
        Connection {
            uri: uri.to_string(),
            current: Arc::default(),
        }
    }

    pub fn set(&self, libvirt: Option<Arc<Libvirt>>) {
        *self.current.lock().expect("libvirt lock") = libvirt;
    }

    pub fn get(&self) -> Result<Arc<Libvirt>, DaemonError> {
        self.current
            .lock()
            .expect("libvirt lock")
            .clone()
            .ok_or_else(|| {
                DaemonError::Io(format!(
                    "libvirt at {} is not connected (libvirtd stopped or restarts): memvisor reconnects and keeps the domain's last figures meanwhile",
                    self.uri
                ))
            })
    }
}

/// One domain on that connection, whether `translate` may use its monitor, and its virtio-mem
/// device as libvirt showed it when memvisor took the domain up.
#[derive(Clone)]
pub struct Domain {
    pub connection: Connection,
    pub domain: DomainRef,
    pub monitor: bool,
    pub virtio_mem: Option<VirtioMem>,
}

impl Domain {
    pub fn libvirt(&self) -> Result<Arc<Libvirt>, DaemonError> {
        self.connection.get()
    }
}
