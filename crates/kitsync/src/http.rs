//! The HTTP listener behind `serve`, `ingress` and `metrics.addr`: hyper's HTTP/1.1 server
//! with the bounds a public endpoint needs, which `axum::serve` does not set.
//!
//! - The request head must arrive within `http.header_read_timeout_ms` (a client trickling
//!   headers a byte at a time holds a connection for no longer) and fit in
//!   `http.max_header_bytes`.
//! - At most `http.max_connections` connections are open; one more is closed as soon as it is
//!   accepted, before anything is read from it.
//! - Shutdown stops accepting, lets requests in flight finish (idle keep-alive connections
//!   are closed), and gives up on stragglers after [`DRAIN_LIMIT`].
//!
//! Bodies, concurrency and per-request deadlines are bounded by the routers themselves (the
//! ingress's `[kit]` and the API's `[api]` limits), where each answers with its own error.
use crate::settings::HttpSettings;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How long shutdown waits for requests in flight.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// hyper's smallest read buffer.
const MIN_BUF: usize = 8 * 1024;

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `shutdown` turns true.
///
/// # Errors
/// Never for a single connection's failure (logged at debug); only if the listener itself
/// cannot go on.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(
            settings.header_read_timeout_ms.max(1),
        ))
        .max_buf_size(settings.max_header_bytes.max(MIN_BUF))
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(
        settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut refused_logged = false;
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            if !refused_logged {
                tracing::warn!(
                    max = settings.max_connections,
                    "connection limit reached (http.max_connections): closing new connections"
                );
                refused_logged = true;
            }
            drop(stream);
            continue;
        };
        refused_logged = false;
        // Callbacks and API answers are small: send them without Nagle's delay.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_LIMIT) => {
            tracing::warn!("requests still in flight after {DRAIN_LIMIT:?}; closing their connections");
        }
    }
    Ok(())
}
