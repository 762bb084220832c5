//! A domain's virtio-mem device as its live XML shows it, and the same device with another
//! requested size: libvirt changes a memory device live only when every other part of it
//! (node, size, block, address) matches what it has, so the element is sent back as libvirt
//! wrote it.

use super::LibvirtError;
use memvisor_core::Size;
use roxmltree::{Document, Node};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMem {
    /// The `<memory model='virtio-mem'>` element, as libvirt wrote it.
    element: String,
    /// Where `<requested>` sits in `element`.
    requested_at: std::ops::Range<usize>,
    /// The most the device can plug.
    pub size: Size,
    pub block: Size,
    pub requested: Size,
    /// What the guest has plugged.
    pub current: Size,
}

impl VirtioMem {
    /// The domain's first virtio-mem device, if it has one.
    pub fn find(xml: &str) -> Result<Option<VirtioMem>, LibvirtError> {
        let bad = |why: String| LibvirtError::Protocol(format!("the domain's XML: {why}"));
        let doc = Document::parse(xml).map_err(|e| bad(e.to_string()))?;
        let Some(device) = doc.descendants().find(|n| {
            n.has_tag_name("memory")
                && n.attribute("model") == Some("virtio-mem")
                && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        }) else {
            return Ok(None);
        };
        let target = child(device, "target")
            .ok_or_else(|| bad("a virtio-mem device without <target>".into()))?;
        let figure = |name: &str| -> Result<Option<Size>, LibvirtError> {
            child(target, name).map(size_of).transpose().map_err(bad)
        };
        let requested = child(target, "requested")
            .ok_or_else(|| bad("a virtio-mem device without <requested>".into()))?;
        let start = device.range().start;
        let at = requested.range();
        Ok(Some(VirtioMem {
            element: xml[device.range()].to_string(),
            requested_at: at.start - start..at.end - start,
            size: figure("size")?
                .ok_or_else(|| bad("a virtio-mem device without <size>".into()))?,
            block: figure("block")?.unwrap_or(Size::mib(2)),
            requested: size_of(requested).map_err(bad)?,
            current: figure("current")?.unwrap_or(Size::ZERO),
        }))
    }

    /// The device's element asking for `requested`, in whole blocks, at most its size.
    pub fn requesting(&self, requested: Size) -> String {
        let block = self.block.as_bytes().max(1);
        let bytes = (requested.as_bytes().div_ceil(block) * block).min(self.size.as_bytes());
        format!(
            "{}<requested unit='KiB'>{}</requested>{}",
            &self.element[..self.requested_at.start],
            bytes >> 10,
            &self.element[self.requested_at.end..]
        )
    }
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// A libvirt scaled integer: a number in `unit` (KiB when none is given).
fn size_of(node: Node) -> Result<Size, String> {
    let text = node.text().unwrap_or("").trim();
    let value: u64 = text.parse().map_err(|_| {
        format!(
            "<{}> holds \"{text}\", not a number",
            node.tag_name().name()
        )
    })?;
    let unit = node.attribute("unit").unwrap_or("KiB");
    let shift = match unit {
        "b" | "bytes" => 0,
        "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => return Err(format!("unit '{other}' of <{}>", node.tag_name().name())),
    };
    Ok(Size::bytes(value << shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `virsh dumpxml` of a running domain with 384 MiB to boot and 256 MiB to plug (libvirt
    /// 9.0), trimmed to what matters here.
    const LIVE: &str = "<domain type='qemu' id='4'>
  <name>mv-lva</name>
  <maxMemory slots='1' unit='KiB'>655360</maxMemory>
  <memory unit='KiB'>655360</memory>
  <currentMemory unit='KiB'>393216</currentMemory>
  <devices>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>262144</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>0</requested>
        <current unit='KiB'>131072</current>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memory>
  </devices>
</domain>";

    #[test]
    fn the_device_is_read_from_the_live_xml_and_not_the_domains_memory() {
        let device = VirtioMem::find(LIVE).unwrap().unwrap();
        assert_eq!(device.size, Size::mib(256));
        assert_eq!(device.block, Size::mib(2));
        assert_eq!(device.requested, Size::ZERO);
        assert_eq!(device.current, Size::mib(128));
        let plain = "<domain><memory unit='KiB'>655360</memory><devices/></domain>";
        assert_eq!(VirtioMem::find(plain).unwrap(), None);
    }

    #[test]
    fn a_new_request_changes_only_requested_in_whole_blocks_up_to_the_size() {
        let device = VirtioMem::find(LIVE).unwrap().unwrap();
        let asked = device.requesting(Size::kib((100 << 10) + 4));
        // As libvirt finds it in a domain's devices.
        let read = |element: &str| {
            VirtioMem::find(&format!("<devices>{element}</devices>"))
                .unwrap()
                .unwrap()
        };
        let again = read(&asked);
        assert_eq!(again.requested, Size::mib(102));
        assert_eq!(
            (again.size, again.block, again.current),
            (device.size, device.block, device.current)
        );
        assert!(asked.contains("<alias name='virtiomem0'/>") && asked.contains("slot='0x05'"));
        assert_eq!(
            asked.replace(
                "<requested unit='KiB'>104448</requested>",
                "<requested unit='KiB'>0</requested>"
            ),
            device.element
        );
        let capped = read(&device.requesting(Size::mib(4096)));
        assert_eq!(capped.requested, Size::mib(256));
    }

    #[test]
    fn an_xml_libvirt_would_not_write_is_refused_with_what_is_wrong() {
        for (xml, words) in [
            ("<domain", "XML"),
            (
                "<domain><devices><memory model='virtio-mem'><target><size unit='KiB'>x</size><requested>0</requested></target></memory></devices></domain>",
                "\"x\", not a number",
            ),
            (
                "<domain><devices><memory model='virtio-mem'><target><size unit='parsec'>1</size><requested>0</requested></target></memory></devices></domain>",
                "unit 'parsec'",
            ),
        ] {
            let e = VirtioMem::find(xml).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
    }
}
