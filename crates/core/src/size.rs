//! Memory sizes as operators write them: `512M`, `1G`, `1536MiB`, `1.5G`.
//! Units are binary (1K = 1024 bytes) as for every memory figure in QEMU and Linux.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("size is empty: write a number with a unit, e.g. 512M, 1G or 1536MiB")]
    Empty,
    #[error("size '{0}' is negative: sizes are zero or more, e.g. 512M")]
    Negative(String),
    #[error(
        "size '{0}' has no unit: write 512M, 1G or 1536MiB (units K, M, G, T; B alone means bytes)"
    )]
    NoUnit(String),
    #[error("size '{0}' is not a number with a unit: write 512M, 1G or 1536MiB")]
    Malformed(String),
    #[error(
        "size '{0}' has an unknown unit '{1}': use K, M, G or T (optionally KiB, MiB, GiB, TiB)"
    )]
    UnknownUnit(String, String),
    #[error("size '{0}' is too large")]
    Overflow(String),
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(u64);

impl Size {
    pub const ZERO: Size = Size(0);

    pub const fn bytes(n: u64) -> Size {
        Size(n)
    }

    pub const fn mib(n: u64) -> Size {
        Size(n * MIB)
    }

    /// libvirt counts memory in KiB.
    pub const fn kib(n: u64) -> Size {
        Size(n.saturating_mul(1024))
    }

    pub const fn as_bytes(self) -> u64 {
        self.0
    }

    /// Whole MiB, rounded down.
    pub const fn as_mib(self) -> u64 {
        self.0 / MIB
    }

    pub fn as_mib_f64(self) -> f64 {
        self.0 as f64 / MIB as f64
    }
}

impl FromStr for Size {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Size, SizeError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(SizeError::Empty);
        }
        if s.starts_with('-') {
            return Err(SizeError::Negative(s.to_string()));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        if number.is_empty() || number.matches('.').count() > 1 || number.ends_with('.') {
            return Err(SizeError::Malformed(s.to_string()));
        }
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => return Err(SizeError::NoUnit(s.to_string())),
            "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(SizeError::UnknownUnit(s.to_string(), unit.to_string())),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u64 = whole
            .parse()
            .map_err(|_| SizeError::Overflow(s.to_string()))?;
        let mut bytes = whole
            .checked_mul(multiplier)
            .ok_or_else(|| SizeError::Overflow(s.to_string()))?;
        if !fraction.is_empty() {
            // Exact decimal fraction of the unit, rounded down to a byte.
            let digits = fraction.len().min(12) as u32;
            let numerator: u128 = fraction[..digits as usize]
                .parse()
                .map_err(|_| SizeError::Malformed(s.to_string()))?;
            let part = numerator * multiplier as u128 / 10u128.pow(digits);
            bytes = bytes
                .checked_add(part as u64)
                .ok_or_else(|| SizeError::Overflow(s.to_string()))?;
        }
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    /// The largest binary unit that shows the size exactly, e.g. `1536MiB`, `1GiB`, `4096B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (scale, name) in UNITS {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{}", self.0 / scale, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_operators_write() {
        assert_eq!("512M".parse(), Ok(Size::mib(512)));
        assert_eq!("1G".parse(), Ok(Size::mib(1024)));
        assert_eq!("1536MiB".parse(), Ok(Size::mib(1536)));
        assert_eq!("1.5G".parse(), Ok(Size::mib(1536)));
        assert_eq!("1.5 GiB".parse(), Ok(Size::mib(1536)));
        assert_eq!("4096b".parse(), Ok(Size::bytes(4096)));
        assert_eq!("64k".parse(), Ok(Size::bytes(65536)));
        assert_eq!("0M".parse(), Ok(Size::ZERO));
        assert_eq!("2T".parse(), Ok(Size::bytes(2 << 40)));
    }

    #[test]
    fn rejects_what_is_ambiguous_or_wrong() {
        assert_eq!("".parse::<Size>(), Err(SizeError::Empty));
        assert!(matches!("-1G".parse::<Size>(), Err(SizeError::Negative(_))));
        assert!(matches!("512".parse::<Size>(), Err(SizeError::NoUnit(_))));
        assert!(matches!(
            "12X".parse::<Size>(),
            Err(SizeError::UnknownUnit(_, _))
        ));
        assert!(matches!("G".parse::<Size>(), Err(SizeError::Malformed(_))));
        assert!(matches!(
            "1.2.3G".parse::<Size>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "1.G".parse::<Size>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "99999999999T".parse::<Size>(),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn error_messages_teach_the_format() {
        let message = "512".parse::<Size>().unwrap_err().to_string();
        assert!(message.contains("512M"), "{message}");
    }

    #[test]
    fn display_round_trips() {
        for text in ["1536MiB", "1GiB", "4097B", "3KiB", "2TiB"] {
            let size: Size = text.parse().unwrap();
            assert_eq!(size.to_string(), text);
            assert_eq!(size.to_string().parse::<Size>().unwrap(), size);
        }
    }
}
