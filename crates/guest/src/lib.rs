//! The guest image memvisor boots: Debian's kernel, busybox-static, the virtio modules the
//! guest needs, an init script and the static guest agent, packed as a cpio initramfs.
//!
//! - `apt`: find and fetch the Debian packages (`apt-get download`, nothing installed).
//! - `modules`: resolve module dependencies and load order from `modules.dep`.
//! - `initramfs`: write the cpio archive and the init script.
//! - `image`: put it together, cached by the content of every input.
//!
//! And a real Debian guest disk (`debian`), for VMs that boot their own OS.

pub mod apt;
pub mod debian;
pub mod image;
pub mod initramfs;
pub mod modules;
