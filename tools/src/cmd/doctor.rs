//! `wn doctor`: checks a segment's consistency and says what to do about each finding.
//! Exit 0 only when healthy (no finding of severity `error`); otherwise exit 1 with code
//! `unhealthy`.
//!
//! Checks, in order:
//!
//! * **header**: attaching validates magic, version, sizes and the region table; the
//!   segment must be Ready. A segment that does not attach is inspected from its file
//!   (`worknode::Inspector::inspect_header`) and each damaged field reported. The daemon not
//!   running is an error (`daemon_gone`): leases are not reaped, dead sessions not
//!   released, damage not repaired.
//! * **locks**: a node writer lock, or a ring slot lock, held by a process that is gone;
//!   a node lock forged to a live process that does not map the segment (`lock_forged`);
//!   a node lock held by a live process that maps it, unchanged over a 500 ms watch
//!   (`lock_stuck`, with the pid); a node seqlock left odd with no writer; the header's
//!   join and dependency locks.
//! * **slots**: node slots left *reserved* (popped from the free list by a process that
//!   died before linking them: leaked until repaired).
//! * **ring**: sequences still in flight whose producer is gone (the daemon abandons them
//!   within 50 ms); the count of slots abandoned so far (a warning: those events are lost).
//! * **leases**: claims whose lease lapsed more than 2 s ago and were not reaped (the
//!   daemon reaps them every 100 ms); claims naming an agent slot that is not live.
//! * **sessions**: agents whose session process is gone but that were not reaped.
//! * **free list**: free-list length + live count == capacity.
//! * **index**: live index entries == live nodes == live slots, and every live node's
//!   UUID looks up to its own slot.
//! * **tree**: every live node's parent is live, and each node's child count equals the
//!   number of live nodes naming it as parent (and its child list agrees).
//! * **blobs**: free blob chunks + chunks in use == arena capacity.
//! * **contents**: the library's damage catalogue (`Inspector::damage`, see
//!   `worknode::DamageClass`): header fields, state word, clock far ahead, the three free
//!   lists (out of range, not free, cycle), slot state words, index entries, child and
//!   sibling links, summary words, record enums, ring stamps, agent slots, blob chains
//!   and CRCs, set slots, counters. Each finding names its class (`class` in `--json`).
//! * **bridges** (only where a `worknode-bridge` has run: `/bridge/<board>` exists): each
//!   bridge's state document is fresh (written in the last 15 s), says it is connected
//!   to NATS, has nothing to apply or send, and no last error — warnings otherwise.
//!
//! A check that cannot finish on a damaged segment reports that as a finding.
//!
//! Everything is read through the library: node slot control words, header locks, ring
//! slot stamps and owners, and the damage catalogue are decoded by its inspector
//! (`worknode::Inspector`: `node_slot_controls`, `header_lock_words`,
//! `ring_slot_controls`, `damage`); doctor never reads the segment file itself. A live
//! segment changes while it is checked, so count checks are retried (three rounds) and
//! only a disagreement that persists is reported; for exact answers, run it on a quiet
//! segment.
//!
//! `--repair` fixes what the library can fix through its API, then checks again. It
//! stands in for the daemon (`worknode::Daemon::stand_in`: the daemon's housekeeping,
//! without taking the segment over): it reaps expired leases and dead sessions, takes over node locks held by dead processes
//! (a no-op update: the takeover repairs the record and any half-changed child list),
//! abandons ring sequences stuck behind dead producers, and gives back blob chunks and
//! set slots held by dead processes (`Daemon::reclaim_leaked`).

use crate::ctx::Ctx;
use crate::fail::{exit, Fail};
use crate::output::{now_ms, print, print_json};
use crate::resolve::path_of;
use comfy_table::{Cell, Color};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use worknode::layout::{slot, Region};
use worknode::{
    Access, AttachError, Daemon, Damage, DamageClass, Handle, Inspector, OwnerTag, Segment, SegmentState, Start,
};

/// Options of `wn doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Fix what can be fixed safely (expired leases, dead sessions, locks held by dead
    /// processes, stuck ring slots), then check again.
    #[arg(long)]
    repair: bool,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    /// Unhealthy.
    Error,
    /// Worth knowing; does not make the segment unhealthy.
    Warning,
}

