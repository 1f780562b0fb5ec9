//! The API's connections, bounded: at most `api.max_connections` open at
//! once (past them new ones wait in the listen backlog), each must send a
//! request's headers within `api.header_timeout` (an idle keep-alive
//! connection is closed after it too), and a request, its body included,
//! is answered or given up after `api.request_timeout`. Half-open
//! connections no longer pile up until file descriptors run out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Bounds on the API's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers (and to start the next one on a
    /// kept-alive connection).
    pub header_timeout: Duration,
    /// Time to send a body and get the answer.
    pub request_timeout: Duration,
}

/// Answers `408` for a request not done within `limit` (a body sent too
/// slowly, or a handler that takes too long).
async fn bounded(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => super::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request was not done within {}s (api.request_timeout)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets the
/// open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let router = router.layer(axum::middleware::from_fn(move |r, n| {
        bounded(limits.request_timeout, r, n)
    }));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors, or the peer gone already
                    warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended");
            }
        });
        // the tasks of connections that ended
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}
