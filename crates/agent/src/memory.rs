//! Memory the workloads hold, in 1 MiB chunks of whole pages, written so that every page can be
//! checked later. Private pages are unique to their page and to this boot of this VM; shared
//! pages are the same in every VM (and differ between pages, so they merge across VMs, not
//! within one). Both compress as real heaps do (memvisor_core::content).

use memvisor_core::content::{self, HEADER};

pub const CHUNK: usize = 1 << 20;
pub const PAGE: usize = content::PAGE;
const PAGES_PER_CHUNK: usize = CHUNK / PAGE;
/// The salt of shared content: the same in every guest.
const SHARED_SALT: u64 = 0x6d65_6d76_6973_6f72;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Content {
    /// Unique to this VM: the salt is drawn at boot.
    Private(u64),
    Shared,
}

impl Content {
    fn salt(self) -> u64 {
        match self {
            Content::Private(salt) => salt,
            Content::Shared => SHARED_SALT,
        }
    }
}

/// A salt no other guest draws, for content unique to this boot.
pub fn boot_salt() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    }) {
        Ok(()) => u64::from_le_bytes(bytes),
        // No entropy device: the clock still differs between guests booted one after another.
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// One page, page-aligned: each workload page is one guest page, so identical content in two
/// VMs is identical whole pages that KSM can merge, and `translate held:N` names one page.
#[derive(Clone, PartialEq, Debug)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

pub struct Held {
    pub content: Content,
    chunks: Vec<Box<[Page]>>,
}

fn page_tag(content: Content, chunk: usize, page: usize) -> u64 {
    content::tag(content.salt(), (chunk * PAGES_PER_CHUNK + page) as u64)
}

fn word(page: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(page[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
}

fn fill_chunk(content: Content, index: usize) -> Box<[Page]> {
    let mut chunk = vec![Page([0; PAGE]); PAGES_PER_CHUNK].into_boxed_slice();
    for (page_no, Page(page)) in chunk.iter_mut().enumerate() {
        content::fill(page, page_tag(content, index, page_no), content::HEAP);
    }
    chunk
}

/// Fills `buffer` (whole pages) with page-cache content: pages `first..` of a file unique to
/// this boot.
pub fn fill_file_pages(buffer: &mut [u8], salt: u64, first: u64) {
    for (n, page) in buffer.chunks_exact_mut(PAGE).enumerate() {
        content::fill(page, content::tag(salt, first + n as u64), content::FILES);
    }
}

impl Held {
    pub fn new(content: Content) -> Held {
        Held {
            content,
            chunks: Vec::new(),
        }
    }

    pub fn mib(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Where each chunk starts in this process's address space.
    pub fn chunk_addresses(&self) -> impl Iterator<Item = usize> + '_ {
        self.chunks.iter().map(|c| c.as_ptr() as usize)
    }

    /// Grows or shrinks to `mib` chunks; returns the pages written.
    pub fn resize(&mut self, mib: usize) -> u64 {
        self.chunks.truncate(mib);
        let added = mib.saturating_sub(self.chunks.len());
        while self.chunks.len() < mib {
            let index = self.chunks.len();
            self.chunks.push(fill_chunk(self.content, index));
        }
        (added * PAGES_PER_CHUNK) as u64
    }

    /// Bumps the counter in each of `count` pages of the first `active_mib`, starting at
    /// `*cursor`; the rest of the page stays as written.
    pub fn touch(&mut self, active_mib: usize, count: usize, cursor: &mut usize) -> u64 {
        let pages = active_mib.min(self.chunks.len()) * PAGES_PER_CHUNK;
        if pages == 0 || self.content == Content::Shared {
            return 0;
        }
        for _ in 0..count {
            let at = *cursor % pages;
            let page = &mut self.chunks[at / PAGES_PER_CHUNK][at % PAGES_PER_CHUNK].0;
            let n = word(page, 1).wrapping_add(1);
            page[8..HEADER].copy_from_slice(&n.to_le_bytes());
            *cursor = at + 1;
        }
        count as u64
    }

    /// Checks every page; returns (pages checked, pages whose content is wrong).
    pub fn verify(&self) -> (u64, u64) {
        let mut corrupt = 0;
        for (index, chunk) in self.chunks.iter().enumerate() {
            for (page_no, Page(page)) in chunk.iter().enumerate() {
                let tag = page_tag(self.content, index, page_no);
                corrupt += u64::from(!content::holds(page, tag, content::HEAP));
            }
        }
        ((self.chunks.len() * PAGES_PER_CHUNK) as u64, corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pages_verify_and_corruption_is_counted() {
        let mut held = Held::new(Content::Private(boot_salt()));
        assert_eq!(held.resize(3), 3 * 256);
        let mut cursor = 0;
        assert_eq!(held.touch(2, 1000, &mut cursor), 1000);
        assert_eq!(held.verify(), (768, 0));
        held.chunks[1][5].0[2000] ^= 1;
        assert_eq!(held.verify(), (768, 1));
        held.resize(1);
        assert_eq!(held.verify(), (256, 0));
    }

    #[test]
    fn shared_content_is_identical_across_vms_and_private_content_is_not() {
        let (mut a, mut b) = (Held::new(Content::Shared), Held::new(Content::Shared));
        a.resize(2);
        b.resize(2);
        assert_eq!(a.chunks, b.chunks);
        assert_ne!(a.chunks[0][0], a.chunks[0][1]);
        assert_eq!(a.chunk_addresses().next().unwrap() % PAGE, 0);
        assert_eq!(a.verify(), (512, 0));
        let (mut p, mut q) = (
            Held::new(Content::Private(1)),
            Held::new(Content::Private(2)),
        );
        p.resize(1);
        q.resize(1);
        assert!(p.chunks[0]
            .iter()
            .zip(q.chunks[0].iter())
            .all(|(x, y)| x != y));
    }

    #[test]
    fn file_pages_differ_from_page_to_page() {
        let mut buffer = vec![0u8; 2 * PAGE];
        fill_file_pages(&mut buffer, 5, 0);
        assert_ne!(buffer[HEADER..PAGE], buffer[PAGE + HEADER..]);
    }
}
