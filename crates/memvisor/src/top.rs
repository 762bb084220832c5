//! `memvisor top`: esxtop's memory screen for memvisor. A header with the host's budget, free
//! memory, state, KSM savings, host swap and memory pressure; one row per VM with what it is
//! configured, entitled and asked to have, what it consumes on the host and uses in the guest.

use crate::client::Client;
use crate::error::CliError;
use crate::output::opt;
use memvisor_core::status::{HostStatus, VmStatus};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Paragraph, Row, Table};
use std::time::{Duration, Instant};

type Figure = fn(&VmStatus) -> Option<f64>;

/// Column heading, width, figure (MiB unless the heading says otherwise).
const COLUMNS: &[(&str, u16, Figure)] = &[
    ("MEMSZ", 6, |v| Some(v.memory_mib as f64)),
    ("RESV", 5, |v| Some(v.reservation_mib as f64)),
    ("LIMIT", 6, |v| Some(v.limit_mib as f64)),
    ("SHARES", 6, |v| Some(f64::from(v.shares))),
    ("TARGET", 6, |v| v.target_mib.map(|m| m as f64)),
    ("CONSUMED", 8, |v| v.host_rss_mib.map(|m| m as f64)),
    ("ACTIVE", 6, |v| v.working_set_mib.map(|m| m as f64)),
    ("BALLOON", 7, |v| v.ballooned_mib.map(|m| m as f64)),
    ("SHARED", 6, |v| v.shared_mib.map(|m| m as f64)),
    ("HSWAPPED", 8, |v| v.host_swapped_mib.map(|m| m as f64)),
    ("PACE%", 5, |v| v.cpu_limit_percent.map(f64::from)),
    ("GFREE", 5, |v| v.guest_free_mib.map(|m| m as f64)),
    ("GAVAIL", 6, |v| v.guest_available_mib.map(|m| m as f64)),
    ("SWIN/s", 6, |v| v.guest_swap_in_mib_s),
    ("SWOUT/s", 7, |v| v.guest_swap_out_mib_s),
    ("DREAD/s", 7, |v| v.disk_read_mib_s),
    ("OVHD", 5, |v| v.overhead_mib.map(|m| m as f64)),
];

/// Which column rows are sorted by: 0 is the name, 1.. the figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sort {
    pub column: usize,
    pub descending: bool,
}

impl Sort {
    /// Parses a column heading (case-insensitive) or NAME.
    pub fn by(heading: &str) -> Result<Sort, String> {
        if heading.eq_ignore_ascii_case("name") {
            return Ok(Sort {
                column: 0,
                descending: false,
            });
        }
        COLUMNS
            .iter()
            .position(|c| c.0.eq_ignore_ascii_case(heading))
            .map(|i| Sort {
                column: i + 1,
                descending: true,
            })
            .ok_or_else(|| {
                format!(
                    "no column {heading}; sort by NAME or one of {}",
                    COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                )
            })
    }

    fn heading(&self) -> &'static str {
        match self.column {
            0 => "NAME",
            i => COLUMNS[i - 1].0,
        }
    }

    fn next(self, step: isize) -> Sort {
        let n = COLUMNS.len() as isize + 1;
        Sort {
            column: (self.column as isize + step).rem_euclid(n) as usize,
            ..self
        }
    }
}

/// The VMs in the order the sort asks for; unknown figures sort last.
pub fn sorted(vms: &[VmStatus], sort: Sort) -> Vec<&VmStatus> {
    let mut rows: Vec<&VmStatus> = vms.iter().collect();
    if sort.column == 0 {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        if sort.descending {
            rows.reverse();
        }
        return rows;
    }
    let figure = COLUMNS[sort.column - 1].2;
    rows.sort_by(|a, b| {
        let (x, y) = (figure(a), figure(b));
        let order = match (x, y) {
            (Some(x), Some(y)) if sort.descending => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        order.then_with(|| a.name.cmp(&b.name))
    });
    rows
}

fn cell(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

pub fn header_lines(host: &HostStatus) -> [String; 2] {
    let mib = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} MiB"));
    let free_pct = host
        .free_mib
        .map(|f| {
            format!(
                " ({:.1}%)",
                100.0 * f as f64 / host.budget_mib.max(1) as f64
            )
        })
        .unwrap_or_default();
    [
        format!(
            "budget {} MiB  used {}  free {}{free_pct}  state {}  policy {}",
            host.budget_mib,
            mib(host.used_mib),
            mib(host.free_mib),
            opt(host.state),
            host.policy,
        ),
        format!(
            "KSM saved {}  host swap {} of {} MiB  memory PSI some {}%  ({} cgroup {}, {})",
            mib(host.ksm_saved_mib),
            host.swap_used_mib,
            host.swap_total_mib,
            host.psi_some_avg10
                .map_or("-".to_string(), |p| format!("{p:.2}")),
            host.cgroup_version,
            host.cgroup,
            host.accel
        ),
    ]
}

fn draw(frame: &mut ratatui::Frame, host: &HostStatus, vms: &[VmStatus], sort: Sort, note: &str) {
    let [head, table, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_lines(host).join("\n")), head);

    let bold = Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED);
    let headings = std::iter::once("NAME")
        .chain(COLUMNS.iter().map(|c| c.0))
        .enumerate()
        .map(|(i, h)| {
            if i == sort.column {
                format!("{h}{}", if sort.descending { "v" } else { "^" })
            } else {
                h.to_string()
            }
        });
    let rows = sorted(vms, sort).into_iter().map(|v| {
        Row::new(std::iter::once(v.name.clone()).chain(COLUMNS.iter().map(|c| cell((c.2)(v)))))
    });
    let widths = std::iter::once(Constraint::Length(10))
        .chain(COLUMNS.iter().map(|c| Constraint::Length(c.1 + 1)));
    frame.render_widget(
        Table::new(rows, widths).header(Row::new(headings).style(bold)),
        table,
    );
    frame.render_widget(
        Paragraph::new(format!(
            "MiB. q quits, </> sort column, r reverses; sorted by {}. {note}",
            sort.heading()
        )),
        foot,
    );
}

