//! The SVG plot (plotters), drawn from a run's JSON document (`Report::json`, or a file
//! written with `--json` and read back with `--plot-from`), so a plot can be redrawn
//! without running again.
//!
//! One panel per group, in a fixed order, one row per mechanism (run order, top down):
//!
//! * latency groups: a dot at p50, a thick bar from p50 to p99 and a thin one on to the
//!   max, on a logarithmic time axis, the p50 and p99 written beside;
//! * rate groups (throughput, claims): a bar per mechanism, the rate written beside it,
//!   a logarithmic axis when the rates span more than 20×.
//!
//! Colours say who a row is, the same in every panel: Worknode rows in blues (shades
//! within a panel), the cache-line floor grey, each kernel IPC mechanism its own green
//! or brown, iceoryx2 and rtrb purples, Redis red, SQLite orange. The caption names the
//! mode and the machine (CPU model, vCPUs, kernel, load).

use crate::histogram::fmt_ns;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

/// Panels, in order: group, title, and whether rows are rates.
const PANELS: [(&str, &str); 10] = [
    ("latency", "Round trip of a 64-byte payload between two processes"),
    ("coordination", "Update a task + notify; the other process sees it and answers (round trip)"),
    ("throughput", "Throughput: events per second"),
    ("claims", "Claims: claim_next + complete per second, one process unless said"),
    ("durability", "Durable append: worknoded --fsync policies vs SQLite INSERT + commit"),
    ("scale", "Scale: inspection calls over a big board; worknoded start over its data directory"),
    ("broker", "Brokered writes: direct vs through the broker vs Redis"),
    ("handoff", "Work hand-off between parked agents (round trip)"),
    ("mail", "Messages between blocked agents (round trip)"),
    ("mcp", "A tool call: wn mcp (stdio) vs wn --json per call"),
];

const ROW_H: u32 = 30;
const WIDTH: u32 = 1400;

/// The colour family of a mechanism, by its id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Worknode,
    /// `wn` started per call: Worknode, through a process start.
    WnProcess,
    Floor,
    Eventfd,
    Pipe,
    Uds,
    Tcp,
    Iceoryx,
    Rtrb,
    Redis,
    Sqlite,
}

fn family(id: &str) -> Family {
    match id {
        "floor" => Family::Floor,
        "eventfd" => Family::Eventfd,
        "pipe" => Family::Pipe,
        "uds" => Family::Uds,
        "tcp" => Family::Tcp,
        "iceoryx2" => Family::Iceoryx,
        _ if id.contains("rtrb") => Family::Rtrb,
        _ if id.contains("redis") => Family::Redis,
        _ if id.contains("sqlite") => Family::Sqlite,
        _ if id.ends_with("-subprocess") || id.ends_with("-wn") => Family::WnProcess,
        _ => Family::Worknode,
    }
}

/// Blues for the Worknode rows of a panel, dark to light.
const BLUES: [RGBColor; 5] = [
    RGBColor(8, 48, 107),
    RGBColor(33, 102, 172),
    RGBColor(66, 146, 198),
    RGBColor(23, 80, 150),
    RGBColor(107, 174, 214),
];

fn colour(f: Family, nth_worknode: usize) -> RGBColor {
    match f {
        Family::Worknode => BLUES[nth_worknode % BLUES.len()],
        Family::WnProcess => RGBColor(120, 160, 200),
        Family::Floor => RGBColor(110, 110, 110),
        Family::Eventfd => RGBColor(0, 140, 90),
        Family::Pipe => RGBColor(120, 160, 30),
        Family::Uds => RGBColor(0, 110, 110),
        Family::Tcp => RGBColor(140, 90, 40),
        Family::Iceoryx => RGBColor(120, 60, 170),
        Family::Rtrb => RGBColor(190, 80, 170),
        Family::Redis => RGBColor(200, 30, 40),
        Family::Sqlite => RGBColor(230, 130, 0),
    }
}

/// One row of a panel.
struct Row {
    id: String,
    colour: RGBColor,
    /// p50, p99, max (ns) for a latency row.
    lat: Option<[f64; 3]>,
    /// Per second, and the unit, for a rate row.
    rate: Option<(f64, String)>,
}

