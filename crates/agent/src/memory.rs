//! Memory the workloads hold, in 1 MiB chunks, written so that every page can be checked later:
//! a private page starts with a tag unique to it; a shared page is filled with content that is
//! the same in every VM (and differs between pages, so it merges across VMs, not within one).

pub const CHUNK: usize = 1 << 20;
pub const PAGE: usize = 4096;
const PAGES_PER_CHUNK: usize = CHUNK / PAGE;
const SALT: u64 = 0x6d65_6d76_6973_6f72;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Content {
    Private,
    Shared,
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

fn tag(chunk: usize, page: usize) -> u64 {
    ((chunk * PAGES_PER_CHUNK + page) as u64) ^ SALT
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: cheap, well spread, the same on every guest.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn word(page: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(page[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
}

fn fill_chunk(content: Content, index: usize) -> Box<[Page]> {
    let mut chunk = vec![Page([0; PAGE]); PAGES_PER_CHUNK].into_boxed_slice();
    for (page_no, Page(page)) in chunk.iter_mut().enumerate() {
        match content {
            Content::Private => page[..8].copy_from_slice(&tag(index, page_no).to_le_bytes()),
            Content::Shared => {
                let base = tag(index, page_no);
                for (w, bytes) in page.chunks_exact_mut(8).enumerate() {
                    bytes.copy_from_slice(&mix(base.wrapping_add(w as u64)).to_le_bytes());
                }
            }
        }
    }
    chunk
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

    /// Writes one word in each of `count` pages of the first `active_mib`, starting at `*cursor`.
    /// The tag in the page's first word stays intact.
    pub fn touch(&mut self, active_mib: usize, count: usize, cursor: &mut usize) -> u64 {
        let pages = active_mib.min(self.chunks.len()) * PAGES_PER_CHUNK;
        if pages == 0 || self.content != Content::Private {
            return 0;
        }
        for _ in 0..count {
            let at = *cursor % pages;
            let page = &mut self.chunks[at / PAGES_PER_CHUNK][at % PAGES_PER_CHUNK].0;
            let n = word(page, 1).wrapping_add(1);
            page[8..16].copy_from_slice(&n.to_le_bytes());
            *cursor = at + 1;
        }
        count as u64
    }

    /// Checks every page; returns (pages checked, pages whose content is wrong).
    pub fn verify(&self) -> (u64, u64) {
        let mut corrupt = 0;
        for (index, chunk) in self.chunks.iter().enumerate() {
            for (page_no, Page(page)) in chunk.iter().enumerate() {
                let base = tag(index, page_no);
                let ok = match self.content {
                    Content::Private => word(page, 0) == base,
                    Content::Shared => {
                        let last = PAGE / 8 - 1;
                        word(page, 0) == mix(base)
                            && word(page, last) == mix(base.wrapping_add(last as u64))
                    }
                };
                corrupt += u64::from(!ok);
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
        let mut held = Held::new(Content::Private);
        assert_eq!(held.resize(3), 3 * 256);
        let mut cursor = 0;
        assert_eq!(held.touch(2, 1000, &mut cursor), 1000);
        assert_eq!(held.verify(), (768, 0));
        held.chunks[1][5].0[0] ^= 1;
        assert_eq!(held.verify(), (768, 1));
        held.resize(1);
        assert_eq!(held.verify(), (256, 0));
    }

    #[test]
    fn shared_content_is_identical_across_instances_and_distinct_across_pages() {
        let (mut a, mut b) = (Held::new(Content::Shared), Held::new(Content::Shared));
        a.resize(2);
        b.resize(2);
        assert_eq!(a.chunks, b.chunks);
        assert_ne!(a.chunks[0][0], a.chunks[0][1]);
        assert_eq!(a.chunk_addresses().next().unwrap() % PAGE, 0);
        assert_eq!(a.verify(), (512, 0));
    }
}
