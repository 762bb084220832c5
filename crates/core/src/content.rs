//! What the guest agent writes into memory: pages unique to each page and each VM that compress
//! about as real memory does, or pages identical in every VM on purpose (`shared:`).
//!
//! A page opens with a 16-byte header, its tag and a counter that the `touch:` workload bumps;
//! the rest is a stream of fields drawn from a generator seeded by the tag, in the proportions
//! found in real heaps and page cache: runs of zeros (padding, unset fields), pointers into a few
//! regions, small integers, words of text and random bytes (hashes, compressed or encrypted
//! data). The mix was fitted to the anonymous memory of real processes and to real files, with
//! `cargo run -p memvisor-core --example compressibility` (figures in docs/content.md).

pub const PAGE: usize = 4096;
/// Bytes of a page the generator does not fill: the tag, then the counter.
pub const HEADER: usize = 16;

/// Identifiers and words of the kind real heaps and files hold.
const WORDS: [&str; 64] = [
    "the",
    "and",
    "memory",
    "page",
    "value",
    "name",
    "error",
    "result",
    "config",
    "index",
    "buffer",
    "request",
    "response",
    "user",
    "session",
    "table",
    "string",
    "length",
    "offset",
    "count",
    "status",
    "default",
    "version",
    "package",
    "depends",
    "description",
    "data",
    "http",
    "json",
    "type",
    "object",
    "function",
    "return",
    "const",
    "struct",
    "self",
    "file",
    "path",
    "time",
    "size",
    "list",
    "node",
    "key",
    "map",
    "true",
    "false",
    "null",
    "info",
    "debug",
    "warning",
    "client",
    "server",
    "query",
    "select",
    "from",
    "where",
    "insert",
    "update",
    "local",
    "cache",
    "thread",
    "lock",
    "open",
    "close",
];

/// How a page's bytes are made, in percent of fields (the rest are random 8-byte words).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub zeros: u32,
    pub pointers: u32,
    pub integers: u32,
    pub text: u32,
}

/// Anonymous memory: heaps of objects, pointers and strings.
pub const HEAP: Mix = Mix {
    zeros: 50,
    pointers: 28,
    integers: 12,
    text: 8,
};

/// Page cache: file contents, text and binaries.
pub const FILES: Mix = Mix {
    zeros: 14,
    pointers: 10,
    integers: 22,
    text: 40,
};

fn mix64(mut x: u64) -> u64 {
    // splitmix64: cheap and well spread.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The tag of page `index` in a stream seeded by `salt`: distinct for every page and salt.
pub fn tag(salt: u64, index: u64) -> u64 {
    mix64(salt ^ mix64(index))
}

/// Fills `page` with the content of tag `tag`, the counter set to zero.
pub fn fill(page: &mut [u8], tag: u64, mix: Mix) {
    page[..8].copy_from_slice(&tag.to_le_bytes());
    page[8..HEADER].fill(0);
    let mut state = tag;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(state)
    };
    // Pointers of one page point into a few regions, half of them at the same few objects (the
    // type or vtable every object of a kind points to), as a heap's objects do.
    let regions =
        [next(), next(), next(), next()].map(|r| 0x0000_7f00_0000_0000 | (r & 0xff_ffff_fff0));
    let len = page.len();
    let mut at = HEADER;
    while at < len {
        let r = next();
        let roll = (r % 100) as u32;
        let field: &mut [u8] = &mut page[at..(at + 8).min(len)];
        if roll < mix.zeros {
            field.fill(0);
        } else if roll < mix.zeros + mix.pointers {
            let offset = if (r >> 10) & 1 == 0 {
                0
            } else {
                (r >> 16) & 0xff8
            };
            let pointer = regions[(r >> 8) as usize & 3] + offset;
            field.copy_from_slice(&pointer.to_le_bytes()[..field.len()]);
        } else if roll < mix.zeros + mix.pointers + mix.integers {
            let small = (r >> 8) % 1000;
            field.copy_from_slice(&small.to_le_bytes()[..field.len()]);
        } else if roll < mix.zeros + mix.pointers + mix.integers + mix.text {
            let word = WORDS[(r >> 8) as usize % WORDS.len()].as_bytes();
            let end = (at + word.len() + 1).min(len);
            page[at..end - 1].copy_from_slice(&word[..end - 1 - at]);
            page[end - 1] = b' ';
            at = end;
            continue;
        } else {
            field.copy_from_slice(&r.to_le_bytes()[..field.len()]);
        }
        at += 8;
    }
}

/// Whether `page` still holds the content of tag `tag` (the counter aside).
pub fn holds(page: &[u8], tag: u64, mix: Mix) -> bool {
    let mut expected = [0u8; PAGE];
    fill(&mut expected[..page.len()], tag, mix);
    page[..8] == expected[..8] && page[HEADER..] == expected[HEADER..page.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratios(mix: Mix, salt: u64) -> (f64, f64) {
        let mut lzo = rust_lzo::LZOContext::new();
        let (mut raw, mut as_lzo, mut as_zstd) = (0usize, 0usize, 0usize);
        let mut page = [0u8; PAGE];
        let mut out = vec![0u8; rust_lzo::worst_compress(PAGE)];
        for index in 0..512 {
            fill(&mut page, tag(salt, index), mix);
            raw += PAGE;
            as_lzo += lzo.compress_to_slice(&page, &mut out).0.len().min(PAGE);
            as_zstd += zstd::bulk::compress(&page, 3).unwrap().len().min(PAGE);
        }
        (raw as f64 / as_lzo as f64, raw as f64 / as_zstd as f64)
    }

    #[test]
    fn pages_are_unique_per_page_and_per_salt() {
        let page = |salt, index| {
            let mut p = [0u8; PAGE];
            fill(&mut p, tag(salt, index), HEAP);
            p
        };
        assert_ne!(page(1, 0)[HEADER..], page(1, 1)[HEADER..]);
        assert_ne!(page(1, 0)[HEADER..], page(2, 0)[HEADER..]);
        assert_eq!(page(1, 7), page(1, 7));
    }

    #[test]
    fn pages_compress_like_the_real_memory_they_model() {
        // Bands around what the compressibility example measured on real heaps and files
        // (docs/content.md), with lzo and zstd as zswap runs them: page by page.
        for (mix, lzo_band, zstd_band) in [(HEAP, 2.7..3.5, 3.3..4.7), (FILES, 1.6..2.1, 1.8..2.6)]
        {
            let (lzo, zstd) = ratios(mix, 42);
            assert!(lzo_band.contains(&lzo), "{mix:?}: lzo {lzo:.2}");
            assert!(zstd_band.contains(&zstd), "{mix:?}: zstd {zstd:.2}");
        }
    }

    #[test]
    fn a_changed_page_no_longer_holds_its_content_but_a_touched_counter_does() {
        let mut page = [0u8; PAGE];
        fill(&mut page, 9, FILES);
        page[8] = 1;
        assert!(holds(&page, 9, FILES));
        page[100] ^= 1;
        assert!(!holds(&page, 9, FILES));
        assert!(!holds(&page, 10, FILES));
    }
}