/// One thing found wrong.
#[derive(Clone, Debug)]
struct Finding {
    severity: Severity,
    message: String,
    hint: String,
    /// The damage class (`worknode::DamageClass::as_str`), when the finding is one.
    class: Option<&'static str>,
}

fn error(message: impl Into<String>, hint: impl Into<String>) -> Finding {
    Finding { severity: Severity::Error, message: message.into(), hint: hint.into(), class: None }
}

fn warning(message: impl Into<String>, hint: impl Into<String>) -> Finding {
    Finding { severity: Severity::Warning, message: message.into(), hint: hint.into(), class: None }
}

/// A damage the library's catalogue found, as a finding naming its class.
fn damage(d: &Damage) -> Finding {
    Finding {
        severity: Severity::Error,
        message: format!("{}: {}", d.class, d.detail),
        hint: damage_hint(d.class).to_string(),
        class: Some(d.class.as_str()),
    }
}

/// What to do about each damage class.
fn damage_hint(c: DamageClass) -> &'static str {
    use DamageClass::*;
    match c {
        HeaderMagic | HeaderVersion | HeaderSize | HeaderRegions => {
            "the header is damaged: a running daemon restores it from its copy within a second; otherwise stop everything and recreate the segment"
        }
        StateWord => "a running daemon sets it back to ready within a second; otherwise restart the daemon",
        DaemonGone => "start it: `worknoded --segment NAME` adopts the segment (leases, sessions and repairs need it)",
        ClockAhead => "the next write resets it to wall time (so does the daemon within a second); stamps written meanwhile are wrong",
        FreeListOutOfRange | FreeListNotFree | FreeListCycle => {
            "writers refuse the damaged entry (nothing is overwritten, but adds may fail); recreate the segment to rebuild the list"
        }
        LockDead | LockForged => "`wn doctor --repair` (or the next writer, or the daemon) takes the lock over",
        LockStuck => "that process holds the lock far longer than a writer does: stop it; writers to the node get `busy` until then",
        SeqOdd => "the segment is damaged: the node's readers may retry; recreate the segment",
        SlotState | IndexEntry | ChildLinks | Summary | RecordEnum => {
            "writers refuse to rely on the damaged words; export what you need and recreate the segment"
        }
        RingStamp => "readers may skip or misread that event slot; it is overwritten when the ring wraps",
        AgentSlot => "that agent's slot is damaged; recreate the segment (agents rejoin)",
        BlobChain => "reads of that document fail their check; replace the document's content",
        SetSlot => "that node's set is damaged; recreate the segment",
        Counters => "a usage counter is wrong (capacity reports mislead); recreate the segment to reset it",
    }
}

/// One check's outcome.
struct Check {
    name: &'static str,
    summary: String,
    findings: Vec<Finding>,
}

/// Findings listed per check before the rest are summarised.
const SHOWN: usize = 20;
/// How long a lock held by a live process is watched before it is called stuck.
const STUCK_WATCH: Duration = Duration::from_millis(500);
/// How long past its end an unreaped lease is reported.
const LEASE_GRACE_MS: u64 = 2_000;

/// A node slot's control words (decoded by the library).
type SlotWords = worknode::SlotControl;

fn node_slots(seg: &Segment) -> Vec<SlotWords> {
    seg.inspect().node_slot_controls()
}

/// Runs `check` up to three times, a little apart, and returns the first clean result or
/// the last findings (a live segment may disagree with itself for a moment).
fn settled(mut check: impl FnMut() -> Result<Vec<Finding>, Fail>) -> Result<Vec<Finding>, Fail> {
    let mut last = Vec::new();
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        last = check()?;
        if last.iter().all(|f| f.severity != Severity::Error) {
            return Ok(last);
        }
    }
    Ok(last)
}

