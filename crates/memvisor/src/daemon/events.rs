//! The event log: every decision, request, boot, loss, fault and hint with its reason, kept in
//! memory for the API and appended to DIR/events.jsonl as it happens, so a crash loses none and
//! a restarted daemon continues the numbering.

use memvisor_core::plan::Action;
use memvisor_core::status::{Event, EventKind};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

/// Events kept for the API; older ones are dropped (they stay in the file).
const EVENTS_KEPT: usize = 1000;
/// The file is started afresh (the old one kept as .1) beyond this size.
const EVENT_LOG_MAX_BYTES: u64 = 8 << 20;

pub struct EventLog {
    path: PathBuf,
    next_seq: u64,
    started: Instant,
    kept: VecDeque<Event>,
    /// Events ever recorded, by kind (the kept ones are only the latest).
    totals: BTreeMap<EventKind, u64>,
}

impl EventLog {
    /// A log written to `path`, on a clock that starts at `started`.
    pub fn new(path: PathBuf, started: Instant) -> EventLog {
        EventLog {
            path,
            next_seq: 1,
            started,
            kept: VecDeque::new(),
            totals: EventKind::ALL.iter().map(|&k| (k, 0)).collect(),
        }
    }

    pub fn record(
        &mut self,
        kind: EventKind,
        vm: Option<&str>,
        action: Option<Action>,
        reason: String,
    ) {
        tracing::info!("{}: {reason}", kind.name());
        if self.kept.len() == EVENTS_KEPT {
            self.kept.pop_front();
        }
        *self.totals.entry(kind).or_default() += 1;
        let event = Event {
            seq: self.next_seq,
            at_s: self.started.elapsed().as_secs_f64(),
            kind,
            vm: vm.map(str::to_string),
            action,
            reason,
        };
        self.next_seq += 1;
        if let Err(e) = self.append(&event) {
            tracing::error!("cannot write {}: {e}", self.path.display());
        }
        self.kept.push_back(event);
    }

    fn append(&self, event: &Event) -> std::io::Result<()> {
        use std::io::Write;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > EVENT_LOG_MAX_BYTES) {
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }

    /// Takes up the log an earlier daemon left: its last events are served again and
    /// numbering continues after them. Their times stay on the earlier daemon's clock.
    pub fn resume(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let earlier: Vec<Event> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let keep = earlier.len().saturating_sub(EVENTS_KEPT);
        self.kept = earlier.into_iter().skip(keep).collect();
        if let Some(last) = self.kept.back() {
            self.next_seq = last.seq + 1;
        }
    }

    /// Events numbered after `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Event> {
        self.kept
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    pub fn totals(&self) -> BTreeMap<EventKind, u64> {
        self.totals.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_serves_the_earlier_events_and_numbers_on() {
        let dir = std::env::temp_dir().join(format!("memvisor-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut first = EventLog::new(path.clone(), Instant::now());
        first.record(EventKind::Operator, Some("a"), None, "one".into());
        first.record(EventKind::Fault, None, None, "two".into());
        assert_eq!(first.totals()[&EventKind::Fault], 1);
        let mut second = EventLog::new(path.clone(), Instant::now());
        second.resume();
        assert_eq!(second.after(1).len(), 1, "only events after seq 1");
        second.record(EventKind::Operator, None, None, "three".into());
        let all = second.after(0);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].reason, "three");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
