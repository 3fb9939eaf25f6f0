//! The rules config values are checked against, with uniform messages
//! (`<key>: must be <what a valid value looks like>, got <value>`), and the
//! checks of Kubernetes names they use.

use std::net::SocketAddr;
use std::time::Duration;

use super::sections::{
    ControllerDefaults, HttpAuthentication, HttpConfig, LeaderElectionConfig, LoggingConfig,
    TlsFiles,
};
use super::yaml_file::Violation;

/// A year: far beyond any sensible timeout or period, far below `Duration`'s limits.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds as a `Duration`; out-of-range values (only possible in a config that
/// skipped validation) saturate instead of panicking.
pub fn seconds(value: f64) -> Duration {
    if value.is_nan() || value <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    }
}

/// Collects the violations of one configuration.
#[derive(Debug, Default)]
pub struct Rules(Vec<Violation>);

impl Rules {
    pub fn into_violations(self) -> Vec<Violation> {
        self.0
    }

    pub fn push(&mut self, key: &'static str, message: String) {
        self.0.push(Violation { key, message });
    }

    pub fn at_least(&mut self, key: &'static str, value: u64, min: u64) {
        if value < min {
            self.push(key, format!("must be at least {min}, got {value}"));
        }
    }

    pub fn positive_seconds(&mut self, key: &'static str, value: f64) {
        // Also bounds the value so that `Duration` conversions stay exact.
        if !(value > 0.0 && value <= MAX_SECONDS) {
            self.push(
                key,
                format!(
                    "must be a number of seconds above 0 and at most {MAX_SECONDS}, got {value}"
                ),
            );
        }
    }

    /// `rule` says what a valid value looks like when `value` is not one.
    pub fn check(&mut self, key: &'static str, rule: Result<(), String>, value: &str) {
        if let Err(expected) = rule {
            self.push(key, format!("must be {expected}, got {value:?}"));
        }
    }

    /// The `leaderElection` section, the same in every controller.
    pub fn leader_election<C: ControllerDefaults>(&mut self, election: &LeaderElectionConfig<C>) {
        self.check(
            "leaderElection.leaseName",
            dns_subdomain(&election.lease_name),
            &election.lease_name,
        );
        self.check(
            "leaderElection.leaseNamespace",
            dns_label(&election.lease_namespace),
            &election.lease_namespace,
        );
        // kube-lease-manager panics on a zero duration or grace, or a grace not
        // shorter than the duration: catch both here, with the key named.
        self.at_least(
            "leaderElection.leaseDurationSeconds",
            election.lease_duration_seconds,
            2,
        );
        self.at_least(
            "leaderElection.renewGraceSeconds",
            election.renew_grace_seconds,
            1,
        );
        if election.renew_grace_seconds >= election.lease_duration_seconds {
            self.push(
                "leaderElection.renewGraceSeconds",
                format!(
                    "must be less than leaderElection.leaseDurationSeconds ({}), got {}",
                    election.lease_duration_seconds, election.renew_grace_seconds
                ),
            );
        }
        if let Some(identity) = &election.identity {
            if identity.trim().is_empty() {
                self.push(
                    "leaderElection.identity",
                    "must not be empty; leave it out to use the pod name".to_owned(),
                );
            }
        }
    }

    /// The `http` section, the same in every controller.
    pub fn http<C: ControllerDefaults>(&mut self, http: &HttpConfig<C>) {
        if let Some(tls) = &http.tls {
            self.tls_files(
                [
                    "http.tls.certFile",
                    "http.tls.keyFile",
                    "http.tls.clientCAFile",
                ],
                tls,
            );
        }
        if http.authentication == HttpAuthentication::Delegated && http.tls.is_none() {
            self.push(
                "http.authentication",
                "delegated needs http.tls: bearer tokens must not cross the network in clear text"
                    .to_owned(),
            );
        }
        for path in &http.always_allow_paths {
            let star = path.find('*');
            if !path.starts_with('/') || star.is_some_and(|at| at + 1 != path.len()) {
                self.push(
                    "http.alwaysAllowPaths",
                    format!("each must be a path starting with '/', with '*' only at the end, got {path:?}"),
                );
            }
        }
    }

