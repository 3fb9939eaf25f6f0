//! GPU health: which GPUs are unfit for new work and why, shared between the
//! kubelet streams (which report it) and the telemetry publisher.
//!
//! A GPU turns unhealthy on a critical XID event and stays so until the plugin
//! restarts (as NVIDIA's plugin does: most such errors need a GPU reset).
//! XIDs that report an application's own fault are ignored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::{GpuBackend, GpuEvent};

/// Health of a node's GPUs: the unhealthy ones and why; all others are healthy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthReport {
    unhealthy: BTreeMap<String, String>,
}

impl HealthReport {
    pub fn is_healthy(&self, uuid: &str) -> bool {
        !self.unhealthy.contains_key(uuid)
    }

    pub fn reason(&self, uuid: &str) -> Option<&str> {
        self.unhealthy.get(uuid).map(String::as_str)
    }

    /// Returns whether this changed anything (the first reason is kept).
    pub fn mark_unhealthy(&mut self, uuid: &str, reason: &str) -> bool {
        if self.unhealthy.contains_key(uuid) {
            return false;
        }
        self.unhealthy.insert(uuid.to_owned(), reason.to_owned());
        true
    }
}

/// XIDs caused by the application (illegal address, watchdog of a user kernel…):
/// the GPU is fine, so they do not make it unhealthy.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// The reason a critical XID makes a GPU unhealthy, or `None` when it does not.
pub fn xid_reason(xid: Option<u64>) -> Option<String> {
    let Some(xid) = xid else {
        return Some("critical XID error (code unknown)".to_owned());
    };
    if APPLICATION_XIDS.contains(&xid) {
        return None;
    }
    let what = match xid {
        48 => "double-bit ECC error",
        63 | 64 => "ECC page retirement or row remapping",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 | 95 => "ECC error",
        119 | 120 => "GSP firmware error",
        _ => "critical error",
    };
    Some(format!("XID {xid}: {what}"))
}

/// The shared, watchable health of a node's GPUs.
#[derive(Debug, Clone)]
pub struct HealthBoard {
    tx: Arc<watch::Sender<HealthReport>>,
    gpus: Arc<Vec<String>>,
}

impl HealthBoard {
    /// All `gpus` (UUIDs) healthy.
    pub fn new(gpus: Vec<String>) -> Self {
        let (tx, _) = watch::channel(HealthReport::default());
        HealthBoard {
            tx: Arc::new(tx),
            gpus: Arc::new(gpus),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthReport> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> HealthReport {
        self.tx.borrow().clone()
    }

    /// Marks a GPU unhealthy; watchers see it only if it changed something.
    pub fn mark_unhealthy(&self, uuid: &str, reason: &str) -> bool {
        self.tx
            .send_if_modified(|report| report.mark_unhealthy(uuid, reason))
    }

    /// Applies one backend event. An event naming no GPU of this node (empty or
    /// unknown UUID) marks every GPU: the driver could not say which one failed.
    pub fn apply(&self, event: &GpuEvent) -> bool {
        match event {
            GpuEvent::CriticalXid { uuid, xid } => {
                let Some(reason) = xid_reason(*xid) else {
                    tracing::info!(uuid = %uuid, ?xid, "application XID ignored for health");
                    return false;
                };
                tracing::warn!(uuid = %uuid, ?xid, %reason, "GPU unhealthy");
                if self.gpus.iter().any(|g| g == uuid) {
                    self.mark_unhealthy(uuid, &reason)
                } else {
                    let mut changed = false;
                    for gpu in self.gpus.iter() {
                        changed |= self.mark_unhealthy(gpu, &reason);
                    }
                    changed
                }
            }
        }
    }
}

/// Watches a backend's events on a thread of its own until `stop` is set; the
/// backend is a second handle (NVML calls block), not the sampler's.
pub fn spawn_event_watcher(
    mut backend: Box<dyn GpuBackend>,
    board: HealthBoard,
    on_event: impl Fn(&GpuEvent) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gpu-events".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match backend.wait_for_events(Duration::from_millis(250)) {
                    Ok(events) => {
                        for event in &events {
                            on_event(event);
                            board.apply(event);
                        }
                    }
                    Err(e) => {
                        // E.g. a GPU without XID event support: health then comes
                        // from telemetry failures only. Retry rarely, quietly.
                        tracing::warn!(error = %e, "GPU events unavailable; retrying in 10 s");
                        for _ in 0..40 {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(250));
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_xids_mark_gpus_and_application_xids_do_not() {
        let board = HealthBoard::new(vec!["GPU-a".into(), "GPU-b".into()]);
        let mut rx = board.subscribe();
        assert!(!board.apply(&GpuEvent::CriticalXid {
            uuid: "GPU-a".into(),
            xid: Some(13)
        }));
        assert!(board.apply(&GpuEvent::CriticalXid {
            uuid: "GPU-a".into(),
            xid: Some(79)
        }));
        assert!(rx.has_changed().unwrap());
        let report = rx.borrow_and_update().clone();
        assert_eq!(
            report.reason("GPU-a"),
            Some("XID 79: GPU has fallen off the bus")
        );
        assert!(report.is_healthy("GPU-b"));
        assert!(
            !board.apply(&GpuEvent::CriticalXid {
                uuid: "GPU-a".into(),
                xid: Some(48)
            }),
            "already unhealthy: no change, first reason kept"
        );
        assert!(board.apply(&GpuEvent::CriticalXid {
            uuid: String::new(),
            xid: None
        }));
        assert!(!board.current().is_healthy("GPU-b"));
    }
}
