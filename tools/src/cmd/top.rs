//! `wn top`: a live full-screen view of the segment (ratatui over crossterm) laid out
//! for a terminal as small as 80×24: a three-line header (segment and daemon, usage of
//! the pool, ring, arena, agents and mail, tasks by status), then the task list —
//! status, progress bar, priority, name, who holds it and how long its lease has left —
//! sorted by status (work in hand first) then priority, then, on a tall terminal, the
//! agents and what they hold. `q`, Esc or Ctrl-C quits.
//!
//! Every line is cut to the terminal's width (names and holders end in `…`), never
//! wrapped. The work per frame is bounded: one pass over the pool (or the `--under`
//! subtree) that keeps only the screenful of best rows, in a buffer of that size.
//!
//! The terminal is restored on every way out: a normal quit, an error (a guard restores
//! it when dropped), a panic (ratatui's panic hook restores it before the panic message
//! prints) and SIGINT/SIGTERM (checked between frames). `--once` renders one frame into
//! an off-screen buffer and prints it as plain text, which needs no terminal (scripts,
//! tests).

use crate::cmd::agents::{agent_json, claims_by_agent};
use crate::cmd::events::{stop_flag, Printer};
use crate::cmd::nodes::status_parser;
use crate::cmd::stat::{rate, Sample};
use crate::ctx::Ctx;
use crate::duration::{self, coarse};
use crate::fail::{exit, Fail};
use crate::output::{clean, daemon_json, now_ms, print, print_json, Names};
use crate::resolve;
use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style as TuiStyle};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::{Frame, Terminal};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
use worknode::{AgentId, AgentInfo, Handle, Node, NodeKind, PrincipalKey, Segment, Start, Status};

/// Options of `wn top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Print one frame as plain text and exit (no terminal needed).
    #[arg(long)]
    once: bool,
    /// Time between refreshes; 1ms to 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration::interval, default_value = "500ms")]
    interval: Duration,
    /// With --once: frame width, 40 to 1000 (default: the terminal's, else 80).
    #[arg(long, value_name = "COLS", requires = "once", value_parser = duration::number(40, 1000, "columns"))]
    width: Option<u64>,
    /// With --once: frame height, 16 to 1000 (default: the terminal's, else 24).
    #[arg(long, value_name = "ROWS", requires = "once", value_parser = duration::number(16, 1000, "rows"))]
    height: Option<u64>,
    /// Only tasks in this subtree (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    under: Option<String>,
    /// Only tasks in this status.
    #[arg(long, value_parser = status_parser())]
    status: Option<Status>,
    /// Only tasks --agent holds or is assigned (by name or role); needs --agent.
    #[arg(long)]
    mine: bool,
    /// Only tasks this agent holds a live claim on.
    #[arg(long, value_name = "AGENT")]
    holder: Option<String>,
    /// Only tasks carrying this label.
    #[arg(long, value_name = "LABEL")]
    label: Option<String>,
}

/// Events listed in `--json` (the screen shows the newest one in its header).
const RECENT: u64 = 50;
/// Frames smaller than this show a note instead of the view.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 10;

/// Which tasks the list shows (the options, resolved once against the segment).
struct Filter {
    under: Option<Handle>,
    status: Option<Status>,
    /// `--mine`: the agent's slot (claims) and its principal keys (assignment).
    mine: Option<(Option<AgentId>, [Option<PrincipalKey>; 2])>,
    /// `--holder`: the agent's slot, `None` inside when no such agent is joined (then
    /// nothing matches).
    holder: Option<Option<AgentId>>,
    label: Option<u64>,
    /// The filters in words, for the footer and `--json`.
    text: Vec<String>,
}

