//! `wn commands`: every verb with its arguments, derived from the parser itself (clap's
//! command tree), so the listing cannot drift from what `wn` accepts.

use crate::cli::{Cli, AFTER_HELP};
use crate::ctx::Ctx;
use crate::fail::{Fail, EXIT_CODES};
use crate::output::{print, print_json, schema_path, JSON_CONTRACT, SCHEMA_BASE};
use clap::{Arg, ArgAction, Command, CommandFactory};
use comfy_table::Cell;
use serde_json::{json, Value};

fn arg_json(a: &Arg) -> Value {
    let takes_value = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
    let possible: Vec<String> = a.get_possible_values().iter().map(|p| p.get_name().to_string()).collect();
    let defaults: Vec<String> = a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
    json!({
        "name": a.get_id().as_str(),
        "long": a.get_long().map(|l| format!("--{l}")),
        "short": a.get_short().map(|s| format!("-{s}")),
        "positional": a.is_positional(),
        "required": a.is_required_set(),
        "takes_value": takes_value,
        "multiple": matches!(a.get_action(), ArgAction::Append),
        "value_name": a.get_value_names().and_then(|v| v.first()).map(|v| v.to_string()),
        "default": defaults.first(),
        "possible_values": if possible.is_empty() { Value::Null } else { json!(possible) },
        "env": a.get_env().map(|e| e.to_string_lossy().into_owned()),
        "global": a.is_global_set(),
        "help": a.get_help().map(|h| h.to_string()),
    })
}

fn visible_args(c: &Command) -> impl Iterator<Item = &Arg> {
    c.get_arguments().filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
}

fn command_json(c: &mut Command, path: &str) -> Value {
    let usage = c.render_usage().to_string().trim_start_matches("Usage: ").to_string();
    let subs: Vec<Value> = c
        .get_subcommands_mut()
        .filter(|s| s.get_name() != "help")
        .map(|s| {
            let p = format!("{path} {}", s.get_name());
            command_json(s, &p)
        })
        .collect();
    let args: Vec<Value> = visible_args(c).filter(|a| !a.is_global_set()).map(arg_json).collect();
    json!({
        "name": c.get_name(),
        "path": path.trim(),
        "about": c.get_about().map(|a| a.to_string()),
        "usage": usage,
        "aliases": c.get_all_aliases().collect::<Vec<_>>(),
        "args": args,
        "subcommands": subs,
    })
}

/// The whole tree as JSON (also used by tests).
pub fn tree() -> Value {
    let mut root = Cli::command();
    root.build();
    let globals: Vec<Value> = visible_args(&root).map(arg_json).collect();
    let commands: Vec<Value> = root
        .get_subcommands_mut()
        .filter(|s| s.get_name() != "help")
        .map(|s| {
            let p = s.get_name().to_string();
            command_json(s, &p)
        })
        .collect();
    let exit_codes: serde_json::Map<String, Value> =
        EXIT_CODES.iter().map(|(c, m)| (c.to_string(), json!(m))).collect();
    // Every verb's schema, by its path (`doc put`), from the same tree: a verb cannot be
    // listed without one. `mcp` and `serve` print no `--json` document: `mcp` speaks MCP
    // on stdout, `serve` HTTP on its socket (its OpenAPI document at /api/openapi.json),
    // each answering in the shapes of the verbs they mirror; `metrics` prints the
    // Prometheus text format (and refuses --json).
    let mut leaves = Vec::new();
    flatten(&commands, &mut leaves);
    let schemas: serde_json::Map<String, Value> = leaves
        .iter()
        .filter_map(|c| c["path"].as_str())
        .filter(|p| !matches!(*p, "mcp" | "metrics" | "serve"))
        .map(|p| (p.to_string(), json!(schema_path(p))))
        .collect();
    json!({
        "program": "wn",
        "version": env!("CARGO_PKG_VERSION"),
        "json_contract": JSON_CONTRACT,
        "schema_base": SCHEMA_BASE,
        "schemas": schemas,
        "error_schema": "tools/schemas/defs.json#/$defs/error",
        "global_args": globals,
        "commands": commands,
        "exit_codes": exit_codes,
        "notes": AFTER_HELP,
    })
}

fn flatten<'a>(cmds: &'a [Value], out: &mut Vec<&'a Value>) {
    for c in cmds {
        let subs = c["subcommands"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if subs.is_empty() {
            out.push(c);
        } else {
            flatten(subs, out);
        }
    }
}

/// Prints the verbs.
pub fn run(ctx: &Ctx) -> Result<(), Fail> {
    let t = tree();
    if ctx.json {
        return print_json(&t);
    }
    let s = &ctx.style;
    let mut table = s.table(&["VERB", "USAGE", "WHAT IT DOES"]);
    let mut leaves = Vec::new();
    flatten(t["commands"].as_array().map(Vec::as_slice).unwrap_or(&[]), &mut leaves);
    for c in leaves {
        let usage = c["usage"].as_str().unwrap_or("");
        let usage = usage.strip_prefix("wn ").unwrap_or(usage);
        table.add_row(vec![
            Cell::new(c["path"].as_str().unwrap_or("")),
            Cell::new(usage),
            Cell::new(c["about"].as_str().unwrap_or("")),
        ]);
    }
    print(&s.render(table))
}
