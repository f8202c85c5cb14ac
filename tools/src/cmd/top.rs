//! `wn top`: a live full-screen view of the segment (ratatui over crossterm): tasks by
//! status, agents and their claims, event rate, recent events. `q`, Esc or Ctrl-C quits.
//!
//! The terminal is restored on every way out: a normal quit, an error (a guard restores
//! it when dropped), a panic (ratatui's panic hook restores it before the panic message
//! prints) and SIGINT/SIGTERM (checked between frames). `--once` renders one frame into
//! an off-screen buffer and prints it as plain text, which needs no terminal (scripts,
//! tests).

use crate::cmd::agents::{agent_json, claims_by_agent};
use crate::cmd::events::{stop_flag, Printer};
use crate::cmd::stat::{rate, Sample};
use crate::ctx::Ctx;
use crate::duration::{self, relative};
use crate::fail::{exit, Fail};
use crate::output::{clean, daemon_json, now_ms, print, print_json};
use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style as TuiStyle};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;
use worknode::{AgentInfo, Segment, Start, Status};

/// Options of `wn top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Print one frame as plain text and exit (no terminal needed).
    #[arg(long)]
    once: bool,
    /// Time between refreshes; 1ms to 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration::interval, default_value = "500ms")]
    interval: Duration,
    /// With --once: frame width, 40 to 1000.
    #[arg(long, value_name = "COLS", default_value = "100", requires = "once", value_parser = duration::number(40, 1000, "columns"))]
    width: u64,
    /// With --once: frame height, 16 to 1000.
    #[arg(long, value_name = "ROWS", default_value = "30", requires = "once", value_parser = duration::number(16, 1000, "rows"))]
    height: u64,
}

/// Events listed in the bottom panel.
const RECENT: u64 = 50;

/// What one frame shows.
struct View {
    segment: String,
    /// The daemon in words, for the screen.
    daemon: String,
    /// The daemon as structured fields, for `--json`.
    daemon_fields: Value,
    sample: Sample,
    events_per_s: Option<f64>,
    agents: Vec<(AgentInfo, Vec<String>)>,
    recent: Vec<String>,
}