impl Filter {
    fn resolve(ctx: &Ctx, seg: &Segment, a: &TopArgs) -> Result<Filter, Fail> {
        let mut text = Vec::new();
        let under = match a.under.as_deref() {
            Some(u) => {
                text.push(format!("under {u}"));
                Some(resolve::node(seg, u)?)
            }
            None => None,
        };
        if let Some(s) = a.status {
            text.push(format!("status {}", s.as_str()));
        }
        let mine = if a.mine {
            let Some(name) = ctx.agent.as_deref() else {
                return Err(Fail::usage("--mine needs --agent NAME", "run `wn --agent NAME top --mine`"));
            };
            text.push(format!("mine ({name})"));
            let id = seg.find_agent(name);
            let role = id.and_then(|i| seg.agent(i).ok()).map(|i| i.role).filter(|r| !r.is_empty());
            let keys = [Some(crate::ctx::principal(name)?.key()), role.map(|r| worknode::Principal::Role(r).key())];
            Some((id, keys))
        } else {
            None
        };
        let holder = match a.holder.as_deref() {
            Some(h) => {
                text.push(format!("holder {h}"));
                Some(seg.find_agent(h))
            }
            None => None,
        };
        let label = match a.label.as_deref() {
            Some(l) => {
                text.push(format!("label {l}"));
                Some(crate::cmd::labels::label_key(l)?)
            }
            None => None,
        };
        Ok(Filter { under, status: a.status, mine, holder, label, text })
    }

    fn matches(&self, seg: &Segment, n: &Node, now: u64) -> bool {
        if !matches!(n.kind(), Some(NodeKind::Task | NodeKind::Custom)) {
            return false;
        }
        if self.status.is_some_and(|s| n.status() != Some(s)) {
            return false;
        }
        let held = n.live_claimant_at(now);
        if let Some(want) = self.holder {
            if want.is_none() || held != want {
                return false;
            }
        }
        if let Some((id, keys)) = &self.mine {
            let holds = id.is_some() && held == *id;
            let assigned = n.assignees().any(|k| keys.contains(&Some(k)));
            if !holds && !assigned {
                return false;
            }
        }
        self.label.is_none_or(|l| seg.has_label(n.handle(), l).unwrap_or(false))
    }
}

/// One row of the task list.
struct TaskRow {
    uuid: uuid::Uuid,
    name: String,
    status: Status,
    progress: u8,
    priority: u8,
    /// The agent holding a live claim.
    holder: Option<String>,
    /// Lease end, Unix ms (held tasks), or 0.
    lease_until_ms: u64,
    /// Claimed or in progress under a lease that lapsed (nobody holds it now).
    lapsed: bool,
    created: u64,
}

impl TaskRow {
    /// Sort key: work in hand first, then what can be picked up, then the rest; within
    /// a status the highest priority, then the oldest.
    fn key(&self) -> (u8, std::cmp::Reverse<u8>, u64) {
        (status_rank(self.status), std::cmp::Reverse(self.priority), self.created)
    }
}

fn status_rank(s: Status) -> u8 {
    match s {
        Status::InProgress => 0,
        Status::Claimed => 1,
        Status::Ready => 2,
        Status::Blocked => 3,
        Status::Pending => 4,
        Status::Failed => 5,
        Status::Complete => 6,
        Status::Cancelled => 7,
    }
}

/// The status as the list shows it (at most 7 columns).
fn status_word(s: Status) -> &'static str {
    match s {
        Status::InProgress => "active",
        Status::Complete => "done",
        Status::Cancelled => "cancel",
        other => other.as_str(),
    }
}

/// The task list: the best `limit` rows, and per-status counts of everything matched.
struct TaskList {
    rows: Vec<TaskRow>,
    matched: u64,
    counts: [u64; 8],
    /// The pass stopped at its visit bound (a subtree larger than the pool: damage).
    truncated: bool,
}

impl TaskList {
    /// One bounded pass: the pool's slots (or the subtree), at most the pool's size in
    /// visits, keeping only the best `limit` rows.
    fn take(seg: &Segment, filter: &Filter, names: &Names, limit: usize) -> TaskList {
        let now = now_ms();
        let mut list = TaskList { rows: Vec::with_capacity(limit + 1), matched: 0, counts: [0; 8], truncated: false };
        let mut sink = Vec::new();
        let budget = seg.capacities().nodes;
        let stats = seg.find_where(filter.under, 0, budget, &mut sink, |n| {
            if filter.matches(seg, n, now) {
                list.add(n, names, now, limit);
            }
            false // keep nothing in `sink`: the list keeps its own bounded rows
        });
        list.truncated = stats.is_ok_and(|s| s.budget_exhausted);
        list
    }

