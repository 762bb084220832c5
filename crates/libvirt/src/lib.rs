//! libvirt domains, through libvirtd's own RPC protocol on its local socket: the calls libvirt's
//! C library makes for `virsh setmem --live`, `dommemstat`, `memtune` and `qemu-monitor-command`,
//! and the lifecycle and balloon events it sends. Speaking the protocol keeps memvisor's
//! binaries static (libvirt ships no static library) and asks nothing of the host but libvirtd.

mod rpc;
mod virtio_mem;
mod xdr;

pub use virtio_mem::VirtioMem;

use memvisor_core::Size;
use memvisor_qemu::balloon::GuestStats;
use rpc::{Message, Rpc, QEMU_PROGRAM, REMOTE_PROGRAM};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use xdr::{Reader, Writer};

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("[libvirt] uri \"{0}\" is not a local QEMU URI: memvisor schedules the host it runs on; use \"qemu:///system\" (or \"qemu+unix:///system?socket=PATH\")")]
    NotLocal(String),
    #[error("libvirt at {uri} does not answer on {socket}: {error}; start libvirtd (and virtlogd), or correct [libvirt] uri")]
    Unreachable {
        uri: String,
        socket: PathBuf,
        error: String,
    },
    #[error("libvirt refused: {message} (error {code})")]
    Refused { code: i32, message: String },
    #[error("libvirtd closed the connection: it stopped or restarted")]
    Closed,
    #[error("libvirtd did not answer call {procedure} within {after:?}")]
    Timeout { procedure: i32, after: Duration },
    #[error("libvirtd's reply could not be read: {0}")]
    Protocol(String),
}

impl LibvirtError {
    /// libvirt's VIR_ERR_NO_DOMAIN: the domain is gone (undefined, or a transient one stopped).
    pub fn no_domain(&self) -> bool {
        matches!(self, LibvirtError::Refused { code: 42, .. })
    }

    /// VIR_ERR_OPERATION_INVALID: the domain is not running.
    pub fn not_running(&self) -> bool {
        matches!(self, LibvirtError::Refused { code: 55, .. })
    }
}

mod procedure {
    pub const CONNECT_OPEN: i32 = 1;
    pub const DOMAIN_GET_XML_DESC: i32 = 14;
    pub const DOMAIN_GET_INFO: i32 = 16;
    pub const DOMAIN_LOOKUP_BY_NAME: i32 = 23;
    pub const AUTH_LIST: i32 = 66;
    pub const DOMAIN_MEMORY_STATS: i32 = 159;
    pub const DOMAIN_UPDATE_DEVICE_FLAGS: i32 = 174;
    pub const DOMAIN_SET_MEMORY_PARAMETERS: i32 = 197;
    pub const DOMAIN_GET_MEMORY_PARAMETERS: i32 = 198;
    pub const DOMAIN_SET_MEMORY_FLAGS: i32 = 204;
    pub const CONNECT_LIST_ALL_DOMAINS: i32 = 273;
    pub const DOMAIN_SET_MEMORY_STATS_PERIOD: i32 = 308;
    pub const EVENT_CALLBACK_REGISTER_ANY: i32 = 316;
    pub const EVENT_CALLBACK_LIFECYCLE: i32 = 318;
    pub const QEMU_MONITOR_COMMAND: i32 = 1;
}

const EVENT_ID_LIFECYCLE: i32 = 0;
const LIST_ACTIVE: u32 = 1;
const AFFECT_LIVE: u32 = 1;
const MONITOR_HMP: u32 = 1;
/// VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, KiB.
const UNLIMITED_KIB: u64 = (1 << 53) - 1;
const TYPED_PARAM_ULLONG: i32 = 4;

/// A domain as libvirt names it on the wire; calls find it by its UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRef {
    pub name: String,
    pub uuid: [u8; 16],
    /// The running domain's id (changes at every start); -1 when it is not running.
    pub id: i32,
}

impl DomainRef {
    fn write(&self, w: &mut Writer) {
        w.string(&self.name).opaque(&self.uuid).i32(self.id);
    }

    fn read(r: &mut Reader) -> Result<DomainRef, LibvirtError> {
        let name = r.string()?;
        let mut uuid = [0; 16];
        uuid.copy_from_slice(r.opaque(16)?);
        Ok(DomainRef {
            name,
            uuid,
            id: r.i32()?,
        })
    }
}

/// What `virsh dominfo` shows of a domain's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    /// virDomainState: 1 running, 3 paused, 5 shut off...
    pub state: u32,
    /// The most the domain may have (`<memory>`).
    pub max: Size,
    /// The balloon's size as libvirt last saw it (`Used memory`).
    pub memory: Size,
}

