//! What the guest agent does with its memory. One compact text form serves the config file,
//! the CLI and the wire to the guest:
//!
//! | form                 | meaning                                                        |
//! |----------------------|----------------------------------------------------------------|
//! | `idle`               | allocate nothing                                               |
//! | `hold:512M`          | allocate and fill 512 MiB once, then keep it                   |
//! | `touch:900M:600M`    | hold 900 MiB, write to a 600 MiB working set over and over     |
//! | `shared:200M`        | fill 200 MiB with content identical in every VM (KSM finds it) |
//! | `cache:400M`         | write 400 MiB to the scratch disk, then re-read it via the page cache |
//! | `ramp:800M`          | grow a held allocation from 0 to 800 MiB over the step's time  |
//!
//! Steps join with commas into phases; each step but the last carries a duration (`@30s`,
//! `@2m`), and a final `repeat` loops them: `ramp:600M@20s,touch:700M:600M@30s,idle@20s,repeat`.

use crate::size::Size;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    #[error("workload is empty: write e.g. idle, hold:512M, touch:900M:600M, shared:200M, cache:400M or ramp:800M@30s")]
    Empty,
    #[error("workload step '{0}' is unknown: use idle, hold:SIZE, touch:TOTAL:ACTIVE, shared:SIZE, cache:SIZE or ramp:SIZE@DURATION")]
    UnknownStep(String),
    #[error("workload step '{step}': {problem}")]
    BadStep { step: String, problem: String },
    #[error("workload step '{0}' needs a duration (e.g. @30s) because another step follows it or the phases repeat")]
    MissingDuration(String),
    #[error("duration '{0}' is not valid: write a whole number with s, m or h, e.g. 30s or 2m")]
    BadDuration(String),
}

/// One kind of memory activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Idle,
    Hold(Size),
    Touch { total: Size, active: Size },
    Shared(Size),
    Cache(Size),
    Ramp(Size),
}

impl Load {
    /// Anonymous memory the agent allocates for this load.
    pub fn anonymous(&self) -> Size {
        match *self {
            Load::Idle | Load::Cache(_) => Size::ZERO,
            Load::Hold(s) | Load::Shared(s) | Load::Ramp(s) => s,
            Load::Touch { total, .. } => total,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Hold(_) => "hold",
            Load::Touch { .. } => "touch",
            Load::Shared(_) => "shared",
            Load::Cache(_) => "cache",
            Load::Ramp(_) => "ramp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub load: Load,
    /// How long the step lasts; `None` only on a last step that runs for ever.
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub steps: Vec<Step>,
    pub repeat: bool,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            steps: vec![Step {
                load: Load::Idle,
                seconds: None,
            }],
            repeat: false,
        }
    }
}

impl Workload {
    /// The largest anonymous allocation any step makes.
    pub fn peak_anonymous(&self) -> Size {
        self.steps
            .iter()
            .map(|s| s.load.anonymous())
            .max()
            .unwrap_or(Size::ZERO)
    }

    /// The largest amount any step writes to the scratch disk.
    pub fn peak_cache(&self) -> Size {
        self.steps
            .iter()
            .map(|s| match s.load {
                Load::Cache(size) => size,
                _ => Size::ZERO,
            })
            .max()
            .unwrap_or(Size::ZERO)
    }

    /// The step active `elapsed` seconds after the workload started, and the seconds spent in it.
    pub fn step_at(&self, elapsed: u64) -> (usize, u64) {
        let total: u64 = self.steps.iter().filter_map(|s| s.seconds).sum();
        let mut t = if self.repeat && total > 0 {
            elapsed % total
        } else {
            elapsed
        };
        for (i, step) in self.steps.iter().enumerate() {
            match step.seconds {
                Some(d) if t >= d && i + 1 < self.steps.len() => t -= d,
                _ => return (i, t),
            }
        }
        (self.steps.len() - 1, t)
    }
}

