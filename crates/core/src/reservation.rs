//! Reservations, after ESX: memory a VM is guaranteed is memory the host must always have, so
//! one rule decides whether a set of reservations fits the budget, for a config when it is
//! read, for `memvisor set`, and for admitting a VM that asks to start. And one floor: the
//! least any guest is left, by a policy or by hand.

use crate::size::Size;

/// No allocation goes below this: under it a Linux guest's kernel and agent cannot work.
pub const GUEST_FLOOR: Size = Size::mib(128);

/// The least a VM may be left: its reservation, and never under the guest floor.
pub fn floor(reservation: Size) -> Size {
    reservation.max(GUEST_FLOOR)
}

/// Reservations that together ask for more than the budget holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "host budget {budget} is below the sum of reservations {total} ({} + host reserve {host_reserve}); lower a reservation, stop a VM or raise the budget",
    parts(.reservations)
)]
pub struct DoesNotFit {
    pub budget: Size,
    pub host_reserve: Size,
    pub total: Size,
    /// Each VM with a reservation, by name.
    pub reservations: Vec<(String, Size)>,
}

fn parts(reservations: &[(String, Size)]) -> String {
    let named: Vec<String> = reservations
        .iter()
        .map(|(name, size)| format!("{name} {size}"))
        .collect();
    if named.is_empty() {
        "no VM reservations".into()
    } else {
        named.join(" + ")
    }
}

/// Whether the host reserve and every VM's reservation fit `budget`; the total if they do.
pub fn fit<'a>(
    budget: Size,
    host_reserve: Size,
    vms: impl IntoIterator<Item = (&'a str, Size)>,
) -> Result<Size, DoesNotFit> {
    let reservations: Vec<(String, Size)> = vms
        .into_iter()
        .filter(|(_, r)| *r > Size::ZERO)
        .map(|(name, r)| (name.to_string(), r))
        .collect();
    let total = Size::bytes(
        host_reserve.as_bytes() + reservations.iter().map(|(_, r)| r.as_bytes()).sum::<u64>(),
    );
    if total > budget {
        return Err(DoesNotFit {
            budget,
            host_reserve,
            total,
            reservations,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_up_to_the_budget_and_no_further() {
        let m = Size::mib;
        assert_eq!(
            fit(m(1024), m(64), [("a", m(512)), ("b", m(448))]),
            Ok(m(1024))
        );
        let e = fit(m(1024), m(64), [("a", m(512)), ("b", m(449)), ("c", m(0))]).unwrap_err();
        assert_eq!(e.total, m(1025));
        assert_eq!(
            e.to_string(),
            "host budget 1GiB is below the sum of reservations 1025MiB (a 512MiB + b 449MiB + host reserve 64MiB); lower a reservation, stop a VM or raise the budget"
        );
    }

    #[test]
    fn no_vm_is_left_below_the_guest_floor_or_its_reservation() {
        assert_eq!(floor(Size::ZERO), GUEST_FLOOR);
        assert_eq!(floor(Size::mib(700)), Size::mib(700));
    }
}