    /// A TLS section's file names, given the keys they are under (cert, key,
    /// client CA). Whether the files exist and fit is checked when they are
    /// loaded, at start.
    pub fn tls_files(&mut self, keys: [&'static str; 3], tls: &TlsFiles) {
        let files = [
            Some(&tls.cert_file),
            Some(&tls.key_file),
            tls.client_ca_file.as_ref(),
        ];
        for (key, file) in keys.into_iter().zip(files) {
            if file.is_some_and(|file| file.as_os_str().is_empty()) {
                self.push(key, "must name a file, got \"\"".to_owned());
            }
        }
    }

    /// The `logging` section, the same in every controller.
    pub fn logging(&mut self, logging: &LoggingConfig) {
        self.check("logging.level", log_filter(&logging.level), &logging.level);
    }
}

/// Two listeners conflict on the same non-zero port unless their IPs differ
/// and neither is the wildcard.
pub fn ports_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// RFC 1123 label: what Kubernetes requires of namespace names.
pub fn dns_label(value: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "a DNS label (at most 63 lowercase letters, digits and '-', starting and ending alphanumeric)";
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && starts_and_ends_alphanumeric(value);
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

/// RFC 1123 subdomain: what Kubernetes requires of most object names.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    const EXPECTED: &str = "a DNS subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending alphanumeric)";
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| dns_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric.
pub fn label_key(value: &str) -> Result<(), String> {
    const EXPECTED: &str = "a label key ([prefix/]name, the name at most 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric, the prefix a DNS subdomain)";
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && starts_and_ends_alphanumeric(name);
    let prefix_ok = prefix.is_none_or(|prefix| dns_subdomain(prefix).is_ok());
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

fn starts_and_ends_alphanumeric(value: &str) -> bool {
    let bytes = value.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last))
        if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
}

/// A bare level, or a `tracing` filter with targets. A lone word must be a
/// level: `tracing` would read `verbose` as a target name and log nothing.
pub fn log_filter(value: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    const EXPECTED: &str =
        "one of trace, debug, info, warn, error, off, or a tracing filter such as \"info,kube=warn\"";
    let trimmed = value.trim();
    let is_directive_list = trimmed.contains(['=', ',', '[']);
    let ok = if is_directive_list {
        tracing_subscriber::EnvFilter::builder()
            .parse(trimmed)
            .is_ok()
    } else {
        LEVELS.contains(&trimmed.to_ascii_lowercase().as_str())
    };
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Test;

    impl ControllerDefaults for Test {
        const NAME: &'static str = "test";
        const HTTP_PORT: u16 = 8080;
    }

    fn http_violations(yaml: &str) -> Vec<String> {
        let http: HttpConfig<Test> = serde_yaml_ng::from_str(yaml).expect("parses");
        let mut rules = Rules::default();
        rules.http(&http);
        rules
            .into_violations()
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn plain_http_without_authentication_is_the_default() {
        let http = HttpConfig::<Test>::default();
        assert_eq!(http.tls, None);
        assert_eq!(http.authentication, HttpAuthentication::None);
        assert_eq!(http.always_allow_paths, ["/healthz", "/readyz", "/livez"]);
        assert!(http_violations("{}").is_empty());
    }

    #[test]
    fn tls_with_delegated_authentication_is_accepted() {
        let yaml = "{tls: {certFile: /t/tls.crt, keyFile: /t/tls.key, clientCAFile: /t/ca.crt}, \
                    authentication: delegated, alwaysAllowPaths: [/healthz, '/debug/*']}";
        assert_eq!(http_violations(yaml), Vec::<String>::new());
        let http: HttpConfig<Test> = serde_yaml_ng::from_str(yaml).expect("parses");
        let tls = http.tls.expect("tls");
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(std::path::Path::new("/t/ca.crt"))
        );
    }

    #[test]
    fn delegated_authentication_over_plain_http_is_refused() {
        assert_eq!(
            http_violations("{authentication: delegated}"),
            ["http.authentication: delegated needs http.tls: bearer tokens must not cross the network in clear text"]
        );
    }

    #[test]
    fn bad_paths_and_empty_file_names_are_named() {
        let violations = http_violations(
            "{tls: {certFile: '', keyFile: k, clientCAFile: ''}, alwaysAllowPaths: [healthz, '/a*b']}",
        );
        assert_eq!(
            violations,
            [
                "http.tls.certFile: must name a file, got \"\"",
                "http.tls.clientCAFile: must name a file, got \"\"",
                "http.alwaysAllowPaths: each must be a path starting with '/', with '*' only at the end, got \"healthz\"",
                "http.alwaysAllowPaths: each must be a path starting with '/', with '*' only at the end, got \"/a*b\"",
            ]
        );
    }

    #[test]
    fn unknown_tls_keys_and_modes_do_not_parse() {
        let error = serde_yaml_ng::from_str::<HttpConfig<Test>>(
            "{tls: {certFile: a, keyFile: b, caFile: c}}",
        )
        .expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `caFile`"),
            "{error}"
        );
        let error = serde_yaml_ng::from_str::<HttpConfig<Test>>("{authentication: token}")
            .expect_err("unknown mode");
        assert!(
            error.to_string().contains("unknown variant `token`"),
            "{error}"
        );
        let error = serde_yaml_ng::from_str::<HttpConfig<Test>>("{tls: {certFile: a}}")
            .expect_err("no key file");
        assert!(
            error.to_string().contains("missing field `keyFile`"),
            "{error}"
        );
    }
}
