//! `GET /api/events`: the event ring as JSON for a one-off read, or as a Server-Sent
//! Events stream when the client asks for `text/event-stream`.
//!
//! A stream is one ring reader on a thread of its own (it parks on the ring's futex
//! between events), feeding a bounded channel of [`STREAM_BUFFER`] events that the
//! response body drains as the client reads. Each event goes out with `id:` = its ring
//! sequence, so a client that reconnects with `Last-Event-ID` resumes right after the
//! last event it saw (while the ring still holds it).
//!
//! Nothing grows without bound: when the client reads too slowly and the channel is
//! full, events are dropped and counted, and as soon as there is room again the client
//! gets one `lagged` event `{missed, resume_at}` (the same word as when the ring itself
//! overwrote events before the reader got to them). A ring that cannot be read on ends
//! the stream with one `error` message (the JSON error body). Streams are limited to
//! `--max-streams` at once; one more is refused with `busy` (503).

use super::error::{busy, ApiError, Params};
use super::handlers::{events_once, EventParams, Reply};
use super::App;
use crate::cmd::events::event_json;
use crate::fail::Fail;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use worknode::{RingError, Start, Wait};

/// Events buffered per stream before a slow client starts losing them.
pub const STREAM_BUFFER: usize = 256;

/// The most events one skip passes over.
const SKIP_MAX: usize = 1 << 16;

/// How often a parked reader looks whether its client is gone.
const CHECK_CLIENT: Duration = Duration::from_millis(200);

/// Reads events once (JSON), or streams them (SSE).
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "stream: resume after this sequence")),
    responses((status = 200, description = "JSON `{events, count, next, tail, lagged}`; or with `Accept: text/event-stream` a stream of `event` messages (`id:` = ring sequence, data = the event as `wn events --json`) and `lagged` messages `{missed, resume_at}`"),
              (status = 503, description = "too many streams", body = super::handlers::ErrorBody)))]
pub async fn get_events(State(app): State<Arc<App>>, headers: HeaderMap, Params(p): Params<EventParams>) -> Response {
    let wants_stream =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        let reply: Reply = match app.actors.of(&headers).await {
            Ok(a) => super::handlers::blocking(a, move |a| events_once(a, &p)).await.map(axum::Json).map_err(ApiError),
            Err(e) => Err(e),
        };
        return reply.into_response();
    }
    match stream(&app, &headers, &p).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Where a stream starts: after `Last-Event-ID`, else at `since`, else now.
fn start_of(headers: &HeaderMap, p: &EventParams) -> Result<Start, Fail> {
    if let Some(v) = headers.get("last-event-id") {
        let id = v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok()).ok_or_else(|| {
            Fail::usage("Last-Event-ID is not a ring sequence number", "send back the `id:` of the last event received")
        })?;
        return Ok(Start::At(id.saturating_add(1)));
    }
    Ok(p.since.map_or(Start::Now, Start::At))
}

async fn stream(app: &App, headers: &HeaderMap, p: &EventParams) -> Result<Response, ApiError> {
    let actor = app.actors.of(headers).await?;
    let start = start_of(headers, p)?;
    let permit = Arc::clone(&app.streams).try_acquire_owned().map_err(|_| ApiError(busy("event streams")))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SseEvent>(STREAM_BUFFER);
    std::thread::Builder::new()
        .name("wn-serve-sse".into())
        .spawn(move || {
            let _permit = permit;
            feed(&actor.seg, start, &tx);
        })
        .map_err(|e| ApiError(Fail::other(format!("cannot start an event stream: {e}"))))?;
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Reads the ring from `start` into `tx` until the client is gone.
fn feed(seg: &worknode::Segment, start: Start, tx: &tokio::sync::mpsc::Sender<SseEvent>) {
    let mut reader = seg.reader(start);
    // Events dropped since the client last had room, and where the next one starts.
    let mut missed: u64 = 0;
    while !tx.is_closed() {
        if missed > 0 {
            let lag = lagged(missed, reader.position());
            match tx.try_send(lag) {
                Ok(()) => missed = 0,
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(_)) => {
                    // Still no room: wait a little for the client, losing what comes meanwhile.
                    std::thread::sleep(Duration::from_millis(10));
                    missed += skip_ahead(&mut reader);
                    continue;
                }
            }
        }
        match reader.next(Wait::Park, CHECK_CLIENT) {
            Ok(e) => {
                let data = event_json(seg, &e).to_string();
                let msg = SseEvent::default().id(e.seq().to_string()).event("event").data(data);
                match tx.try_send(msg) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => missed += 1,
                    Err(TrySendError::Closed(_)) => return,
                }
            }
            Err(RingError::Timeout) => {}
            Err(RingError::Lagged { missed: m, .. }) => missed += m,
            Err(e) => {
                // The ring cannot be read on (a damaged slot): say why before the end.
                let f = Fail::from(e);
                let _ = tx.try_send(SseEvent::default().event("error").data(super::error::error_body(&f).to_string()));
                return;
            }
        }
    }
}

/// Skips every event the ring holds past the reader (they are lost to a full client).
/// At most a ring's worth a call: producers faster than the skip cannot hold it.
fn skip_ahead(reader: &mut worknode::Reader<'_>) -> u64 {
    let mut n = 0u64;
    for _ in 0..SKIP_MAX {
        match reader.try_next() {
            Ok(Some(_)) => n += 1,
            Ok(None) | Err(RingError::Timeout) => break,
            Err(RingError::Lagged { missed, .. }) => n += missed,
            Err(_) => break,
        }
    }
    n
}

/// The `lagged` message: how many events the client lost, and where the stream goes on.
fn lagged(missed: u64, resume_at: u64) -> SseEvent {
    SseEvent::default().event("lagged").data(json!({ "missed": missed, "resume_at": resume_at }).to_string())
}
