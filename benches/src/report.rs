//! The report: per-group tables of every mechanism (p50 / p90 / p99 / p99.9 / max, or a
//! rate), the ratios between them, the goals checked as met or missed with the
//! factor, the notes of each measurement, the machine — as text and as JSON.

use crate::histogram::{fmt_ns, Stats};
use crate::pingpong::Plan;
use crate::suite::{Fail, Measured, Spec};
use crate::sysinfo::SysInfo;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// A rate: so many units per second.
#[derive(Clone, Debug)]
pub struct Rate {
    /// Units per second.
    pub per_sec: f64,
    /// The unit (`events/s`, `claims/s`, …).
    pub unit: &'static str,
    /// Units counted.
    pub count: u64,
    /// Over this many seconds.
    pub secs: f64,
}

impl Rate {
    /// A rate.
    pub fn new(per_sec: f64, unit: &'static str, count: u64, secs: f64) -> Rate {
        Rate { per_sec, unit, count, secs }
    }

    /// `12.3 M events/s`.
    pub fn human(&self) -> String {
        let v = self.per_sec;
        if v >= 1e6 {
            format!("{:.2} M {}", v / 1e6, self.unit)
        } else if v >= 1e3 {
            format!("{:.1} k {}", v / 1e3, self.unit)
        } else {
            format!("{v:.1} {}", self.unit)
        }
    }
}

/// How a measurement ended.
#[derive(Clone, Debug)]
pub enum Status {
    /// It produced numbers.
    Ok,
    /// It could not run here.
    Skipped(String),
    /// It failed.
    Failed(String),
}

/// One measurement's result.
#[derive(Debug)]
pub struct Entry {
    /// Id.
    pub id: &'static str,
    /// Group.
    pub group: &'static str,
    /// What was measured.
    pub label: &'static str,
    /// Ok, skipped or failed.
    pub status: Status,
    /// The numbers (empty unless Ok).
    pub m: Measured,
    /// Wall time the measurement took.
    pub secs: f64,
    /// Steal time during it, percent.
    pub steal_pct: f64,
}

impl Entry {
    /// Builds the entry from a measurement's outcome.
    pub fn new(s: &Spec, outcome: Result<Measured, Fail>, secs: f64, steal_pct: f64) -> Entry {
        let (status, m) = match outcome {
            Ok(m) => (Status::Ok, m),
            Err(Fail::Skip(r)) => (Status::Skipped(r), Measured::default()),
            Err(Fail::Error(e)) => (Status::Failed(e), Measured::default()),
        };
        Entry { id: s.id, group: s.group, label: s.label, status, m, secs, steal_pct }
    }

    /// One line while the run goes on.
    pub fn progress_line(&self) -> String {
        let what = match &self.status {
            Status::Skipped(r) => format!("SKIPPED: {}", r.trim_start_matches("skipped: ")),
            Status::Failed(e) => format!("FAILED: {e}"),
            Status::Ok => {
                let mut parts = Vec::new();
                if let Some(s) = &self.m.latency {
                    parts.push(format!(
                        "p50 {} p99 {} max {} (n={})",
                        fmt_ns(s.p50),
                        fmt_ns(s.p99),
                        fmt_ns(s.max),
                        s.samples
                    ));
                }
                if let Some(r) = &self.m.rate {
                    parts.push(r.human());
                }
                parts.join(", ")
            }
        };
        format!("{:<22} {what}  [{:.1} s]", self.id, self.secs)
    }

    fn json(&self) -> Value {
        let (status, reason) = match &self.status {
            Status::Ok => ("ok", None),
            Status::Skipped(r) => ("skipped", Some(r.clone())),
            Status::Failed(e) => ("failed", Some(e.clone())),
        };
        let mut v = json!({
            "id": self.id,
            "group": self.group,
            "mechanism": self.label,
            "measurement": measurement_of(self.group),
            "status": status,
            "notes": self.m.notes,
            "pinning": self.m.pinning,
            "steal_pct": self.steal_pct,
            "wall_secs": self.secs,
        });
        if let Some(r) = reason {
            v["reason"] = json!(r);
        }
        if let Some(s) = &self.m.latency {
            v["latency_ns"] = json!({
                "samples": s.samples, "min": s.min, "mean": s.mean, "p50": s.p50, "p90": s.p90,
                "p99": s.p99, "p99_9": s.p999, "max": s.max,
            });
        }
        if let Some(r) = &self.m.rate {
            v["rate"] = json!({ "per_sec": r.per_sec, "unit": r.unit, "count": r.count, "secs": r.secs });
        }
        if !self.m.extra.is_empty() {
            v["extra"] = Value::Object(self.m.extra.clone());
        }
        v
    }
}

