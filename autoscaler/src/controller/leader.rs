//! Leader election: several replicas run, the holder of one Lease scales.
//!
//! The runtime's [`Leadership`] and [`LeaseFence`] are shared with the
//! scheduler; the Lease writes carry `phalanx-autoscaler` as field manager.
//! Standby replicas keep their watches warm; a replica that loses the Lease
//! stops writing at its next period, and the fence (which follows the Lease
//! object itself) stops it even before the elector notices.

pub use phalanx_runtime::leader::{always_leader, join, Leadership, LeaseFence, LeaseSettings};
