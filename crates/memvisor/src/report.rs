//! `memvisor bench --report DIR`: timelines of a benchmark run as SVG, so that policies can be
//! compared by eye. Per policy, the host (used against the budget, KSM savings, host swap)
//! and each VM (its memory stacked by layer); across policies, lines over time such as the needy
//! VMs' throughput, or a real client's requests per second and p99 latency.

use memvisor_core::history::{HistorySample, Layers};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the report into {0}: {1}")]
    Write(PathBuf, String),
}

const SIZE: (u32, u32) = (900, 320);

type HostFigure = fn(&HistorySample) -> u64;

const LAYER_COLORS: [(&str, RGBColor); 5] = [
    ("active", RGBColor(0xcc, 0x44, 0x33)),
    ("idle", RGBColor(0xff, 0xbb, 0x66)),
    ("shared", RGBColor(0x66, 0xbb, 0x66)),
    ("host-swapped", RGBColor(0x88, 0x22, 0x99)),
    ("balloon", RGBColor(0xcc, 0xcc, 0xcc)),
];

fn layer_values(l: &Layers) -> [u64; 5] {
    [
        l.active_mib,
        l.idle_mib,
        l.shared_mib,
        l.swapped_mib,
        l.balloon_mib,
    ]
}

fn time_range(history: &[HistorySample]) -> Range<f64> {
    let first = history.first().map_or(0.0, |s| s.at_s);
    let last = history.last().map_or(1.0, |s| s.at_s).max(first + 1.0);
    first..last
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What every chart has: a title, axes from zero up, a legend.
struct Frame<'t> {
    title: &'t str,
    x: Range<f64>,
    top: f64,
    x_desc: &'static str,
    y_desc: &'static str,
    legend: SeriesLabelPosition,
}