fn check_header(seg: &Segment) -> Check {
    let info = seg.inspect().info();
    let mut findings = Vec::new();
    if info.state != SegmentState::Ready {
        findings.push(error(
            format!("segment state is {}", info.state.as_str()),
            "the daemon is starting or shutting down; restart it if this persists",
        ));
    }
    if !info.daemon_alive {
        findings.push(Finding {
            class: Some(DamageClass::DaemonGone.as_str()),
            ..error(
                format!("daemon_gone: the daemon (pid {}) is not running", info.daemon_pid),
                format!(
                    "start it: `worknoded --segment {}` adopts the segment (leases, sessions and repairs need it)",
                    info.name
                ),
            )
        });
    }
    Check {
        name: "header",
        summary: format!(
            "layout v{}, {} bytes, state {}, daemon pid {} {}",
            info.layout_version,
            info.size,
            info.state.as_str(),
            info.daemon_pid,
            if info.daemon_alive { "running" } else { "gone" }
        ),
        findings,
    }
}

fn dead(tag: u64) -> bool {
    tag != 0 && !OwnerTag(tag).is_alive()
}

fn check_locks(seg: &Segment, slots: &[SlotWords]) -> Result<Check, Fail> {
    let mut findings = Vec::new();
    let mut held = 0;
    for s in slots {
        if s.lock != 0 {
            held += 1;
        }
        if dead(s.lock) {
            let what = if s.state == slot::LIVE {
                path_of(seg, Handle { index: s.index, generation: s.generation })
            } else {
                format!("(slot state {})", s.state)
            };
            findings.push(Finding {
                class: Some(DamageClass::LockDead.as_str()),
                ..error(
                    format!(
                        "lock_dead: node slot {} {what} is locked by process {}, which is gone",
                        s.index,
                        OwnerTag(s.lock).pid()
                    ),
                    "`wn doctor --repair` takes the lock over and repairs the record (so does the node's next write)",
                )
            });
        } else if seg.inspect().lock_holder(s.lock) == worknode::Holder::Forged {
            findings.push(Finding {
                class: Some(DamageClass::LockForged.as_str()),
                ..error(
                    format!(
                        "lock_forged: node slot {} is locked by live process {}, which does not map the segment",
                        s.index,
                        OwnerTag(s.lock).pid()
                    ),
                    damage_hint(DamageClass::LockForged),
                )
            });
        } else if s.lock == 0 && s.seq & 1 == 1 {
            findings.push(Finding {
                class: Some(DamageClass::SeqOdd.as_str()),
                ..error(
                    format!("seq_odd: node slot {} has an odd seqlock word with no writer holding its lock", s.index),
                    "the segment is damaged: stop the daemon and recreate the segment",
                )
            });
        }
    }
    let [join_lock, deps_lock] = seg.inspect().header_lock_words();
    for (name, tag, heals, forged_hint) in [
        (
            "agent join lock",
            join_lock,
            "the next agent to join takes it over",
            "the next agent to join takes it over",
        ),
        (
            "dependency lock",
            deps_lock,
            "the next dependency change takes it over",
            "dependency changes wait for it and fail with `busy`: recreate the segment (only a dead holder's is taken over)",
        ),
    ] {
        if seg.inspect().lock_holder(tag) == worknode::Holder::Forged {
            findings.push(Finding {
                class: Some(DamageClass::LockForged.as_str()),
                ..error(
                    format!(
                        "lock_forged: the {name} is held by live process {}, which does not map the segment",
                        OwnerTag(tag).pid()
                    ),
                    forged_hint,
                )
            });
        } else if dead(tag) {
            findings
                .push(warning(format!("the {name} is held by process {}, which is gone", OwnerTag(tag).pid()), heals));
        }
    }
    // Locks held by live processes that map the segment: a writer holds one for
    // microseconds, so one held by the same process at the same sequence across the
    // watch is stuck (or forged to a live writer's tag).
    let before = seg.inspect().live_node_locks();
    if !before.is_empty() {
        std::thread::sleep(STUCK_WATCH);
        let after = seg.inspect().live_node_locks();
        for (index, tag, _) in before.into_iter().filter(|l| after.contains(l)) {
            let pid = OwnerTag(tag).pid();
            findings.push(Finding {
                class: Some(DamageClass::LockStuck.as_str()),
                ..error(
                    format!(
                        "lock_stuck: node slot {index} has been locked by live process {pid} for at least {} ms (no write completed)",
                        STUCK_WATCH.as_millis()
                    ),
                    damage_hint(DamageClass::LockStuck),
                )
            });
        }
    }
    Ok(Check { name: "locks", summary: format!("{held} node locks held now"), findings })
}

