//! `kubectl-phalanx`: what an operator asks of a Phalanx cluster, answered
//! from what its components publish.
//!
//! * [`why`]: why a pod waits (its last decision, from the scheduler's
//!   FailedScheduling event and its `phalanx.dev/decision` record).
//! * [`gpus`]: every GPU, what is allocated of it and to whom, its health and
//!   the age of its telemetry (`GpuNode`s and assignment annotations).
//! * [`sim`]: would a pod fit if … (the engine on a changed copy of the
//!   cluster's snapshot).
//!
//! Each is pure, fed objects; [`cluster`] is the only part that talks to the
//! API server, and only reads.

pub mod cluster;
pub mod gpus;
pub mod sim;
mod table;
pub mod why;