pub async fn run(client: &Client, mut sort: Sort, every: Duration) -> Result<(), CliError> {
    // Fail before taking over the terminal if no daemon answers.
    client.host().await?;
    let mut terminal = ratatui::init();
    let result = async {
        let mut next = Instant::now();
        let (mut host, mut vms, mut note) = (None, Vec::new(), String::new());
        loop {
            if Instant::now() >= next {
                next = Instant::now() + every;
                match (client.host().await, client.vms().await) {
                    (Ok(h), Ok(v)) => {
                        host = Some(h);
                        vms = v;
                        note.clear();
                    }
                    (Err(e), _) | (_, Err(e)) => note = format!("(not refreshed: {e})"),
                }
            }
            if let Some(host) = &host {
                terminal
                    .draw(|f| draw(f, host, &vms, sort, &note))
                    .map_err(CliError::Terminal)?;
            }
            let key = tokio::task::block_in_place(|| -> std::io::Result<Option<KeyCode>> {
                if event::poll(Duration::from_millis(200))? {
                    if let Event::Key(k) = event::read()? {
                        if k.kind == KeyEventKind::Press {
                            return Ok(Some(k.code));
                        }
                    }
                }
                Ok(None)
            })
            .map_err(CliError::Terminal)?;
            match key {
                Some(KeyCode::Char('q') | KeyCode::Esc) => return Ok(()),
                Some(KeyCode::Char('>') | KeyCode::Right) => sort = sort.next(1),
                Some(KeyCode::Char('<') | KeyCode::Left) => sort = sort.next(-1),
                Some(KeyCode::Char('r')) => sort.descending = !sort.descending,
                _ => {}
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, rss: Option<u64>) -> VmStatus {
        let mut v: VmStatus = serde_json::from_value(serde_json::json!({
            "name": name, "state": "running", "origin": "launched", "pid": 1, "accel": "tcg",
            "memory_mib": 1024, "max_mib": 1024, "reservation_mib": 0, "limit_mib": 1024,
            "shares": 1000, "balloon_target_mib": null, "balloon_actual_mib": null,
            "ballooned_mib": null, "target_mib": null, "guest_total_mib": null,
            "guest_free_mib": null, "guest_available_mib": null, "guest_cache_mib": null,
            "guest_swap_in_mib": null, "guest_swap_out_mib": null, "guest_major_faults": null,
            "host_rss_mib": null, "allocation_mib": null, "plugged_mib": null, "shared_mib": null,
            "host_limit_mib": null, "host_swapped_mib": null, "overhead_mib": null,
            "working_set_mib": null, "guest_swap_in_mib_s": null, "guest_swap_out_mib_s": null,
            "guest_oom_kills": null, "workload": null, "workload_phase": null,
            "workload_pages_per_sec": null, "workload_held_mib": null, "boot_s": null, "last_error": null
        }))
        .unwrap();
        v.host_rss_mib = rss;
        v
    }

    #[test]
    fn sorts_by_a_figure_with_unknowns_last_and_by_name() {
        let vms = [vm("b", Some(100)), vm("a", None), vm("c", Some(300))];
        let names =
            |sort| -> Vec<String> { sorted(&vms, sort).iter().map(|v| v.name.clone()).collect() };
        let consumed = Sort::by("consumed").unwrap();
        assert_eq!(names(consumed), ["c", "b", "a"]);
        let ascending = Sort {
            descending: false,
            ..consumed
        };
        assert_eq!(names(ascending), ["b", "c", "a"]);
        assert_eq!(names(Sort::by("NAME").unwrap()), ["a", "b", "c"]);
    }

    #[test]
    fn unknown_columns_are_refused_with_the_choices() {
        let e = Sort::by("rss").unwrap_err();
        assert!(e.contains("CONSUMED") && e.contains("NAME"), "{e}");
    }

    #[test]
    fn sort_column_wraps_around() {
        let s = Sort::by("name").unwrap();
        assert_eq!(s.next(-1).column, COLUMNS.len());
        assert_eq!(s.next(-1).next(1), s);
    }

    #[test]
    fn cells_show_unknown_as_a_dash() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(512.0)), "512");
        assert_eq!(cell(Some(1.25)), "1.2");
    }
}
