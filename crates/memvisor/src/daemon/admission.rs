//! Admission: a VM that asks to start waits for the scheduling rounds' verdict (the policy
//! decides, from the snapshot that counts it as pending), and is refused if it waits too long.

use super::{Daemon, DaemonError};
use memvisor_core::plan::{Action, Admission, Plan};
use memvisor_core::snapshot::PendingVm;
use memvisor_core::status::EventKind;
use memvisor_core::Size;
use std::time::{Duration, Instant};

impl Daemon {
    /// Asks the policy, round by round, until the VM may start or is refused.
    pub async fn admit(
        &self,
        name: &str,
        memory: Size,
        reservation: Size,
    ) -> Result<(), DaemonError> {
        let asked = Instant::now();
        let mut told_to_wait = false;
        loop {
            let (answer, verdict) = tokio::sync::oneshot::channel();
            self.asking.lock().expect("asking lock").push(Asking {
                vm: PendingVm {
                    name: name.to_string(),
                    memory_mib: memory.as_mib(),
                    reservation_mib: reservation.as_mib(),
                },
                answer,
            });
            let (verdict, reason) = verdict
                .await
                .map_err(|_| DaemonError::Io("the scheduler stopped".into()))?;
            let waited = asked.elapsed();
            match next(name, verdict, reason, waited, told_to_wait) {
                Next::Start(tell) => {
                    if let Some(tell) = tell {
                        self.record(EventKind::Lifecycle, Some(name), None, tell);
                    }
                    return Ok(());
                }
                Next::Refuse(why) => return Err(DaemonError::Refused(why)),
                Next::Wait(tell) => {
                    if let Some(tell) = tell {
                        told_to_wait = true;
                        self.record(EventKind::Lifecycle, Some(name), None, tell);
                    }
                }
            }
        }
    }
}

/// What a VM asking to start does on a round's verdict, and what it tells the event log.
#[derive(Debug, PartialEq)]
enum Next {
    Start(Option<String>),
    Refuse(String),
    Wait(Option<String>),
}

/// The step after `verdict`, for a VM that has waited `waited` (and was told so if `told`):
/// waiting is told once, a start after waiting is told with how long, and a VM still waiting
/// after ADMISSION_PATIENCE is refused.
fn next(name: &str, verdict: Admission, reason: String, waited: Duration, told: bool) -> Next {
    match verdict {
        Admission::Start => Next::Start(told.then(|| {
            format!(
                "{name} may start after waiting {:.0} s: {reason}",
                waited.as_secs_f64()
            )
        })),
        Admission::Refuse => Next::Refuse(reason),
        Admission::Wait if waited > ADMISSION_PATIENCE => Next::Refuse(format!(
            "{reason}; still waiting after {} s: start it later with 'memvisor start {name}'",
            ADMISSION_PATIENCE.as_secs()
        )),
        Admission::Wait => Next::Wait((!told).then_some(reason)),
    }
}

/// How long a VM may wait to be admitted before it is refused.
const ADMISSION_PATIENCE: Duration = Duration::from_secs(180);

/// A VM asking to start, and where its answer goes.
pub struct Asking {
    pub vm: PendingVm,
    answer: tokio::sync::oneshot::Sender<(Admission, String)>,
}

impl Asking {
    /// Hands on the plan's verdict; a policy that said nothing of the VM lets it start.
    pub fn answer(self, plan: &Plan) {
        // The asker may have gone (its request dropped): nothing to tell then.
        let _ = self.answer.send(verdict_for(plan, &self.vm.name));
    }
}

/// The plan's verdict on `name`; a policy that said nothing of the VM lets it start.
fn verdict_for(plan: &Plan, name: &str) -> (Admission, String) {
    plan.decisions
        .iter()
        .find_map(|d| match &d.action {
            Action::Admit { vm, verdict } if vm == name => Some((*verdict, d.reason.clone())),
            _ => None,
        })
        .unwrap_or((Admission::Start, "no admission control".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_the_policy_says_nothing_of_may_start() {
        let mut plan = Plan::default();
        plan.push(
            Action::Admit {
                vm: "other".into(),
                verdict: Admission::Wait,
            },
            "other waits",
        );
        assert_eq!(
            verdict_for(&plan, "a"),
            (Admission::Start, "no admission control".into())
        );
        assert_eq!(verdict_for(&plan, "other").0, Admission::Wait);
    }

    #[test]
    fn waiting_is_told_once_and_ends_in_a_start_or_a_refusal() {
        let s = Duration::from_secs;
        let wait = |waited, told| next("a", Admission::Wait, "host low".into(), waited, told);
        assert_eq!(wait(s(1), false), Next::Wait(Some("host low".into())));
        assert_eq!(wait(s(2), true), Next::Wait(None));
        let Next::Refuse(why) = wait(s(181), true) else {
            panic!("a VM waiting past its patience is refused");
        };
        assert!(why.contains("memvisor start a"), "{why}");
        assert_eq!(
            next("a", Admission::Start, "fits".into(), s(40), true),
            Next::Start(Some("a may start after waiting 40 s: fits".into()))
        );
        assert_eq!(
            next("a", Admission::Start, "fits".into(), s(0), false),
            Next::Start(None)
        );
        assert_eq!(
            next("a", Admission::Refuse, "too big".into(), s(0), false),
            Next::Refuse("too big".into())
        );
    }
}
