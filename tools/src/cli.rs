//! The command line: global options, the verbs, and the dispatch to their modules.
//!
//! `wn commands` derives its listing from this tree (clap's `CommandFactory`), so the
//! listing cannot drift from what the parser accepts.

use crate::cmd::{
    agents, commands, docs, doctor, dump, events, labels, lifecycle, mail, mcp, metrics, nodes, persist, reserve,
    serve, stat, tasks, token, top,
};
use crate::ctx::Ctx;
use crate::fail::Fail;
use clap::{Parser, Subcommand};

/// Shown after the help of `wn` (both `-h` and `--help`).
pub const AFTER_HELP: &str = "\
Nodes (NODE) are named by UUID, by a unique UUID prefix (hyphens optional), or by path
from the root: /Company/Code Analysis/Refactor auth. A prefix or path component that
matches several nodes is a usage error (exit 2) listing the candidates.

Exit codes:
  0  ok
  1  anything else (damaged segment, OS error, `doctor` found problems)
  2  usage: bad arguments, an ambiguous or malformed node name, a value over a limit
  3  conflict: already claimed, illegal transition, stale epoch, lease expired,
     not the claimant, blocked, dependency cycle, a reservation overlaps or holds a path
  4  not found: no such segment, node or agent; nothing ready to claim
  5  lagged, or timed out waiting
  6  permission denied, or the segment is read-only
  7  capacity full: nodes, agents, blob arena, blockers, assignees, a mailbox

Limits (a value outside is exit 2, naming the flag and its range): timeouts 0ms-1d,
intervals 1ms-1d, leases 1ms-30d, --value finite within +-1e300, names without control
characters, done --note / fail --reason at most 48 bytes (never cut). Only tasks and
custom nodes can be claimed. See tools/README.md.