    fn add(&mut self, n: &Node, names: &Names, now: u64, limit: usize) {
        let Some(status) = n.status() else { return };
        self.matched += 1;
        self.counts[status.code() as usize] += 1;
        let held = n.live_claimant_at(now);
        let row = TaskRow {
            uuid: n.uuid(),
            name: n.name().to_string(),
            status,
            progress: n.progress().min(100),
            priority: n.priority(),
            holder: held.map(|a| names.agent(a.index)),
            lease_until_ms: if held.is_some() { n.lease_until_ms() } else { 0 },
            lapsed: held.is_none()
                && n.claim_agent_raw().is_some()
                && matches!(status, Status::Claimed | Status::InProgress),
            created: n.created().0,
        };
        let at = self.rows.partition_point(|r| r.key() <= row.key());
        if at < limit {
            self.rows.insert(at, row);
            self.rows.truncate(limit);
        }
    }
}

/// What one frame shows.
struct View {
    segment: String,
    daemon_pid: u32,
    daemon_alive: bool,
    /// The daemon as structured fields, for `--json`.
    daemon_fields: Value,
    sample: Sample,
    events_per_s: Option<f64>,
    mail: (u64, u64),
    agents_capacity: u32,
    agents: Vec<(AgentInfo, usize)>,
    tasks: TaskList,
    filters: Vec<String>,
    /// The newest events (newest first): text lines, or JSON lines for `--json`.
    recent: Vec<String>,
}

