//! The HTTP API's request and reply bodies, one type each, shared by the daemon that serves
//! them and the client that sends them. The answers' shapes are in `status`.

use crate::config::VmConfig;
use crate::reservation;
use crate::size::Size;
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The daemon's Unix socket, in its state directory.
pub const SOCKET_NAME: &str = "memvisor.sock";
/// Where the daemon keeps the token TCP clients must send (mode 0600: root reads it).
pub const TOKEN_FILE: &str = "api-token";

/// What `memvisor set` changes; fields left out stay as they are. Sizes are strings with a
/// binary unit: "512M", "1G".
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Change {
    #[schema(value_type = Option<String>)]
    pub reservation: Option<Size>,
    #[schema(value_type = Option<String>)]
    pub limit: Option<Size>,
    pub shares: Option<u32>,
    #[schema(value_type = Option<String>)]
    pub memory: Option<Size>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }

    /// `current` with this change, checked: the VM's own rules, growth past `boot_memory`
    /// only through virtio-mem, and every reservation (the `others`' and the new one) within
    /// the host's `budget` less its `reserve`. Every problem is named, or none.
    pub fn applied_to<'a>(
        &self,
        current: &'a VmConfig,
        boot_memory: Size,
        (budget, reserve): (Size, Size),
        others: impl IntoIterator<Item = (&'a str, Size)>,
    ) -> Result<VmConfig, String> {
        let mut config = current.clone();
        config.reservation = self.reservation.unwrap_or(config.reservation);
        config.limit = self.limit.or(config.limit);
        config.shares = self.shares.unwrap_or(config.shares);
        config.memory = self.memory.unwrap_or(config.memory);
        let mut problems = config.problems();
        if config.memory > boot_memory && !current.can_grow_past(boot_memory) {
            problems.push(format!(
                "{} booted with {boot_memory} and has no virtio-mem device: set max in its config and restart it to grow it live",
                current.name
            ));
        }
        let reserving = others
            .into_iter()
            .chain([(current.name.as_str(), config.reservation)]);
        if let Err(e) = reservation::fit(budget, reserve, reserving) {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("; "))
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.reservation {
            parts.push(format!("reservation {r}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit {l}"));
        }
        if let Some(s) = self.shares {
            parts.push(format!("shares {s}"));
        }
        if let Some(m) = self.memory {
            parts.push(format!("memory {m}"));
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// A balloon target: what the guest keeps, e.g. "512M".
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct BalloonRequest {
    #[schema(value_type = String)]
    pub target: Size,
}

/// What the guest agent does from now on, e.g. "touch:900M:600M".
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct WorkloadRequest {
    #[schema(value_type = String)]
    pub workload: Workload,
}

/// What the guest agent found when it checked every page it wrote.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct VerifyReply {
    pub pages: u64,
    pub corrupt: u64,
}

/// A QEMU someone else started, to be managed under `name`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AttachRequest {
    pub name: String,
    #[schema(value_type = String)]
    pub qmp: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct MonitorRequest {
    /// A QEMU human monitor command line, e.g. "info balloon".
    pub command: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A 2 GiB budget with the default 64 MiB reserve.
    const HOST: (Size, Size) = (Size::mib(2048), Size::mib(64));

    fn config() -> Config {
        Config::parse(
            "[host]\nbudget = \"2G\"\n[[vm]]\nname = \"a\"\nmemory = \"1G\"\nmax = \"1536M\"\n[[vm]]\nname = \"b\"\nmemory = \"1G\"\nreservation = \"1G\"\n",
        )
        .unwrap()
    }

    #[test]
    fn a_change_within_the_rules_is_taken_whole() {
        let c = config();
        let change = Change {
            reservation: Some(Size::mib(256)),
            shares: Some(2000),
            memory: Some(Size::mib(1280)),
            limit: None,
        };
        let others = [("b", Size::mib(1024))];
        let a = change
            .applied_to(&c.vms[0], Size::mib(1024), HOST, others)
            .unwrap();
        assert_eq!(
            (a.reservation, a.shares, a.memory),
            (Size::mib(256), 2000, Size::mib(1280))
        );
        // Grown to its max, it still has its virtio-mem device: another size is taken too.
        let at_max = Change {
            memory: Some(Size::mib(1536)),
            ..Change::default()
        }
        .applied_to(&a, Size::mib(1024), HOST, others)
        .unwrap();
        let back = Change {
            memory: Some(Size::mib(1200)),
            ..Change::default()
        }
        .applied_to(&at_max, Size::mib(1024), HOST, others)
        .unwrap();
        assert_eq!(back.memory, Size::mib(1200));
    }

    #[test]
    fn every_problem_of_a_change_is_named() {
        let c = config();
        let change = Change {
            reservation: Some(Size::mib(1024)),
            shares: Some(0),
            ..Change::default()
        };
        let e = change
            .applied_to(&c.vms[0], Size::mib(1024), HOST, [("b", Size::mib(1024))])
            .unwrap_err();
        assert!(e.contains("shares"), "{e}");
        assert!(e.contains("below the sum of reservations"), "{e}");
        // b booted with 1G and has no virtio-mem: it cannot grow live.
        let grow = Change {
            memory: Some(Size::mib(1100)),
            reservation: Some(Size::ZERO),
            ..Change::default()
        };
        let e = grow
            .applied_to(&c.vms[1], Size::mib(1024), HOST, [])
            .unwrap_err();
        assert!(e.contains("no virtio-mem device"), "{e}");
    }
}
