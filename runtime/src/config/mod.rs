//! Config files: every controller reads one YAML file the same way
//! ([`yaml_file`]), checks it against shared [`rules`], and shares the
//! `leaderElection`, `http` and `logging` [`sections`] with per-controller
//! defaults.

pub mod rules;
pub mod sections;
pub mod yaml_file;

pub use rules::{
    dns_label, dns_subdomain, label_key, log_filter, ports_collide, seconds, Rules, MAX_SECONDS,
};
pub use sections::{
    ControllerDefaults, HttpAuthentication, HttpConfig, LeaderElectionConfig, LogFormat,
    LoggingConfig, TlsFiles,
};
pub use yaml_file::{ConfigError, ConfigFile, Violation};
