//! `wn serve --listen 127.0.0.1:PORT`: the board over HTTP (issue 17), on axum.
//!
//! A client of the segment like every other front end: it attaches, acts as agents,
//! and a crash here never touches the daemon. The parts:
//!
//! * [`handlers`]: the REST endpoints, each a few lines over a library call, in the
//!   CLI's `--json` shapes; claims are held by their leases, fenced by the epoch the
//!   client presents (see that module);
//! * [`sse`]: `GET /api/events`, JSON or a Server-Sent Events stream with resume;
//! * [`auth`]: whom a request acts as (the server's agent, or a bearer token's);
//! * [`error`]: failures as JSON with the CLI's codes and the matching HTTP status;
//! * [`origin`]: `Host` and `Origin` checks against CSRF and DNS rebinding;
//! * [`listener`]: the bound on open connections;
//! * [`openapi`]: `/api/openapi.json`, derived from the handlers;
//! * [`dashboard`]: the page at `/`.
//!
//! Bounds: request bodies at most [`error::BODY_LIMIT`] (413 beyond), at most
//! `--max-connections` connections (503 `busy` beyond), `--max-streams` event streams,
//! each with a buffer of [`sse::STREAM_BUFFER`] events (then `lagged`), a connection
//! silent for [`HEADER_READ_TIMEOUT`] closed, waits (`wait_s`) at most
//! [`handlers::WAIT_MAX_S`]; requests only for the bound address, changes only from no
//! or the server's own `Origin`, bodies only as JSON ([`origin`]).

mod auth;
mod dashboard;
mod error;
mod handlers;
mod listener;
mod openapi;
mod origin;
mod sse;

use crate::ctx::Ctx;
use crate::fail::Fail;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Options of `wn serve`. Without tokens every request acts as `--agent` (default
/// `http`); with them, as the token's agent.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed). Only a
    /// loopback address unless --require-tokens.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7878")]
    listen: std::net::SocketAddr,
    /// Every request must carry `Authorization: Bearer TOKEN` (`wn token mint`) and
    /// acts as that token's agent (on by itself when the daemon requires tokens).
    #[arg(long)]
    require_tokens: bool,
    /// Connections served at once (more are answered 503).
    #[arg(long, value_name = "N", default_value = "256", value_parser = crate::duration::number(1, 65536, "connections"))]
    max_connections: u64,
    /// Event streams open at once (more are answered 503).
    #[arg(long, value_name = "N", default_value = "64", value_parser = crate::duration::number(1, 4096, "event streams"))]
    max_streams: u64,
}

/// What every handler shares.
pub struct App {
    /// Whom requests act as.
    actors: Arc<auth::Actors>,
    /// Event streams still allowed.
    streams: Arc<Semaphore>,
}

/// The routes.
fn router(app: Arc<App>, bound: std::net::SocketAddr) -> Router {
    use handlers as h;
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard.css", get(dashboard::style))
        .route("/dashboard.js", get(dashboard::script))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/tasks", get(h::list_tasks).post(h::create_task))
        .route("/api/tasks/{id}", get(h::get_task).put(h::update_task).delete(h::delete_task))
        .route("/api/tasks/{id}/claim", post(h::claim_task))
        .route("/api/tasks/{id}/complete", post(h::complete))
        .route("/api/tasks/{id}/fail", post(h::fail))
        .route("/api/tasks/{id}/progress", post(h::progress))
        .route("/api/tasks/{id}/documents", get(h::list_documents))
        .route("/api/tasks/{id}/documents/{name}", put(h::put_document))
        .route("/api/claim", post(h::claim_next))
        .route("/api/agents", get(h::list_agents))
        .route("/api/agents/{name}/tasks", get(h::agent_tasks))
        .route("/api/query", post(h::query))
        .route("/api/documents/{id}", get(h::get_document))
        .route("/api/messages", get(h::inbox).post(h::send))
        .route("/api/messages/{id}/ack", post(h::ack))
        .route("/api/analytics/progress", get(h::analytics_progress))
        .route("/api/analytics/pipeline", get(h::analytics_pipeline))
        .route("/api/events", get(sse::get_events).post(h::post_event))
        .route("/metrics", get(h::metrics))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(DefaultBodyLimit::max(error::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(Arc::new(origin::Origins::of(bound)), origin::guard))
        .with_state(app)
}

/// Serves until SIGINT or SIGTERM.
pub fn run(ctx: &Ctx, a: &ServeArgs) -> Result<(), Fail> {
    let probe = ctx.attach_ro()?;
    let tokens = a.require_tokens || probe.tokens_required();
    drop(probe);
    auth::check_bind(a.listen, tokens)?;
    let actors = Arc::new(auth::Actors::new(ctx, tokens)?);
    let app = Arc::new(App { actors, streams: Arc::new(Semaphore::new(a.max_streams as usize)) });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fail::other(format!("cannot start the HTTP runtime: {e}")))?;
    let served: Result<(), Fail> = rt.block_on(async {
        let tcp = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| {
            Fail::new(
                "os_error",
                crate::fail::exit::OTHER,
                format!("cannot listen on {}: {e}", a.listen),
                "pick a free port (--listen 127.0.0.1:0 picks one and prints it)",
            )
        })?;
        let addr = tcp.local_addr().map_err(|e| Fail::other(format!("cannot read the bound address: {e}")))?;
        // The first line of output: a script (or a test) reads the port from it.
        crate::output::print(&format!("listening on http://{addr}{}", if tokens { " (tokens required)" } else { "" }))?;
        let listener = listener::Bounded::new(tcp, a.max_connections as usize);
        serve(listener, router(app, addr)).await;
        Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    served
}

/// How long a connection may take to send a request's headers, counted from when it
/// starts waiting for a request: hyper's timer runs from the end of the last answer,
/// so this also closes a keep-alive connection idle this long. It frees the slot of a
/// slow or silent client (each holds one of `--max-connections`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves each connection `listener` accepts with hyper's HTTP/1 server (a Tokio timer,
/// [`HEADER_READ_TIMEOUT`]) until SIGINT or SIGTERM, then gives the requests in flight a
/// second and goes (open event streams do not end by themselves).
async fn serve(mut listener: listener::Bounded, app: Router) {
    use axum::serve::Listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            (conn, _) = listener.accept() => conn,
            () = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let served = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(conn), service));
        // A connection's failure (a reset, a header timeout) is its own: nothing to report.
        tokio::spawn(async move {
            let _ = served.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