/// The rows of `group` that produced numbers, coloured.
fn rows(doc: &Value, group: &str, rates: bool) -> Vec<Row> {
    let mut nth = 0;
    let mut out = Vec::new();
    for e in doc["entries"].as_array().into_iter().flatten() {
        if e["group"] != group || e["status"] != "ok" {
            continue;
        }
        let id = e["id"].as_str().unwrap_or("?").to_string();
        let lat = e["latency_ns"].as_object().and_then(|l| {
            let g = |k: &str| l.get(k).and_then(Value::as_f64).map(|v| v.max(1.0));
            Some([g("p50")?, g("p99")?, g("max")?])
        });
        let rate = e["rate"]
            .as_object()
            .and_then(|r| Some((r.get("per_sec")?.as_f64()?, r.get("unit")?.as_str().unwrap_or("").to_string())));
        if (rates && rate.is_none()) || (!rates && lat.is_none()) {
            continue;
        }
        let f = family(&id);
        out.push(Row { colour: colour(f, nth), id, lat, rate });
        if f == Family::Worknode {
            nth += 1;
        }
    }
    out
}

/// `12.3 M/s`.
fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// The panel's title; the scale panel's names the board its rows measured (`--quick`
/// runs a smaller one), from the rows' `tasks` and `events` extras.
fn sized_title(doc: &Value, group: &str, title: &str) -> String {
    if group != "scale" {
        return title.to_string();
    }
    let extra = |k: &str| {
        doc["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["group"] == group)
            .find_map(|e| e["extra"][k].as_u64())
    };
    match (extra("tasks").map(grouped), extra("events").map(grouped)) {
        (Some(t), Some(ev)) => {
            format!("Scale: inspection calls over {t} tasks; worknoded start over {t} tasks + {ev} events")
        }
        (Some(t), None) => format!("Scale: inspection calls over {t} tasks"),
        _ => title.to_string(),
    }
}

/// `100 000`: digits in groups of three.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A darker shade of `c`, for text beside a bar (light blues are hard to read).
fn ink(c: RGBColor) -> RGBColor {
    RGBColor((c.0 as f64 * 0.7) as u8, (c.1 as f64 * 0.7) as u8, (c.2 as f64 * 0.7) as u8)
}

/// The caption: mode and machine.
fn caption(doc: &Value) -> String {
    let s = &doc["system"];
    let kernel = s["kernel"].as_str().unwrap_or("unknown kernel");
    // `Linux 6.18.44-… #1 SMP … x86_64`: the system name and release are enough.
    let kernel: Vec<&str> = kernel.split_whitespace().take(2).collect();
    format!(
        "wn-bench {} mode — {}, {} vCPUs, {} — load {} (start) — steal {:.1}%",
        doc["mode"].as_str().unwrap_or("?"),
        s["cpu_model"].as_str().unwrap_or("unknown CPU"),
        s["nproc"].as_u64().unwrap_or(0),
        kernel.join(" "),
        s["loadavg_before"].as_str().unwrap_or("?").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        s["steal_pct"].as_f64().unwrap_or(0.0)
    )
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes the plot of the run `doc` (a `Report::json` document) to `path` (SVG).
///
/// # Errors
///
/// The document has no measurement to plot, or the file cannot be written.
pub fn write(path: &Path, doc: &Value) -> Result<(), String> {
    let mut panels = Vec::new();
    for (group, title) in PANELS {
        let title = sized_title(doc, group, title);
        // A group with latencies is drawn as latencies (durability rows have both).
        let lat = rows(doc, group, false);
        if !lat.is_empty() {
            panels.push((title, lat, false));
            continue;
        }
        let rate = rows(doc, group, true);
        if !rate.is_empty() {
            panels.push((title, rate, true));
        }
    }
    if panels.is_empty() {
        return Err("the run has no measurement to plot".into());
    }
    let head = 70u32;
    let panel_h = |n: usize| 100 + ROW_H * n.max(3) as u32;
    let height = head + panels.iter().map(|p| panel_h(p.1.len())).sum::<u32>();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, mut rest) = root.split_vertically(head);
    top.draw_text(
        "Worknode beside the mechanisms it replaces",
        &("sans-serif", 26).into_font().color(&BLACK),
        (20, 10),
    )
    .map_err(err)?;
    top.draw_text(&caption(doc), &("sans-serif", 16).into_font().color(&RGBColor(70, 70, 70)), (20, 44))
        .map_err(err)?;
    for (title, rows, rates) in &panels {
        let title = title.as_str();
        let (area, below) = rest.split_vertically(panel_h(rows.len()));
        rest = below;
        if *rates {
            rate_panel(&area, title, rows)?;
        } else {
            latency_panel(&area, title, rows)?;
        }
    }
    root.present().map_err(err)
}

/// Row `i` of `n` (run order, top down) as a y value of the panel.
fn y_of(i: usize, n: usize) -> f64 {
    (n - 1 - i) as f64
}

fn mesh<'a, DB: DrawingBackend, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    rows: &[Row],
    x_desc: &str,
    x_fmt: &dyn Fn(&X::ValueType) -> String,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged + ValueFormatter<<X as plotters::coord::ranged1d::Ranged>::ValueType>,
{
    let n = rows.len();
    let names: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let y_fmt = move |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            names[n - 1 - i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&y_fmt)
        .y_label_style(("monospace", 15))
        .x_labels(12)
        .x_label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_label_formatter(x_fmt)
        .x_desc(x_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)
}

fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[Row],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let n = rows.len();
    let lo = rows.iter().filter_map(|r| r.lat).map(|l| l[0]).fold(f64::MAX, f64::min);
    let hi = rows.iter().filter_map(|r| r.lat).map(|l| l[2]).fold(1.0, f64::max);
    // Room on the right for the written values.
    let range = (lo / 2.0).max(1.0)..hi * 12.0;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title} — latency, log scale"), ("sans-serif", 19))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(230)
        .build_cartesian_2d(range.log_scale(), -0.6f64..n as f64 - 0.4)
        .map_err(err)?;
    let fmt = |x: &f64| fmt_ns(*x as u64);
    mesh(&mut chart, rows, "● p50   ━ to p99   ─ to max", &fmt)?;
    for (i, r) in rows.iter().enumerate() {
        let Some([p50, p99, max]) = r.lat else { continue };
        let y = y_of(i, n);
        let c = r.colour;
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(p99, y), (max, y)], c.stroke_width(2))))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(p50, y - 0.17), (p99.max(p50 * 1.02), y + 0.17)],
                c.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(max, y - 0.25), (max, y + 0.25)], c.stroke_width(2))))
            .map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((p50, y), 6, c.filled()))).map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((p50, y), 6, BLACK.stroke_width(1)))).map_err(err)?;
        let text = format!("p50 {}  p99 {}", fmt_ns(p50 as u64), fmt_ns(p99 as u64));
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (max * 1.25, y + 0.28),
                ("sans-serif", 14).into_font().color(&ink(c)),
            )))
            .map_err(err)?;
    }
    Ok(())
}

