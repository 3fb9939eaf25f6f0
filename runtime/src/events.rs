//! Events users read with `kubectl describe`, recorded the way client-go does.
//!
//! Events are `events.k8s.io/v1` objects, written off the scheduling path by one
//! task fed through a bounded channel: scheduling never waits on an event write,
//! and when the API server is too slow the oldest backlog is not grown without
//! bound (new events are dropped and counted, as client-go's broadcaster does).
//! A repeat of the same event for the same object within six minutes updates the
//! first one's `series` instead of creating another object, as client-go does; the
//! note is part of that key, so a changed message is a new event. An event may
//! carry annotations (the scheduler's structured decision, say); they are not
//! part of the key, and a repeat writes the repeat's, so the event always
//! shows the latest occurrence's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// How long a repeated event is folded into the first one's series.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Events waiting to be written before new ones are dropped.
const BACKLOG: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
    /// Written on the Event object; the latest repeat's replace the first's.
    pub annotations: BTreeMap<String, String>,
}

/// Handle a controller uses to record events; cloning shares the writer task.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<EventSpec>,
    dropped: Arc<AtomicU64>,
}

impl EventRecorder {
    /// Starts the writer task. `controller` is the reporting controller (the
    /// scheduler name), `instance` this replica.
    pub fn spawn(client: Client, controller: String, instance: String) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let writer = EventWriter {
            client,
            controller,
            instance,
            series: HashMap::new(),
        };
        tokio::spawn(writer.run(rx));
        EventRecorder {
            tx,
            dropped: Arc::default(),
        }
    }

    /// Queues an event; never waits. Returns false if it was dropped.
    pub fn record(&self, event: EventSpec) -> bool {
        if self.tx.try_send(event).is_ok() {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Events dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What makes two events "the same" for series folding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    regarding: (Option<String>, Option<String>, Option<String>),
    type_: EventType,
    reason: &'static str,
    note: String,
}

impl SeriesKey {
    fn of(spec: &EventSpec) -> Self {
        SeriesKey {
            regarding: (
                spec.regarding.namespace.clone(),
                spec.regarding.name.clone(),
                spec.regarding.uid.clone(),
            ),
            type_: spec.type_,
            reason: spec.reason,
            note: spec.note.clone(),
        }
    }
}

struct SeriesEntry {
    name: String,
    namespace: String,
    count: i32,
    first_seen: Instant,
}

struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    series: HashMap<SeriesKey, SeriesEntry>,
}

impl EventWriter {
    async fn run(mut self, mut rx: mpsc::Receiver<EventSpec>) {
        while let Some(spec) = rx.recv().await {
            if let Err(error) = self.write(spec).await {
                tracing::warn!(%error, "could not write an event");
            }
        }
    }

    async fn write(&mut self, spec: EventSpec) -> Result<(), kube::Error> {
        let now = Instant::now();
        self.series
            .retain(|_, e| now.duration_since(e.first_seen) < SERIES_WINDOW);
        let timestamp = Timestamp::now();
        let key = SeriesKey::of(&spec);
        if let Some(entry) = self.series.get_mut(&key) {
            entry.count += 1;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &entry.namespace);
            let patch = series_patch(entry.count, timestamp, &spec.annotations);
            match api
                .patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The event expired or was deleted: start a new one, as client-go does.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.series.remove(&key);
                }
                Err(error) => return Err(error),
            }
        }
        let event = new_event(&spec, &self.controller, &self.instance, timestamp);
        let namespace = event
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        self.series.insert(
            key,
            SeriesEntry {
                name: created.metadata.name.unwrap_or_default(),
                namespace,
                count: 1,
                first_seen: now,
            },
        );
        Ok(())
    }
}

/// The Event object for a first occurrence.
pub fn new_event(
    spec: &EventSpec,
    controller: &str,
    instance: &str,
    timestamp: Timestamp,
) -> Event {
    let object = spec.regarding.name.as_deref().unwrap_or("object");
    Event {
        metadata: ObjectMeta {
            // kube-scheduler's form: the object's name and a unique suffix.
            name: Some(format!("{object}.{:x}", timestamp.as_nanosecond())),
            namespace: Some(
                spec.regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            annotations: (!spec.annotations.is_empty()).then(|| spec.annotations.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(timestamp)),
        type_: Some(
            match spec.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        reason: Some(spec.reason.into()),
        action: Some(spec.action.into()),
        note: Some(truncate_note(&spec.note)),
        regarding: Some(spec.regarding.clone()),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    }
}

/// The patch that folds a repeat into an existing event, with the repeat's
/// annotations (a merge patch: keys the repeat lacks are kept).
pub fn series_patch(
    count: i32,
    timestamp: Timestamp,
    annotations: &BTreeMap<String, String>,
) -> serde_json::Value {
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(timestamp),
    };
    if annotations.is_empty() {
        serde_json::json!({ "series": series })
    } else {
        serde_json::json!({ "series": series, "metadata": { "annotations": annotations } })
    }
}

/// The API limits a note to 1 kB; longer messages are cut at a character boundary.
fn truncate_note(note: &str) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note.to_owned();
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// The reference an event about a pod points at.
pub fn pod_reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let note = "é".repeat(700);
        let cut = truncate_note(&note);
        assert!(cut.len() <= 1024);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn annotations_go_on_the_event_and_on_each_repeat() {
        let spec = EventSpec {
            regarding: pod_reference("ml", "train-0", "u1"),
            type_: EventType::Warning,
            reason: "FailedScheduling",
            action: "Scheduling",
            note: "0/1 nodes are available: 1 Insufficient cpu.".into(),
            annotations: [("phalanx.dev/decision".to_owned(), "{}".to_owned())].into(),
        };
        let event = new_event(&spec, "phalanx", "phalanx-0", Timestamp::UNIX_EPOCH);
        assert_eq!(event.metadata.annotations, Some(spec.annotations.clone()));
        let repeat = series_patch(2, Timestamp::UNIX_EPOCH, &spec.annotations);
        assert_eq!(
            repeat["metadata"]["annotations"]["phalanx.dev/decision"],
            "{}"
        );
        assert_eq!(repeat["series"]["count"], 2);
        let plain = series_patch(2, Timestamp::UNIX_EPOCH, &BTreeMap::new());
        assert!(plain.get("metadata").is_none());
        let without = EventSpec {
            annotations: BTreeMap::new(),
            ..spec
        };
        let event = new_event(&without, "phalanx", "phalanx-0", Timestamp::UNIX_EPOCH);
        assert_eq!(event.metadata.annotations, None);
    }
}
