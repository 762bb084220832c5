//! Looking through the layers: one guest page from guest virtual to host physical, and which
//! VMs share host frames through KSM.

use super::vm::VmHandle;
use super::{Daemon, DaemonError};
use memvisor_core::sharing::{self, SharingMatrix};
use memvisor_core::status::VmState;
use memvisor_core::translation::{
    ram_offset, GuestAddress, GuestPage, HostPage, Translation, KERNEL_SPACE, PAGE,
};
use memvisor_host::pagemap;
use std::time::Duration;

const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

impl From<pagemap::PagemapError> for DaemonError {
    fn from(e: pagemap::PagemapError) -> Self {
        DaemonError::Io(e.to_string())
    }
}

/// Reads QEMU's `gva2gpa` answer: "gpa: 0x1234" or "Unmapped".
pub fn parse_gva2gpa(reply: &str) -> Option<u64> {
    let hex = reply.trim().strip_prefix("gpa: 0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The guest's side of a translation: its agent resolves the address; a VM without one (an
/// attached VM) can only be followed from a guest physical address.
async fn resolve_in_guest(
    vm: &VmHandle,
    name: &str,
    guest_asks: GuestAddress,
) -> Result<GuestPage, DaemonError> {
    Ok(match vm.agent_translate(guest_asks).await? {
        Some(reply) => {
            match tokio::time::timeout(AGENT_TIMEOUT, reply).await {
                Ok(Ok(Ok(page))) => page,
                Ok(Ok(Err(why))) => {
                    return Err(DaemonError::BadRequest(format!("{name}'s agent: {why}")))
                }
                _ => return Err(DaemonError::AgentTimeout(name.to_string(), AGENT_TIMEOUT)),
            }
        }
        // An attached VM has no agent: only physical and kernel addresses can be followed.
        None => match guest_asks {
            GuestAddress::Physical { address } => GuestPage {
                virtual_address: None,
                physical_address: Some(address),
                mapping: None,
                flags: None,
            },
            _ => {
                return Err(DaemonError::Conflict(format!(
                    "{name} has no memvisor agent to resolve guest user addresses; give a kernel address or gpa:ADDRESS"
                )))
            }
        },
    })
}

/// The host's side: where QEMU maps guest physical `gpa`, and the frame behind it.
fn host_page(
    name: &str,
    pid: u32,
    ram: memvisor_core::Size,
    gpa: u64,
) -> Result<HostPage, DaemonError> {
    let offset = ram_offset(gpa, ram.as_bytes()).ok_or_else(|| {
        DaemonError::BadRequest(format!(
            "guest physical {gpa:#x} is outside {name}'s boot RAM ({ram}); memory plugged by virtio-mem is not followed"
        ))
    })?;
    let hva = pagemap::guest_ram_start(pid, ram)? + offset;
    let mapping = pagemap::mapping(pid, hva)?;
    let flags = mapping.frame.map(pagemap::frame_flags).transpose()?;
    let map_count = mapping.frame.map(pagemap::map_count).transpose()?;
    Ok(HostPage {
        virtual_address: hva,
        physical_address: mapping.frame.map(|f| f * PAGE + hva % PAGE),
        mapping,
        flags,
        map_count,
    })
}

impl Daemon {
    pub async fn translate(
        &self,
        name: &str,
        asked: GuestAddress,
    ) -> Result<Translation, DaemonError> {
        let vm = self.vm(name)?;
        let view = vm.view();
        if view.state != VmState::Running {
            return Err(DaemonError::NotRunning(name.to_string()));
        }
        let pid = view
            .pid
            .ok_or_else(|| DaemonError::NotRunning(name.to_string()))?;
        let ram = view.boot_memory;
        let (guest_asks, resolved_by, kernel_virtual) = match asked {
            GuestAddress::Virtual { address } if address >= KERNEL_SPACE => {
                let text = vm.monitor(format!("gva2gpa {address:#x}")).await?;
                let gpa = parse_gva2gpa(&text).ok_or_else(|| {
                    DaemonError::BadRequest(format!(
                        "{name}'s page tables do not map {address:#x} (QEMU says: {}); give a mapped kernel address",
                        text.trim()
                    ))
                })?;
                (
                    GuestAddress::Physical { address: gpa },
                    "QEMU gva2gpa",
                    Some(address),
                )
            }
            other => (other, "guest agent", None),
        };
        let guest = resolve_in_guest(&vm, name, guest_asks).await?;
        let guest = GuestPage {
            virtual_address: kernel_virtual.or(guest.virtual_address),
            ..guest
        };

        let host = match guest.physical_address {
            None => None,
            Some(gpa) => Some(host_page(name, pid, ram, gpa)?),
        };
        Ok(Translation {
            vm: name.to_string(),
            asked,
            resolved_by: resolved_by.to_string(),
            guest,
            host,
        })
    }

    /// Which running VMs share host frames through KSM, from their QEMUs' page maps.
    pub async fn sharing(&self) -> Result<SharingMatrix, DaemonError> {
        let mut regions = Vec::new();
        for vm in self.all().iter().map(VmHandle::view) {
            if let (VmState::Running, Some(pid)) = (vm.state, vm.pid) {
                regions.push((vm.name().to_string(), pid, vm.boot_memory));
            }
        }
        let frames = tokio::task::spawn_blocking(move || {
            regions
                .into_iter()
                .map(|(name, pid, ram)| {
                    let start = pagemap::guest_ram_start(pid, ram)?;
                    Ok((
                        name,
                        pagemap::merged_frames(pid, start, ram.as_bytes() / PAGE)?,
                    ))
                })
                .collect::<Result<Vec<_>, pagemap::PagemapError>>()
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??;
        Ok(sharing::matrix(&frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemus_gva2gpa_answers() {
        assert_eq!(parse_gva2gpa("gpa: 0x1f4e000\r\n"), Some(0x1f4e000));
        assert_eq!(parse_gva2gpa("Unmapped\r\n"), None);
    }
}
