//! `phalanx-runtime`: what every Phalanx binary does around its own loop, in
//! one place, so that a binary is flags, config and wiring.
//!
//! * [`config`]: one YAML file per controller, read and validated with errors
//!   that name the key; the shared `leaderElection`, `http` and `logging`
//!   sections.
//! * [`logging`] and [`shutdown`]: log set-up (JSON in a cluster) and a clean
//!   stop on SIGTERM or Ctrl-C.
//! * [`http`] and [`metrics`]: `/healthz`, `/readyz` and `/metrics` on one
//!   server, the OpenMetrics encoding of a component's registry.
//! * [`tls`], [`https`] and [`auth`]: the same server over HTTPS (files
//!   reloaded when they change), with authentication and authorization
//!   delegated to the API server as on kube-scheduler's secure port.
//! * [`leader`]: Lease election and the fence that stops writes before a
//!   lost Lease expires.
//! * [`events`]: Kubernetes Events, batched into series as client-go does.
//! * [`watch`]: watches feeding a loop through a channel.
//! * [`clock`]: the one wall clock.
//!
//! Nothing here knows about GPUs, pods or placements: that is `phalanx-kube`
//! (translation and the cluster mirror) and `phalanx-engine` (placement).

pub mod auth;
pub mod clock;
pub mod config;
pub mod events;
pub mod http;
pub mod https;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod tls;
pub mod watch;
