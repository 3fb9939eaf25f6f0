//! `phalanx-scheduler` binary (being written).
fn main() {}
