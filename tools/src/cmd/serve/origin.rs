//! Who may send a request at all: the defence against a web page in the operator's
//! browser acting as the server's agent (CSRF) and against DNS rebinding.
//!
//! * `Host` must name the bound address (`IP:PORT`, or `localhost:PORT` when bound to
//!   loopback), else `421 wrong_host`: a rebound name (`evil.example:7878` resolving to
//!   127.0.0.1) carries its own name in `Host` and is refused. When bound to an
//!   unspecified address (`0.0.0.0`, only with tokens required) any `Host` is taken:
//!   the server cannot know its names, and a browser never attaches a bearer token by
//!   itself, so a foreign page has nothing to act with.
//! * A request that changes something (any method but GET and HEAD) carrying an
//!   `Origin` other than the server's own (`http://` + the `Host` it sent) is refused
//!   `403 cross_origin`. Browsers send `Origin` on every cross-site POST/PUT/DELETE;
//!   curl and the SDKs send none.
//! * A request body must be `Content-Type: application/json` (see
//!   [`super::error::Body`]), so a page cannot send one without a CORS preflight,
//!   which this server never grants.

use super::error::ApiError;
use crate::fail::{exit, Fail};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The `Host` values this server answers to (empty: any, when bound to an unspecified address).
pub struct Origins {
    hosts: Vec<String>,
}

impl Origins {
    /// The names of `bound`, the address actually listened on.
    pub fn of(bound: SocketAddr) -> Origins {
        if bound.ip().is_unspecified() {
            return Origins { hosts: Vec::new() };
        }
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{}", bound.port()));
        }
        Origins { hosts }
    }

    /// Whether `host` (a `Host` header) names this server.
    fn answers_to(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// Refuses a request for another host, or a cross-site change, before any handler runs.
pub async fn guard(State(o): State<Arc<Origins>>, req: Request, next: Next) -> Response {
    match check(&o, &req) {
        Ok(()) => next.run(req).await,
        Err(f) => ApiError(f).into_response(),
    }
}

fn check(o: &Origins, req: &Request) -> Result<(), Fail> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !o.answers_to(host) {
        return Err(Fail::new(
            "wrong_host",
            exit::PERMISSION,
            format!("this server does not answer to the host {host:?}"),
            format!("address it by its bound address ({}); a rebound DNS name is refused", o.hosts.join(" or ")),
        ));
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Ok(());
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let own = format!("http://{host}");
    if origin.to_str().is_ok_and(|v| v.eq_ignore_ascii_case(&own)) {
        return Ok(());
    }
    Err(Fail::new(
        "cross_origin",
        exit::PERMISSION,
        format!("a request from the page at {:?} may not change the board", String::from_utf8_lossy(origin.as_bytes())),
        format!("only the dashboard ({own}) and clients without an Origin header (curl, the SDKs) may send changes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, host: &str, origin: Option<&str>) -> Request {
        let mut b = Request::builder().method(method).uri("/api/tasks").header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_the_bound_host_and_its_own_origin_pass() {
        let o = Origins::of("127.0.0.1:7878".parse().unwrap());
        assert!(check(&o, &req(Method::GET, "127.0.0.1:7878", None)).is_ok());
        assert!(check(&o, &req(Method::GET, "localhost:7878", None)).is_ok());
        assert_eq!(check(&o, &req(Method::GET, "evil.example:7878", None)).unwrap_err().code, "wrong_host");
        assert_eq!(check(&o, &req(Method::GET, "127.0.0.1:80", None)).unwrap_err().code, "wrong_host");
        assert!(check(&o, &req(Method::POST, "127.0.0.1:7878", Some("http://127.0.0.1:7878"))).is_ok());
        assert!(check(&o, &req(Method::POST, "127.0.0.1:7878", None)).is_ok());
        let cross = check(&o, &req(Method::POST, "127.0.0.1:7878", Some("http://evil.example"))).unwrap_err();
        assert_eq!(cross.code, "cross_origin");
        assert_eq!(check(&o, &req(Method::DELETE, "127.0.0.1:7878", Some("null"))).unwrap_err().code, "cross_origin");
        assert!(check(&o, &req(Method::GET, "127.0.0.1:7878", Some("http://evil.example"))).is_ok());
        let any = Origins::of("0.0.0.0:7878".parse().unwrap());
        assert!(check(&any, &req(Method::GET, "box.lan:7878", None)).is_ok());
    }
}
