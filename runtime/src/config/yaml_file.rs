//! One YAML file per controller, read and validated the same way everywhere.
//!
//! Every key has a default, so an empty file is a valid configuration and a
//! file only names what it changes. Unknown keys are errors rather than
//! silently ignored settings, and every error names the key that is wrong
//! (`binding.qps`), with the file and line where the parser knows them.
//! Range and consistency problems are all reported at once, so that one edit
//! fixes them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the {component} config: {source}", path.display())]
    Read {
        /// Which controller's file (`scheduler`, `autoscaler`).
        component: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key, or a value of the wrong type.
    #[error("{origin}{}: {}{message}", location(*line, *column), key_prefix(key))]
    Parse {
        /// Where the text came from (a path, or a name for text built in code).
        origin: String,
        /// Dotted path of the offending key (`binding.qps`); empty for the document.
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Well-formed, but some values are out of range or inconsistent.
    #[error("{}{}", origin_prefix(origin), join(violations))]
    Invalid {
        origin: Option<String>,
        violations: Vec<Violation>,
    },
}

/// One rule a value breaks, e.g. `binding.qps: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the key in the YAML file.
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A controller's configuration file: its defaults, its shape (serde, with
/// `deny_unknown_fields` on every section) and its rules.
pub trait ConfigFile: DeserializeOwned + Default {
    /// Names the file in errors: "cannot read the {COMPONENT} config".
    const COMPONENT: &'static str;

    /// Every rule the values break; empty when the configuration is usable.
    fn violations(&self) -> Vec<Violation>;

    /// Parses and validates YAML text; `origin` names it in errors (usually its path).
    fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = parse(text, origin)?;
        match config.validate() {
            Ok(()) => Ok(config),
            Err(ConfigError::Invalid { violations, .. }) => Err(ConfigError::Invalid {
                origin: Some(origin.to_owned()),
                violations,
            }),
            Err(other) => Err(other),
        }
    }

    /// Reads, parses and validates the file at `path`.
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            component: Self::COMPONENT,
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Checks ranges and consistency; reports every broken rule, not just the first.
    fn validate(&self) -> Result<(), ConfigError> {
        let violations = self.violations();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: None,
                violations,
            })
        }
    }
}

/// Deserializes with the path of every key tracked, so errors say which key.
/// No validation: [`ConfigFile::from_yaml`] adds that.
pub fn parse<T: ConfigFile>(text: &str, origin: &str) -> Result<T, ConfigError> {
    // An empty file (or one of comments only) is a YAML null, not a mapping:
    // read it as the empty mapping so that it means "all defaults".
    if is_blank_yaml(text) {
        return Ok(T::default());
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = error.inner();
        let location = inner.location();
        ConfigError::Parse {
            origin: origin.to_owned(),
            message: bare_message(&inner.to_string(), &key),
            key,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// serde_yaml_ng's message without the parts our error prints itself: its
/// own path prefix (that of the enclosing mapping, some ancestor of `key`) and
/// its ` at line L column C` suffix.
fn bare_message(message: &str, key: &str) -> String {
    let mut message = message;
    if let Some(at) = message.rfind(" at line ") {
        message = &message[..at];
    }
    let mut ancestor = key;
    while !ancestor.is_empty() {
        if let Some(rest) = message
            .strip_prefix(ancestor)
            .and_then(|m| m.strip_prefix(": "))
        {
            return rest.to_owned();
        }
        ancestor = ancestor.rsplit_once('.').map_or("", |(parent, _)| parent);
    }
    message.to_owned()
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

fn origin_prefix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|origin| format!("{origin}: "))
        .unwrap_or_default()
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
