//! Waiting for SIGINT (Ctrl-C) or SIGTERM, the signals that ask the server to stop.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Registers the SIGINT and SIGTERM handlers *now* (so a signal that arrives while the server
/// is still starting is not lost and does not kill it half-way), and returns a future that
/// completes at the first of them.
pub fn signal_received() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down: finishing requests in flight");
    })
}
