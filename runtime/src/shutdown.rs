//! Graceful shutdown: every binary stops on SIGTERM (the kubelet's stop) or
//! Ctrl-C, finishing the work in flight instead of dying mid-write.

use tokio::sync::watch;

/// Resolves on SIGTERM or Ctrl-C. Where SIGTERM cannot be watched, only
/// Ctrl-C stops it.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// A `watch` receiver that turns `true` once [`shutdown_signal`] resolves, for
/// code that polls a stop flag in several tasks (the device plugin's servers).
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    stop
}
