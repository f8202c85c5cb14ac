//! File reservations (issue 13, part 6): `wn reserve GLOB…`, `wn reserve --check PATH…`
//! (the pre-commit hook), `wn reserve --renew GLOB…`, `wn reservations`, `wn unreserve`.
//! Each is one library call ([`worknode::Segment::reserve`], `check_paths`,
//! `renew_reservation`, `reservations`, `unreserve_matching`); nothing is kept on the
//! client: a reservation lives in the segment, held by the `--agent` under its lease,
//! after `wn` exits.

use crate::ctx::Ctx;
use crate::duration;
use crate::fail::Fail;
use crate::output::{clean, now_ms, print, print_json};
use serde_json::{json, Value};
use std::time::Duration;
use worknode::{AgentId, Reservation, ReservationInfo, ReserveError, ReserveOptions, Segment};

/// Options of `wn reserve`.
#[derive(clap::Args, Debug)]
pub struct ReserveArgs {
    /// Globs to reserve (`src/auth/**`, `src/*.rs`); with --check, paths to check.
    #[arg(required = true, value_name = "GLOB")]
    items: Vec<String>,
    /// How long the reservation holds unless renewed (1ms-30d).
    #[arg(long, value_parser = duration::lease, default_value = "1h", value_name = "DURATION")]
    lease: Duration,
    /// Shared: coexists with other shared reservations, conflicts with exclusive ones.
    #[arg(long, conflicts_with = "check")]
    shared: bool,
    /// Why (shown to agents it keeps off), at most 48 bytes.
    #[arg(long, value_name = "TEXT", default_value = "", conflicts_with = "check")]
    reason: String,
    /// Check the paths instead: exit 3 when another agent holds a reservation covering
    /// one (for a git pre-commit hook), 0 otherwise.
    #[arg(long)]
    check: bool,
    /// Extend the lease of your reservation holding exactly these globs instead.
    #[arg(long, conflicts_with_all = ["check", "shared"])]
    renew: bool,
    /// With --renew: the epoch you hold (refused as stale if it was made again since).
    #[arg(long, requires = "renew")]
    epoch: Option<u64>,
}

/// Options of `wn unreserve`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["globs", "all"])))]
pub struct UnreserveArgs {
    /// Globs to withdraw from your reservations (as you reserved them).
    #[arg(value_name = "GLOB")]
    globs: Vec<String>,
    /// Withdraw all of your reservations.
    #[arg(long)]
    all: bool,
    /// The epoch of the reservation you hold (refused as stale if it was made again).
    #[arg(long, conflicts_with = "all")]
    epoch: Option<u64>,
}

/// A reservation as `reserve` prints it (`tools/schemas/reserve.json`).
pub fn reservation_json(seg: &Segment, r: &Reservation, reason: &str) -> Value {
    json!({
        "uuid": seg.read(r.node).map(|n| n.uuid().to_string()).unwrap_or_default(),
        "agent": seg.agent(r.agent).map(|a| a.name).unwrap_or_default(),
        "globs": r.globs,
        "shared": r.shared,
        "reason": reason,
        "epoch": r.epoch,
        "lease_until_ms": r.lease_until_ms,
    })
}

/// A listed reservation (`tools/schemas/reservations.json`).
fn info_json(r: &ReservationInfo) -> Value {
    json!({
        "uuid": r.uuid.to_string(),
        "agent": r.agent_name,
        "globs": r.globs,
        "shared": r.shared,
        "reason": r.reason,
        "epoch": r.epoch,
        "lease_until_ms": r.lease_until_ms,
        "live": r.live,
    })
}

/// The caller's live reservation holding exactly `globs` (as a set).
fn mine_holding(seg: &Segment, me: AgentId, globs: &[String]) -> Result<ReservationInfo, Fail> {
    let mut all = Vec::new();
    seg.reservations(&mut all);
    let mut want: Vec<&str> = globs.iter().map(String::as_str).collect();
    want.sort_unstable();
    all.into_iter()
        .filter(|r| r.agent == Some(me) && r.live)
        .find(|r| {
            let mut have: Vec<&str> = r.globs.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == want
        })
        .ok_or_else(|| ReserveError::NotFound.into())
}