fn check_slots(slots: &[SlotWords]) -> Check {
    let mut findings = Vec::new();
    for s in slots {
        if s.state == slot::RESERVED && (s.lock == 0 || dead(s.lock)) {
            findings.push(error(
                format!("node slot {} is reserved but no live process is creating a node in it", s.index),
                "it was popped from the free list by a process that died; it is leaked until the segment is recreated",
            ));
        }
    }
    let live = slots.iter().filter(|s| s.state == slot::LIVE).count();
    Check { name: "slots", summary: format!("{live} live of {}", slots.len()), findings }
}

/// Ring sequences claimed but not published whose producer is gone (or never locked the
/// slot): for each slot, the newest sequence below the tail that maps to it must be
/// published or abandoned (the slots decoded by the library's inspector).
fn stuck_ring(seg: &Segment) -> Vec<(u64, u64)> {
    seg.inspect()
        .ring_slot_controls()
        .into_iter()
        .filter(|s| s.unpublished && (s.owner == 0 || dead(s.owner)))
        .filter_map(|s| Some((s.expected?, s.owner)))
        .collect()
}

fn check_ring(seg: &Segment) -> Result<Check, Fail> {
    let c = seg.ring_counters();
    let mut findings = Vec::new();
    let stuck = settled(|| {
        Ok(stuck_ring(seg)
            .into_iter()
            .map(|(seq, owner)| {
                let by = if owner == 0 { "a producer that never locked it".to_string() } else { format!("process {}, which is gone", OwnerTag(owner).pid()) };
                error(
                    format!("event {seq} is still being written by {by}"),
                    "the daemon abandons it within 50 ms: is it running? `wn doctor --repair` (or `wn events`) does it too",
                )
            })
            .collect())
    })?;
    findings.extend(stuck);
    let owners_dead = seg.inspect().ring_slot_controls().iter().filter(|s| dead(s.owner)).count();
    if owners_dead > 0 {
        findings.push(warning(
            format!("{owners_dead} ring slot locks are held by processes that are gone"),
            "the next append to each slot takes its lock over",
        ));
    }
    if c.abandoned > 0 {
        findings.push(warning(
            format!(
                "{} ring slots were abandoned by producers that died mid-append (those events are lost)",
                c.abandoned
            ),
            "nothing to repair; find out why those producers died",
        ));
    }
    Ok(Check {
        name: "ring",
        summary: format!(
            "tail {}, capacity {}, {} abandoned, {} parked readers",
            c.tail, c.capacity, c.abandoned, c.waiters
        ),
        findings,
    })
}

fn check_leases(seg: &Segment) -> Result<Check, Fail> {
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    let live_slots: Vec<u16> = agents.iter().map(|a| a.id.index).collect();
    let mut claims = 0;
    let findings = settled(|| {
        let now = now_ms();
        let mut f = Vec::new();
        claims = 0;
        seg.for_each_node(|n| {
            let Some(slot) = n.claim_agent_raw() else { return true };
            claims += 1;
            let path = path_of(seg, n.handle());
            if n.lease_until_ms() + LEASE_GRACE_MS < now {
                f.push(error(
                    format!(
                        "{path}: lease expired {} ago and was not reaped",
                        crate::duration::format_ms(now - n.lease_until_ms())
                    ),
                    "the daemon reaps lapsed leases every 100 ms: is it running? `wn doctor --repair` reaps them now",
                ));
            } else if !live_slots.contains(&slot) {
                f.push(error(
                    format!("{path}: claimed by agent slot {slot}, which holds no live agent"),
                    "`wn doctor --repair` releases it when its lease lapses; or wait for the lease",
                ));
            }
            true
        })?;
        Ok(f)
    })?;
    Ok(Check { name: "leases", summary: format!("{claims} claims"), findings })
}

