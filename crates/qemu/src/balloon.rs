//! The virtio-balloon device through QMP: set the guest's target size, read the size reached and
//! the statistics the guest driver reports.
//!
//! QEMU's balloon value is the memory the guest should *keep*: `balloon 512M` on a 1 GiB guest
//! inflates the balloon by 512 MiB. memvisor uses the same meaning everywhere.

use crate::qmp::{Qmp, QmpError};
use memvisor_core::Size;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("the VM has no virtio-balloon device; start QEMU with -device virtio-balloon-pci,id=balloon0")]
    NoDevice,
    #[error("QEMU's reply to {command} lacks '{field}': {reply}")]
    MissingField {
        command: &'static str,
        field: &'static str,
        reply: String,
    },
}

/// What the guest's balloon driver reports (virtio-balloon statistics). A figure the guest does
/// not report is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestStats {
    pub total: Option<Size>,
    pub free: Option<Size>,
    pub available: Option<Size>,
    pub disk_caches: Option<Size>,
    pub swap_in: Option<Size>,
    pub swap_out: Option<Size>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    /// Guest time of the last report, seconds since the epoch; 0 before the first one.
    pub last_update: u64,
}

/// Parses the value of `qom-get guest-stats`. QEMU fills figures the guest did not send with -1.
pub fn parse_guest_stats(value: &Value) -> GuestStats {
    let stats = value.get("stats");
    let raw = |key: &str| -> Option<u64> {
        let v = stats?.get(key)?;
        v.as_u64()
            .or_else(|| v.as_i64().filter(|n| *n >= 0).map(|n| n as u64))
    };
    let bytes = |key: &str| raw(key).map(Size::bytes);
    GuestStats {
        total: bytes("stat-total-memory"),
        free: bytes("stat-free-memory"),
        available: bytes("stat-available-memory"),
        disk_caches: bytes("stat-disk-caches"),
        // The Linux driver reports swap traffic in bytes.
        swap_in: bytes("stat-swap-in"),
        swap_out: bytes("stat-swap-out"),
        major_faults: raw("stat-major-faults"),
        minor_faults: raw("stat-minor-faults"),
        last_update: value
            .get("last-update")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// Asks the guest to shrink or grow to `target`.
pub async fn set_target(qmp: &mut Qmp, target: Size) -> Result<(), BalloonError> {
    qmp.execute("balloon", Some(json!({ "value": target.as_bytes() })))
        .await
        .map_err(no_device)?;
    Ok(())
}

/// The memory the guest has now, with the balloon taken out.
pub async fn actual(qmp: &mut Qmp) -> Result<Size, BalloonError> {
    let reply = qmp
        .execute("query-balloon", None)
        .await
        .map_err(no_device)?;
    reply
        .get("actual")
        .and_then(Value::as_u64)
        .map(Size::bytes)
        .ok_or_else(|| BalloonError::MissingField {
            command: "query-balloon",
            field: "actual",
            reply: reply.to_string(),
        })
}

fn no_device(e: QmpError) -> BalloonError {
    match &e {
        QmpError::Refused { class, .. } if class == "DeviceNotActive" => BalloonError::NoDevice,
        _ => BalloonError::Qmp(e),
    }
}

/// QOM path of the balloon device: the one named by `id=`, else the first anonymous one.
pub async fn find_device(qmp: &mut Qmp) -> Result<String, BalloonError> {
    for container in ["/machine/peripheral", "/machine/peripheral-anon"] {
        let children = qmp
            .execute("qom-list", Some(json!({ "path": container })))
            .await?;
        if let Some(name) = balloon_child(&children) {
            return Ok(format!("{container}/{name}"));
        }
    }
    Err(BalloonError::NoDevice)
}

/// Picks the balloon from a `qom-list` reply.
pub fn balloon_child(children: &Value) -> Option<String> {
    children.as_array()?.iter().find_map(|child| {
        let kind = child.get("type")?.as_str()?;
        kind.starts_with("child<virtio-balloon")
            .then(|| child.get("name")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// Makes the guest driver report statistics every `seconds`.
pub async fn enable_stats(qmp: &mut Qmp, device: &str, seconds: u32) -> Result<(), BalloonError> {
    let args =
        json!({ "path": device, "property": "guest-stats-polling-interval", "value": seconds });
    qmp.execute("qom-set", Some(args)).await?;
    Ok(())
}

pub async fn guest_stats(qmp: &mut Qmp, device: &str) -> Result<GuestStats, BalloonError> {
    let args = json!({ "path": device, "property": "guest-stats" });
    Ok(parse_guest_stats(
        &qmp.execute("qom-get", Some(args)).await?,
    ))
}

/// Guest RAM now: boot memory plus what virtio-mem has plugged.
pub async fn memory_size(qmp: &mut Qmp) -> Result<Size, BalloonError> {
    let reply = qmp.execute("query-memory-size-summary", None).await?;
    let field = |f: &'static str| {
        reply
            .get(f)
            .and_then(Value::as_u64)
            .ok_or_else(|| BalloonError::MissingField {
                command: "query-memory-size-summary",
                field: f,
                reply: reply.to_string(),
            })
    };
    let plugged = field("plugged-memory").unwrap_or(0);
    Ok(Size::bytes(field("base-memory")? + plugged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_stats_as_qemu_sends_them() {
        let reply = json!({"stats": {"stat-htlb-pgalloc": 0, "stat-swap-out": 8192, "stat-available-memory": 378966016,
            "stat-htlb-pgfail": 0, "stat-free-memory": 378404864, "stat-minor-faults": 1382, "stat-major-faults": -1,
            "stat-total-memory": 409681920, "stat-swap-in": 0, "stat-disk-caches": 2498560}, "last-update": 1795365130});
        let s = parse_guest_stats(&reply);
        assert_eq!(s.free, Some(Size::bytes(378404864)));
        assert_eq!(s.available, Some(Size::bytes(378966016)));
        assert_eq!(s.total, Some(Size::bytes(409681920)));
        assert_eq!(s.swap_out, Some(Size::bytes(8192)));
        assert_eq!(s.major_faults, None, "-1 means the guest did not report it");
        assert_eq!(s.last_update, 1795365130);
        assert_eq!(parse_guest_stats(&json!({})), GuestStats::default());
    }

    #[test]
    fn finds_the_balloon_among_peripherals() {
        let listing = json!([
            {"name": "type", "type": "string"},
            {"name": "disk0", "type": "child<virtio-blk-pci>"},
            {"name": "balloon0", "type": "child<virtio-balloon-pci>"}
        ]);
        assert_eq!(balloon_child(&listing), Some("balloon0".into()));
        assert_eq!(
            balloon_child(&json!([{"name": "x", "type": "child<e1000>"}])),
            None
        );
    }
}
