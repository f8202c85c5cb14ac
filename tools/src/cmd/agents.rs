//! Agents: `wn agents` (who is there and what each holds), `wn join`, `wn leave`, and
//! `wn assign` / `wn unassign`.

use crate::cmd::nodes::print_node;
use crate::ctx::{find_agent, Ctx};
use crate::duration::{self, relative};
use crate::fail::Fail;
use crate::output::{clean, now_ms, print, print_json, ShortIds};
use crate::resolve::{self, path_of};
use comfy_table::Cell;
use serde_json::{json, Value};
use std::collections::HashMap;
use worknode::{AgentInfo, Node, Segment};

/// Options of `wn assign` / `wn unassign`.
#[derive(clap::Args, Debug)]
pub struct AssignArgs {
    /// The node (UUID, unique prefix, or /path).
    node: String,
    /// An agent's name (joined or not: the name is then reserved for it) or a role
    /// (`@tester`: every agent of that role). Its id is not `agent`, which would
    /// collide with the global `--agent`.
    #[arg(value_name = "AGENT|@ROLE")]
    who: String,
    /// Let every agent claim it (the assignees are who it is for first: `claim --next
    /// --mine`); `--only-assignees` undoes it.
    #[arg(long, conflicts_with = "only_assignees")]
    open_to_all: bool,
    /// Only its assignees may claim it (the default for an assigned task).
    #[arg(long)]
    only_assignees: bool,
}

/// Live claims by agent slot: every node whose lease has not lapsed.
pub fn claims_by_agent(seg: &Segment) -> HashMap<u16, Vec<Node>> {
    let mut by: HashMap<u16, Vec<Node>> = HashMap::new();
    let _ = seg.for_each_node(|n| {
        if let Some(slot) = n.claimed_by() {
            by.entry(slot).or_default().push(*n);
        }
        true
    });
    by
}

/// An agent as every verb prints it (`agent` in `tools/schemas/defs.json`).
pub fn agent_json(seg: &Segment, a: &AgentInfo, claims: &[Node]) -> Value {
    let claims: Vec<Value> = claims
        .iter()
        .map(|n| {
            json!({
                "uuid": n.uuid().to_string(),
                "name": n.name(),
                "path": path_of(seg, n.handle()),
                "status": n.status().map(|s| s.as_str()),
                "epoch": n.claim_epoch(),
                "lease_until_ms": n.lease_until_ms(),
            })
        })
        .collect();
    json!({
        "name": a.name,
        "role": a.role,
        "uuid": a.uuid.to_string(),
        "slot": a.id.index,
        "session_pid": a.session_pid,
        "session_alive": a.session_alive,
        "heartbeat_ms": a.heartbeat_ms,
        "joined_ms": a.joined.wall_ms(),
        "claim_parked": a.claim_parked,
        "claim_wakes": a.claim_wakes,
        "claims": claims,
    })
}

/// Every agent and its claims, as `agents --json` prints them.
pub fn agents_json(seg: &Segment) -> Value {
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    let claims = claims_by_agent(seg);
    let list: Vec<Value> =
        agents.iter().map(|a| agent_json(seg, a, claims.get(&a.id.index).map_or(&[], Vec::as_slice))).collect();
    json!({ "agents": list, "count": agents.len() })
}

/// Lists agents and their claims.
pub fn run_agents(ctx: &Ctx) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    if ctx.json {
        return print_json(&agents_json(&seg));
    }
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    let claims = claims_by_agent(&seg);
    let none: Vec<Node> = Vec::new();
    let s = &ctx.style;
    if agents.is_empty() {
        return print(&s.dim("(no agents; an agent joins when it first runs `wn --agent NAME …`)"));
    }
    let short = ShortIds::scan(&seg);
    let now = now_ms();
    let mut t = s.table(&["NAME", "ROLE", "ID", "SESSION", "SEEN", "JOINED", "CLAIMS"]);
    for a in &agents {
        let session = match (a.session_pid, a.session_alive) {
            (Some(pid), true) => format!("pid {pid}"),
            (Some(pid), false) => format!("pid {pid} (gone)"),
            (None, _) => "-".into(),
        };
        let held: Vec<String> = claims
            .get(&a.id.index)
            .unwrap_or(&none)
            .iter()
            .map(|n| {
                format!(
                    "{} (epoch {}, lease {})",
                    clean(n.name()),
                    n.claim_epoch(),
                    duration::relative(now, n.lease_until_ms())
                )
            })
            .collect();
        t.add_row(vec![
            Cell::new(clean(&a.name)),
            Cell::new(clean(&a.role)),
            Cell::new(short.of(a.uuid)),
            Cell::new(session),
            Cell::new(relative(now, a.heartbeat_ms)),
            Cell::new(relative(now, a.joined.wall_ms())),
            Cell::new(if held.is_empty() { "-".to_string() } else { held.join("\n") }),
        ]);
    }
    print(&s.render(t))
}

fn print_agent(ctx: &Ctx, seg: &Segment, a: &AgentInfo) -> Result<(), Fail> {
    if ctx.json {
        let claims = claims_by_agent(seg);
        return print_json(&agent_json(seg, a, claims.get(&a.id.index).map_or(&[], Vec::as_slice)));
    }
    print(&format!("{} agent {} {}", a.uuid, clean(&a.name), clean(&a.role)))
}

/// Joins as `--agent` now.
pub fn run_join(ctx: &Ctx) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let id = ctx.me(&seg)?;
    print_agent(ctx, &seg, &seg.agent(id)?)
}

/// Leaves as `--agent`: its claims are released and its identity removed. An agent that
/// never joined is not joined just to leave (exit 4).
pub fn run_leave(ctx: &Ctx) -> Result<(), Fail> {
    let Some(name) = ctx.agent.as_deref() else {
        return Err(Fail::new(
            "agent_required",
            crate::fail::exit::USAGE,
            "leave needs the agent that leaves",
            "pass --agent NAME (or set WORKNODE_AGENT=NAME)",
        ));
    };
    let seg = worknode::Segment::attach(&ctx.segment, worknode::Access::ReadWrite)?;
    let id = find_agent(&seg, name)?;
    let info = seg.agent(id)?;
    seg.leave(id)?;
    if ctx.json {
        return print_json(&json!({ "left": info.name, "uuid": info.uuid.to_string() }));
    }
    print(&format!("{} left {}", info.uuid, clean(&info.name)))
}

/// `assign` (or `unassign`) an agent to a node.
pub fn run_assign(ctx: &Ctx, a: &AssignArgs, assign: bool) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let who = crate::ctx::principal(&a.who)?;
    let mut n = if assign { seg.assign(h, &who)? } else { seg.unassign(h, &who)? };
    if a.open_to_all || a.only_assignees {
        n = seg.set_open_to_all(h, a.open_to_all)?;
    }
    print_node(ctx, &seg, &n)
}