fn check_sessions(seg: &Segment) -> Check {
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    let mut findings = Vec::new();
    for a in &agents {
        if let (Some(pid), false) = (a.session_pid, a.session_alive) {
            findings.push(error(
                format!("agent {} holds a session for process {pid}, which is gone", a.name),
                "the daemon reaps it (claims released): is it running? `wn doctor --repair` reaps it now",
            ));
        }
    }
    let sessions = agents.iter().filter(|a| a.session_pid.is_some()).count();
    Check { name: "sessions", summary: format!("{} agents, {sessions} with a session", agents.len()), findings }
}

/// A bridge's state older than this is stale: it rewrites it every 5 s.
const BRIDGE_STALE_MS: u64 = 15_000;

/// Each `worknode-bridge` of this segment (`/bridge/<board>`): running, connected,
/// caught up. `None` when no bridge ever ran here (the check is not shown).
fn check_bridges(seg: &Segment) -> Option<Check> {
    let bridges = crate::bridges::read(seg);
    if bridges.is_empty() {
        return None;
    }
    let now = now_ms();
    let mut findings = Vec::new();
    for b in &bridges {
        let v = match &b.state {
            Ok(v) => v,
            Err(e) => {
                findings.push(warning(format!("bridge {}: {e}", b.board), "restart the bridge: it rewrites its state"));
                continue;
            }
        };
        let age = now.saturating_sub(v["updated_unix_ms"].as_u64().unwrap_or(0));
        if age > BRIDGE_STALE_MS {
            findings.push(warning(
                format!("bridge {}: its state was last written {}s ago: the bridge is not running", b.board, age / 1000),
                "start it again (worknode-bridge --segment ... --nats ...): it resumes from its durable consumer; until then this host works alone and claims only its local tasks",
            ));
            continue;
        }
        if v["connected"].as_bool() != Some(true) {
            findings.push(warning(
                format!("bridge {}: not connected to NATS at {}", b.board, v["nats"].as_str().unwrap_or("?")),
                "is nats-server running with -js? Local work goes on and is sent when it is back",
            ));
        }
        let (lag, unpublished) = (v["lag"].as_u64().unwrap_or(0), v["unpublished"].as_u64().unwrap_or(0));
        if lag > 0 || unpublished > 0 {
            findings.push(warning(
                format!("bridge {}: {lag} remote states not applied yet, {unpublished} local ones not sent", b.board),
                "it catches up on its own while connected; a lag that grows means the bridge cannot keep up",
            ));
        }
        if let Some(e) = v["last_error"].as_str().filter(|e| !e.is_empty()) {
            findings.push(warning(format!("bridge {}: last error: {e}", b.board), "see the bridge's log"));
        }
    }
    let summary = bridges.iter().map(|b| crate::bridges::summary(b, now)).collect::<Vec<_>>().join("; ");
    Some(Check { name: "bridges", summary, findings })
}

fn check_free_list(seg: &Segment) -> Result<Check, Fail> {
    let cap = seg.capacities().nodes as u64;
    let mut summary = String::new();
    let findings = settled(|| {
        let free = seg.free_slots()?;
        let live = seg.inspect().info().regions[Region::Nodes as usize].used;
        let reserved = node_slots(seg).iter().filter(|s| s.state == slot::RESERVED).count() as u64;
        summary = format!("{free} free + {live} live = {} of {cap}", free + live);
        if free + live + reserved == cap {
            return Ok(vec![]);
        }
        Ok(vec![error(
            format!(
                "free list ({free}) + live nodes ({live}) + reserved ({reserved}) = {}, not the capacity {cap}",
                free + live + reserved
            ),
            "slots leaked or double-counted; the segment needs to be recreated to recover them",
        )])
    })?;
    Ok(Check { name: "free list", summary, findings })
}

