//! A VM behind its lock, with its figures as of the last time the lock was let go. The API
//! answers from those while the VM is busy (a QEMU that does not answer holds its VM for the
//! QMP timeout); since whoever holds the lock refreshes them on letting go, a read that follows
//! a change shows that change. The guest agent's reports (phase, pages) arrive without the
//! lock, so a busy VM's are as of its last change.

use super::vm::Vm;
use memvisor_core::status::VmStatus;
use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use tokio::sync::{Mutex, MutexGuard};

pub struct Slot {
    vm: Mutex<Vm>,
    last: std::sync::Mutex<VmStatus>,
}

impl Slot {
    pub fn new(vm: Vm) -> Slot {
        Slot {
            last: std::sync::Mutex::new(vm.status()),
            vm: Mutex::new(vm),
        }
    }

    pub async fn lock(&self) -> Held<'_> {
        Held {
            vm: self.vm.lock().await,
            last: &self.last,
        }
    }

    /// The VM's figures now, or as of its last change if it is busy.
    pub fn status(&self) -> VmStatus {
        match self.vm.try_lock() {
            Ok(vm) => vm.status(),
            Err(_) => self
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The VM, held; its figures are kept for readers when it is let go.
pub struct Held<'a> {
    vm: MutexGuard<'a, Vm>,
    last: &'a std::sync::Mutex<VmStatus>,
}

impl Deref for Held<'_> {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        &self.vm
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Never panics: this may run while a panic unwinds.
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = self.vm.status();
    }
}
