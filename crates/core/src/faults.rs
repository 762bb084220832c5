//! Faults of one VM, told apart from its observations over time: a balloon the guest does not
//! answer, a balloon something else moves too, an agent that went silent, a guest that
//! restarted (a kernel panic reboots it), a QEMU that does not answer QMP. Pure: the daemon
//! feeds what it saw and reports what changed.

/// A balloon not moving toward its target, or an agent not reporting, for this long is a fault.
pub const PATIENCE_S: f64 = 30.0;
/// Balloon sizes this close to the target count as reached (MiB).
const CLOSE_MIB: u64 = 8;
/// A balloon that reached memvisor's target and then inflates this far past it, and stays, was
/// inflated by someone else (another balloon manager, a monitor command): a guest never
/// inflates its balloon by itself. Deflating is not told apart: a guest deflates under OOM
/// (deflate-on-oom), and a rebooted one starts with its balloon empty.
const ELSEWHERE_MIB: u64 = 32;

/// What the daemon saw of a VM in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub at_s: f64,
    pub balloon_target_mib: Option<u64>,
    pub balloon_actual_mib: Option<u64>,
    /// The guest's uptime in its agent's last report.
    pub agent_uptime_s: Option<f64>,
    /// When the agent's last report arrived (same clock as `at_s`).
    pub agent_heard_at_s: Option<f64>,
    pub qmp_answers: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    BalloonStuck {
        target_mib: u64,
        actual_mib: u64,
        for_s: f64,
    },
    BalloonMoves,
    /// The balloon left the target it had reached for a smaller `actual_mib`, and holds there.
    BalloonMovedElsewhere {
        target_mib: u64,
        actual_mib: u64,
    },
    AgentSilent {
        for_s: f64,
    },
    AgentBack,
    GuestRestarted {
        uptime_before_s: f64,
        uptime_now_s: f64,
    },
    QmpHung,
    QmpBack,
}

#[derive(Debug, Default)]
pub struct Watch {
    /// Balloon actual when it last moved (or the target last changed), and when.
    balloon_moved: Option<(u64, Option<u64>, f64)>,
    balloon_stuck: bool,
    /// The target the balloon last reached, and where it went from there if it left.
    reached: Option<(u64, Option<u64>)>,
    agent_silent: bool,
    uptime_s: Option<f64>,
    qmp_hung: bool,
}

impl Watch {
    /// A balloon that left a target it had reached, confirmed on two rounds in a row.
    fn moved_elsewhere(&mut self, target: u64, actual: u64) -> Option<Fault> {
        if target.abs_diff(actual) <= CLOSE_MIB {
            self.reached = Some((target, None));
            return None;
        }
        match self.reached {
            Some((reached, left)) if reached == target && actual + ELSEWHERE_MIB < target => {
                if left.is_some_and(|l| l.abs_diff(actual) <= CLOSE_MIB) {
                    self.reached = Some((actual, None));
                    return Some(Fault::BalloonMovedElsewhere {
                        target_mib: target,
                        actual_mib: actual,
                    });
                }
                self.reached = Some((target, Some(actual)));
            }
            Some((reached, _)) if reached != target => self.reached = None,
            _ => {}
        }
        None
    }