/// What `virsh dommemstat` shows: the balloon's size and the guest's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub actual: Option<Size>,
    pub rss: Option<Size>,
    pub guest: GuestStats,
}

/// Something that happened to a domain, as libvirt's events tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started(DomainRef),
    Stopped(DomainRef),
}

pub struct Libvirt {
    rpc: Rpc,
    uri: String,
}

impl Libvirt {
    /// Connects to the libvirtd behind a local `uri` and subscribes to its domains' lifecycle
    /// events. The events' receiver closes when the connection does (libvirtd
    /// stopped or restarted): connect again then.
    pub async fn connect(
        uri: &str,
    ) -> Result<(Libvirt, mpsc::UnboundedReceiver<Event>), LibvirtError> {
        let socket = socket_of(uri)?;
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let rpc = Rpc::connect(&socket, raw_tx)
            .await
            .map_err(|e| LibvirtError::Unreachable {
                uri: uri.to_string(),
                socket: socket.clone(),
                error: e.to_string(),
            })?;
        let libvirt = Libvirt {
            rpc,
            uri: uri.to_string(),
        };
        // Listing the ways to authenticate is what lets root past polkit on the read-write
        // socket; memvisor needs none of them.
        libvirt.call(procedure::AUTH_LIST, &[]).await?;
        let mut open = Writer::default();
        open.optional_string(Some("qemu:///system")).u32(0);
        libvirt.call(procedure::CONNECT_OPEN, &open.0).await?;
        // The balloon's size is read every round; the lifecycle is what polling would lag.
        let mut register = Writer::default();
        register.i32(EVENT_ID_LIFECYCLE).u32(0);
        libvirt
            .call(procedure::EVENT_CALLBACK_REGISTER_ANY, &register.0)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(translate_events(raw_rx, tx));
        Ok((libvirt, rx))
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    async fn call(&self, procedure: i32, body: &[u8]) -> Result<Vec<u8>, LibvirtError> {
        self.rpc.call(REMOTE_PROGRAM, procedure, body).await
    }

    async fn call_on(
        &self,
        procedure: i32,
        domain: &DomainRef,
        rest: impl FnOnce(&mut Writer),
    ) -> Result<Vec<u8>, LibvirtError> {
        let mut w = Writer::default();
        domain.write(&mut w);
        rest(&mut w);
        self.call(procedure, &w.0).await
    }

    /// The running domains.
    pub async fn running(&self) -> Result<Vec<DomainRef>, LibvirtError> {
        let mut w = Writer::default();
        w.i32(1).u32(LIST_ACTIVE);
        let reply = self.call(procedure::CONNECT_LIST_ALL_DOMAINS, &w.0).await?;
        let mut r = Reader::new(&reply);
        (0..r.count(24)?).map(|_| DomainRef::read(&mut r)).collect()
    }

    pub async fn lookup(&self, name: &str) -> Result<DomainRef, LibvirtError> {
        let mut w = Writer::default();
        w.string(name);
        let reply = self.call(procedure::DOMAIN_LOOKUP_BY_NAME, &w.0).await?;
        DomainRef::read(&mut Reader::new(&reply))
    }

    pub async fn info(&self, domain: &DomainRef) -> Result<DomainInfo, LibvirtError> {
        let reply = self
            .call_on(procedure::DOMAIN_GET_INFO, domain, |_| {})
            .await?;
        let mut r = Reader::new(&reply);
        Ok(DomainInfo {
            state: r.u32()?,
            max: Size::kib(r.u64()?),
            memory: Size::kib(r.u64()?),
        })
    }

    /// Sets the balloon's target in the running domain (`virsh setmem --live`).
    pub async fn set_balloon(&self, domain: &DomainRef, target: Size) -> Result<(), LibvirtError> {
        self.call_on(procedure::DOMAIN_SET_MEMORY_FLAGS, domain, |w| {
            w.u64(target.as_bytes() >> 10).u32(AFFECT_LIVE);
        })
        .await?;
        Ok(())
    }

    /// How often the guest's balloon driver reports its statistics.
    pub async fn set_stats_period(
        &self,
        domain: &DomainRef,
        seconds: u32,
    ) -> Result<(), LibvirtError> {
        self.call_on(procedure::DOMAIN_SET_MEMORY_STATS_PERIOD, domain, |w| {
            w.i32(seconds as i32).u32(AFFECT_LIVE);
        })
        .await?;
        Ok(())
    }

    pub async fn memory_stats(&self, domain: &DomainRef) -> Result<MemoryStats, LibvirtError> {
        let reply = self
            .call_on(procedure::DOMAIN_MEMORY_STATS, domain, |w| {
                w.u32(16).u32(0);
            })
            .await?;
        let mut r = Reader::new(&reply);
        let n = r.count(12)?;
        let tagged = (0..n)
            .map(|_| Ok((r.i32()?, r.u64()?)))
            .collect::<Result<Vec<_>, LibvirtError>>()?;
        Ok(memory_stats(&tagged))
    }

    /// The domain's memtune hard limit (None: unlimited).
    pub async fn hard_limit(&self, domain: &DomainRef) -> Result<Option<Size>, LibvirtError> {
        // Asked with no room first, libvirt says how many parameters there are.
        let ask = |n: i32| {
            self.call_on(procedure::DOMAIN_GET_MEMORY_PARAMETERS, domain, move |w| {
                w.i32(n).u32(AFFECT_LIVE);
            })
        };
        let reply = ask(0).await?;
        let mut r = Reader::new(&reply);
        let _none = r.count(8)?;
        let n = r.i32()?;
        let reply = ask(n).await?;
        let mut r = Reader::new(&reply);
        for _ in 0..r.count(8)? {
            let field = r.string()?;
            let value = typed_value(&mut r)?;
            if field == "hard_limit" {
                return Ok(value.filter(|kib| *kib < UNLIMITED_KIB).map(Size::kib));
            }
        }
        Ok(None)
    }

    /// Sets the domain's memtune hard limit (`virsh memtune --hard-limit --live`); libvirt writes
    /// it into the domain's cgroup. None lifts it.
    pub async fn set_hard_limit(
        &self,
        domain: &DomainRef,
        limit: Option<Size>,
    ) -> Result<(), LibvirtError> {
        let kib = limit.map_or(UNLIMITED_KIB, |l| l.as_bytes() >> 10);
        self.call_on(procedure::DOMAIN_SET_MEMORY_PARAMETERS, domain, |w| {
            w.u32(1)
                .string("hard_limit")
                .i32(TYPED_PARAM_ULLONG)
                .u64(kib)
                .u32(AFFECT_LIVE);
        })
        .await?;
        Ok(())
    }

    /// The running domain's XML (`virsh dumpxml`).
    pub async fn xml(&self, domain: &DomainRef) -> Result<String, LibvirtError> {
        let reply = self
            .call_on(procedure::DOMAIN_GET_XML_DESC, domain, |w| {
                w.u32(0);
            })
            .await?;
        Reader::new(&reply).string()
    }

    /// The domain's virtio-mem device, with what it plugged now.
    pub async fn virtio_mem(&self, domain: &DomainRef) -> Result<Option<VirtioMem>, LibvirtError> {
        VirtioMem::find(&self.xml(domain).await?)
    }

    /// Asks the domain's virtio-mem device to plug `requested` in all (`virsh
    /// update-memory-device --live --requested-size`); the guest plugs it in its own time.
    pub async fn request_virtio_mem(
        &self,
        domain: &DomainRef,
        device: &VirtioMem,
        requested: Size,
    ) -> Result<(), LibvirtError> {
        let xml = device.requesting(requested);
        self.call_on(procedure::DOMAIN_UPDATE_DEVICE_FLAGS, domain, |w| {
            w.string(&xml).u32(AFFECT_LIVE);
        })
        .await?;
        Ok(())
    }

    /// A QEMU human monitor command through libvirt (`virsh qemu-monitor-command --hmp`).
    /// libvirt marks the domain tainted ("custom-monitor") once this is used.
    pub async fn monitor(&self, domain: &DomainRef, command: &str) -> Result<String, LibvirtError> {
        let mut w = Writer::default();
        domain.write(&mut w);
        w.string(command).u32(MONITOR_HMP);
        let reply = self
            .rpc
            .call(QEMU_PROGRAM, procedure::QEMU_MONITOR_COMMAND, &w.0)
            .await?;
        Reader::new(&reply).string()
    }

    /// The pid of the domain's QEMU, from libvirt's run-time state.
    pub fn pid(&self, domain: &DomainRef) -> Option<u32> {
        std::fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", domain.name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The socket of libvirtd behind a local URI.
fn socket_of(uri: &str) -> Result<PathBuf, LibvirtError> {
    let not_local = || LibvirtError::NotLocal(uri.to_string());
    let (scheme, rest) = uri.split_once("://").ok_or_else(not_local)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !matches!(scheme, "qemu" | "qemu+unix") || path != "/system" {
        return Err(not_local());
    }
    let socket = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("socket="))
        .map_or_else(|| PathBuf::from("/run/libvirt/libvirt-sock"), PathBuf::from);
    Ok(socket)
}

/// A typed parameter's value where it is a number (memtune's are KiB).
fn typed_value(r: &mut Reader) -> Result<Option<u64>, LibvirtError> {
    Ok(match r.i32()? {
        1 | 2 | 6 => Some(r.u32()? as u64),
        3 | 4 => Some(r.u64()?),
        5 => {
            r.u64()?;
            None
        }
        7 => {
            r.string()?;
            None
        }
        other => {
            return Err(LibvirtError::Protocol(format!(
                "a typed parameter of type {other}"
            )))
        }
    })
}

/// libvirt's memory statistics (tag, value in KiB; counters as counted) as memvisor's.
fn memory_stats(tagged: &[(i32, u64)]) -> MemoryStats {
    let get = |tag: i32| tagged.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
    let kib = |tag: i32| get(tag).map(Size::kib);
    MemoryStats {
        actual: kib(6),
        rss: kib(7),
        guest: GuestStats {
            total: kib(5),
            free: kib(4),
            available: kib(8),
            disk_caches: kib(10),
            swap_in: kib(0),
            swap_out: kib(1),
            major_faults: get(2),
            minor_faults: get(3),
            last_update: get(9).unwrap_or(0),
        },
    }
}

async fn translate_events(
    mut raw: mpsc::UnboundedReceiver<Message>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(message) = raw.recv().await {
        let Ok(Some(event)) = event_of(&message) else {
            continue;
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

fn event_of(message: &Message) -> Result<Option<Event>, LibvirtError> {
    let mut r = Reader::new(&message.body);
    let _callback = r.i32()?;
    let domain = DomainRef::read(&mut r)?;
    Ok(match message.procedure {
        procedure::EVENT_CALLBACK_LIFECYCLE => match r.i32()? {
            // VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STOPPED
            2 => Some(Event::Started(domain)),
            5 => Some(Event::Stopped(domain)),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_qemu_uris_are_taken() {
        assert_eq!(
            socket_of("qemu:///system").unwrap(),
            PathBuf::from("/run/libvirt/libvirt-sock")
        );
        assert_eq!(
            socket_of("qemu+unix:///system?socket=/tmp/l.sock").unwrap(),
            PathBuf::from("/tmp/l.sock")
        );
        for uri in [
            "qemu+ssh://host/system",
            "xen:///system",
            "qemu:///session",
            "nonsense",
        ] {
            let e = socket_of(uri).unwrap_err().to_string();
            assert!(e.contains(uri) && e.contains("qemu:///system"), "{e}");
        }
    }

    #[test]
    fn memory_statistics_map_to_the_balloons_figures() {
        // dommemstat of a 1 GiB guest ballooned to 768 MiB (tags as libvirt numbers them).
        let stats = memory_stats(&[
            (0, 4),
            (1, 8),
            (2, 300),
            (6, 786_432),
            (7, 500_000),
            (5, 770_000),
            (4, 400_000),
            (8, 600_000),
            (10, 100_000),
            (9, 1_764_000_000),
        ]);
        assert_eq!(stats.actual, Some(Size::mib(768)));
        assert_eq!(stats.guest.total, Some(Size::kib(770_000)));
        assert_eq!(stats.guest.available, Some(Size::kib(600_000)));
        assert_eq!(stats.guest.swap_out, Some(Size::kib(8)));
        assert_eq!(stats.guest.major_faults, Some(300));
        assert_eq!(stats.guest.last_update, 1_764_000_000);
        assert_eq!(memory_stats(&[]).guest, GuestStats::default());
    }

    #[test]
    fn lifecycle_events_are_read_and_others_ignored() {
        let domain = DomainRef {
            name: "web".into(),
            uuid: [7; 16],
            id: 3,
        };
        let message = |procedure, tail: &dyn Fn(&mut Writer)| {
            let mut w = Writer::default();
            w.i32(1);
            domain.write(&mut w);
            tail(&mut w);
            Message {
                procedure,
                body: w.0,
            }
        };
        let started = message(procedure::EVENT_CALLBACK_LIFECYCLE, &|w| {
            w.i32(2).i32(0);
        });
        assert_eq!(
            event_of(&started).unwrap(),
            Some(Event::Started(domain.clone()))
        );
        let suspended = message(procedure::EVENT_CALLBACK_LIFECYCLE, &|w| {
            w.i32(3).i32(0);
        });
        assert_eq!(event_of(&suspended).unwrap(), None);
        assert_eq!(event_of(&message(319, &|_| {})).unwrap(), None);
    }
}