fn check_index(seg: &Segment) -> Result<Check, Fail> {
    let mut summary = String::new();
    let mut findings = settled(|| {
        let info = seg.inspect().info();
        let index_live = info.regions[Region::Index as usize].used;
        let pool_live = info.regions[Region::Nodes as usize].used;
        let slots_live = node_slots(seg).iter().filter(|s| s.state == slot::LIVE).count() as u64;
        summary = format!("{index_live} entries, {} tombstones", info.index_tombstones);
        let mut f = Vec::new();
        if index_live != pool_live || pool_live != slots_live {
            f.push(error(
                format!("index entries ({index_live}), live-node counter ({pool_live}) and live slots ({slots_live}) disagree"),
                "the id index or the counters are inconsistent; recreate the segment if this persists",
            ));
        }
        Ok(f)
    })?;
    let mut bad = Vec::new();
    seg.for_each_node(|n| {
        match seg.lookup(n.uuid()) {
            Ok(h) if h == n.handle() => {}
            _ => bad.push(*n),
        }
        true
    })?;
    // A node deleted between the scan and the lookup is not a finding.
    for n in bad {
        if seg.read(n.handle()).is_ok() && seg.lookup(n.uuid()) != Ok(n.handle()) {
            findings.push(error(
                format!("{} ({}) is live but its UUID does not look up to it", path_of(seg, n.handle()), n.uuid()),
                "the id index is damaged; recreate the segment",
            ));
        }
    }
    Ok(Check { name: "index", summary, findings })
}

fn check_tree(seg: &Segment) -> Result<Check, Fail> {
    let mut nodes = 0;
    let findings = settled(|| {
        let mut f = Vec::new();
        let mut counts: HashMap<Handle, u64> = HashMap::new();
        let mut live: Vec<Handle> = Vec::new();
        seg.for_each_node(|n| {
            live.push(n.handle());
            if let Some(p) = n.parent() {
                *counts.entry(p).or_default() += 1;
                if seg.read(p).is_err() && seg.read(n.handle()).is_ok() {
                    f.push(error(
                        format!("{} ({}) names a parent that is not live", n.name(), n.uuid()),
                        "an orphan: delete it, or recreate the segment",
                    ));
                }
            }
            true
        })?;
        nodes = live.len();
        let mut kids = Vec::new();
        for h in live {
            let want = counts.get(&h).copied().unwrap_or(0);
            let Ok(have) = seg.child_count(h) else { continue };
            if have != want {
                f.push(error(
                    format!("{} has child count {have}, but {want} live nodes name it as parent", path_of(seg, h)),
                    "its child list is inconsistent; `wn doctor --repair` cannot fix this: recreate the segment",
                ));
            } else if let Err(worknode::PoolError::Corrupt { what }) = seg.children(h, &mut kids) {
                f.push(error(format!("{}: {what}", path_of(seg, h)), "recreate the segment"));
            }
        }
        Ok(f)
    })?;
    Ok(Check { name: "tree", summary: format!("{nodes} nodes"), findings })
}

fn check_blobs(seg: &Segment) -> Result<Check, Fail> {
    let r = seg.inspect().info().regions[Region::Blobs as usize];
    let mut summary = String::new();
    let findings = settled(|| {
        let free = seg.free_blob_chunks()?;
        let used = seg.inspect().info().regions[Region::Blobs as usize].used;
        summary = format!("{used} of {} chunks in use", r.capacity);
        if free + used == r.capacity {
            return Ok(vec![]);
        }
        Ok(vec![error(
            format!("free chunks ({free}) + chunks in use ({used}) = {}, not the capacity {}", free + used, r.capacity),
            "blob chunks leaked; recreate the segment to recover them",
        )])
    })?;
    Ok(Check { name: "blobs", summary, findings })
}

/// The library's damage catalogue (`Inspector::damage`), less what the checks above
/// report already (dead and forged locks, odd seqlocks, the daemon). A live segment can
/// disagree with itself for a moment (a counter bumped just after its slot changed), so
/// the scan runs up to three times and a class is reported only if every round found it.
fn check_contents(seg: &Segment) -> Result<Check, Fail> {
    let scan = || -> Vec<Damage> {
        seg.inspect()
            .damage()
            .into_iter()
            .filter(|d| {
                !matches!(
                    d.class,
                    DamageClass::LockDead | DamageClass::SeqOdd | DamageClass::DaemonGone | DamageClass::LockForged
                )
            })
            .collect()
    };
    let mut last = scan();
    let mut persistent: Vec<DamageClass> = last.iter().map(|d| d.class).collect();
    for _ in 1..3 {
        if persistent.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
        last = scan();
        persistent.retain(|c| last.iter().any(|d| d.class == *c));
    }
    let findings: Vec<Finding> = last.iter().filter(|d| persistent.contains(&d.class)).map(damage).collect();
    let summary =
        if findings.is_empty() { "no damage found".to_string() } else { format!("{} damages found", findings.len()) };
    Ok(Check { name: "contents", summary, findings })
}

