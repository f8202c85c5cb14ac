//! Whom a request acts as.
//!
//! Without tokens the server is bound to loopback, and every request acts as the
//! server's own agent (`--agent`, default `http`), joined when the server starts.
//!
//! With tokens (`wn serve --require-tokens`, or a daemon run with `--require-tokens`),
//! every request carries `Authorization: Bearer TOKEN` and acts as that token's agent on
//! a handle of its own, attached as `wn --token` attaches (directly, the daemon verifying
//! the token, or through the broker): every change is then checked against the token's
//! rights and subtree by the library, exactly as a brokered write is. Handles are kept
//! for [`TOKENS_CACHED`] tokens at most (the least recently verified is dropped first),
//! and each is verified again after [`REVERIFY`], so a revoked token stops working
//! within that time.

use super::error::ApiError;
use crate::ctx::Ctx;
use crate::fail::{exit, Fail};
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worknode::{AgentId, Segment};

/// Token handles kept at once.
pub const TOKENS_CACHED: usize = 64;

/// How long a verified token is trusted before the daemon is asked again.
pub const REVERIFY: Duration = Duration::from_secs(30);

/// The longest `Authorization` header read.
const TOKEN_MAX: usize = 4096;

/// An agent a request acts as: its handle of the segment, and its identity there.
pub struct Actor {
    /// The handle: the server's, or the token's own (checked against it).
    pub seg: Segment,
    /// The agent.
    pub me: AgentId,
    /// Its name.
    pub name: String,
}

/// A token's handle, and when it was verified.
struct Verified {
    actor: Arc<Actor>,
    at: Instant,
}

/// The agents requests act as.
pub struct Actors {
    /// The server's own agent; none when every request must carry a token.
    server: Option<Arc<Actor>>,
    /// How to attach with a token: the server's global options.
    segment: String,
    role: String,
    data_dir: Option<std::path::PathBuf>,
    tokens: Mutex<HashMap<String, Verified>>,
}

impl Actors {
    /// The server acting as `ctx`'s agent (default `http`) unless a token is required.
    pub fn new(ctx: &Ctx, required: bool) -> Result<Actors, Fail> {
        let server = if required {
            None
        } else {
            let name = ctx.agent.clone().unwrap_or_else(|| "http".to_string());
            let agent_ctx = Ctx { agent: Some(name.clone()), ..copy(ctx) };
            let seg = agent_ctx.attach_rw()?;
            let me = agent_ctx.me(&seg)?;
            let name = seg.grant().map_or(name, |g| g.agent().to_string());
            Some(Arc::new(Actor { seg, me, name }))
        };
        Ok(Actors {
            server,
            segment: ctx.segment.clone(),
            role: ctx.role.clone(),
            data_dir: ctx.data_dir.clone(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Whom the request with these headers acts as. Attaching for a new token talks to
    /// the daemon: it runs on a blocking thread.
    pub async fn of(self: &Arc<Self>, headers: &HeaderMap) -> Result<Arc<Actor>, ApiError> {
        let Some(token) = bearer(headers)? else {
            return self.server.clone().ok_or_else(|| {
                ApiError(Fail::new(
                    "unauthorized",
                    exit::PERMISSION,
                    "this server requires a capability token",
                    "send `Authorization: Bearer TOKEN` (mint one with `wn token mint --agent NAME --rights read,...`)",
                ))
            });
        };
        if let Some(v) = self.lock().get(&token) {
            if v.at.elapsed() < REVERIFY {
                return Ok(Arc::clone(&v.actor));
            }
        }
        let me = Arc::clone(self);
        let t = token.clone();
        let actor = tokio::task::spawn_blocking(move || me.attach(&t))
            .await
            .map_err(|e| ApiError(Fail::other(format!("verifying the token stopped: {e}"))))?
            .map_err(|f| {
                ApiError(Fail { code: if f.exit == exit::PERMISSION { "unauthorized" } else { f.code }, ..f })
            })?;
        let mut tokens = self.lock();
        if tokens.len() >= TOKENS_CACHED && !tokens.contains_key(&token) {
            if let Some(oldest) = tokens.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone()) {
                tokens.remove(&oldest);
            }
        }
        tokens.insert(token, Verified { actor: Arc::clone(&actor), at: Instant::now() });
        Ok(actor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle acting under `token`, as `wn --token` attaches.
    fn attach(&self, token: &str) -> Result<Arc<Actor>, Fail> {
        let ctx = Ctx {
            segment: self.segment.clone(),
            agent: None,
            role: self.role.clone(),
            role_given: false,
            json: true,
            style: crate::output::Style { color: false },
            data_dir: self.data_dir.clone(),
            token: Some(token.to_string()),
        };
        let seg = ctx.attach_rw()?;
        let me = ctx.me(&seg)?;
        let name = seg.grant().map(|g| g.agent().to_string()).unwrap_or_default();
        Ok(Arc::new(Actor { seg, me, name }))
    }
}

/// The global options of `ctx`, copied.
fn copy(ctx: &Ctx) -> Ctx {
    Ctx {
        segment: ctx.segment.clone(),
        agent: ctx.agent.clone(),
        role: ctx.role.clone(),
        role_given: ctx.role_given,
        json: ctx.json,
        style: ctx.style,
        data_dir: ctx.data_dir.clone(),
        token: ctx.token.clone(),
    }
}

/// The bearer token of the request, if it carries one.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else { return Ok(None) };
    let malformed = || {
        ApiError(Fail::new(
            "unauthorized",
            exit::PERMISSION,
            "the Authorization header is not `Bearer TOKEN`",
            "send `Authorization: Bearer TOKEN` with a token from `wn token mint`",
        ))
    };
    if v.len() > TOKEN_MAX {
        return Err(malformed());
    }
    let text = v.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.to_string()))
}

/// Whether serving `addr` is allowed: loopback always; any other address only with
/// tokens.
pub fn check_bind(addr: std::net::SocketAddr, tokens: bool) -> Result<(), Fail> {
    if addr.ip().is_loopback() || tokens {
        return Ok(());
    }
    Err(Fail::new(
        "permission_denied",
        exit::PERMISSION,
        format!("refusing to serve {addr} without tokens: anyone who reaches it could change the board"),
        "bind a loopback address (--listen 127.0.0.1:PORT), or pass --require-tokens so every request needs `Authorization: Bearer TOKEN`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn a_bearer_token_is_read_and_anything_else_refused() {
        assert_eq!(bearer(&HeaderMap::new()).ok().flatten(), None);
        assert_eq!(bearer(&headers("Bearer wnt1.abc")).ok().flatten().as_deref(), Some("wnt1.abc"));
        assert_eq!(bearer(&headers("bearer  wnt1.abc ")).ok().flatten().as_deref(), Some("wnt1.abc"));
        for bad in ["Basic dXNlcjpwdw==", "Bearer", "Bearer ", "wnt1.abc"] {
            let e = bearer(&headers(bad)).err().unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(e.0.code, "unauthorized", "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(TOKEN_MAX));
        assert!(bearer(&headers(&long)).is_err());
    }

    #[test]
    fn only_loopback_is_served_without_tokens() {
        assert!(check_bind("127.0.0.1:80".parse().unwrap(), false).is_ok());
        assert!(check_bind("[::1]:80".parse().unwrap(), false).is_ok());
        assert_eq!(check_bind("0.0.0.0:80".parse().unwrap(), false).unwrap_err().exit, exit::PERMISSION);
        assert!(check_bind("0.0.0.0:80".parse().unwrap(), true).is_ok());
    }
}
