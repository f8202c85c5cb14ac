//! Capability tokens: `wn token mint | ls | revoke`.
//!
//! The key lives in the daemon's data directory (0600), so only the daemon's user can
//! mint; the daemon verifies a `--token` when wn attaches with it (`ctx`), and the
//! library checks every change against it (ARCHITECTURE.md, "Capability tokens").

use crate::ctx::Ctx;
use crate::fail::{exit, Fail};
use crate::output::{clean, now_ms, print, print_json};
use crate::resolve;
use comfy_table::Cell;
use serde_json::{json, Value};
use std::time::Duration;
use worknode::{Rights, Token, TokenId};
use worknoded::tokens;

/// `wn token …`.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCmd {
    /// Mint a token and print it on stdout (needs the daemon's key: the daemon's user).
    Mint(MintArgs),
    /// List issued tokens, revoked ones marked.
    Ls,
    /// Revoke a token by id (as `mint` and `ls` show it).
    Revoke(RevokeArgs),
}

/// Options of `wn token mint`.
#[derive(clap::Args, Debug)]
pub struct MintArgs {
    /// Comma-separated rights: read, create, claim, update, doc, emit, message, reserve,
    /// admin, or all.
    #[arg(long, value_name = "LIST")]
    pub rights: String,
    /// Limit the token to the subtree under NODE (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    pub under: Option<String>,
    /// How long the token is valid (1ms to 365d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = ttl)]
    pub ttl: Duration,
}

/// Options of `wn token revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (32 hex digits).
    pub id: String,
}

fn ttl(text: &str) -> Result<Duration, String> {
    crate::duration::parse_in(text, Duration::from_millis(1), Duration::from_secs(365 * 86_400))
}

fn store(e: tokens::StoreError) -> Fail {
    let exit = if matches!(&e, tokens::StoreError::Io(_, io) if io.kind() == std::io::ErrorKind::PermissionDenied)
        || matches!(e, tokens::StoreError::Unsafe(_))
    {
        exit::PERMISSION
    } else if e.is_not_found() {
        exit::NOT_FOUND
    } else {
        exit::OTHER
    };
    Fail::new(
        "token_store",
        exit,
        e.to_string(),
        "tokens need the daemon's data directory (--data-dir or WORKNODE_DATA_DIR, as the daemon was started) and its user",
    )
}

fn token_json(t: &Token, revoked: bool, now: u64) -> Value {
    json!({
        "id": t.id.to_string(),
        "agent": t.agent,
        "rights": t.rights.to_string(),
        "subtree": t.subtree.map(|u| u.to_string()),
        "expires_ms": t.expires_ms,
        "expired": now >= t.expires_ms,
        "revoked": revoked,
    })
}

/// Runs `wn token …`.
pub fn run(ctx: &Ctx, cmd: &TokenCmd) -> Result<(), Fail> {
    let dir = ctx.data_dir();
    match cmd {
        TokenCmd::Mint(a) => {
            // The first token makes the key (a daemon without a journal has none yet);
            // the daemon reads it from here when it verifies.
            worknoded::journal::store::ensure_private_dir(&dir).map_err(|e| {
                Fail::new("token_store", exit::OTHER, e.to_string(), "use the daemon's data directory (--data-dir)")
            })?;
            let (key, created) = tokens::ensure_key(&dir).map_err(store)?;
            if created {
                eprintln!("wn: created the token key {}", dir.join(tokens::KEY_FILE).display());
            }
            let rights: Rights = a.rights.parse().map_err(|e: worknode::TokenError| {
                Fail::usage(
                    format!("--rights: {e}"),
                    "rights are read, create, claim, update, doc, emit, message, reserve, admin, or all",
                )
            })?;
            let subtree = match &a.under {
                Some(spec) => {
                    let seg = ctx.attach_ro()?;
                    Some(seg.read(resolve::node(&seg, spec)?)?.uuid())
                }
                None => None,
            };
            let expires = now_ms().saturating_add(u64::try_from(a.ttl.as_millis()).unwrap_or(u64::MAX));
            let agent = ctx.agent.as_deref().ok_or_else(|| {
                Fail::usage(
                    "a token is for an agent, and none was named",
                    "pass --agent NAME: the agent the holder acts as",
                )
            })?;
            let (t, text) = worknode::mint(&key, agent, rights, subtree, expires).map_err(|e| {
                Fail::usage(format!("--agent: {e}"), "an agent name is 1 to 64 bytes without control characters")
            })?;
            tokens::record_issued(&dir, &t).map_err(store)?;
            if ctx.json {
                let mut v = token_json(&t, false, now_ms());
                v["token"] = json!(text);
                return print_json(&v);
            }
            print(&text)
        }
        TokenCmd::Ls => {
            let issued = tokens::list_issued(&dir).map_err(store)?;
            let revoked = tokens::load_revoked(&dir).map_err(store)?;
            let now = now_ms();
            if ctx.json {
                let list: Vec<Value> = issued.iter().map(|t| token_json(t, revoked.contains(&t.id), now)).collect();
                return print_json(&json!({ "tokens": list, "count": issued.len() }));
            }
            let s = &ctx.style;
            if issued.is_empty() {
                return print(&s.dim("(no tokens issued; mint one with `wn token mint`)"));
            }
            let mut t = s.table(&["ID", "AGENT", "RIGHTS", "SUBTREE", "EXPIRES", "STATE"]);
            for tok in &issued {
                let state = if revoked.contains(&tok.id) {
                    "revoked"
                } else if now >= tok.expires_ms {
                    "expired"
                } else {
                    "valid"
                };
                t.add_row(vec![
                    Cell::new(tok.id.to_string()),
                    Cell::new(clean(&tok.agent)),
                    Cell::new(tok.rights.to_string()),
                    Cell::new(tok.subtree.map_or_else(|| "-".into(), |u| u.to_string())),
                    Cell::new(crate::duration::relative(now, tok.expires_ms)),
                    Cell::new(state),
                ]);
            }
            print(&s.render(t))
        }
        TokenCmd::Revoke(a) => {
            let id: TokenId = a.id.parse().map_err(|_| {
                Fail::usage(format!("{:?} is not a token id", a.id), "an id is 32 hex digits, as `wn token ls` shows")
            })?;
            // Revoking needs the key's owner too: the key file is the gate.
            tokens::load_key(&dir).map_err(store)?;
            tokens::revoke(&dir, id).map_err(store)?;
            if ctx.json {
                return print_json(&json!({ "revoked": id.to_string() }));
            }
            print(&format!("revoked {id}"))
        }
    }
}
