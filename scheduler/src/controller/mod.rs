//! The scheduler in a cluster.
//!
//! Pure parts (fed Kubernetes objects, no client): [`translate`] turns Pods,
//! Nodes and `GpuNode`s into engine inputs, [`queue`] orders pending work,
//! [`gangs`] finds the gang a pod belongs to, [`cluster_state`] keeps the
//! engine's snapshot in step with the watches, [`config`] reads the YAML file.
//! I/O parts: [`binder`] writes annotations and Bindings, [`events`] records
//! Events, [`metrics`] and [`http`] serve Prometheus and health probes,
//! [`leader`] holds the Lease, and [`scheduler_loop`] ties them together.

pub mod binder;
pub mod cluster_state;
pub mod config;
pub mod events;
pub mod gangs;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod process;
pub mod queue;
pub mod scheduler_loop;
pub mod translate;
