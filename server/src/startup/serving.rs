//! The serving loop: accepted connections handed to hyper, until shutdown.
//!
//! Connections are served by hyper's HTTP/1 connection builder with a header read timeout
//! (`FERRY_HEADER_READ_TIMEOUT_MS`): a client that sends its request line and headers too
//! slowly is disconnected, since the request timeout only starts once the headers are in.
//!
//! hyper answers a head it will not buffer (too many headers, too many bytes, a target over
//! 64 KiB) with a bare status and no body, before any service runs. Its ceilings are raised
//! here ([`HYPER_MAX_HEADERS`], [`HYPER_MAX_HEADER_BYTES`]) far above Ferry's own limits, which
//! [`crate::http::limit_request_head`] enforces with an answer in the JSON error shape.
//! Shutdown is graceful: no new connection is accepted, and each open one finishes the
//! request it is in.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The most headers hyper parses before answering a bare 431 (its default is 100, Ferry's
/// own limit [`crate::http::MAX_REQUEST_HEADERS`]). Beyond the default, hyper keeps the
/// header slots on the heap, not the stack: a few percent per request, measured by hyper.
pub const HYPER_MAX_HEADERS: usize = 1_000;

/// The most bytes of request head (request line and headers) hyper buffers before answering
/// a bare 431 (Ferry's own limit is [`crate::http::MAX_REQUEST_HEADER_BYTES`]).
pub const HYPER_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Serves `router` on `listener` over HTTP/1.1, each connection in its own task, until
/// `shutdown` completes; then stops accepting, lets every connection finish the request it is
/// in (idle ones close at once) and returns when all are closed.
///
/// A connection that has not sent a whole request head `header_read_timeout` after the server
/// started waiting for one (a new connection, or an idle keep-alive one) is closed.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_header_size(HYPER_MAX_HEADER_BYTES)
        // The read buffer must hold the largest head hyper accepts, and a little body after it.
        .max_buf_size(HYPER_MAX_HEADER_BYTES + 64 * 1024);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::trace!(%peer, "connection accepted");
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::debug!(
        connections = connections.count(),
        "no longer accepting; waiting for open connections"
    );
    connections.shutdown().await;
}

/// Whether an `accept` error concerns only the one connection (the next accept may succeed).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