    pub fn update(&mut self, seen: &Seen) -> Vec<Fault> {
        let mut faults = Vec::new();
        if seen.qmp_answers == self.qmp_hung {
            self.qmp_hung = !seen.qmp_answers;
            faults.push(if self.qmp_hung {
                Fault::QmpHung
            } else {
                Fault::QmpBack
            });
        }
        if let (Some(target), Some(actual)) = (seen.balloon_target_mib, seen.balloon_actual_mib) {
            let moved = match self.balloon_moved {
                Some((last, last_target, _)) => {
                    last.abs_diff(actual) >= CLOSE_MIB || last_target != Some(target)
                }
                None => true,
            };
            if moved {
                self.balloon_moved = Some((actual, Some(target), seen.at_s));
            }
            let elsewhere = self.moved_elsewhere(target, actual);
            let since = self.balloon_moved.map_or(seen.at_s, |m| m.2);
            // The daemon takes a size set elsewhere as its target: that balloon is not stuck.
            let stuck = elsewhere.is_none()
                && target.abs_diff(actual) > CLOSE_MIB
                && seen.at_s - since >= PATIENCE_S;
            faults.extend(elsewhere);
            if stuck != self.balloon_stuck {
                self.balloon_stuck = stuck;
                faults.push(if stuck {
                    Fault::BalloonStuck {
                        target_mib: target,
                        actual_mib: actual,
                        for_s: seen.at_s - since,
                    }
                } else {
                    Fault::BalloonMoves
                });
            }
        }
        if let Some(heard) = seen.agent_heard_at_s {
            let silent = seen.at_s - heard >= PATIENCE_S;
            if silent != self.agent_silent {
                self.agent_silent = silent;
                faults.push(if silent {
                    Fault::AgentSilent {
                        for_s: seen.at_s - heard,
                    }
                } else {
                    Fault::AgentBack
                });
            }
        }
        if let Some(now) = seen.agent_uptime_s {
            if let Some(before) = self.uptime_s {
                if now + 1.0 < before {
                    faults.push(Fault::GuestRestarted {
                        uptime_before_s: before,
                        uptime_now_s: now,
                    });
                }
            }
            self.uptime_s = Some(now);
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at_s: f64) -> Seen {
        Seen {
            at_s,
            balloon_target_mib: Some(512),
            balloon_actual_mib: Some(512),
            agent_uptime_s: Some(100.0 + at_s),
            agent_heard_at_s: Some(at_s),
            qmp_answers: true,
        }
    }

    fn balloon(at_s: f64, target: u64, actual: u64) -> Seen {
        Seen {
            balloon_target_mib: Some(target),
            balloon_actual_mib: Some(actual),
            ..seen(at_s)
        }
    }

    #[test]
    fn a_reached_balloon_that_moves_away_and_stays_was_moved_by_someone_else() {
        let mut w = Watch::default();
        // memvisor asks for 512 -> 384: the balloon gets there over a few rounds.
        for (t, actual) in [(0, 512), (1, 450), (2, 400), (3, 386), (4, 384)] {
            assert!(w.update(&balloon(t as f64, 384, actual)).is_empty());
        }
        // Something else inflates it to 256: one round may be a passing reading, two are not.
        assert!(w.update(&balloon(5.0, 384, 300)).is_empty());
        assert!(w.update(&balloon(6.0, 384, 256)).is_empty());
        assert_eq!(
            w.update(&balloon(7.0, 384, 257)),
            [Fault::BalloonMovedElsewhere {
                target_mib: 384,
                actual_mib: 257
            }]
        );
        // The daemon takes the new size as its target: nothing more to tell.
        for t in 8..60 {
            assert!(w.update(&balloon(t as f64, 257, 257)).is_empty(), "at {t}");
        }
    }

    #[test]
    fn a_balloon_on_its_way_or_given_a_new_target_is_not_moved_elsewhere() {
        let mut w = Watch::default();
        // Never reached its target: slow, not foreign.
        for (t, actual) in [(0, 512), (1, 480), (2, 470), (3, 470)] {
            assert!(w.update(&balloon(t as f64, 256, actual)).is_empty());
        }
        // Reached, then memvisor itself asks for another size.
        let mut w = Watch::default();
        assert!(w.update(&balloon(0.0, 384, 384)).is_empty());
        for (t, actual) in [(1, 384), (2, 330), (3, 300), (4, 300)] {
            assert!(w.update(&balloon(t as f64, 300, actual)).is_empty());
        }
        // A guest deflating under OOM, or rebooted with its balloon empty, is not foreign.
        for (t, actual) in [(5, 310), (6, 420), (7, 512), (8, 512)] {
            assert!(w.update(&balloon(t as f64, 300, actual)).is_empty());
        }
    }

    #[test]
    fn a_healthy_vm_has_no_faults() {
        let mut w = Watch::default();
        for t in 0..100 {
            assert!(w.update(&seen(t as f64)).is_empty());
        }
    }

    #[test]
    fn a_balloon_that_does_not_move_is_told_once_and_its_recovery_too() {
        let mut w = Watch::default();
        let ask = |t: f64, actual| Seen {
            balloon_target_mib: Some(256),
            balloon_actual_mib: Some(actual),
            ..seen(t)
        };
        assert!(w.update(&ask(0.0, 512)).is_empty());
        assert!(w.update(&ask(29.0, 512)).is_empty());
        assert_eq!(
            w.update(&ask(30.0, 510)),
            [Fault::BalloonStuck {
                target_mib: 256,
                actual_mib: 510,
                for_s: 30.0
            }]
        );
        assert!(w.update(&ask(31.0, 512)).is_empty(), "told twice");
        assert_eq!(w.update(&ask(32.0, 400)), [Fault::BalloonMoves]);
        // A slow balloon that keeps moving is not stuck.
        for t in 33..80 {
            let actual = 400 - (t - 32) * 2 * CLOSE_MIB / 2;
            assert!(w.update(&ask(t as f64, actual.max(256))).is_empty());
        }
    }

    #[test]
    fn a_silent_agent_and_a_restarted_guest() {
        let mut w = Watch::default();
        w.update(&seen(0.0));
        let quiet = Seen {
            agent_heard_at_s: Some(0.0),
            agent_uptime_s: Some(100.0),
            ..seen(31.0)
        };
        assert_eq!(w.update(&quiet), [Fault::AgentSilent { for_s: 31.0 }]);
        let rebooted = Seen {
            agent_uptime_s: Some(3.0),
            ..seen(40.0)
        };
        assert_eq!(
            w.update(&rebooted),
            [
                Fault::AgentBack,
                Fault::GuestRestarted {
                    uptime_before_s: 100.0,
                    uptime_now_s: 3.0
                }
            ]
        );
    }

    #[test]
    fn qmp_hangs_and_comes_back() {
        let mut w = Watch::default();
        let hung = Seen {
            qmp_answers: false,
            ..seen(1.0)
        };
        assert_eq!(w.update(&hung), [Fault::QmpHung]);
        assert!(w.update(&hung).is_empty());
        assert_eq!(w.update(&seen(2.0)), [Fault::QmpBack]);
    }
}