/// Draws a chart into an SVG file: the frame, then whatever `series` draws in it.
fn draw(
    path: &Path,
    frame: Frame,
    series: impl FnOnce(&mut Chart) -> Result<(), String>,
) -> Result<(), ReportError> {
    let fail = |e: String| ReportError::Write(path.to_path_buf(), e);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(frame.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(frame.x, 0.0..frame.top.max(1.0))
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    series(&mut chart).map_err(fail)?;
    chart
        .configure_series_labels()
        .position(frame.legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// A line with its legend entry.
fn line(
    chart: &mut Chart,
    label: &str,
    color: RGBAColor,
    points: impl IntoIterator<Item = (f64, f64)>,
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    Ok(())
}

/// Used memory against the budget, with KSM savings and host swap.
pub fn host_chart(path: &Path, title: &str, history: &[HistorySample]) -> Result<(), ReportError> {
    let top = history
        .iter()
        .map(|s| s.budget_mib.max(s.used_mib).max(s.swap_used_mib))
        .max()
        .unwrap_or(1) as f64
        * 1.1;
    let lines: [(&str, RGBColor, HostFigure); 4] = [
        ("used", RGBColor(0x44, 0x88, 0xcc), |s| s.used_mib),
        ("budget", BLACK, |s| s.budget_mib),
        ("KSM saved", RGBColor(0xdd, 0x99, 0x22), |s| s.ksm_saved_mib),
        ("host swap used", RGBColor(0xaa, 0x11, 0x22), |s| {
            s.swap_used_mib
        }),
    ];
    let frame = Frame {
        title,
        x: time_range(history),
        top,
        x_desc: "seconds",
        y_desc: "MiB",
        legend: SeriesLabelPosition::UpperLeft,
    };
    draw(path, frame, |chart| {
        for (label, color, figure) in lines {
            let points = history.iter().map(|s| (s.at_s, figure(s) as f64));
            line(chart, label, color.to_rgba(), points)?;
        }
        Ok(())
    })
}

/// One VM's configured memory stacked by layer: active, idle, shared, host-swapped, balloon.
pub fn vm_chart(
    path: &Path,
    title: &str,
    vm: &str,
    history: &[HistorySample],
) -> Result<(), ReportError> {
    let points: Vec<(f64, [u64; 5])> = history
        .iter()
        .filter_map(|s| {
            let v = s.vms.iter().find(|v| v.name == vm)?;
            Some((s.at_s, layer_values(&v.layers)))
        })
        .collect();
    let top = points
        .iter()
        .map(|(_, l)| l.iter().sum::<u64>())
        .max()
        .unwrap_or(1) as f64
        * 1.05;
    let frame = Frame {
        title,
        x: time_range(history),
        top,
        x_desc: "seconds",
        y_desc: "MiB",
        legend: SeriesLabelPosition::LowerRight,
    };
    draw(path, frame, |chart| {
        // Each band is drawn from zero to the sum of its layer and those below it, the
        // tallest first, so the bands below paint over it.
        for layer in (0..LAYER_COLORS.len()).rev() {
            let (label, color) = LAYER_COLORS[layer];
            let band = points
                .iter()
                .map(|(t, l)| (*t, l[..=layer].iter().sum::<u64>() as f64));
            chart
                .draw_series(AreaSeries::new(band, 0.0, color.filled()))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        Ok(())
    })
}

/// A chart across policies: one line each, on a common clock that starts when each run's
/// measurement began.
pub struct Lines {
    /// The file's name without `.svg`.
    pub file: String,
    pub title: String,
    pub y_desc: &'static str,
    /// Each policy's points (seconds since measuring began, value).
    pub runs: Vec<(String, Vec<(f64, f64)>)>,
}

fn lines_chart(path: &Path, lines: &Lines) -> Result<(), ReportError> {
    let end = lines
        .runs
        .iter()
        .flat_map(|(_, s)| s.last().map(|p| p.0))
        .fold(1.0, f64::max);
    let top = lines
        .runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let frame = Frame {
        title: &lines.title,
        x: 0.0..end,
        top,
        x_desc: "seconds since measuring began",
        y_desc: lines.y_desc,
        legend: SeriesLabelPosition::UpperLeft,
    };
    draw(path, frame, |chart| {
        for (i, (policy, series)) in lines.runs.iter().enumerate() {
            line(
                chart,
                policy,
                Palette99::pick(i).to_rgba(),
                series.iter().copied(),
            )?;
        }
        Ok(())
    })
}

/// Needy throughput over the measured part of a run, seconds from its first sample.
pub fn needy_series(history: &[HistorySample], needy: &[String], since_s: f64) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter(|s| s.at_s >= since_s)
        .map(|s| {
            let rate = s
                .vms
                .iter()
                .filter(|v| needy.contains(&v.name))
                .filter_map(|v| v.throughput)
                .sum();
            (s.at_s - since_s, rate)
        })
        .collect()
}

/// Writes every chart and an index.html that shows them: the charts across policies first,
/// then each policy's host and VMs side by side.
pub fn write(
    dir: &Path,
    scenario: &str,
    across: &[Lines],
    runs: &[(String, Vec<HistorySample>)],
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Write(dir.into(), e.to_string()))?;
    let mut written = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for lines in across {
        let file = dir.join(format!("{}.svg", lines.file));
        lines_chart(&file, lines)?;
        written.push(file);
    }
    let top = written.clone();
    for (policy, history) in runs {
        let mut cells = Vec::new();
        let host = dir.join(format!("{policy}-host.svg"));
        host_chart(&host, &format!("{scenario} / {policy}: host"), history)?;
        cells.push(host);
        let mut names: Vec<&str> = history
            .iter()
            .flat_map(|s| s.vms.iter().map(|v| v.name.as_str()))
            .collect();
        names.sort();
        names.dedup();
        for vm in names {
            let file = dir.join(format!("{policy}-{vm}.svg"));
            vm_chart(&file, &format!("{scenario} / {policy}: {vm}"), vm, history)?;
            cells.push(file);
        }
        rows.push(format!(
            "<h2>{policy}</h2>\n{}",
            cells
                .iter()
                .map(|f| format!(
                    "<img src=\"{}\">",
                    f.file_name().unwrap_or_default().to_string_lossy()
                ))
                .collect::<String>()
        ));
        written.extend(cells);
    }
    let index = dir.join("index.html");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>memvisor bench {scenario}</title>\
         <style>img{{width:32%;margin:0 .5% .5% 0}}</style>\
         <h1>memvisor bench {scenario}</h1>{}\n{}\n",
        top.iter()
            .map(|f| format!(
                "<img src=\"{}\" style=\"width:64%\">",
                f.file_name().unwrap_or_default().to_string_lossy()
            ))
            .collect::<String>(),
        rows.join("\n")
    );
    std::fs::write(&index, html).map_err(|e| ReportError::Write(index.clone(), e.to_string()))?;
    written.push(index);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memvisor_core::history::VmSample;
    use memvisor_core::ladder::FreeState;

    fn sample(at_s: f64, active: u64) -> HistorySample {
        HistorySample {
            at_s,
            state: FreeState::High,
            budget_mib: 1536,
            used_mib: 900 + active,
            ksm_saved_mib: 40,
            swap_used_mib: 0,
            vms: vec![VmSample {
                name: "vm1".into(),
                consumed_mib: 300 + active,
                layers: Layers {
                    active_mib: active,
                    idle_mib: 100,
                    shared_mib: 20,
                    swapped_mib: 0,
                    balloon_mib: 904 - active,
                },
                throughput: Some(active as f64 * 1000.0),
            }],
        }
    }

    #[test]
    fn writes_svg_charts_and_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let history: Vec<_> = (0..30).map(|i| sample(i as f64, 200 + i * 5)).collect();
        let throughput = Lines {
            file: "throughput".into(),
            title: "seed: needy VMs' throughput".into(),
            y_desc: "pages/s",
            runs: vec![
                ("ours".into(), needy_series(&history, &["vm1".into()], 5.0)),
                (
                    "static".into(),
                    needy_series(&history, &["vm1".into()], 0.0),
                ),
            ],
        };
        let files = write(
            dir.path(),
            "seed",
            &[throughput],
            &[("ours".into(), history.clone()), ("static".into(), history)],
        )
        .unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "throughput.svg",
                "ours-host.svg",
                "ours-vm1.svg",
                "static-host.svg",
                "static-vm1.svg",
                "index.html"
            ]
        );
        let svg = std::fs::read_to_string(dir.path().join("ours-vm1.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("balloon") && svg.contains("<polygon"),
            "{svg}"
        );
        let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(index.contains("<img src=\"static-vm1.svg\">"));
        assert!(index.contains("<img src=\"throughput.svg\" style=\"width:64%\">"));
        let chart = std::fs::read_to_string(dir.path().join("throughput.svg")).unwrap();
        assert!(
            chart.contains("pages/s") && chart.contains("static"),
            "{chart}"
        );
    }

    #[test]
    fn needy_throughput_starts_at_the_measured_part() {
        let history: Vec<_> = (0..10).map(|i| sample(i as f64, 100)).collect();
        let s = needy_series(&history, &["vm1".to_string()], 4.0);
        assert_eq!(s.first(), Some(&(0.0, 100_000.0)));
        assert_eq!(s.len(), 6);
    }
}
