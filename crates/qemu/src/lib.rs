//! QEMU adapters: launching a VM (`launch`), its QMP control socket (`qmp`), the virtio-balloon
//! device (`balloon`), a guest's own disk image (`disk`) and the choice between KVM and TCG
//! (`accel`).

pub mod accel;
pub mod balloon;
pub mod disk;
pub mod guest_agent;
pub mod launch;
pub mod qmp;
pub mod virtio_mem;

pub const QEMU_BINARY: &str = "qemu-system-x86_64";
