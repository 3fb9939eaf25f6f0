//! Watches that feed a controller's single-threaded loop through a channel.
//!
//! Each watch runs in its own task on kube-runtime's watcher with its default
//! backoff, so a dropped connection or an expired resourceVersion (410 Gone)
//! becomes a relist (`Init`…`InitDone`) rather than an error the loop must
//! handle. The task ends when the loop drops its receiver.

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::mpsc;

/// Spawns a watch of `api` that sends every event, wrapped by `wrap`, to `tx`.
pub fn spawn_watch<K, T: Send + 'static>(api: Api<K>, tx: mpsc::Sender<T>, wrap: fn(Event<K>) -> T)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
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
    });
}
