//! Growing a guest past its boot size: the virtio-mem device plugs memory blocks live.

use crate::launch::VIRTIO_MEM_ID;
use crate::qmp::{Qmp, QmpError};
use memvisor_core::config::VIRTIO_MEM_BLOCK;
use memvisor_core::Size;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum VirtioMemError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("QEMU's answer about {VIRTIO_MEM_ID} has no size: {0}")]
    NoSize(String),
}

fn path() -> String {
    format!("/machine/peripheral/{VIRTIO_MEM_ID}")
}

/// Asks the guest to have `extra` plugged beyond its boot memory (rounded up to whole blocks).
pub async fn request(qmp: &mut Qmp, extra: Size) -> Result<(), VirtioMemError> {
    let block = VIRTIO_MEM_BLOCK.as_bytes();
    let bytes = extra.as_bytes().div_ceil(block) * block;
    qmp.execute(
        "qom-set",
        Some(json!({ "path": path(), "property": "requested-size", "value": bytes })),
    )
    .await?;
    Ok(())
}

/// Memory the guest has plugged now.
pub async fn plugged(qmp: &mut Qmp) -> Result<Size, VirtioMemError> {
    let reply = qmp
        .execute(
            "qom-get",
            Some(json!({ "path": path(), "property": "size" })),
        )
        .await?;
    reply
        .as_u64()
        .map(Size::bytes)
        .ok_or_else(|| VirtioMemError::NoSize(Value::to_string(&reply)))
}