impl View {
    /// A snapshot; `recent` holds JSON lines instead of text when `json`.
    fn take(seg: &Segment, prev: Option<&Sample>, json: bool) -> View {
        let info = seg.inspect().info();
        let sample = Sample::take(seg);
        let events_per_s = prev.map(|p| rate(p, &sample, |s| s.events));
        let mut agents = Vec::new();
        seg.agents(&mut agents);
        let claims = claims_by_agent(seg);
        let now = now_ms();
        let agents = agents
            .into_iter()
            .map(|a| {
                let held = claims
                    .get(&a.id.index)
                    .map(|v| {
                        v.iter()
                            .map(|n| {
                                // Escaped for the screen; JSON escapes by itself.
                                let name = if json { n.name().into() } else { clean(n.name()) };
                                format!("{} (e{}, {})", name, n.claim_epoch(), relative(now, n.lease_until_ms()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (a, held)
            })
            .collect();
        let tail = seg.ring_tail();
        let mut reader = seg.reader(Start::At(tail.saturating_sub(RECENT)));
        let mut printer = if json { Printer::json(seg) } else { Printer::plain(seg) };
        let mut recent = Vec::new();
        for _ in 0..RECENT {
            match reader.try_next() {
                Ok(Some(e)) => recent.push(printer.line(&e)),
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        recent.reverse();
        View {
            segment: info.name.clone(),
            daemon: format!("daemon pid {} {}", info.daemon_pid, if info.daemon_alive { "running" } else { "GONE" }),
            daemon_fields: daemon_json(&info),
            sample,
            events_per_s,
            agents,
            recent,
        }
    }
}

fn status_color(s: Status) -> Color {
    match s {
        Status::Ready => Color::Green,
        Status::Claimed => Color::Cyan,
        Status::InProgress => Color::Yellow,
        Status::Complete => Color::DarkGray,
        Status::Failed => Color::Red,
        Status::Blocked => Color::Magenta,
        Status::Cancelled => Color::DarkGray,
        Status::Pending => Color::Reset,
    }
}

fn draw(f: &mut Frame<'_>, v: &View) {
    let [head, middle, bottom] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(11), Constraint::Min(3)]).areas(f.area());
    let s = &v.sample;
    let rate = v.events_per_s.map_or("-".to_string(), |r| format!("{r:.1}/s"));
    let header = Line::from(vec![
        Span::styled(format!("segment {}", v.segment), TuiStyle::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {}  nodes {}/{}  events {} ({rate})  agents {}  blob arena {} chunks ({}%)",
            v.daemon,
            s.nodes,
            s.capacity,
            s.events,
            s.agents,
            super::stat::arena_text(s),
            super::stat::arena_percent(s)
        )),
    ]);
    f.render_widget(Paragraph::new(header).block(Block::bordered().title(" wn top ")), head);

    let [left, right] = Layout::horizontal([Constraint::Length(34), Constraint::Min(20)]).areas(middle);
    draw_tasks(f, left, s);
    draw_agents(f, right, &v.agents);

    let lines: Vec<Line<'_>> = v.recent.iter().map(|l| Line::raw(l.as_str())).collect();
    let title = " recent events (newest first) ── q quits ";
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), bottom);
}

fn draw_tasks(f: &mut Frame<'_>, area: Rect, s: &Sample) {
    let total: u64 = s.tasks.iter().sum();
    let bar_room = area.width.saturating_sub(22) as u64;
    let rows: Vec<Row<'_>> = [
        Status::Ready,
        Status::Claimed,
        Status::InProgress,
        Status::Blocked,
        Status::Pending,
        Status::Complete,
        Status::Failed,
        Status::Cancelled,
    ]
    .iter()
    .map(|st| {
        let c = s.count(*st);
        let bar = if total == 0 { 0 } else { (c * bar_room).div_ceil(total) };
        Row::new(vec![
            Span::styled(st.as_str(), TuiStyle::default().fg(status_color(*st))),
            Span::raw(format!("{c:>5}")),
            Span::styled("█".repeat(bar as usize), TuiStyle::default().fg(status_color(*st))),
        ])
    })
    .collect();
    let table = Table::new(rows, [Constraint::Length(11), Constraint::Length(6), Constraint::Min(1)])
        .block(Block::bordered().title(format!(" tasks ({total}) ")));
    f.render_widget(table, area);
}

fn draw_agents(f: &mut Frame<'_>, area: Rect, agents: &[(AgentInfo, Vec<String>)]) {
    let now = now_ms();
    let rows: Vec<Row<'_>> = agents
        .iter()
        .map(|(a, held)| {
            Row::new(vec![
                clean(&a.name).into_owned(),
                clean(&a.role).into_owned(),
                relative(now, a.heartbeat_ms),
                if held.is_empty() { "-".to_string() } else { held.join(", ") },
            ])
        })
        .collect();
    let header =
        Row::new(vec!["NAME", "ROLE", "SEEN", "CLAIMS"]).style(TuiStyle::default().add_modifier(Modifier::BOLD));
    let table =
        Table::new(rows, [Constraint::Length(16), Constraint::Length(10), Constraint::Length(9), Constraint::Min(10)])
            .header(header)
            .block(Block::bordered().title(format!(" agents ({}) ", agents.len())));
    f.render_widget(table, area);
}

/// The frame as plain text lines (trailing spaces trimmed).
fn buffer_text(backend: &TestBackend) -> String {
    let buf = backend.buffer();
    let width = buf.area.width as usize;
    buf.content()
        .chunks(width.max(1))
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The snapshot as one JSON object (`top --once --json`): agents in the shape `wn agents`
/// prints, the daemon as `wn dump` does.
fn view_json(seg: &Segment, v: &View) -> Value {
    let s = &v.sample;
    let tasks: serde_json::Map<String, Value> =
        Status::ALL.iter().map(|st| (st.as_str().to_string(), json!(s.count(*st)))).collect();
    let claims = claims_by_agent(seg);
    let agents: Vec<Value> =
        v.agents.iter().map(|(a, _)| agent_json(seg, a, claims.get(&a.id.index).map_or(&[], Vec::as_slice))).collect();
    let recent: Vec<Value> = v.recent.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    json!({
        "segment": v.segment,
        "daemon": v.daemon_fields,
        "nodes": s.nodes,
        "nodes_capacity": s.capacity,
        "events": s.events,
        "events_per_s": v.events_per_s,
        "agents": agents,
        "tasks": tasks,
        "blob_chunks_used": s.blobs.0,
        "blob_chunks": s.blobs.1,
        "blob_arena_percent": super::stat::arena_percent(s),
        "recent_events": recent,
    })
}

/// Restores the terminal when dropped (errors and early returns included).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn io_fail(e: std::io::Error) -> Fail {
    Fail::other(format!("terminal error: {e}"))
}

/// Runs the live view, or prints one frame with `--once`.
pub fn run(ctx: &Ctx, a: &TopArgs) -> Result<(), Fail> {
    let seg = ctx.attach_best()?;
    if a.once {
        // Two samples a moment apart, so the frame shows a rate.
        let first = Sample::take(&seg);
        std::thread::sleep(Duration::from_millis(100));
        let view = View::take(&seg, Some(&first), ctx.json);
        if ctx.json {
            return print_json(&view_json(&seg, &view));
        }
        let mut term = Terminal::new(TestBackend::new(a.width as u16, a.height as u16)).map_err(io_fail)?;
        term.draw(|f| draw(f, &view)).map_err(io_fail)?;
        return print(&buffer_text(term.backend()));
    }
    if ctx.json {
        return Err(Fail::usage(
            "`wn top` is a terminal view; with --json it needs --once",
            "use `wn --json top --once` for one snapshot, or `wn --json stat` for a line per second",
        ));
    }
    if !std::io::stdout().is_terminal() {
        return Err(Fail::new(
            "not_a_terminal",
            exit::USAGE,
            "`wn top` needs a terminal on stdout",
            "use `wn top --once` for one frame as text, or `wn stat` for a line per second",
        ));
    }
    let stop = stop_flag()?;
    let mut term = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return Err(io_fail(e));
        }
    };
    let _restore = Restore;
    let mut prev: Option<Sample> = None;
    while !stop.load(Ordering::Relaxed) {
        let view = View::take(&seg, prev.as_ref(), false);
        prev = Some(view.sample);
        term.draw(|f| draw(f, &view)).map_err(io_fail)?;
        let _ = term.backend_mut().flush();
        if event::poll(a.interval).map_err(io_fail)? {
            if let Event::Key(k) = event::read().map_err(io_fail)? {
                let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
                if k.kind == KeyEventKind::Press && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c) {
                    break;
                }
            }
        }
    }
    Ok(())
}
