//! The line-delimited JSON protocol between the daemon and the guest agent, spoken over the
//! virtio-serial port named [`PORT_NAME`].

use crate::workload::Workload;
use serde::{Deserialize, Serialize};

pub const PORT_NAME: &str = "org.memvisor.agent";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToGuest {
    SetWorkload {
        workload: Workload,
    },
    /// Check every page the agent wrote against the pattern it wrote there.
    Verify,
    /// Resolve an address to guest physical through the guest's own page tables.
    Translate {
        address: crate::translation::GuestAddress,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromGuest {
    Report(AgentReport),
    Verified {
        pages: u64,
        corrupt: u64,
    },
    Translated {
        page: Option<crate::translation::GuestPage>,
        error: Option<String>,
    },
    Rejected {
        message: String,
    },
}

/// Sent by the agent once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    pub workload: String,
    /// Name of the running step: `idle`, `hold`, `touch`, ...
    pub phase: String,
    /// Pages written or read by the workload during the last second.
    pub pages_per_sec: f64,
    /// Pages written or read by the workload since the agent started: a host that reads this
    /// at its own times counts a guest stalled between two reports as making no progress.
    /// None from an agent older than this field.
    #[serde(default)]
    pub pages: Option<u64>,
    /// Anonymous memory the workload holds now, in MiB.
    pub held_mib: u64,
    /// Processes the guest kernel's OOM killer ended since boot (`oom_kill` in /proc/vmstat).
    #[serde(default)]
    pub oom_kills: u64,
    pub uptime_s: f64,
}

/// The processes a guest kernel's OOM killer ended since boot, from its `/proc/vmstat`: read by
/// memvisor's agent, and through qemu-guest-agent in a disk guest that has no agent of ours.
pub fn oom_kills_in_vmstat(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_come_from_vmstat() {
        assert_eq!(
            oom_kills_in_vmstat("pgfault 10\noom_kill 3\nswap_ra 0\n"),
            Some(3)
        );
        assert_eq!(oom_kills_in_vmstat("pgfault 10\n"), None);
    }

    #[test]
    fn messages_have_a_stable_wire_form() {
        let msg = ToGuest::SetWorkload {
            workload: "hold:64M".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"set_workload","workload":"hold:64MiB"}"#
        );
        let back: FromGuest =
            serde_json::from_str(r#"{"type":"verified","pages":10,"corrupt":0}"#).unwrap();
        assert_eq!(
            back,
            FromGuest::Verified {
                pages: 10,
                corrupt: 0
            }
        );
    }
}