fn measurement_of(group: &str) -> &'static str {
    match group {
        "latency" => "round trip of a 64-byte payload between two processes",
        "throughput" => "events per second",
        "coordination" => "round trip: update a task + notify, seen and answered by another process",
        "claims" => "claim_next + complete per second",
        "broker" => "latency of one operation by one agent: direct, brokered, Redis",
        "handoff" => "round trip of two work hand-offs between parked agents",
        "mail" => "round trip of two messages between agents blocked on their inboxes",
        "mcp" => "one agent's tool call: over `wn mcp` stdio vs `wn --json` run per call",
        "scale" => {
            "time per inspection call over a 100 000-task board; daemon start to ready over 100k nodes + 1M events"
        }
        "http" => {
            "one request (or claim + complete) over HTTP/1.1 keep-alive: wn serve vs Redis vs a Python REST server"
        }
        _ => "append latency and rate",
    }
}

/// A goal of issue 7, checked.
pub struct Goal {
    /// The goal as the issue states it.
    pub text: &'static str,
    /// `Some(met)` if measured.
    pub met: Option<bool>,
    /// What was found, with the factor.
    pub detail: String,
    /// The factor achieved (in the goal's direction: larger is better).
    pub achieved: Option<f64>,
    /// The factor required.
    pub required: f64,
}

/// A goal "at least `required`× better": achieved = slow / fast.
fn at_least(text: &'static str, slow: Option<u64>, fast: Option<u64>, required: f64, what: String) -> Goal {
    let achieved = slow.zip(fast).map(|(s, f)| s as f64 / f.max(1) as f64);
    let met = achieved.map(|a| a >= required);
    let detail = match (achieved, slow, fast) {
        (Some(a), Some(s), Some(f)) if a >= required => {
            format!("{what}: {} vs {} = {a:.1}× (needs {required}×)", fmt_ns(s), fmt_ns(f))
        }
        (Some(a), Some(s), Some(f)) => format!(
            "{what}: {} vs {} = {a:.2}× (needs {required}×): missed by {:.1}×",
            fmt_ns(s),
            fmt_ns(f),
            required / a
        ),
        _ => "not measured in this run".to_string(),
    };
    Goal { text, met, detail, achieved, required }
}