With --json, stdout holds only JSON (one object, or JSON lines for streams) and an
error is one JSON object on stderr: {\"error\", \"code\", \"hint\", \"exit\"}.
`wn commands --json` lists every verb and its arguments.";

/// Inspect and drive a Worknode shared-memory segment.
///
/// Inspectors (dump, tree, ls, show, agents, events, stat, metrics, doctor, top, rollup) attach
/// read-only where they can. Agent verbs act as --agent NAME, which joins on first use and
/// persists across `wn` processes; its claims are held by their leases.
#[derive(Parser, Debug)]
#[command(name = "wn", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Segment name (/dev/shm/NAME).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WORKNODE_SEGMENT",
        default_value = "worknode",
        value_name = "NAME"
    )]
    pub segment: String,

    /// Act as this agent (claims, events); it joins on first use.
    #[arg(long, global = true, help_heading = "Global options", env = "WORKNODE_AGENT", value_name = "NAME")]
    pub agent: Option<String>,

    /// Role recorded when the agent first joins (default `shell`); a different one given
    /// later is ignored, with a warning.
    #[arg(long, global = true, help_heading = "Global options", env = "WORKNODE_ROLE", value_name = "ROLE")]
    pub role: Option<String>,

    /// Print JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true, help_heading = "Global options", env = "WORKNODE_JSON", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0, default_missing_value = "true")]
    pub json: bool,

    /// Directory of the daemon's journal and token files (as the daemon was given it).
    /// Default: $XDG_STATE_HOME/worknode/SEGMENT, else ~/.local/state/worknode/SEGMENT.
    #[arg(long, global = true, help_heading = "Global options", env = "WORKNODE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// A capability token (`wn token mint`): the daemon verifies it, wn acts as its agent,
    /// and every change is checked against its rights and subtree (exit 6 if refused).
    /// Another user's wn goes through the daemon's broker with it.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WORKNODE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs, inspectors first.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the segment's layout, capacities and usage, clock, daemon and state.
    Dump,
    /// Show the node tree (from NODE, default the root).
    Tree(nodes::TreeArgs),
    /// List nodes, filtered by kind, status, assignee, subtree.
    Ls(nodes::LsArgs),
    /// Show everything about one node.
    Show(nodes::ShowArgs),
    /// List agents, their sessions and their claims.
    Agents,
    /// Print events from the ring (JSON lines with --json); --follow waits for more.
    Events(events::EventsArgs),
    /// Print a line per interval of rates and usage (like `redis-cli --stat`).
    Stat(stat::StatArgs),
    /// Print the segment's metrics in the Prometheus text format (usage, lag, counters).
    Metrics(metrics::MetricsArgs),
    /// Check the segment's consistency; exit 0 only when healthy.
    Doctor(doctor::DoctorArgs),
    /// A live full-screen view: tasks, agents and claims, event rate, recent events.
    Top(top::TopArgs),
    /// Totals over a subtree: counts by status, percent complete, pipeline value.
    Rollup(nodes::RollupArgs),
    /// Create a node (tasks start ready, or blocked while a blocker is open).
    Add(nodes::AddArgs),
    /// Remove a node (--recursive: its subtree), freeing its documents and sets.
    Rm(lifecycle::RmArgs),
    /// Cancel a task (--force: even one a live claim holds).
    Cancel(lifecycle::CancelArgs),
    /// Make a complete, failed or cancelled task ready again (a retry; new epoch).
    Reopen(lifecycle::TaskArg),
    /// Make a pending task ready (blocked while a blocker is open).
    Activate(lifecycle::TaskArg),
    /// Change a node's name, description, priority or value.
    Edit(lifecycle::EditArgs),
    /// Add or remove a node's labels: `wn label NODE add|rm LABEL...`.
    Label(labels::LabelArgs),
    /// Assign an agent to a node.
    Assign(agents::AssignArgs),
    /// Remove an agent from a node's assignees.
    Unassign(agents::AssignArgs),
    /// List tasks that can be claimed now, best first.
    Ready(tasks::ReadyArgs),
    /// Claim a task (or --next: the best ready one); prints it and its fencing epoch.
    Claim(tasks::ClaimArgs),
    /// Extend the lease of a task you hold.
    Renew(tasks::RenewArgs),
    /// Give a task you hold back (it is ready again).
    Release(tasks::ClaimantArgs),
    /// Mark a task you hold as in progress.
    Start(tasks::ClaimantArgs),
    /// Report progress (0-100) on a task you hold.
    Progress(tasks::ProgressArgs),
    /// Complete a task you hold; dependents whose blockers are all done become ready.
    Done(tasks::DoneArgs),
    /// Fail a task you hold, with a reason.
    #[command(name = "fail")]
    FailTask(tasks::FailArgs),
    /// Make NODE wait for another node (same as `dep add NODE --blocked-by OTHER`).
    Block(tasks::BlockArgs),
    /// Add, remove or list dependencies.
    #[command(subcommand)]
    Dep(tasks::DepCmd),
    /// Store and fetch documents (content in the segment's blob arena).
    #[command(subcommand)]
    Doc(docs::DocCmd),
    /// Append one event (for shell-driven agents).
    Emit(events::EmitArgs),
    /// Wait for the first matching event after now; exit 5 on timeout.
    Wait(events::WaitArgs),
    /// Send a message to an agent (joined or not) or to every agent of @ROLE.
    Send(mail::SendArgs),
    /// List your unread mail (yours and your role's); --wait for some, --ack what you handled.
    Inbox(mail::InboxArgs),
    /// Join as --agent NAME now (agents also join on first use).
    Join,
    /// Leave as --agent NAME: release its claims and remove its identity.
    Leave,
    /// Ask the daemon to compact its journal into a snapshot now, and wait for it.
    Snapshot(persist::SnapshotArgs),
    /// Print the whole state as one JSON document (backup, diffing).
    Export,
    /// Rebuild an export's nodes, documents, sets and dependencies in this segment.
    Import(persist::ImportArgs),
    /// List every verb and its arguments (for agents discovering the tool).
    Commands,
    /// Capability tokens: mint, list, revoke (needs the daemon's key).
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Reserve files by glob for --agent (others are kept off until you withdraw it or
    /// the lease ends); --check PATH… exits 3 when another agent holds one (pre-commit).
    Reserve(reserve::ReserveArgs),
    /// List file reservations: who holds which globs, until when.
    Reservations,
    /// Withdraw your reservations of GLOB… (as reserved), or --all of them.
    Unreserve(reserve::UnreserveArgs),
    /// Serve --agent NAME to an MCP client over stdio (one server per agent; its claims
    /// end with the server).
    Mcp,
    /// Serve the board over HTTP: a JSON API, a live event stream (SSE), its OpenAPI
    /// document and a dashboard at `/` (loopback only, unless --require-tokens).
    /// Requests act as --agent (default `http`), or as their bearer token's agent.
    Serve(serve::ServeArgs),
}

