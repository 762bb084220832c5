//! The XDR encoding (RFC 4506) of libvirt's RPC messages: big-endian 4-byte units, strings and
//! opaque data padded to 4 bytes, optional values behind a boolean.

use crate::LibvirtError;

#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.opaque(s.as_bytes())
    }

    /// Fixed-length opaque data (its length is known to both sides).
    pub fn opaque(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len() + pad(bytes.len()), 0);
        self
    }

    pub fn optional_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.u32(1).string(s),
            None => self.u32(0),
        }
    }
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LibvirtError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            LibvirtError::Protocol(format!(
                "message ends after {} bytes, {n} more expected at {}",
                self.bytes.len(),
                self.at
            ))
        })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    pub fn u32(&mut self) -> Result<u32, LibvirtError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, LibvirtError> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64, LibvirtError> {
        let high = self.u32()? as u64;
        Ok(high << 32 | self.u32()? as u64)
    }

    pub fn opaque(&mut self, n: usize) -> Result<&'a [u8], LibvirtError> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    pub fn string(&mut self) -> Result<String, LibvirtError> {
        let n = self.u32()? as usize;
        let bytes = self.opaque(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| LibvirtError::Protocol("a string that is not UTF-8".into()))
    }

    pub fn bool(&mut self) -> Result<bool, LibvirtError> {
        Ok(self.u32()? != 0)
    }

    pub fn optional_string(&mut self) -> Result<Option<String>, LibvirtError> {
        if self.bool()? {
            Ok(Some(self.string()?))
        } else {
            Ok(None)
        }
    }

    /// A variable-length array's count, checked against what is left to read so that a bad
    /// count cannot make the reader allocate without bound.
    pub fn count(&mut self, each_at_least: usize) -> Result<usize, LibvirtError> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(each_at_least.max(1)) > left {
            return Err(LibvirtError::Protocol(format!(
                "an array of {n} items in {left} bytes"
            )));
        }
        Ok(n)
    }
}

fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_opaque_data_are_padded_to_four_bytes() {
        let mut w = Writer::default();
        w.string("abcde").u64(1 << 40).optional_string(None);
        assert_eq!(
            w.0,
            [
                0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                0
            ]
        );
        let mut r = Reader::new(&w.0);
        assert_eq!(r.string().unwrap(), "abcde");
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert_eq!(r.optional_string().unwrap(), None);
    }

    #[test]
    fn a_short_message_or_an_impossible_count_is_an_error() {
        assert!(Reader::new(&[0, 0]).u32().is_err());
        assert!(Reader::new(&[0, 0, 0, 9, b'a']).string().is_err());
        assert!(Reader::new(&[255, 255, 255, 255]).count(4).is_err());
    }
}