fn rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[Row],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let n = rows.len();
    let lo = rows.iter().filter_map(|r| r.rate.as_ref()).map(|r| r.0).fold(f64::MAX, f64::min).max(1e-3);
    let hi = rows.iter().filter_map(|r| r.rate.as_ref()).map(|r| r.0).fold(1.0, f64::max);
    let unit = rows.iter().find_map(|r| r.rate.as_ref()).map(|r| r.1.clone()).unwrap_or_default();
    let log = hi / lo > 20.0;
    let mut builder = ChartBuilder::on(area);
    builder.margin(10).margin_right(30).x_label_area_size(40).y_label_area_size(230);
    let yr = -0.6f64..n as f64 - 0.4;
    let fmt = |x: &f64| fmt_rate(*x);
    if log {
        let base = lo / 3.0;
        builder.caption(format!("{title} — {unit}, log scale"), ("sans-serif", 19));
        let mut chart = builder.build_cartesian_2d((base..hi * 4.0).log_scale(), yr).map_err(err)?;
        mesh(&mut chart, rows, &unit, &fmt)?;
        bars(&mut chart, rows, base)
    } else {
        builder.caption(format!("{title} — {unit}"), ("sans-serif", 19));
        let mut chart = builder.build_cartesian_2d(0f64..hi * 1.25, yr).map_err(err)?;
        mesh(&mut chart, rows, &unit, &fmt)?;
        bars(&mut chart, rows, 0.0)
    }
}

