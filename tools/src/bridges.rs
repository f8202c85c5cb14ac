//! The state each `worknode-bridge` of this segment keeps in `/bridge/<board>` (a JSON
//! document it rewrites when something changes, and every 5 s), for `wn stat` and
//! `wn doctor`.

use serde_json::Value;
use worknode::{NodeKind, Segment};

/// The container the bridges write under (the bridge crate's `BRIDGE_CONTAINER`).
const CONTAINER: &str = "bridge";

/// The longest state document read (a bridge writes a few hundred bytes).
const STATE_MAX: usize = 64 << 10;

/// A bridge's state as its document says, or why it could not be read.
pub struct BridgeState {
    /// The board's name (the document's).
    pub board: String,
    /// The parsed document, or what is wrong with it.
    pub state: Result<Value, String>,
}

/// Every bridge state document; empty when no bridge ever ran on this segment.
pub fn read(seg: &Segment) -> Vec<BridgeState> {
    let mut out = Vec::new();
    let container = seg
        .child_named(seg.root(), CONTAINER)
        .ok()
        .flatten()
        .filter(|k| seg.read(*k).is_ok_and(|n| n.kind() == Some(NodeKind::Container)));
    let Some(container) = container else { return out };
    let mut docs = Vec::new();
    if seg.children(container, &mut docs).is_err() {
        return out;
    }
    for d in docs {
        let Ok(n) = seg.read(d) else { continue };
        if n.kind() != Some(NodeKind::Document) {
            continue;
        }
        let mut bytes = Vec::new();
        let state = match seg.get_document(d, &mut bytes) {
            Ok(_) if bytes.len() > STATE_MAX => Err(format!("state document of {} bytes", bytes.len())),
            Ok(_) => serde_json::from_slice(&bytes).map_err(|e| format!("unreadable state document: {e}")),
            Err(e) => Err(e.to_string()),
        };
        out.push(BridgeState { board: n.name().to_string(), state });
    }
    out
}

/// A bridge's state in one line: `board: connected to URL as host H, lag N, ...`.
pub fn summary(b: &BridgeState, now_ms: u64) -> String {
    let v = match &b.state {
        Ok(v) => v,
        Err(e) => return format!("{}: {e}", b.board),
    };
    let num = |k: &str| v[k].as_u64().unwrap_or(0);
    let age = now_ms.saturating_sub(num("updated_unix_ms"));
    format!(
        "{}: {} {} as host {} ({}), lag {}, unpublished {}, published {}, applied {}, refused {}, written {}s ago",
        b.board,
        if v["connected"].as_bool() == Some(true) { "connected to" } else { "NOT connected to" },
        v["nats"].as_str().unwrap_or("?"),
        v["host"].as_str().unwrap_or("?"),
        num("host_id"),
        num("lag"),
        num("unpublished"),
        num("published"),
        num("applied"),
        num("refused"),
        age / 1000,
    )
}
