//! The fake backend: GPUs described by a file or by test code. It stands in for
//! hardware in tests and on KWOK (simulated) nodes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{BackendError, GpuBackend, GpuDevice, GpuEvent, GpuInventory, GpuTelemetry};

/// One fake GPU: its inventory and its current telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeGpu {
    pub device: GpuDevice,
    #[serde(default)]
    pub memory_used_mib: u64,
    #[serde(default)]
    pub utilization_gpu_percent: u32,
}

/// The file form: `{ "driver_version": "…", "gpus": [ { "device": {…}, … } ] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeNode {
    #[serde(default)]
    pub driver_version: Option<String>,
    pub gpus: Vec<FakeGpu>,
}

impl FakeNode {
    /// `count` identical GPUs of `model`, each with `memory_mib`, NVLink-connected to all others.
    pub fn uniform(count: u32, model: &str, memory_mib: u64) -> Self {
        let uuids: Vec<String> = (0..count).map(|i| format!("GPU-fake-{i:04}")).collect();
        FakeNode {
            driver_version: Some("fake".into()),
            gpus: (0..count)
                .map(|i| FakeGpu {
                    device: GpuDevice {
                        index: i,
                        uuid: uuids[i as usize].clone(),
                        model: model.into(),
                        memory_total_mib: memory_mib,
                        pci_bus_id: format!("00000000:{:02X}:00.0", 0x10 + i),
                        numa_node: Some(i * 2 / count.max(1)),
                        nvlink_active_links: count.saturating_sub(1),
                        nvlink_peers: uuids
                            .iter()
                            .filter(|u| **u != uuids[i as usize])
                            .cloned()
                            .collect(),
                        mig_enabled: false,
                        compute_capability: Some((9, 0)),
                    },
                    memory_used_mib: 0,
                    utilization_gpu_percent: 0,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    node: Option<FakeNode>,
    events: VecDeque<GpuEvent>,
    /// The file the node came from and its modification time when last read:
    /// live values (memory used, utilisation) follow edits to it.
    file: Option<(PathBuf, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A fake backend; clones share state, so a test keeps one clone to drive the GPUs
/// while the plugin holds another.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    state: Arc<Mutex<State>>,
}

impl FakeBackend {
    pub fn new(node: FakeNode) -> Self {
        FakeBackend {
            state: Arc::new(Mutex::new(State {
                node: Some(node),
                events: VecDeque::new(),
                file: None,
            })),
        }
    }

    /// Reads a node description from a JSON file; errors name the file and the
    /// problem. Later edits to the file's live values (memory used,
    /// utilisation) are picked up on the next telemetry read; its inventory is
    /// read once.
    pub fn from_file(path: &Path) -> Result<Self, BackendError> {
        let stamp = modified(path);
        let node = Self::read_file(path)?;
        let fake = Self::new(node);
        fake.lock().file = Some((path.to_owned(), stamp));
        Ok(fake)
    }

    fn read_file(path: &Path) -> Result<FakeNode, BackendError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BackendError::FakeFile {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let node: FakeNode = serde_json::from_str(&text).map_err(|e| BackendError::FakeFile {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for gpu in &node.gpus {
            if !seen.insert(gpu.device.uuid.clone()) {
                return Err(BackendError::FakeFile {
                    file,
                    message: format!("GPU {} listed twice", gpu.device.uuid),
                });
            }
            if gpu.memory_used_mib > gpu.device.memory_total_mib {
                return Err(BackendError::FakeFile {
                    file,
                    message: format!("GPU {} uses more memory than it has", gpu.device.uuid),
                });
            }
        }
        Ok(node)
    }

    /// Re-reads the live values from the file if it changed since the last read.
    fn refresh_from_file(&self) {
        let Some((path, stamp)) = self.lock().file.clone() else {
            return;
        };
        let now = modified(&path);
        if now == stamp {
            return;
        }
        match Self::read_file(&path) {
            Ok(fresh) => {
                let mut state = self.lock();
                if let Some(node) = state.node.as_mut() {
                    for gpu in &mut node.gpus {
                        if let Some(f) =
                            fresh.gpus.iter().find(|f| f.device.uuid == gpu.device.uuid)
                        {
                            gpu.memory_used_mib = f.memory_used_mib;
                            gpu.utilization_gpu_percent = f.utilization_gpu_percent;
                        }
                    }
                }
                state.file = Some((path, now));
            }
            // A half-written file: keep the old values and try again next time.
            Err(e) => tracing::warn!(error = %e, "fake GPU file not re-read"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves valid data behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_gpu<T>(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut FakeGpu) -> T,
    ) -> Result<T, BackendError> {
        let mut state = self.lock();
        let gpu = state
            .node
            .as_mut()
            .and_then(|n| n.gpus.iter_mut().find(|g| g.device.uuid == uuid))
            .ok_or_else(|| BackendError::UnknownGpu(uuid.into()))?;
        Ok(f(gpu))
    }

    /// Sets a GPU's memory in use, as a workload would.
    pub fn set_memory_used(&self, uuid: &str, mib: u64) -> Result<(), BackendError> {
        self.with_gpu(uuid, |g| {
            g.memory_used_mib = mib.min(g.device.memory_total_mib)
        })
    }

    pub fn set_utilization(&self, uuid: &str, percent: u32) -> Result<(), BackendError> {
        self.with_gpu(uuid, |g| g.utilization_gpu_percent = percent.min(100))
    }

    /// Raises a critical XID on a GPU, as the driver would.
    pub fn inject_xid(&self, uuid: &str, xid: u64) -> Result<(), BackendError> {
        self.with_gpu(uuid, |_| ())?;
        self.lock().events.push_back(GpuEvent::CriticalXid {
            uuid: uuid.into(),
            xid: Some(xid),
        });
        Ok(())
    }
}

impl GpuBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn inventory(&self) -> Result<GpuInventory, BackendError> {
        let state = self.lock();
        let node = state
            .node
            .as_ref()
            .ok_or_else(|| BackendError::UnknownGpu("no fake node configured".into()))?;
        Ok(GpuInventory {
            driver_version: node.driver_version.clone(),
            gpus: node.gpus.iter().map(|g| g.device.clone()).collect(),
        })
    }

    fn telemetry(&self) -> Result<Vec<GpuTelemetry>, BackendError> {
        self.refresh_from_file();
        let state = self.lock();
        let node = state
            .node
            .as_ref()
            .ok_or_else(|| BackendError::UnknownGpu("no fake node configured".into()))?;
        Ok(node
            .gpus
            .iter()
            .map(|g| GpuTelemetry {
                uuid: g.device.uuid.clone(),
                memory_used_mib: g.memory_used_mib,
                memory_total_mib: g.device.memory_total_mib,
                utilization_gpu_percent: g.utilization_gpu_percent,
                utilization_memory_percent: 0,
                temperature_celsius: Some(40),
                power_watts: Some(70.0),
            })
            .collect())
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>, BackendError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let drained: Vec<GpuEvent> = self.lock().events.drain(..).collect();
            if !drained.is_empty() || std::time::Instant::now() >= deadline {
                return Ok(drained);
            }
            std::thread::sleep(Duration::from_millis(10).min(timeout));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_follows_what_the_test_sets_and_events_are_delivered_once() {
        let fake = FakeBackend::new(FakeNode::uniform(2, "NVIDIA H100 80GB HBM3", 81_559));
        let mut plugin_side = fake.clone();
        let uuid = plugin_side.inventory().unwrap().gpus[1].uuid.clone();
        fake.set_memory_used(&uuid, 40_000).unwrap();
        let t = plugin_side.telemetry().unwrap();
        assert_eq!(t[1].memory_used_mib, 40_000);
        assert_eq!(t[0].memory_used_mib, 0);

        fake.inject_xid(&uuid, 79).unwrap();
        let events = plugin_side
            .wait_for_events(Duration::from_millis(100))
            .unwrap();
        assert_eq!(
            events,
            vec![GpuEvent::CriticalXid {
                uuid: uuid.clone(),
                xid: Some(79)
            }]
        );
        assert!(plugin_side
            .wait_for_events(Duration::from_millis(20))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn live_values_follow_edits_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.json");
        let mut node = FakeNode::uniform(2, "T4", 15_360);
        std::fs::write(&path, serde_json::to_string(&node).unwrap()).unwrap();
        let fake = FakeBackend::from_file(&path).unwrap();
        assert_eq!(fake.telemetry().unwrap()[1].memory_used_mib, 0);
        node.gpus[1].memory_used_mib = 8_000;
        node.gpus[1].device.model = "ignored: inventory is read once".into();
        // Make sure the modification time moves even on coarse clocks.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, serde_json::to_string(&node).unwrap()).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        assert_eq!(fake.telemetry().unwrap()[1].memory_used_mib, 8_000);
        assert_eq!(fake.inventory().unwrap().gpus[1].model, "T4");
        std::fs::write(&path, "{ broken").unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        assert_eq!(
            fake.telemetry().unwrap()[1].memory_used_mib,
            8_000,
            "a broken edit keeps the old values"
        );
    }

    #[test]
    fn unknown_gpus_and_bad_files_are_clear_errors() {
        let fake = FakeBackend::new(FakeNode::uniform(1, "T4", 15_360));
        assert!(matches!(
            fake.inject_xid("GPU-nope", 48),
            Err(BackendError::UnknownGpu(_))
        ));

        let dir = std::env::temp_dir().join(format!("phalanx-fake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{ \"gpus\": [ { \"device\": 7 } ] }").unwrap();
        let err = FakeBackend::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");

        let mut twice = FakeNode::uniform(2, "T4", 15_360);
        twice.gpus[1].device.uuid = twice.gpus[0].device.uuid.clone();
        let dup = dir.join("dup.json");
        std::fs::write(&dup, serde_json::to_string(&twice).unwrap()).unwrap();
        assert!(FakeBackend::from_file(&dup)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
