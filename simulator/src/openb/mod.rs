//! The FGD paper's experiment on the openb trace (spec §6–7): inflate the workload
//! to a multiple of cluster GPU capacity by seeded resampling, shuffle, schedule one
//! pod at a time with no departures and no retries, and record the GPU allocation
//! ratio and fragmentation at every percent of arrived workload. [`gangs`] runs
//! the same experiment with multi-GPU pods grouped into gangs on racked nodes.

pub mod arrivals;
pub mod bound;
pub mod curves;
pub mod gang_sweep;
pub mod gangs;
pub mod idle;
pub mod run;
pub mod sweep;