fn bars<'a, DB: DrawingBackend, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    rows: &[Row],
    base: f64,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    let n = rows.len();
    for (i, r) in rows.iter().enumerate() {
        let Some((v, _)) = &r.rate else { continue };
        let y = y_of(i, n);
        chart
            .draw_series(std::iter::once(Rectangle::new([(base, y - 0.3), (*v, y + 0.3)], r.colour.filled())))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                fmt_rate(*v),
                (*v * 1.04, y + 0.25),
                ("sans-serif", 14).into_font().color(&ink(r.colour)),
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// Reads a run's JSON (written with `--json`) for [`write`].
///
/// # Errors
///
/// The file cannot be read or is not a wn-bench document.
pub fn read_run(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    if doc["harness"] != "wn-bench" || !doc["entries"].is_array() {
        return Err(format!("{} is not a wn-bench --json document (no harness/entries)", path.display()));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_digits_by_three() {
        assert_eq!(
            [grouped(0), grouped(999), grouped(1000), grouped(100_000), grouped(1_000_000)],
            ["0", "999", "1 000", "100 000", "1 000 000"]
        );
    }

    #[test]
    fn a_peer_keeps_its_family_across_groups() {
        for id in ["redis-pubsub", "coord-redis", "claims-redis", "handoff-redis", "broker-claim-redis"] {
            assert_eq!(family(id), Family::Redis, "{id}");
        }
        for id in ["sqlite-wal", "coord-sqlite-1ms", "claims-sqlite", "sqlite-insert-full"] {
            assert_eq!(family(id), Family::Sqlite, "{id}");
        }
        for id in ["ring-spin", "coord-ring-park", "claims-1-100k", "durable-always", "restore-100k"] {
            assert_eq!(family(id), Family::Worknode, "{id}");
        }
        let kernel: Vec<RGBColor> = ["eventfd", "pipe", "uds", "tcp"].iter().map(|id| colour(family(id), 0)).collect();
        for (i, a) in kernel.iter().enumerate() {
            assert!(kernel[i + 1..].iter().all(|b| b != a), "kernel IPC colours must differ: {kernel:?}");
        }
    }

    #[test]
    fn plots_a_document_and_refuses_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("wn-bench-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let doc = json!({
            "harness": "wn-bench", "mode": "quick",
            "system": { "cpu_model": "Test CPU", "nproc": 2, "kernel": "Linux 6.1 #1 x86_64", "loadavg_before": "0.1 0.2 0.3 1/2 3" },
            "entries": [
                { "id": "ring-spin", "group": "latency", "status": "ok",
                  "latency_ns": { "p50": 700, "p99": 1100, "max": 9000 } },
                { "id": "uds", "group": "latency", "status": "skipped" },
                { "id": "claims-1", "group": "claims", "status": "ok",
                  "rate": { "per_sec": 400000.0, "unit": "claims/s" } },
                { "id": "ls-100k", "group": "scale", "status": "ok", "extra": { "tasks": 5000 },
                  "latency_ns": { "p50": 20000, "p99": 30000, "max": 40000 } },
            ],
        });
        assert_eq!(rows(&doc, "latency", false).len(), 1, "the skipped row is left out");
        assert_eq!(sized_title(&doc, "scale", "x"), "Scale: inspection calls over 5 000 tasks");
        let path = dir.join("plot.svg");
        write(&path, &doc).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("svg written");
        for text in ["ring-spin", "claims-1", "ls-100k", "Test CPU", "quick mode"] {
            assert!(svg.contains(text), "the SVG names {text}");
        }
        assert!(!svg.contains(">uds<"), "a skipped row is not drawn");
        let empty = json!({ "harness": "wn-bench", "entries": [] });
        assert!(write(&dir.join("empty.svg"), &empty).is_err());
        std::fs::write(dir.join("bad.json"), "{\"entries\": []}").expect("write");
        assert!(read_run(&dir.join("bad.json")).is_err(), "not a wn-bench document");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