/// The whole run.
pub struct Report {
    /// `--quick`.
    pub quick: bool,
    /// The machine.
    pub sys: SysInfo,
    /// Every measurement, in run order.
    pub entries: Vec<Entry>,
    /// The latency plan.
    pub plan: Plan,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// The entry `id`, if it produced numbers.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id && matches!(e.status, Status::Ok))
    }

    fn lat(&self, id: &str) -> Option<Stats> {
        self.get(id).and_then(|e| e.m.latency)
    }

    fn rate(&self, id: &str) -> Option<f64> {
        self.get(id).and_then(|e| e.m.rate.as_ref()).map(|r| r.per_sec)
    }

    /// Whether any measurement failed.
    pub fn any_failed(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.status, Status::Failed(_)))
    }

    /// Ratios worth reading: (text, value).
    pub fn ratios(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut vs = |a: &str, b: &str, pick: fn(&Stats) -> u64, pname: &str| {
            if let (Some(x), Some(y)) = (self.lat(a), self.lat(b)) {
                let r = pick(&x) as f64 / pick(&y).max(1) as f64;
                out.push((format!("{a} {pname} / {b} {pname}"), r));
            }
        };
        for id in ["uds", "pipe", "tcp", "eventfd", "iceoryx2", "redis-pubsub", "redis-streams", "sqlite-wal"] {
            vs(id, "ring-spin", |s| s.p50, "p50");
            vs(id, "ring-spin", |s| s.p99, "p99");
        }
        vs("ring-spin", "floor", |s| s.p50, "p50");
        vs("ring-spin-then-park", "ring-spin", |s| s.p50, "p50");
        vs("uds", "ring-spin-then-park", |s| s.p50, "p50");
        vs("uds", "ring-park", |s| s.p50, "p50");
        vs("uds", "ring-park", |s| s.p99, "p99");
        vs("eventfd", "ring-park", |s| s.p50, "p50");
        vs("coord-redis", "coord-ring-spin", |s| s.p50, "p50");
        vs("coord-redis", "coord-ring-spin", |s| s.p99, "p99");
        vs("coord-sqlite", "coord-ring-spin", |s| s.p50, "p50");
        vs("coord-sqlite", "coord-ring-spin", |s| s.p99, "p99");
        vs("coord-sqlite-1ms", "coord-ring-spin", |s| s.p50, "p50");
        vs("coord-sqlite-1ms", "coord-ring-park", |s| s.p50, "p50");
        vs("coord-redis", "coord-ring-park", |s| s.p50, "p50");
        vs("coord-sqlite", "coord-ring-park", |s| s.p50, "p50");
        vs("sqlite-insert-full", "durable-always", |s| s.p50, "p50");
        vs("sqlite-insert-normal", "durable-batch", |s| s.p50, "p50");
        vs("sqlite-insert-normal", "durable-never", |s| s.p50, "p50");
        vs("durable-batch", "durable-off", |s| s.p50, "p50");
        vs("handoff-redis", "handoff-worknode", |s| s.p50, "p50");
        vs("handoff-redis", "handoff-worknode", |s| s.p99, "p99");
        vs("mail-redis", "mail-worknode", |s| s.p50, "p50");
        vs("mail-redis", "mail-worknode", |s| s.p99, "p99");
        vs("mcp-show-subprocess", "mcp-show", |s| s.p50, "p50");
        vs("mcp-show-subprocess", "mcp-show", |s| s.p99, "p99");
        vs("mcp-cycle-subprocess", "mcp-cycle", |s| s.p50, "p50");
        vs("mcp-cycle-subprocess", "mcp-cycle", |s| s.p99, "p99");
        // What the `wn` process adds to a call, and what a rebuild costs beside an adopt.
        vs("ls-100k-wn", "ls-100k", |s| s.p50, "p50");
        vs("tree-100k-wn", "tree-100k", |s| s.p50, "p50");
        vs("restore-100k", "restore-100k-adopt", |s| s.p50, "p50");
        vs("restore-100k-lost", "restore-100k", |s| s.p50, "p50");
        // Worknode over HTTP beside Redis and a Python REST server (below 1×: wn serve faster).
        for op in ["get", "cycle"] {
            let wn = format!("http-{op}");
            vs(&wn, &format!("http-redis-{op}"), |s| s.p50, "p50");
            vs(&wn, &format!("http-redis-{op}"), |s| s.p99, "p99");
            vs(&wn, &format!("http-python-{op}"), |s| s.p50, "p50");
            vs(&wn, &format!("http-python-{op}"), |s| s.p99, "p99");
        }
        // Replication between hosts: Worknode's bridges beside Redis replication.
        for op in ["latency", "throughput", "claim"] {
            vs(&format!("repl-{op}"), &format!("repl-redis-{op}"), |s| s.p50, "p50");
            vs(&format!("repl-{op}"), &format!("repl-redis-{op}"), |s| s.p99, "p99");
        }
        for op in ["update", "claim", "read"] {
            let (d, b, r) =
                (format!("broker-{op}-direct"), format!("broker-{op}-brokered"), format!("broker-{op}-redis"));
            vs(&r, &b, |s| s.p50, "p50");
            vs(&r, &b, |s| s.p99, "p99");
            vs(&b, &d, |s| s.p50, "p50");
        }
        let mut rates = |a: &str, b: &str| {
            if let (Some(x), Some(y)) = (self.rate(a), self.rate(b)) {
                out.push((format!("{a} rate / {b} rate"), x / y));
            }
        };
        rates("tput-rtrb-1to1", "tput-ring-1to1");
        rates("repl-throughput", "repl-redis-throughput");
        rates("durable-always", "sqlite-insert-full");
        rates("durable-always-4w", "durable-always");
        rates("durable-always-4w", "sqlite-insert-full");
        rates("durable-batch", "sqlite-insert-normal");
        rates("durable-never", "sqlite-insert-normal");
        rates("durable-off", "durable-batch");
        rates("claims-2", "claims-1");
        rates("claims-4", "claims-1");
        rates("claims-1-1k", "claims-1");
        // How much the claim rate falls from 1 000 to 10 000 to 100 000 ready tasks (1× is
        // a claim that does not depend on the board's size).
        rates("claims-1", "claims-1-100k");
        // Worknode's claim at 10 000 ready tasks beside the same loop on Redis and SQLite.
        rates("claims-1", "claims-redis");
        rates("claims-1", "claims-sqlite");
        out
    }

    /// The goals of issue 7.
    pub fn goals(&self) -> Vec<Goal> {
        let mut g = Vec::new();
        let ring = self.lat("ring-spin");
        let ice = self.lat("iceoryx2");
        g.push(at_least(
            "ring ping-pong p50 ≤ iceoryx2 p50",
            ice.map(|s| s.p50),
            ring.map(|s| s.p50),
            1.0,
            "iceoryx2 p50 / ring-spin p50".into(),
        ));
        // ≤ 3× the floor: floor·3 / ring ≥ 1.
        let floor = self.lat("floor");
        let (fl, rg) = (floor.map(|s| s.p50), ring.map(|s| s.p50));
        let achieved = fl.zip(rg).map(|(f, r)| 3.0 * f as f64 / r.max(1) as f64);
        g.push(Goal {
            text: "ring ping-pong p50 ≤ 3× the cache-line floor",
            met: achieved.map(|a| a >= 1.0),
            detail: match (fl, rg) {
                (Some(f), Some(r)) => {
                    let x = r as f64 / f.max(1) as f64;
                    if x <= 3.0 {
                        format!("ring-spin p50 {} = {x:.2}× floor p50 {} (≤ 3×)", fmt_ns(r), fmt_ns(f))
                    } else {
                        format!(
                            "ring-spin p50 {} = {x:.2}× floor p50 {} (needs ≤ 3×): missed by {:.2}×",
                            fmt_ns(r),
                            fmt_ns(f),
                            x / 3.0
                        )
                    }
                }
                _ => "not measured in this run".into(),
            },
            achieved: fl.zip(rg).map(|(f, r)| r as f64 / f.max(1) as f64),
            required: 3.0,
        });
        let uds = self.lat("uds");
        g.push(at_least(
            "≥ 20× faster than UDS at p50",
            uds.map(|s| s.p50),
            ring.map(|s| s.p50),
            20.0,
            "UDS p50 / ring-spin p50".into(),
        ));
        g.push(at_least(
            "≥ 10× faster than UDS at p99",
            uds.map(|s| s.p99),
            ring.map(|s| s.p99),
            10.0,
            "UDS p99 / ring-spin p99".into(),
        ));
        let park = self.lat("ring-park");
        g.push(at_least(
            "park mode faster than UDS (p50)",
            uds.map(|s| s.p50),
            park.map(|s| s.p50),
            1.0,
            "UDS p50 / ring-park p50".into(),
        ));
        g.push(at_least(
            "park mode faster than UDS (p99)",
            uds.map(|s| s.p99),
            park.map(|s| s.p99),
            1.0,
            "UDS p99 / ring-park p99".into(),
        ));
        let t = self.rate("tput-ring-1to1");
        g.push(Goal {
            text: "≥ 20M events/s 1→1",
            met: t.map(|r| r >= 20e6),
            detail: match t {
                Some(r) if r >= 20e6 => format!("{:.2} M events/s", r / 1e6),
                Some(r) => format!("{:.2} M events/s (needs 20 M): missed by {:.1}×", r / 1e6, 20e6 / r),
                None => "not measured in this run".into(),
            },
            achieved: t.map(|r| r / 20e6),
            required: 1.0,
        });
        let coord = self.lat("coord-ring-spin");
        g.push(at_least(
            "update-and-notify ≥ 100× faster than Redis",
            self.lat("coord-redis").map(|s| s.p50),
            coord.map(|s| s.p50),
            100.0,
            "Redis HSET+PUBLISH p50 / Worknode update+event (spin) p50".into(),
        ));
        for (op, text) in [
            ("update", "brokered update ≥ 2× faster than Redis (p50)"),
            ("claim", "brokered claim + complete ≥ 2× faster than Redis (p50)"),
        ] {
            g.push(at_least(
                text,
                self.lat(&format!("broker-{op}-redis")).map(|s| s.p50),
                self.lat(&format!("broker-{op}-brokered")).map(|s| s.p50),
                2.0,
                format!("Redis {op} p50 / brokered {op} p50"),
            ));
        }
        g.push(at_least(
            "update-and-notify ≥ 500× faster than SQLite WAL",
            self.lat("coord-sqlite").map(|s| s.p50),
            coord.map(|s| s.p50),
            500.0,
            "SQLite UPDATE+poll p50 / Worknode update+event (spin) p50".into(),
        ));
        g
    }

    /// Why the inputs of a goal are missing (skipped or failed measurements), if they are.
    fn missing(&self, ids: &[&str]) -> Option<String> {
        let why: Vec<String> = ids
            .iter()
            .filter(|id| self.get(id).is_none())
            .map(|id| match self.entries.iter().find(|e| e.id == *id).map(|e| &e.status) {
                Some(Status::Skipped(r)) => format!("{id} skipped ({})", r.trim_start_matches("skipped: ")),
                Some(Status::Failed(_)) => format!("{id} failed"),
                _ => format!("{id} not run"),
            })
            .collect();
        (!why.is_empty()).then(|| format!("not measured: {}", why.join("; ")))
    }

    /// The goals, with the reason where one could not be judged.
    pub fn goals_explained(&self) -> Vec<Goal> {
        const INPUTS: [&[&str]; 11] = [
            &["ring-spin", "iceoryx2"],
            &["ring-spin", "floor"],
            &["ring-spin", "uds"],
            &["ring-spin", "uds"],
            &["ring-park", "uds"],
            &["ring-park", "uds"],
            &["tput-ring-1to1"],
            &["coord-ring-spin", "coord-redis"],
            &["broker-update-brokered", "broker-update-redis"],
            &["broker-claim-brokered", "broker-claim-redis"],
            &["coord-ring-spin", "coord-sqlite"],
        ];
        let mut goals = self.goals();
        for (g, ids) in goals.iter_mut().zip(INPUTS) {
            if g.met.is_none() {
                if let Some(why) = self.missing(ids) {
                    g.detail = why;
                }
            }
        }
        goals
    }

    /// The text report.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o);
        let groups = [
            ("latency", "Latency: round trip of a 64-byte payload between two processes"),
            (
                "coordination",
                "Coordination: update a task and notify; the other process sees it and answers (round trip)",
            ),
            ("durability", "Durability: append latency and rate (issue 6)"),
            ("throughput", "Throughput"),
            ("claims", "Claims"),
            (
                "broker",
                "Brokered writes: one agent, direct vs through the daemon's broker vs Redis (latency per operation)",
            ),
            (
                "handoff",
                "Work hand-off: a task becomes ready, the parked agent it is for holds it (two per round trip)",
            ),
            ("mail", "Messages: send, the blocked receiver has it (two per round trip)"),
            ("mcp", "Coding agents: a tool call over `wn mcp` (stdio) vs `wn --json` as a subprocess per call"),
            (
                "scale",
                "Scale: wn ls / tree / rollup over 100 000 tasks (time per call); worknoded start over 100k nodes + 1M events",
            ),
            ("http", "HTTP: wn serve beside Redis and a Python standard-library REST server; SSE delivery"),
        ];
        let base = self.lat("ring-spin").map(|s| s.p50);
        let cbase = self.lat("coord-ring-spin").map(|s| s.p50);
        for (g, title) in groups {
            let es: Vec<&Entry> = self.entries.iter().filter(|e| e.group == g).collect();
            if es.is_empty() {
                continue;
            }
            let _ = writeln!(o, "== {title}");
            let lat = es.iter().any(|e| e.m.latency.is_some());
            if lat {
                let _ = writeln!(
                    o,
                    "{:<22} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {:>9}  rate",
                    "mechanism", "samples", "p50", "p90", "p99", "p99.9", "max", "p50 ratio"
                );
            }
            for e in es {
                match (&e.status, e.m.latency) {
                    (Status::Skipped(r), _) => {
                        let _ = writeln!(o, "{:<22} skipped: {}", e.id, r.trim_start_matches("skipped: "));
                    }
                    (Status::Failed(r), _) => {
                        let _ = writeln!(o, "{:<22} FAILED: {r}", e.id);
                    }
                    (Status::Ok, Some(s)) => {
                        let b = if g == "coordination" { cbase } else { base };
                        let ratio = match (g, b) {
                            ("latency" | "coordination", Some(b)) => format!("{:.1}×", s.p50 as f64 / b.max(1) as f64),
                            _ => String::new(),
                        };
                        let rate = e.m.rate.as_ref().map(Rate::human).unwrap_or_default();
                        let _ = writeln!(
                            o,
                            "{:<22} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {:>9}  {rate}",
                            e.id,
                            s.samples,
                            fmt_ns(s.p50),
                            fmt_ns(s.p90),
                            fmt_ns(s.p99),
                            fmt_ns(s.p999),
                            fmt_ns(s.max),
                            ratio
                        );
                    }
                    (Status::Ok, None) => {
                        let rate = e.m.rate.as_ref().map(Rate::human).unwrap_or_default();
                        let _ = writeln!(o, "{:<22} {rate:>22}   {}", e.id, e.label);
                    }
                }
            }
            if g == "latency" && base.is_some() {
                let _ = writeln!(o, "(p50 ratio: the mechanism's p50 / ring-spin p50)");
            }
            if g == "coordination" && cbase.is_some() {
                let _ = writeln!(o, "(p50 ratio: the mechanism's p50 / coord-ring-spin p50)");
            }
            let _ = writeln!(o);
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            let _ = writeln!(o, "== Ratios");
            for (t, r) in ratios {
                let _ = writeln!(o, "{t:<58} = {}", fmt_ratio(r));
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(o, "== Goals (issue 7)");
        for goal in self.goals_explained() {
            let tag = match goal.met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "  -   ",
            };
            let _ = writeln!(o, "[{tag}] {:<48} {}", goal.text, goal.detail);
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "== Notes");
        for e in &self.entries {
            if !matches!(e.status, Status::Ok) {
                continue;
            }
            let _ = writeln!(
                o,
                "{:<22} {}; pinning: {}; steal {:.1}%",
                e.id,
                e.label,
                if e.m.pinning.is_empty() { "-" } else { &e.m.pinning },
                e.steal_pct
            );
            for n in &e.m.notes {
                let _ = writeln!(o, "{:<22}   {n}", "");
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "== Machine ({} mode, {} warm-up + {} samples per latency point, run took {:.1} s)",
            if self.quick { "quick" } else { "full" },
            self.plan.warmup,
            self.plan.samples,
            self.elapsed.as_secs_f64()
        );
        for l in self.sys.lines() {
            let _ = writeln!(o, "{l}");
        }
        let skipped: Vec<&Entry> = self.entries.iter().filter(|e| matches!(e.status, Status::Skipped(_))).collect();
        let failed = self.entries.iter().filter(|e| matches!(e.status, Status::Failed(_))).count();
        let _ = writeln!(
            o,
            "{} measured, {} skipped, {} failed",
            self.entries.len() - skipped.len() - failed,
            skipped.len(),
            failed
        );
        o
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        json!({
            "harness": "wn-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "mode": if self.quick { "quick" } else { "full" },
            "plan": { "warmup": self.plan.warmup, "samples": self.plan.samples, "time_cap_secs": self.plan.time_cap.as_secs_f64() },
            "payload_bytes": crate::payload::LEN,
            "system": self.sys.json(),
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "entries": self.entries.iter().map(Entry::json).collect::<Vec<_>>(),
            "ratios": self.ratios().into_iter().map(|(t, r)| json!({ "ratio": t, "value": r })).collect::<Vec<_>>(),
            "goals": self.goals_explained().into_iter().map(|g| json!({
                "goal": g.text,
                "status": match g.met { Some(true) => "met", Some(false) => "missed", None => "not measured" },
                "detail": g.detail,
                "achieved": g.achieved,
                "required": g.required,
            })).collect::<Vec<_>>(),
        })
    }
}

/// `23×`, `1.8×`, `0.42×`.
pub fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}