/// Runs the verb.
pub fn run(ctx: &Ctx, command: &Command) -> Result<(), Fail> {
    match command {
        Command::Dump => dump::run(ctx),
        Command::Tree(a) => nodes::run_tree(ctx, a),
        Command::Ls(a) => nodes::run_ls(ctx, a),
        Command::Show(a) => nodes::run_show(ctx, a),
        Command::Agents => agents::run_agents(ctx),
        Command::Events(a) => events::run_events(ctx, a),
        Command::Stat(a) => stat::run(ctx, a),
        Command::Metrics(a) => metrics::run(ctx, a),
        Command::Doctor(a) => doctor::run(ctx, a),
        Command::Top(a) => top::run(ctx, a),
        Command::Rollup(a) => nodes::run_rollup(ctx, a),
        Command::Add(a) => nodes::run_add(ctx, a),
        Command::Rm(a) => lifecycle::run_rm(ctx, a),
        Command::Cancel(a) => lifecycle::run_cancel(ctx, a),
        Command::Reopen(a) => lifecycle::run_reopen(ctx, a),
        Command::Activate(a) => lifecycle::run_activate(ctx, a),
        Command::Edit(a) => lifecycle::run_edit(ctx, a),
        Command::Label(a) => labels::run(ctx, a),
        Command::Assign(a) => agents::run_assign(ctx, a, true),
        Command::Unassign(a) => agents::run_assign(ctx, a, false),
        Command::Ready(a) => tasks::run_ready(ctx, a),
        Command::Claim(a) => tasks::run_claim(ctx, a),
        Command::Renew(a) => tasks::run_renew(ctx, a),
        Command::Release(a) => tasks::run_release(ctx, a),
        Command::Start(a) => tasks::run_start(ctx, a),
        Command::Progress(a) => tasks::run_progress(ctx, a),
        Command::Done(a) => tasks::run_done(ctx, a),
        Command::FailTask(a) => tasks::run_fail(ctx, a),
        Command::Block(a) => tasks::run_block(ctx, a),
        Command::Dep(c) => tasks::run_dep(ctx, c),
        Command::Doc(c) => docs::run(ctx, c),
        Command::Emit(a) => events::run_emit(ctx, a),
        Command::Wait(a) => events::run_wait(ctx, a),
        Command::Send(a) => mail::run_send(ctx, a),
        Command::Inbox(a) => mail::run_inbox(ctx, a),
        Command::Join => agents::run_join(ctx),
        Command::Leave => agents::run_leave(ctx),
        Command::Snapshot(a) => persist::run_snapshot(ctx, a),
        Command::Export => persist::run_export(ctx),
        Command::Import(a) => persist::run_import(ctx, a),
        Command::Commands => commands::run(ctx),
        Command::Token(c) => token::run(ctx, c),
        Command::Reserve(a) => reserve::run_reserve(ctx, a),
        Command::Reservations => reserve::run_reservations(ctx),
        Command::Unreserve(a) => reserve::run_unreserve(ctx, a),
        Command::Mcp => mcp::run(ctx),
        Command::Serve(a) => serve::run(ctx, a),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A verb's argument with the id of a global option silently feeds that option
    /// (`assign NODE AGENT` once set `--agent`): no argument may reuse a global id.
    #[test]
    fn no_argument_shadows_a_global_option() {
        let root = Cli::command();
        let globals: Vec<String> =
            root.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().to_string()).collect();
        fn walk(c: &clap::Command, globals: &[String], path: &str) {
            for a in c.get_arguments().filter(|a| !a.is_global_set()) {
                assert!(
                    !globals.contains(&a.get_id().to_string()),
                    "`{path}` argument {} shadows a global",
                    a.get_id()
                );
            }
            for s in c.get_subcommands() {
                walk(s, globals, &format!("{path} {}", s.get_name()));
            }
        }
        for s in root.get_subcommands() {
            walk(s, &globals, s.get_name());
        }
    }
}
