//! Pod affinity, anti-affinity and topology spread: cases written from
//! kube-scheduler's InterPodAffinity and PodTopologySpread plugin tests (each names
//! the upstream case it follows), scoring, incremental counts, and properties.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod affinity;
mod properties;
mod scoring;
mod spread;
mod support;
