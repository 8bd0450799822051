//! Cancellation and task tracking for the drain: one root token, one tracker,
//! and the operating-system signals that start it.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The root token every session and background task watches, and the tracker
/// every one of them is spawned on, so the drain can wait for them.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the node starts draining.
    pub token: CancellationToken,
    /// Every session and background task.
    pub tracker: TaskTracker,
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "interrupt", "drain requested"),
        () = terminate => tracing::info!(signal = "terminate", "drain requested"),
    }
}