/// Reserves globs, renews a reservation, or checks paths.
pub fn run_reserve(ctx: &Ctx, a: &ReserveArgs) -> Result<(), Fail> {
    if a.check {
        return run_check(ctx, &a.items);
    }
    let seg = ctx.attach_rw()?;
    let me = ctx.me(&seg)?;
    if a.renew {
        let held = mine_holding(&seg, me, &a.items)?;
        let r = Reservation {
            node: held.node,
            agent: me,
            epoch: a.epoch.unwrap_or(held.epoch),
            lease_until_ms: held.lease_until_ms,
            shared: held.shared,
            globs: held.globs.clone(),
        };
        let renewed = seg.renew_reservation(&r, a.lease)?;
        return print_reservation(ctx, &seg, &renewed, &held.reason);
    }
    let globs: Vec<&str> = a.items.iter().map(String::as_str).collect();
    let opts = ReserveOptions { lease: a.lease, shared: a.shared, reason: a.reason.clone() };
    let r = seg.reserve(me, &globs, &opts)?;
    print_reservation(ctx, &seg, &r, &a.reason)
}

fn print_reservation(ctx: &Ctx, seg: &Segment, r: &Reservation, reason: &str) -> Result<(), Fail> {
    if ctx.json {
        return print_json(&reservation_json(seg, r, reason));
    }
    let lease = duration::format_ms(r.lease_until_ms.saturating_sub(now_ms()));
    let mode = if r.shared { "shared" } else { "exclusive" };
    print(&format!("reserved {} ({mode}) epoch {} lease {lease}", clean(&r.globs.join(" ")), r.epoch))
}

/// `wn reserve --check PATH…`: exit 3 when another agent holds one of the paths.
fn run_check(ctx: &Ctx, paths: &[String]) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let me = match seg.grant().map(|g| g.agent().to_string()).or_else(|| ctx.agent.clone()) {
        Some(name) => seg.find_agent(&name),
        None => None,
    };
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    seg.check_paths(me, &paths)?;
    if ctx.json {
        return print_json(&json!({ "held": false, "checked": paths.len() }));
    }
    Ok(())
}

/// Lists reservations.
pub fn run_reservations(ctx: &Ctx) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let mut all = Vec::new();
    seg.reservations(&mut all);
    if ctx.json {
        let list: Vec<Value> = all.iter().map(info_json).collect();
        return print_json(&json!({ "reservations": list, "count": all.len() }));
    }
    let s = &ctx.style;
    if all.is_empty() {
        return print(&s.dim("(no reservations; `wn --agent NAME reserve GLOB…` makes one)"));
    }
    let mut t = s.table(&["agent", "globs", "mode", "lease", "epoch", "reason"]);
    let now = now_ms();
    for r in &all {
        let lease = if r.live { duration::relative(now, r.lease_until_ms) } else { "released".to_string() };
        t.add_row(vec![
            clean(&r.agent_name).to_string(),
            clean(&r.globs.join(" ")).to_string(),
            (if r.shared { "shared" } else { "exclusive" }).to_string(),
            lease,
            r.epoch.to_string(),
            clean(&r.reason).to_string(),
        ]);
    }
    print(&s.render(t))
}

/// Withdraws reservations.
pub fn run_unreserve(ctx: &Ctx, a: &UnreserveArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let me = ctx.me(&seg)?;
    let withdrawn = match a.epoch {
        Some(epoch) => {
            // Fenced: the reservation holding exactly these globs, at that epoch.
            let held = mine_holding(&seg, me, &a.globs)?;
            let r = Reservation {
                node: held.node,
                agent: me,
                epoch,
                lease_until_ms: held.lease_until_ms,
                shared: held.shared,
                globs: held.globs.clone(),
            };
            seg.unreserve(&r)?;
            r.globs.len() as u64
        }
        None if a.all => seg.unreserve_matching(me, None)?,
        None => {
            let globs: Vec<&str> = a.globs.iter().map(String::as_str).collect();
            seg.unreserve_matching(me, Some(&globs))?
        }
    };
    if ctx.json {
        return print_json(&json!({ "withdrawn": withdrawn }));
    }
    print(&format!("withdrew {withdrawn} glob(s)"))
}
