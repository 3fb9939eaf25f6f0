//! Watches that feed a controller's single-threaded loop through a channel.
//!
//! Each watch runs in its own task on kube-runtime's watcher with
//! [`recovery_backoff`], so a dropped connection or an expired resourceVersion
//! (410 Gone) becomes a relist (`Init`…`InitDone`) rather than an error the
//! loop must handle. The task ends when the loop drops its receiver.

use std::time::Duration;

use futures::StreamExt;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, watcher, Event, ExponentialBackoff};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::mpsc;

/// First retry after a watch error.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Error-free time after which the delays start from [`RETRY_MIN`] again.
const RETRY_RESET: Duration = Duration::from_secs(30);

/// Retry delays for a controller's watches after an error: 250 ms doubling to
/// at most 5 s, with jitter, starting over after 30 s without an error.
///
/// kube-runtime's default (client-go's reflector: 0.8 s doubling to 30 s,
/// reset only after 2 min) is sized for thousands of kubelets reconnecting at
/// once. A Phalanx controller is one or two replicas with a handful of
/// watches, and each second its view is stale delays every pod: with the
/// default, a 30 s API server outage took a minute more to recover from (the
/// fault suite, `tests/tests/faults.rs`, measures it).
pub fn recovery_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let delays = backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(delays.into(), RETRY_RESET)
}

/// Spawns a watch of `api` that sends every event, wrapped by `wrap`, to `tx`.
/// `wrap` may capture what the event alone does not say (which kind a
/// dynamic object's watch is of). The handle stops it (`abort`) when its kind
/// stops being served; dropping the handle leaves it running.
pub fn spawn_watch<K, T, F>(
    api: Api<K>,
    tx: mpsc::Sender<T>,
    wrap: F,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + 'static,
    F: Fn(Event<K>) -> T + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .backoff(recovery_backoff())
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if tx.send(wrap(event)).await.is_err() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, "watch error; retrying with backoff"),
            }
        }
    })
}
