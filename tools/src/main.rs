//! `wn`: the inspector and shell front end of a Worknode segment.
//!
//! Data goes to stdout; errors go to stderr with an exit code a script can branch on
//! (see `wn --help` and [`fail`]). With `--json`, stdout holds only JSON and an error is
//! one JSON object on stderr.
//!
//! Layout: the verbs live in the `wn` library (`lib.rs`, shared with the Python SDK):
//! [`cli`] declares the command line and dispatches; each verb group lives in a module
//! under `cmd/`; `ctx` (attaching, the agent identity), `resolve` (naming nodes),
//! `duration` and [`output`] (tables, colour, times, JSON shapes) are shared.

use clap::Parser;
use std::process::ExitCode;
use wn::{cli, ctx, fail, output};

/// Whether `--json` (or `WORKNODE_JSON`) was asked for, judged before parsing succeeded,
/// so that a usage error can be reported as JSON too.
fn json_requested() -> bool {
    let env = std::env::var("WORKNODE_JSON").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on" | "y"));
    env || std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json")
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let shows_help = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if shows_help {
                e.exit();
            }
            // clap's message quotes the bad argument: plain text (no colour), each line
            // escaped, so an argument cannot drive the terminal.
            let text = e.render().to_string();
            if !json_requested() {
                for line in text.trim_end().lines() {
                    eprintln!("{}", output::clean(line));
                }
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(fail::exit::USAGE));
            }
            // The message is everything before the first blank line ("Usage: …" follows).
            let first = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            let hint = "see `wn --help`, `wn help VERB` or `wn commands --json`";
            return fail::Fail::usage(first, hint).report(true);
        }
    };
    let ctx = ctx::Ctx {
        segment: cli.segment.clone(),
        agent: cli.agent.clone().filter(|a| !a.is_empty()),
        role: cli.role.clone().unwrap_or_else(|| "shell".to_string()),
        role_given: cli.role.is_some(),
        json: cli.json,
        style: output::Style::detect(),
        data_dir: cli.data_dir.clone(),
        token: cli.token.clone().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
    };
    match cli::run(&ctx, &cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.changed.is_some() => match ctx.attach_ro() {
            Ok(seg) => f.name_changed_node(&seg).report(cli.json),
            Err(_) => f.report(cli.json),
        },
        Err(f) => f.report(cli.json),
    }
}
