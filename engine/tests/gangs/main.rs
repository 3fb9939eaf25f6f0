//! Gang placement is a transaction: all of `minMember` on one snapshot, or
//! nothing; with a topology, the tightest domain that holds the gang.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod properties;
mod support;
mod topology;
mod transactions;
