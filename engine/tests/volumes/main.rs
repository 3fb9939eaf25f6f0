//! Volumes in the engine: cases after kube-scheduler's VolumeBinding,
//! VolumeRestrictions, VolumeZone and NodeVolumeLimits tests, and properties.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod cases;
mod properties;
mod support;
