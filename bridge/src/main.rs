//! `worknode-bridge`: shares one segment's board with other hosts through a NATS
//! JetStream stream.
//!
//! One process per host and board. It follows the local event ring, publishes the
//! replica state of every node a local change touched on its own subject
//! (`wn.<board>.n.<uuid>.<host id>`), and applies what the other hosts publish, read
//! through a durable pull consumer of its own. The design and its guarantees are in
//! ARCHITECTURE.md, "Replication between hosts"; the moving parts are [`bridge`].

mod bridge;
mod claims;

use clap::Parser;
use std::process::ExitCode;
use worknode::{Access, Segment};
use worknode_bridge::HostId;

/// Replicates a Worknode board between hosts through NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "worknode-bridge", version)]
pub struct Args {
    /// The local segment (its daemon must run).
    #[arg(long, env = "WORKNODE_SEGMENT")]
    segment: String,
    /// The NATS server, with JetStream enabled (`nats-server -js`).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Replicate only the subtree under this node (a path like `/proj` or a UUID); the
    /// whole tree by default. Every host of a board must give the same scope.
    #[arg(long)]
    under: Option<String>,
    /// This host's name on the board: unique among the board's hosts (default: the
    /// machine's host name).
    #[arg(long)]
    host: Option<String>,
    /// The board's name, the same on every host (default: the segment's name). Letters,
    /// digits, `-` and `_`, at most 32.
    #[arg(long)]
    board: Option<String>,
}

/// A name NATS takes in a stream, consumer and subject token.
fn check_token(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("{what} {name:?} must be 1 to 32 bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("{what} {name:?} holds {c:?}: use letters, digits, '-' and '_'"));
    }
    Ok(())
}

/// The machine's host name without its domain (a `.` is not allowed in a NATS token).
fn machine_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim().split('.').next().unwrap_or_default().to_string()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let board = args.board.clone().unwrap_or_else(|| args.segment.clone());
    let host = args.host.clone().unwrap_or_else(machine_host_name);
    for (what, name) in [("--board", board.as_str()), ("--host", host.as_str())] {
        if let Err(e) = check_token(what, name) {
            eprintln!("worknode-bridge: {e}");
            return ExitCode::from(2);
        }
    }
    let seg = match Segment::attach(&args.segment, Access::ReadWrite) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worknode-bridge: cannot attach segment {:?}: {e}\n  hint: start its daemon (worknoded --segment {}) and run the bridge as its owner", args.segment, args.segment);
            return ExitCode::from(1);
        }
    };
    let config = bridge::Config { args, board, host_id: HostId::of_name(&host), host };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("worknode-bridge: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bridge::run(&config, &seg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worknode-bridge: {e}");
            ExitCode::from(1)
        }
    }
}
