//! What each scheduling round saw, kept for the dashboard's and the bench report's charts.

use memvisor_core::history::HistorySample;
use std::collections::VecDeque;

/// Ten minutes at one round a second: what the dashboard shows, and more than a bench run lasts.
const ROUNDS_KEPT: usize = 600;

#[derive(Default)]
pub struct History {
    rounds: VecDeque<HistorySample>,
}

impl History {
    pub fn push(&mut self, sample: HistorySample) {
        if self.rounds.len() == ROUNDS_KEPT {
            self.rounds.pop_front();
        }
        self.rounds.push_back(sample);
    }

    /// Rounds after `after_s` seconds of the daemon's clock, oldest first.
    pub fn after(&self, after_s: f64) -> Vec<HistorySample> {
        self.rounds
            .iter()
            .filter(|s| s.at_s > after_s)
            .cloned()
            .collect()
    }
}
