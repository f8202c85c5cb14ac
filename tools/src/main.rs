//! `wn`: the inspector and shell front end of a Worknode segment.
//!
//! Data goes to stdout; errors go to stderr with an exit code a script can branch on.
//! With `--json`, stdout holds only JSON and errors are one JSON object on stderr.

mod cmd;
mod fail;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Inspect and drive a Worknode shared-memory segment.
///
/// Exit codes: 0 ok; 1 other error; 2 usage; 3 conflict; 4 not found (including no
/// such segment); 5 lagged or timed out; 6 permission; 7 capacity full.
#[derive(Parser, Debug)]
#[command(name = "wn", version, verbatim_doc_comment)]
struct Cli {
    /// Segment name (/dev/shm/NAME).
    #[arg(long, global = true, env = "WORKNODE_SEGMENT", default_value = "worknode", value_name = "NAME")]
    segment: String,

    /// Print JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true, env = "WORKNODE_JSON", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0, default_missing_value = "true")]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the segment's layout, capacities and usage, clock, daemon and state.
    Dump,
    /// Print events from the ring (JSON lines with --json); --follow waits for more.
    Events(cmd::events::EventsArgs),
    /// Append one event (for shell-driven agents).
    Emit(cmd::events::EmitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump => cmd::dump::run(&cli.segment, cli.json),
        Command::Events(a) => cmd::events::run_events(&cli.segment, cli.json, a),
        Command::Emit(a) => cmd::events::run_emit(&cli.segment, cli.json, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(cli.json),
    }
}
