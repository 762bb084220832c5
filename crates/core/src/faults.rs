//! Faults of one VM, told apart from its observations over time: a balloon the guest does not
//! answer, an agent that went silent, a guest that restarted (a kernel panic reboots it), a
//! QEMU that does not answer QMP. Pure: the daemon feeds what it saw and reports what changed.

/// A balloon not moving toward its target, or an agent not reporting, for this long is a fault.
pub const PATIENCE_S: f64 = 30.0;
/// Balloon sizes this close to the target count as reached (MiB).
const CLOSE_MIB: u64 = 8;

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
    agent_silent: bool,
    uptime_s: Option<f64>,
    qmp_hung: bool,
}

impl Watch {
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
            let since = self.balloon_moved.map_or(seen.at_s, |m| m.2);
            let stuck = target.abs_diff(actual) > CLOSE_MIB && seen.at_s - since >= PATIENCE_S;
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
