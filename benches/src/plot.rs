//! The SVG plot (plotters): one panel per latency group (two-process round trips,
//! coordination round trips, durable appends), the percentiles p50 … max on the x axis,
//! latency on a logarithmic y axis, one line per mechanism.

use crate::report::{Report, Status};
use plotters::prelude::*;
use std::path::Path;

const LABELS: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// Writes the plot to `path`.
pub fn write(path: &Path, report: &Report) -> Result<(), String> {
    let panels: Vec<(&str, &str)> = [
        ("latency", "Round trip, 64 B payload, two processes"),
        ("coordination", "Update a task + notify, round trip"),
        ("durability", "Durable append (worknoded --fsync) vs SQLite insert"),
    ]
    .into_iter()
    .filter(|(g, _)| report.entries.iter().any(|e| e.group == *g && e.m.latency.is_some()))
    .collect();
    if panels.is_empty() {
        return Err("no latency measurement to plot".into());
    }
    let root = SVGBackend::new(path, (1100, 520 * panels.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len(), 1));
    for ((group, title), area) in panels.iter().zip(areas.iter()) {
        let series: Vec<(&str, [u64; 5])> = report
            .entries
            .iter()
            .filter(|e| e.group == *group && matches!(e.status, Status::Ok))
            .filter_map(|e| e.m.latency.map(|s| (e.id, s.percentiles().map(|(_, v)| v.max(1)))))
            .collect();
        let lo = series.iter().flat_map(|s| s.1).min().unwrap_or(1) as f64;
        let hi = series.iter().flat_map(|s| s.1).max().unwrap_or(10) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} — ns, log scale"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.2f64..5.6f64, ((lo * 0.7).max(1.0)..hi * 1.5).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|x| {
                let i = x.round() as i64;
                if (0..5).contains(&i) && (x - i as f64).abs() < 0.01 {
                    LABELS[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| crate::histogram::fmt_ns(*y as u64))
            .y_desc("latency")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (id, v)) in series.iter().enumerate() {
            let color = Palette99::pick(i).mix(0.95);
            let pts: Vec<(f64, f64)> = v.iter().enumerate().map(|(x, y)| (x as f64, *y as f64)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*id)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