fn parse_duration(text: &str) -> Result<u64, WorkloadError> {
    let bad = || WorkloadError::BadDuration(text.to_string());
    let (number, scale) = match text.chars().last() {
        Some('s') => (&text[..text.len() - 1], 1),
        Some('m') => (&text[..text.len() - 1], 60),
        Some('h') => (&text[..text.len() - 1], 3600),
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(scale).ok_or_else(bad)
}

fn parse_load(text: &str) -> Result<Load, WorkloadError> {
    let mut parts = text.split(':');
    let kind = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let bad = |problem: String| WorkloadError::BadStep {
        step: text.to_string(),
        problem,
    };
    let size = |arg: &str| arg.parse::<Size>().map_err(|e| bad(e.to_string()));
    let one_size = || match args.as_slice() {
        [arg] => size(arg),
        _ => Err(bad(format!("{kind} takes one size, e.g. {kind}:512M"))),
    };
    let load = match kind {
        "idle" if args.is_empty() => Load::Idle,
        "idle" => return Err(bad("idle takes no size".into())),
        "hold" => Load::Hold(one_size()?),
        "shared" => Load::Shared(one_size()?),
        "cache" => Load::Cache(one_size()?),
        "ramp" => Load::Ramp(one_size()?),
        "touch" => match args.as_slice() {
            [total, active] => {
                let (total, active) = (size(total)?, size(active)?);
                if active > total {
                    return Err(bad(format!(
                        "the working set {active} is larger than the {total} held"
                    )));
                }
                Load::Touch { total, active }
            }
            _ => return Err(bad("touch takes TOTAL:ACTIVE, e.g. touch:900M:600M".into())),
        },
        _ => return Err(WorkloadError::UnknownStep(text.to_string())),
    };
    if load.anonymous() == Size::ZERO && !matches!(load, Load::Idle | Load::Cache(_)) {
        return Err(bad("the size must be more than zero".into()));
    }
    if matches!(load, Load::Cache(s) if s == Size::ZERO) {
        return Err(bad("the size must be more than zero".into()));
    }
    Ok(load)
}

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(text: &str) -> Result<Workload, WorkloadError> {
        let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let repeat = parts.last() == Some(&"repeat");
        if repeat {
            parts.pop();
        }
        if parts.iter().all(|p| p.is_empty()) {
            return Err(WorkloadError::Empty);
        }
        let mut steps = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let (load_text, seconds) = match part.split_once('@') {
                Some((load, duration)) => (load, Some(parse_duration(duration)?)),
                None => (*part, None),
            };
            let load = parse_load(load_text)?;
            let needs_duration = repeat || i + 1 < parts.len() || matches!(load, Load::Ramp(_));
            if needs_duration && seconds.is_none() {
                return Err(WorkloadError::MissingDuration(part.to_string()));
            }
            steps.push(Step { load, seconds });
        }
        Ok(Workload { steps, repeat })
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Idle => write!(f, "idle"),
            Load::Touch { total, active } => write!(f, "touch:{total}:{active}"),
            Load::Hold(s) | Load::Shared(s) | Load::Cache(s) | Load::Ramp(s) => {
                write!(f, "{}:{s}", self.name())
            }
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}", step.load)?;
            if let Some(s) = step.seconds {
                write!(f, "@{s}s")?;
            }
        }
        if self.repeat {
            write!(f, ",repeat")?;
        }
        Ok(())
    }
}

impl Serialize for Workload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Workload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Workload, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let w: Workload = "touch:900M:600M".parse().unwrap();
        assert_eq!(
            w.steps[0].load,
            Load::Touch {
                total: Size::mib(900),
                active: Size::mib(600)
            }
        );
        for text in [
            "idle",
            "hold:512MiB",
            "shared:200MiB",
            "cache:400MiB",
            "ramp:800MiB@30s",
        ] {
            assert_eq!(text.parse::<Workload>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn phases_round_trip_and_know_their_peak() {
        let text = "ramp:600MiB@20s,touch:700MiB:600MiB@30s,idle@20s,repeat";
        let w: Workload = text.parse().unwrap();
        assert_eq!(w.to_string(), text);
        assert!(w.repeat);
        assert_eq!(w.peak_anonymous(), Size::mib(700));
        assert_eq!(
            "cache:300M@5s,idle"
                .parse::<Workload>()
                .unwrap()
                .peak_cache(),
            Size::mib(300)
        );
    }

    #[test]
    fn step_at_walks_the_phases() {
        let w: Workload = "hold:1M@10s,idle@5s,repeat".parse().unwrap();
        assert_eq!(w.step_at(0), (0, 0));
        assert_eq!(w.step_at(12), (1, 2));
        assert_eq!(w.step_at(16), (0, 1));
        let once: Workload = "hold:1M@10s,idle".parse().unwrap();
        assert_eq!(once.step_at(100), (1, 90));
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        assert_eq!("".parse::<Workload>(), Err(WorkloadError::Empty));
        assert!(matches!(
            "dance".parse::<Workload>(),
            Err(WorkloadError::UnknownStep(_))
        ));
        assert!(matches!(
            "hold:1G,idle".parse::<Workload>(),
            Err(WorkloadError::MissingDuration(_))
        ));
        assert!(matches!(
            "ramp:1G".parse::<Workload>(),
            Err(WorkloadError::MissingDuration(_))
        ));
        assert!(matches!(
            "hold:1G@soon".parse::<Workload>(),
            Err(WorkloadError::BadDuration(_))
        ));
        assert!(matches!(
            "touch:1G:2G".parse::<Workload>(),
            Err(WorkloadError::BadStep { .. })
        ));
        assert!(matches!(
            "hold:0M".parse::<Workload>(),
            Err(WorkloadError::BadStep { .. })
        ));
        assert!(matches!(
            "hold:512".parse::<Workload>(),
            Err(WorkloadError::BadStep { .. })
        ));
        assert!(matches!(
            "idle:1G".parse::<Workload>(),
            Err(WorkloadError::BadStep { .. })
        ));
    }
}
