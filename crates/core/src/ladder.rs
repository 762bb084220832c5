//! The host's free-memory state, after ESX: the state picks the rung of the reclamation ladder.
//!
//! Falling free memory enters soft below the soft threshold, hard below hard, low below low.
//! Rising, a state is left only once free memory reaches the threshold one rung above the one
//! that entered it (soft is left at the high threshold), so a signal that wobbles around one
//! threshold cannot flip the state back and forth.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FreeState {
    /// Enough free memory: only page sharing, and balloons may deflate.
    High,
    /// Reclaim with the balloon.
    Soft,
    /// Also compress and swap at host level, the VMs that owe memory only.
    Hard,
    /// Also refuse to start VMs.
    Low,
}

impl FreeState {
    pub const ALL: [FreeState; 4] = [
        FreeState::High,
        FreeState::Soft,
        FreeState::Hard,
        FreeState::Low,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FreeState::High => "high",
            FreeState::Soft => "soft",
            FreeState::Hard => "hard",
            FreeState::Low => "low",
        }
    }
}

impl fmt::Display for FreeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Percent of the host budget free at each threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub high: f64,
    pub soft: f64,
    pub hard: f64,
    pub low: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            high: 6.0,
            soft: 4.0,
            hard: 2.0,
            low: 1.0,
        }
    }
}

impl Thresholds {
    pub fn problems(&self) -> Vec<String> {
        let ordered = self.high > self.soft && self.soft > self.hard && self.hard > self.low;
        let in_range = [self.high, self.soft, self.hard, self.low]
            .iter()
            .all(|t| (0.0..100.0).contains(t));
        if ordered && in_range {
            Vec::new()
        } else {
            vec![format!(
                "host thresholds must fall strictly from high to low, each between 0 and 100 (% free): got high {} soft {} hard {} low {}",
                self.high, self.soft, self.hard, self.low
            )]
        }
    }

    /// The state free memory alone would put the host in, without hysteresis.
    pub fn falling(&self, free_pct: f64) -> FreeState {
        if free_pct < self.low {
            FreeState::Low
        } else if free_pct < self.hard {
            FreeState::Hard
        } else if free_pct < self.soft {
            FreeState::Soft
        } else {
            FreeState::High
        }
    }

    /// Free memory a state is left at, upwards.
    fn exit(&self, state: FreeState) -> f64 {
        match state {
            FreeState::High => 0.0,
            FreeState::Soft => self.high,
            FreeState::Hard => self.soft,
            FreeState::Low => self.hard,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    pub thresholds: Thresholds,
    pub state: FreeState,
}

impl Ladder {
    pub fn new(thresholds: Thresholds) -> Ladder {
        Ladder {
            thresholds,
            state: FreeState::High,
        }
    }

    pub fn update(&mut self, free_pct: f64) -> FreeState {
        let falling = self.thresholds.falling(free_pct);
        if falling > self.state {
            self.state = falling;
        } else {
            while self.state != FreeState::High && free_pct >= self.thresholds.exit(self.state) {
                self.state = match self.state {
                    FreeState::Low => FreeState::Hard,
                    FreeState::Hard => FreeState::Soft,
                    _ => FreeState::High,
                };
            }
        }
        self.state
    }

    /// Why the host is in its state, in the thresholds' terms, e.g. "free 3.8% < 4% soft".
    pub fn why(&self, free_pct: f64) -> String {
        let t = &self.thresholds;
        let entered = match self.state {
            FreeState::High => return format!("free {free_pct:.1}% >= {}% soft", t.soft),
            FreeState::Soft => t.soft,
            FreeState::Hard => t.hard,
            FreeState::Low => t.low,
        };
        if free_pct < entered {
            format!("free {free_pct:.1}% < {entered}% {}", self.state)
        } else {
            format!(
                "free {free_pct:.1}%, {} until {}%",
                self.state,
                t.exit(self.state)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_why_in_the_thresholds_terms() {
        let mut l = Ladder::new(Thresholds::default());
        l.update(3.8);
        assert_eq!(l.why(3.8), "free 3.8% < 4% soft");
        l.update(5.0);
        assert_eq!(l.why(5.0), "free 5.0%, soft until 6%");
        l.update(7.0);
        assert_eq!(l.why(7.0), "free 7.0% >= 4% soft");
    }

    #[test]
    fn falling_enters_each_state_below_its_threshold() {
        let mut l = Ladder::new(Thresholds::default());
        assert_eq!(l.update(10.0), FreeState::High);
        assert_eq!(l.update(4.5), FreeState::High);
        assert_eq!(l.update(3.9), FreeState::Soft);
        assert_eq!(l.update(1.5), FreeState::Hard);
        assert_eq!(l.update(0.5), FreeState::Low);
    }

    #[test]
    fn a_plunge_skips_straight_to_the_state_it_reaches() {
        let mut l = Ladder::new(Thresholds::default());
        assert_eq!(l.update(0.2), FreeState::Low);
    }

    #[test]
    fn rising_needs_the_threshold_above() {
        let mut l = Ladder::new(Thresholds::default());
        l.update(0.5);
        assert_eq!(
            l.update(1.5),
            FreeState::Low,
            "1.5% is above low but below hard"
        );
        assert_eq!(l.update(2.5), FreeState::Hard);
        assert_eq!(l.update(4.5), FreeState::Soft);
        assert_eq!(l.update(5.9), FreeState::Soft);
        assert_eq!(l.update(6.0), FreeState::High);
    }

    #[test]
    fn a_noisy_signal_around_a_threshold_does_not_flap() {
        let mut l = Ladder::new(Thresholds::default());
        l.update(3.9);
        let mut changes = 0;
        let mut last = l.state;
        for i in 0..200 {
            let noise = if i % 2 == 0 { 0.6 } else { -0.5 };
            let state = l.update(4.0 + noise);
            if state != last {
                changes += 1;
                last = state;
            }
        }
        assert_eq!(changes, 0, "free memory 3.5..4.6% keeps the host in soft");
    }

    #[test]
    fn a_large_recovery_returns_to_high_at_once() {
        let mut l = Ladder::new(Thresholds::default());
        l.update(0.1);
        assert_eq!(l.update(50.0), FreeState::High);
    }

    #[test]
    fn thresholds_out_of_order_are_named() {
        let t = Thresholds {
            high: 2.0,
            soft: 4.0,
            hard: 1.0,
            low: 0.5,
        };
        assert!(t.problems()[0].contains("fall strictly"));
        assert!(Thresholds::default().problems().is_empty());
    }
}
