//! `phalanx-sim`: replays traces through the production placement engine
//! (`phalanx_engine`) offline, compares policies and draws plots.
//!
//! Today it runs the FGD paper's openb experiment ([`openb`]); the autoscaler
//! simulation on the Azure LLM trace (issue 6) sits beside it ([`autoscale`]),
//! and the same openb pods replayed as a cluster day in time, with teams'
//! queues and preemption (issue 17), in [`day`].

pub mod autoscale;
pub mod day;
pub mod openb;
pub mod paper;
pub mod report;
pub mod stats;
pub mod trace;

/// The default openb cluster, shipped with the simulator (see `data/README.md`).
pub const EMBEDDED_NODES: &str = include_str!("../data/openb_node_list_gpu_node.csv");
/// The default openb pod list, shipped with the simulator (see `data/README.md`).
pub const EMBEDDED_PODS: &str = include_str!("../data/openb_pod_list_default.csv");