impl View {
    /// A snapshot with at most `rows` task rows; `recent` holds JSON lines when `json`.
    fn take(seg: &Segment, filter: &Filter, prev: Option<&Sample>, rows: usize, json: bool) -> View {
        let info = seg.inspect().info();
        let sample = Sample::take(seg);
        let events_per_s = prev.map(|p| rate(p, &sample, |s| s.events));
        let names = Names::load(seg);
        let tasks = TaskList::take(seg, filter, &names, rows);
        let mut agents = Vec::new();
        seg.agents(&mut agents);
        let held = claims_by_agent(seg);
        let agents = agents
            .into_iter()
            .map(|a| {
                let n = held.get(&a.id.index).map_or(0, Vec::len);
                (a, n)
            })
            .collect();
        let mut boxes = Vec::new();
        let mail = seg.mailbox_usage(&mut boxes).map_or(0, |()| boxes.iter().map(|b| b.messages).sum());
        let want = if json { RECENT } else { 1 };
        let tail = seg.ring_tail();
        let mut reader = seg.reader(Start::At(tail.saturating_sub(want)));
        let mut printer = if json { Printer::json(seg) } else { Printer::plain(seg) };
        let mut recent = Vec::new();
        for _ in 0..want {
            match reader.try_next() {
                Ok(Some(e)) => recent.push(printer.line(&e)),
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        recent.reverse();
        View {
            segment: info.name.clone(),
            daemon_pid: info.daemon_pid,
            daemon_alive: info.daemon_alive,
            daemon_fields: daemon_json(&info),
            sample,
            events_per_s,
            mail: (mail, seg.mail_capacity()),
            agents_capacity: seg.capacities().agents,
            agents,
            tasks,
            filters: filter.text.clone(),
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

/// `s` cut to at most `width` terminal columns, ending in `…` when cut.
fn fit(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// `s` fitted to exactly `width` columns (cut with `…`, or padded with spaces).
fn cell(s: &str, width: usize) -> String {
    let mut t = fit(s, width);
    let pad = width.saturating_sub(t.width());
    t.extend(std::iter::repeat_n(' ', pad));
    t
}

/// A progress bar of `width` cells and the percent: `███▌░░ 58%`.
fn progress_bar(p: u8, width: usize) -> String {
    let eighths = (p as usize * width * 8) / 100;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut s = "█".repeat(full);
    if full < width {
        s.push_str(["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][part]);
        let shown = full + usize::from(part > 0);
        s.push_str(&"░".repeat(width - shown));
    }
    format!("{s} {p:>3}%")
}

fn percent(used: u64, cap: u64) -> u64 {
    (used.min(cap) * 100).checked_div(cap).unwrap_or(0)
}

/// Lease left, as the list shows it.
fn lease_text(r: &TaskRow, now: u64) -> String {
    if r.lapsed {
        "lapsed".into()
    } else if r.lease_until_ms == 0 {
        "-".into()
    } else {
        coarse(r.lease_until_ms.saturating_sub(now))
    }
}

/// The task list's fixed columns: status 7, bar 11, priority 3, lease 6, and five
/// single-space gaps.
const FIXED_COLUMNS: usize = 7 + 11 + 3 + 6 + 5;

/// Column widths of the task list at `width`: (name, holder); the rest are fixed. The
/// holder takes an eighth of the width (10 to 24 columns) but never more than a third
/// of what the fixed columns leave, so a row fits every width from `FIXED_COLUMNS` up.
fn columns(width: usize) -> (usize, usize) {
    let free = width.saturating_sub(FIXED_COLUMNS);
    let holder = (width / 8).clamp(10, 24).min(free / 3);
    (free - holder, holder)
}

fn header_lines(v: &View, width: usize) -> Vec<Line<'static>> {
    let s = &v.sample;
    let rate = v.events_per_s.map_or("-".to_string(), |r| format!("{r:.1}/s"));
    let daemon = if v.daemon_alive { format!("daemon {} up", v.daemon_pid) } else { "daemon GONE".to_string() };
    // The newest event, its table padding squeezed out.
    let last = v
        .recent
        .first()
        .map_or(String::new(), |e| format!(" · last: {}", e.split_whitespace().collect::<Vec<_>>().join(" ")));
    let bold = TuiStyle::default().add_modifier(Modifier::BOLD);
    let one = format!("wn top · segment {} · {daemon} · events {} ({rate}){last}", clean(&v.segment), s.events);
    let two = format!(
        "agents {}/{}  nodes {}/{} ({}%)  blob arena {} chunks ({}%)  mail {}/{}",
        s.agents,
        v.agents_capacity,
        s.nodes,
        s.capacity,
        percent(s.nodes, s.capacity),
        super::stat::arena_text(s),
        super::stat::arena_percent(s),
        v.mail.0,
        v.mail.1,
    );
    let mut three: Vec<Span<'static>> = vec![Span::styled(format!("tasks {}:", v.tasks.matched), bold)];
    let mut used = three[0].width();
    for st in [
        Status::InProgress,
        Status::Claimed,
        Status::Ready,
        Status::Blocked,
        Status::Pending,
        Status::Failed,
        Status::Complete,
        Status::Cancelled,
    ] {
        let c = v.tasks.counts[st.code() as usize];
        if c == 0 {
            continue;
        }
        let text = format!(" {c} {}", status_word(st));
        if used + text.width() > width {
            break;
        }
        used += text.width();
        three.push(Span::styled(text, TuiStyle::default().fg(status_color(st))));
    }
    vec![Line::styled(fit(&one, width), bold), Line::raw(fit(&two, width)), Line::from(three)]
}

fn task_line(r: &TaskRow, width: usize, now: u64) -> Line<'static> {
    let (name_w, holder_w) = columns(width);
    let color = TuiStyle::default().fg(status_color(r.status));
    let holder = r.holder.as_deref().map_or("-".to_string(), clean_owned);
    Line::from(vec![
        Span::styled(cell(status_word(r.status), 7), color),
        Span::raw(" "),
        Span::styled(progress_bar(r.progress, 6), color),
        Span::raw(format!(" {:>3} ", r.priority)),
        Span::raw(cell(&clean(&r.name), name_w)),
        Span::raw(" "),
        Span::raw(cell(&holder, holder_w)),
        Span::raw(" "),
        Span::raw(fit(&lease_text(r, now), 6)),
    ])
}

fn clean_owned(s: &str) -> String {
    clean(s).into_owned()
}

fn column_header(width: usize) -> Line<'static> {
    let (name_w, holder_w) = columns(width);
    let text = format!(
        "{} {} {:>3} {} {} {}",
        cell("STATUS", 7),
        cell("PROGRESS", 11),
        "PRI",
        cell("NAME", name_w),
        cell("HOLDER", holder_w),
        "LEASE"
    );
    Line::styled(fit(&text, width), TuiStyle::default().add_modifier(Modifier::BOLD | Modifier::REVERSED))
}

/// How the frame's rows are shared: (task rows, agent rows including their title).
fn split_rows(height: u16, agents: usize) -> (usize, usize) {
    // Header 3, column header 1, footer 1.
    let room = (height as usize).saturating_sub(5);
    // Agents get a section of their own only on a tall terminal: at 80×24 the task
    // list's HOLDER column says who holds what.
    let agent_rows = if height >= 30 && agents > 0 { (agents + 1).min(height as usize / 4) } else { 0 };
    (room - agent_rows, agent_rows)
}

/// The rows the task list can show in a frame of `height` (before the agents are known:
/// the most it may need).
fn task_rows_for(height: u16) -> usize {
    (height as usize).saturating_sub(5)
}

fn draw(f: &mut Frame<'_>, v: &View) {
    let area = f.area();
    let width = area.width as usize;
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let note =
            fit(&format!("wn top needs {MIN_WIDTH}×{MIN_HEIGHT}; this is {}×{}", area.width, area.height), width);
        f.render_widget(Paragraph::new(note), area);
        return;
    }
    let now = now_ms();
    let (task_rows, agent_rows) = split_rows(area.height, v.agents.len());
    let mut lines = header_lines(v, width);
    lines.push(column_header(width));
    for r in v.tasks.rows.iter().take(task_rows) {
        lines.push(task_line(r, width, now));
    }
    if v.tasks.rows.is_empty() {
        lines.push(Line::styled(
            if v.filters.is_empty() { "(no tasks)" } else { "(no task matches the filters)" },
            TuiStyle::default().add_modifier(Modifier::DIM),
        ));
    }
    // Blank lines down to the agents and the footer.
    let used = lines.len();
    let bottom = area.height as usize - 1 - agent_rows;
    lines.extend((used..bottom).map(|_| Line::raw("")));
    if agent_rows > 0 {
        let title = format!("agents ({}): name, role, last seen, claims held", v.agents.len());
        lines.push(Line::styled(fit(&title, width), TuiStyle::default().add_modifier(Modifier::BOLD)));
        for (a, held) in v.agents.iter().take(agent_rows - 1) {
            let seen = crate::duration::relative(now, a.heartbeat_ms);
            let role = if a.role.is_empty() { "-".to_string() } else { clean_owned(&a.role) };
            let text = format!("{} {} {} {held} held", cell(&clean(&a.name), 24), cell(&role, 12), cell(&seen, 10));
            lines.push(Line::raw(fit(&text, width)));
        }
    }
    let shown = v.tasks.rows.len().min(task_rows);
    let filters = if v.filters.is_empty() { "all tasks".to_string() } else { v.filters.join(", ") };
    let more = if v.tasks.truncated { " (pass cut short)" } else { "" };
    let footer = format!("{filters} · showing {shown} of {}{more} · q quits", v.tasks.matched);
    lines.push(Line::styled(fit(&footer, width), TuiStyle::default().add_modifier(Modifier::DIM)));
    lines.truncate(area.height as usize);
    f.render_widget(Paragraph::new(lines), Rect { height: area.height, ..area });
}

/// The frame as plain text lines (trailing spaces trimmed).
fn buffer_text(backend: &TestBackend) -> String {
    let buf = backend.buffer();
    let width = buf.area.width as usize;
    let mut lines: Vec<String> = buf
        .content()
        .chunks(width.max(1))
        .map(|row| {
            // A wide character fills two cells; the one after it holds a blank that is
            // not printed (the character already covers it).
            let mut line = String::new();
            let mut covered = 0;
            for c in row {
                if covered > 0 {
                    covered -= 1;
                    continue;
                }
                line.push_str(c.symbol());
                covered = c.symbol().width().saturating_sub(1);
            }
            line.trim_end().to_string()
        })
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.join("\n")
}

/// The snapshot as one JSON object (`top --once --json`): agents in the shape `wn agents`
/// prints, the daemon as `wn dump` does, the task list as the screen sorts it.
fn view_json(seg: &Segment, v: &View) -> Value {
    let s = &v.sample;
    let tasks: serde_json::Map<String, Value> =
        Status::ALL.iter().map(|st| (st.as_str().to_string(), json!(s.count(*st)))).collect();
    let claims = claims_by_agent(seg);
    let agents: Vec<Value> =
        v.agents.iter().map(|(a, _)| agent_json(seg, a, claims.get(&a.id.index).map_or(&[], Vec::as_slice))).collect();
    let recent: Vec<Value> = v.recent.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let now = now_ms();
    let list: Vec<Value> = v
        .tasks
        .rows
        .iter()
        .map(|r| {
            json!({
                "uuid": r.uuid.to_string(),
                "name": r.name,
                "status": r.status.as_str(),
                "progress": r.progress,
                "priority": r.priority,
                "holder": r.holder,
                "lease_left_ms": (r.lease_until_ms != 0).then(|| r.lease_until_ms.saturating_sub(now)),
                "lapsed": r.lapsed,
            })
        })
        .collect();
    json!({
        "segment": v.segment,
        "daemon": v.daemon_fields,
        "nodes": s.nodes,
        "nodes_capacity": s.capacity,
        "events": s.events,
        "events_per_s": v.events_per_s,
        "agents": agents,
        "tasks": tasks,
        "task_list": list,
        "tasks_matched": v.tasks.matched,
        "filters": v.filters,
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

/// The `--once` frame size: the flags, else the terminal's, else 80×24.
fn once_size(a: &TopArgs) -> (u16, u16) {
    let term = if std::io::stdout().is_terminal() { ratatui::crossterm::terminal::size().ok() } else { None };
    let (tw, th) = term.unwrap_or((80, 24));
    let w = a.width.map_or(tw.clamp(40, 1000), |w| w as u16);
    let h = a.height.map_or(th.clamp(16, 1000), |h| h as u16);
    (w, h)
}

/// Runs the live view, or prints one frame with `--once`.
pub fn run(ctx: &Ctx, a: &TopArgs) -> Result<(), Fail> {
    let seg = ctx.attach_best()?;
    let filter = Filter::resolve(ctx, &seg, a)?;
    if a.once {
        let (w, h) = once_size(a);
        // Two samples a moment apart, so the frame shows a rate.
        let first = Sample::take(&seg);
        std::thread::sleep(Duration::from_millis(100));
        let view = View::take(&seg, &filter, Some(&first), task_rows_for(h), ctx.json);
        if ctx.json {
            return print_json(&view_json(&seg, &view));
        }
        let mut term = Terminal::new(TestBackend::new(w, h)).map_err(io_fail)?;
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
        let height = term.size().map_err(io_fail)?.height;
        let view = View::take(&seg, &filter, prev.as_ref(), task_rows_for(height), false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_by_display_width_with_an_ellipsis() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("a much longer name", 8), "a much …");
        assert_eq!(fit("日本語の名前", 7), "日本語…"); // wide characters count two columns
        assert!(fit("日本語の名前", 7).width() <= 7);
        assert_eq!(cell("ab", 4), "ab  ");
    }

    #[test]
    fn progress_bars_have_a_fixed_width() {
        for p in [0u8, 1, 17, 50, 99, 100] {
            assert_eq!(progress_bar(p, 6).width(), 11, "{p}: {:?}", progress_bar(p, 6));
        }
        assert_eq!(progress_bar(100, 6), "██████ 100%");
        assert_eq!(progress_bar(0, 6), "░░░░░░   0%");
    }

    #[test]
    fn columns_fill_the_width_exactly() {
        for w in FIXED_COLUMNS..=240 {
            let (name, holder) = columns(w);
            assert_eq!(FIXED_COLUMNS + name + holder, w, "{w}");
            assert!(name >= holder || w < FIXED_COLUMNS + 30, "{w}: name {name}, holder {holder}");
        }
    }

    #[test]
    fn a_task_row_and_the_column_header_fit_every_width_with_the_lease_shown() {
        let row = TaskRow {
            uuid: uuid::Uuid::nil(),
            name: "a task name much longer than any column could hold, on purpose".into(),
            status: Status::InProgress,
            progress: 60,
            priority: 200,
            holder: Some("an-agent-with-a-long-name".into()),
            lease_until_ms: 0,
            lapsed: true,
            created: 0,
        };
        for w in FIXED_COLUMNS..=240 {
            let line = task_line(&row, w, 0);
            let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
            assert!(text.width() <= w, "{w}: a row {} columns wide: {text:?}", text.width());
            assert!(text.ends_with("lapsed"), "{w}: the lease column was cut: {text:?}");
            assert!(column_header(w).width() <= w, "{w}: the column header is wider");
        }
    }
}
