//! The PNG chart: write throughput, read throughput and lag percentiles over time, each
//! product line beside its baseline.
//!
//! plotters draws text through ab_glyph from a font file read at run time (`--font`, else
//! DejaVu Sans or Liberation Sans where Debian puts them): no system font library needed.
//! Without any font file the chart is drawn without text.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use crate::report::{Figure, Report};

const FONT: &str = "sans-serif";

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font for the chart; false when none could be read.
pub fn load_font(explicit: Option<&Path>) -> bool {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_owned()],
        None => FONT_PATHS.iter().map(PathBuf::from).collect(),
    };
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
            tracing::warn!(path = %path.display(), "not a usable font file");
        }
    }
    false
}

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// A baseline: drawn thinner and lighter.
    baseline: bool,
}

struct Panel {
    title: &'static str,
    y_desc: &'static str,
    log_y: bool,
    series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn per_second(counts: &[u64]) -> Vec<(f64, f64)> {
    counts
        .iter()
        .enumerate()
        .map(|(s, n)| (s as f64 + 0.5, *n as f64))
        .collect()
}

fn positive(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.0)
        .map(|(s, v)| (s as f64 + 0.5, *v))
        .collect()
}

fn panels(report: &Report) -> Vec<Panel> {
    let mut writes = Vec::new();
    for (i, (c, pair)) in report.writes.iter().enumerate() {
        if let Some(t) = pair.product.get() {
            writes.push(Series {
                label: format!("write-api c={c}"),
                points: per_second(&t.per_second),
                color: color(i),
                baseline: false,
            });
        }
        if let Some(t) = pair.baseline.get() {
            writes.push(Series {
                label: format!("direct SQL c={c}"),
                points: per_second(&t.per_second),
                color: color(i),
                baseline: true,
            });
        }
    }
    let mut reads = Vec::new();
    for (i, (name, pair)) in [
        ("by id", &report.read_by_id),
        ("list 100", &report.read_list),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(t) = pair.product.get() {
            reads.push(Series {
                label: format!("read-api {name}"),
                points: per_second(&t.per_second),
                color: color(i + 2),
                baseline: false,
            });
        }
        if let Some(t) = pair.baseline.get() {
            reads.push(Series {
                label: format!("direct SQL {name}"),
                points: per_second(&t.per_second),
                color: color(i + 2),
                baseline: true,
            });
        }
    }
    let mut lag = Vec::new();
    if let Figure::Measured(half) = &report.lag_half_load {
        lag.push(Series {
            label: "half load p50".into(),
            points: positive(&half.per_second_p50_ms),
            color: color(4),
            baseline: true,
        });
        lag.push(Series {
            label: "half load p99".into(),
            points: positive(&half.per_second_p99_ms),
            color: color(4),
            baseline: false,
        });
    }
    if let Some((c, Figure::Measured(trend))) = report.lag_full_load.iter().next_back() {
        lag.push(Series {
            label: format!("full load c={c} p50"),
            points: positive(&trend.per_second_p50_ms),
            color: color(1),
            baseline: true,
        });
        lag.push(Series {
            label: format!("full load c={c} p99"),
            points: positive(&trend.per_second_p99_ms),
            color: color(1),
            baseline: false,
        });
    }
    if !lag.is_empty() {
        let end = lag
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max)
            .ceil();
        lag.push(Series {
            label: "target: p99 ≤ 50 ms at half load".into(),
            points: vec![(0.0, 50.0), (end, 50.0)],
            color: RGBColor(90, 90, 90),
            baseline: true,
        });
    }
    vec![
        Panel {
            title: "Writes: requests/s each second (light: direct SQL baseline)",
            y_desc: "req/s",
            log_y: false,
            series: writes,
        },
        Panel {
            title: "Reads: requests/s each second (light: direct SQL baseline)",
            y_desc: "req/s",
            log_y: false,
            series: reads,
        },
        Panel {
            title: "Replication lag, 201 to visible on every replica (per second of writes)",
            y_desc: "ms (log)",
            log_y: true,
            series: lag,
        },
    ]
}

/// Draws the chart of `report` into `path`.
pub fn draw(report: &Report, path: &Path, with_text: bool) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1200, 1350)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((3, 1));
    for (area, panel) in areas.iter().zip(panels(report)) {
        draw_panel(area, &panel, with_text).with_context(|| format!("drawing {}", panel.title))?;
    }
    root.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    with_text: bool,
) -> anyhow::Result<()> {
    let x_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max)
        .ceil();
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if with_text {
        builder
            .caption(panel.title, (FONT, 20))
            .x_label_area_size(35)
            .y_label_area_size(70);
    }
    if panel.log_y {
        let y_min = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(f64::INFINITY, f64::min)
            .min(y_max)
            .max(0.02)
            * 0.5;
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, (y_min..y_max.max(y_min * 10.0)).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        if with_text {
            chart
                .configure_mesh()
                .y_labels(6)
                .max_light_lines(1)
                .x_desc("seconds into the run")
                .y_desc(panel.y_desc)
                .label_style((FONT, 14))
                .y_label_formatter(&|v| label(*v))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        draw_series(&mut chart, panel, with_text)
    } else {
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow!("{e}"))?;
        if with_text {
            chart
                .configure_mesh()
                .max_light_lines(2)
                .x_desc("seconds into the run")
                .y_desc(panel.y_desc)
                .label_style((FONT, 14))
                .y_label_formatter(&|v| label(*v))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        draw_series(&mut chart, panel, with_text)
    }
}

fn label(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn draw_series<'a, Y>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    panel: &Panel,
    with_text: bool,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    for series in &panel.series {
        // A light area under each product throughput line.
        if !panel.log_y && !series.baseline {
            chart
                .draw_series(AreaSeries::new(
                    series.points.iter().copied(),
                    0.0,
                    series.color.mix(0.08),
                ))
                .map_err(|e| anyhow!("{e}"))?;
        }
        let style = if series.baseline {
            series.color.mix(0.45).stroke_width(2)
        } else {
            series.color.stroke_width(3)
        };
        let drawn = chart
            .draw_series(LineSeries::new(series.points.iter().copied(), style))
            .map_err(|e| anyhow!("{e}"))?;
        if with_text {
            drawn
                .label(series.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    if with_text && !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}
