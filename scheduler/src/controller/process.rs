//! What every Phalanx controller binary does around its loop: set up logging
//! from its config, and stop cleanly on SIGTERM (the kubelet's stop) or Ctrl-C.

use super::config::{LogFormat, LoggingConfig};

/// Installs the global `tracing` subscriber: `RUST_LOG` when set, else the
/// config's level or filter, as JSON lines or text.
pub fn init_logging(logging: &LoggingConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

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
