//! Pressure stall information for memory (`/proc/pressure/memory`).

#[derive(Debug, thiserror::Error)]
pub enum PressureError {
    #[error("cannot read /proc/pressure/memory: {0}; PSI needs a kernel with CONFIG_PSI (and psi=1 if it is off by default)")]
    Read(std::io::Error),
    #[error("/proc/pressure/memory has no 'some avg10=' figure")]
    Parse,
}

/// Percent of the last 10 s in which at least one task waited for memory.
pub fn some_avg10() -> Result<f64, PressureError> {
    let text = std::fs::read_to_string("/proc/pressure/memory").map_err(PressureError::Read)?;
    parse_some_avg10(&text).ok_or(PressureError::Parse)
}

pub fn parse_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_some_avg10() {
        let text = "some avg10=1.25 avg60=0.00 avg300=0.00 total=30471\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=24080\n";
        assert_eq!(super::parse_some_avg10(text), Some(1.25));
        assert_eq!(super::parse_some_avg10("full avg10=1"), None);
    }
}