/// A check that could not finish (the segment is too damaged for it) is itself a finding.
fn or_failed(name: &'static str, r: Result<Check, Fail>) -> Check {
    r.unwrap_or_else(|f| Check {
        name,
        summary: "could not finish".to_string(),
        findings: vec![error(
            format!("the check failed: {}", f.message),
            "see the other findings; the segment is damaged",
        )],
    })
}

fn run_checks(seg: &Segment) -> Result<Vec<Check>, Fail> {
    let slots = node_slots(seg);
    Ok([
        check_header(seg),
        or_failed("locks", check_locks(seg, &slots)),
        check_slots(&slots),
        or_failed("ring", check_ring(seg)),
        or_failed("leases", check_leases(seg)),
        check_sessions(seg),
        or_failed("free list", check_free_list(seg)),
        or_failed("index", check_index(seg)),
        or_failed("tree", check_tree(seg)),
        or_failed("blobs", check_blobs(seg)),
        or_failed("contents", check_contents(seg)),
    ]
    .into_iter()
    .chain(check_bridges(seg))
    .collect())
}

/// A segment that does not attach: inspect its header from the file and report what is
/// damaged (`None` when the header looks sound: the attach error stands).
fn unattachable(ctx: &Ctx, e: &AttachError) -> Option<Vec<Check>> {
    if matches!(
        e,
        AttachError::NotFound { .. } | AttachError::PermissionDenied { .. } | AttachError::InvalidName { .. }
    ) {
        return None;
    }
    let found = Inspector::inspect_header(&ctx.segment).ok()?;
    if found.is_empty() {
        return None;
    }
    Some(vec![Check {
        name: "header",
        summary: format!("does not attach: {e}"),
        findings: found.iter().map(damage).collect(),
    }])
}

/// What `--repair` did.
fn repair(seg: &Daemon) -> Result<Vec<String>, Fail> {
    let mut done = Vec::new();
    let reaped = seg.reap_expired_claims();
    if reaped > 0 {
        done.push(format!("released {reaped} expired claims"));
    }
    let sessions = seg.reap_dead_sessions();
    if sessions > 0 {
        done.push(format!("reaped {sessions} agents whose session process was gone"));
    }
    for s in node_slots(seg) {
        let holder = seg.inspect().lock_holder(s.lock);
        if s.state == slot::LIVE && matches!(holder, worknode::Holder::Dead | worknode::Holder::Forged) {
            let h = Handle { index: s.index, generation: s.generation };
            let whose = if holder == worknode::Holder::Dead { "a dead process" } else { "a forged holder" };
            if seg.update(h, |_| Ok(())).is_ok() {
                done.push(format!("took over the lock of {} from {whose}", path_of(seg, h)));
            }
        }
    }
    for (seq, _) in stuck_ring(seg) {
        let mut r = seg.reader(Start::At(seq));
        r.set_abandon_after(Duration::ZERO);
        // The first look marks the sequence as waited on; the second abandons it.
        let _ = r.try_next();
        let _ = r.try_next();
        done.push(format!("abandoned event {seq}, stuck behind a dead producer"));
    }
    // A corrupt chain is reported by the checks that follow; nothing is freed from it.
    if let Ok(r) = seg.reclaim_leaked() {
        if r.blob_chunks > 0 || r.set_slots > 0 {
            done.push(format!(
                "gave back {} blob chunks and {} set slots held by dead processes",
                r.blob_chunks, r.set_slots
            ));
        }
        if r.documents_emptied > 0 {
            done.push(format!(
                "emptied {} documents whose content a killed replace had overwritten",
                r.documents_emptied
            ));
        }
    }
    Ok(done)
}

