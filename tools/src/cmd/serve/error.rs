//! Errors over HTTP: the CLI's [`Fail`] (code, message, hint) as a JSON body
//! `{"error": {"code", "message", "hint", "exit"}}` with the HTTP status its exit code
//! stands for, and the request extractors whose refusals (malformed JSON, a wrong type,
//! an oversized body, a bad query string) come out the same way.

use crate::fail::{exit, Fail};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// A failed request: the CLI's failure, answered as JSON.
pub struct ApiError(pub Fail);

impl From<Fail> for ApiError {
    fn from(f: Fail) -> ApiError {
        ApiError(f)
    }
}

/// The largest request body accepted (bytes): a document or a message fits with room.
pub const BODY_LIMIT: usize = 1 << 20;

/// The HTTP status for a failure: by its code where HTTP has a closer word, else by the
/// CLI's exit code.
pub fn status_of(f: &Fail) -> StatusCode {
    match f.code {
        "too_large" => return StatusCode::PAYLOAD_TOO_LARGE,
        "unauthorized" => return StatusCode::UNAUTHORIZED,
        "busy" => return StatusCode::SERVICE_UNAVAILABLE,
        "method_not_allowed" => return StatusCode::METHOD_NOT_ALLOWED,
        "wrong_host" => return StatusCode::MISDIRECTED_REQUEST,
        "unsupported_media_type" => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => {}
    }
    match f.exit {
        exit::USAGE => StatusCode::BAD_REQUEST,
        exit::CONFLICT => StatusCode::CONFLICT,
        exit::NOT_FOUND => StatusCode::NOT_FOUND,
        exit::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        exit::PERMISSION => StatusCode::FORBIDDEN,
        exit::FULL => StatusCode::INSUFFICIENT_STORAGE,
        exit::DAEMON_GONE => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body of a failure.
pub fn error_body(f: &Fail) -> serde_json::Value {
    let mut e = json!({ "code": f.code, "message": f.message, "hint": f.hint, "exit": f.exit });
    if let Some(d) = &f.details {
        e["details"] = d.clone();
    }
    json!({ "error": e })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(&self.0), axum::Json(error_body(&self.0))).into_response()
    }
}

/// A request body parsed as JSON into `T`; an empty body reads as `{}` (so a body of
/// optional fields may be left out). A non-empty body must be sent as
/// `Content-Type: application/json` (415 otherwise): a web page can send a plain-text or
/// form body cross-site without a preflight, but not a JSON one (see [`super::origin`]).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(is_json);
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| ApiError(body_refused(&e)))?;
        let empty = bytes.iter().all(u8::is_ascii_whitespace);
        if !empty && !json_type {
            return Err(ApiError(Fail::new(
                "unsupported_media_type",
                exit::USAGE,
                "a request body must be sent as Content-Type: application/json",
                "add -H 'Content-Type: application/json' (curl -d sends a form type by default)",
            )));
        }
        let text: &[u8] = if empty { b"{}" } else { &bytes };
        serde_json::from_slice(text).map(Body).map_err(|e| {
            let hint = "send a JSON object; /api/openapi.json gives each endpoint's fields and types";
            let what = match e.classify() {
                serde_json::error::Category::Data => "wrong JSON fields",
                _ => "malformed JSON",
            };
            ApiError(Fail::usage(format!("{what}: {e}"), hint))
        })
    }
}

/// Whether a `Content-Type` is JSON (`application/json`, any parameters such as a charset).
fn is_json(v: &axum::http::HeaderValue) -> bool {
    let essence = v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Why a body could not be read: too large (413), or cut off.
fn body_refused(e: &BytesRejection) -> Fail {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Fail::new(
            "too_large",
            exit::USAGE,
            format!("the request body is over the limit of {BODY_LIMIT} bytes"),
            "send less: store a large text as several documents",
        );
    }
    Fail::usage(format!("the request body could not be read: {}", e.body_text()), "send the whole body")
}

/// A query string parsed into `T`, a bad one refused with the CLI's `usage` code.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        parse_query(q).map(Params)
    }
}

/// Path segments parsed into `T` (a `String` or a tuple of them), a bad one (not UTF-8
/// once percent-decoded, say) refused as JSON with the CLI's `usage` code.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(e) => Err(ApiError(Fail::usage(
                format!("bad path: {}", e.body_text()),
                "percent-encode the id as UTF-8 (a UUID, a unique prefix, or a /path)",
            ))),
        }
    }
}

/// Parses a query string through axum's `Query` (serde_urlencoded), mapping its refusal.
fn parse_query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| {
        ApiError(Fail::usage("the query string is malformed", "percent-encode the values of the query string"))
    })?;
    axum::extract::Query::<T>::try_from_uri(&uri).map(|q| q.0).map_err(|e| {
        ApiError(Fail::usage(
            format!("bad query parameters: {}", e.body_text()),
            "/api/openapi.json lists each endpoint's parameters and their types",
        ))
    })
}

/// The answer for a path no route serves.
pub async fn no_route() -> ApiError {
    ApiError(Fail::new(
        "not_found",
        exit::NOT_FOUND,
        "no such endpoint",
        "the endpoints are listed in /api/openapi.json; the dashboard is at /",
    ))
}

/// The answer for a method a route does not take.
pub async fn wrong_method() -> ApiError {
    ApiError(Fail::new(
        "method_not_allowed",
        exit::USAGE,
        "this endpoint does not take that method",
        "/api/openapi.json lists each endpoint's methods",
    ))
}

/// The answer when the server is at its bound of requests in flight.
pub fn busy(what: &str) -> Fail {
    Fail::new(
        "busy",
        exit::FULL,
        format!("the server is at its limit of {what}"),
        "retry shortly; raise the limit with `wn serve --max-connections N` if the host can take more",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_exit_code_has_its_status() {
        let of = |code: &'static str, exit: u8| status_of(&Fail::new(code, exit, "m", "h")).as_u16();
        assert_eq!(of("usage", exit::USAGE), 400);
        assert_eq!(of("stale_epoch", exit::CONFLICT), 409);
        assert_eq!(of("node_not_found", exit::NOT_FOUND), 404);
        assert_eq!(of("timeout", exit::TIMEOUT), 504);
        assert_eq!(of("token_lacks_right", exit::PERMISSION), 403);
        assert_eq!(of("unauthorized", exit::PERMISSION), 401);
        assert_eq!(of("pool_full", exit::FULL), 507);
        assert_eq!(of("busy", exit::FULL), 503);
        assert_eq!(of("too_large", exit::USAGE), 413);
        assert_eq!(of("daemon_gone", exit::DAEMON_GONE), 503);
        assert_eq!(of("error", exit::OTHER), 500);
    }

    #[test]
    fn the_error_body_carries_code_message_hint_and_details() {
        let f = Fail::new("usage", exit::USAGE, "bad", "do this").with_details(json!({ "x": 1 }));
        let v = error_body(&f);
        assert_eq!(
            v,
            json!({ "error": { "code": "usage", "message": "bad", "hint": "do this", "exit": 2, "details": { "x": 1 } } })
        );
    }
}
