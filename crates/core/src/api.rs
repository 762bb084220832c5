//! The HTTP API's request and reply bodies, one type each, shared by the daemon that serves
//! them and the client that sends them. The answers' shapes are in `status`.

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
