//! The scheduler in a cluster.
//!
//! Pure parts (fed Kubernetes objects, no client): [`queue`] orders pending
//! work, [`gangs`] finds the gang a pod belongs to, [`config`] reads the YAML
//! file, [`wait_reasons`] words why pods and gangs wait. Translation and the
//! cluster mirror are `phalanx-kube`'s; the process runtime (probes, leader
//! election, events, watches) is `phalanx-runtime`'s.
//! [`node_presence`] tells binding tasks whether their node still exists;
//! [`served_apis`] says which optional kinds (gang objects, operators' custom
//! resources) the server serves.
//! I/O parts: [`binder`] writes annotations and Bindings, [`evictor`] marks and
//! evicts the victims of preemption and reclaim, [`scheduling_events`]
//! words the scheduler's Events as kube-scheduler does, [`metrics`] counts what
//! happens, [`podgroup_status_writer`] is the one writer of PodGroup status,
//! [`pod_scheduled`] decides and writes pods' `PodScheduled=False` condition,
//! and [`scheduler_loop`] ties them together. [`fault_hook`] is a test hook
//! that crashes the process inside a gang bind.

pub mod binder;
pub mod config;
pub mod evictor;
pub mod fault_hook;
pub mod gangs;
pub mod metrics;
pub mod node_presence;
pub mod pod_scheduled;
pub mod podgroup_status_writer;
pub mod queue;
pub mod scheduler_loop;
pub mod scheduling_events;
pub mod served_apis;
pub mod volume_binder;
pub mod wait_reasons;