fn check_json(c: &Check) -> Value {
    let findings: Vec<Value> = c
        .findings
        .iter()
        .map(|f| {
            json!({
                "severity": if f.severity == Severity::Error { "error" } else { "warning" },
                "message": f.message,
                "hint": f.hint,
                "class": f.class,
            })
        })
        .collect();
    json!({ "check": c.name, "ok": c.findings.iter().all(|f| f.severity != Severity::Error), "summary": c.summary, "findings": findings })
}

/// Checks (and with `--repair`, repairs) the segment.
pub fn run(ctx: &Ctx, a: &DoctorArgs) -> Result<(), Fail> {
    // `--repair` does the daemon's housekeeping in its place: it needs the daemon's handle.
    let attached = if a.repair {
        Daemon::stand_in(&ctx.segment).map(Attached::StandIn).map_err(Fail::from)
    } else {
        ctx.attach_best().map(Attached::Reader)
    };
    let attached = match attached {
        Ok(attached) => attached,
        Err(f) => {
            // A header too damaged to attach is a report, not just an error.
            let e = match Segment::attach_with(&ctx.segment, Access::ReadOnly, Duration::from_millis(50)) {
                Err(e) => e,
                Ok(_) => return Err(f),
            };
            let Some(checks) = unattachable(ctx, &e) else { return Err(f) };
            return report(ctx, &ctx.segment, &checks, &[]);
        }
    };
    let (seg, repaired) = match &attached {
        Attached::StandIn(daemon) => (daemon.segment(), repair(daemon)?),
        Attached::Reader(seg) => (seg, Vec::new()),
    };
    let checks = run_checks(seg)?;
    report(ctx, seg.name(), &checks, &repaired)
}

/// How `doctor` holds the segment: as a reader, or (`--repair`) standing in for the daemon.
enum Attached {
    Reader(Segment),
    StandIn(Daemon),
}

/// Prints the checks and fails when any found an error.
fn report(ctx: &Ctx, name: &str, checks: &[Check], repaired: &[String]) -> Result<(), Fail> {
    let errors: usize =
        checks.iter().map(|c| c.findings.iter().filter(|f| f.severity == Severity::Error).count()).sum();
    let warnings: usize =
        checks.iter().map(|c| c.findings.iter().filter(|f| f.severity == Severity::Warning).count()).sum();
    if ctx.json {
        print_json(&json!({
            "segment": name,
            "healthy": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "repaired": repaired,
            "checks": checks.iter().map(check_json).collect::<Vec<_>>(),
        }))?;
    } else {
        let s = &ctx.style;
        let mut t = s.table(&["", "CHECK", "DETAIL"]);
        for c in checks {
            let worst = c.findings.iter().map(|f| f.severity).min_by_key(|s| *s != Severity::Error);
            let (label, color) = match worst {
                None => ("ok", Color::Green),
                Some(Severity::Error) => ("FAIL", Color::Red),
                Some(Severity::Warning) => ("warn", Color::Yellow),
            };
            let mut detail = c.summary.clone();
            for f in c.findings.iter().take(SHOWN) {
                let tag = if f.severity == Severity::Error { "error" } else { "warning" };
                detail.push_str(&format!("\n{tag}: {}\n  hint: {}", f.message, f.hint));
            }
            if c.findings.len() > SHOWN {
                detail.push_str(&format!("\n… and {} more (see --json)", c.findings.len() - SHOWN));
            }
            let cell = if s.color { Cell::new(label).fg(color) } else { Cell::new(label) };
            t.add_row(vec![cell, Cell::new(c.name), Cell::new(detail)]);
        }
        let mut text = String::new();
        for r in repaired {
            text.push_str(&format!("repaired: {r}\n"));
        }
        text.push_str(&s.render(t));
        text.push_str(&match (errors, warnings) {
            (0, 0) => format!("\n\n{name}: healthy"),
            (0, w) => format!("\n\n{name}: healthy ({w} warnings)"),
            (e, w) => format!("\n\n{name}: {e} problems, {w} warnings"),
        });
        print(&text)?;
    }
    if errors > 0 {
        return Err(Fail::new(
            "unhealthy",
            exit::OTHER,
            format!("segment {name} is unhealthy: {errors} problems found"),
            "read each finding's hint; `wn doctor --repair` fixes expired leases, dead sessions, stuck locks and ring slots",
        ));
    }
    Ok(())
}
