//! Logging set-up for every Phalanx binary: JSON lines in a cluster (what log
//! collectors parse), text on a terminal, always on stderr so that a command's
//! own output on stdout stays clean.

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global `tracing` subscriber: `RUST_LOG` when set, else the
/// config's level or filter, as JSON lines or text.
pub fn init_logging(logging: &LoggingConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&logging.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
