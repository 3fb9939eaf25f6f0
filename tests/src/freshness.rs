//! Refusing to run a Phalanx binary older than its sources.
//!
//! The harness runs `phalanx-scheduler` (and, for the chart tests,
//! `phalanx-autoscaler`) from `target/`, which `cargo test -p phalanx-e2e`
//! does not rebuild. A test that ran yesterday's binary against today's code
//! would pass or fail for the wrong reason, so a binary found in a target
//! directory of this workspace is compared with what it is built from, the
//! crates listed in [`BINARY_CRATES`]:
//!
//! * **Sources** — every `.rs` under a crate's `src/`, its `build.rs`, every
//!   `.proto` under its `proto/`. Cargo rebuilds a binary whenever one of
//!   these is newer than its last build, so a newer one means the binary is
//!   stale for sure: the harness fails, naming the binary, the file and the
//!   `cargo build` command that refreshes it.
//! * **Manifests** — the crates' `Cargo.toml`, the workspace's `Cargo.toml`
//!   and `Cargo.lock`. Cargo decides on their content, not their time: a
//!   comment, a dev-dependency or a benchmark added to a manifest, or another
//!   crate's dependency in the lock file, leaves the binary as it is, and a
//!   rule that failed on them could not be met by `cargo build`. A newer
//!   manifest therefore gives a warning, once per binary and test process.
//!
//! A crate's `tests/` and `benches/` are neither: they are not part of the
//! binary. `PHALANX_ALLOW_STALE_BINARIES=1` runs a stale binary anyway, with a
//! warning.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::binaries::{workspace_binary_candidates, workspace_root};
use crate::error::{HarnessError, Result};

/// Set (not empty, not `0`) to run a binary older than its sources anyway.
pub const ALLOW_STALE_ENV: &str = "PHALANX_ALLOW_STALE_BINARIES";

/// The workspace crates (directories under the workspace root) each Phalanx
/// binary is built from: its own crate and every `phalanx-*` crate it depends
/// on, directly or not. `table_matches_the_manifests` checks it against the
/// `Cargo.toml` files.
pub const BINARY_CRATES: &[(&str, &[&str])] = &[
    (
        "phalanx-scheduler",
        &["scheduler", "engine", "kube", "runtime", "api"],
    ),
    (
        "phalanx-autoscaler",
        &["autoscaler", "engine", "kube", "runtime", "api"],
    ),
    (
        "phalanx-device-plugin",
        &["device-plugin", "runtime", "api"],
    ),
    // kubectl finds plugins by this name; its crate is phalanx-kubectl.
    ("kubectl-phalanx", &["kubectl", "engine", "kube", "api"]),
];

/// The crates `binary` (a cargo binary name) is built from; `None` for a
/// binary this module does not know.
pub fn crates_of(binary: &str) -> Option<&'static [&'static str]> {
    BINARY_CRATES
        .iter()
        .find(|(name, _)| *name == binary)
        .map(|(_, crates)| *crates)
}

/// A binary older than one of its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The cargo binary name.
    pub package: String,
    pub binary: PathBuf,
    /// The newest source, changed after the binary was built.
    pub source: PathBuf,
    /// How much later than the binary the source was changed.
    pub newer_by: Duration,
}

impl Stale {
    /// The command that rebuilds the binary where it was found.
    pub fn build_command(&self) -> String {
        let release = self
            .binary
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|profile| profile == "release");
        if release {
            format!("cargo build --release --bin {}", self.package)
        } else {
            format!("cargo build --bin {}", self.package)
        }
    }

    /// What is stale and why, without the remedy.
    pub fn summary(&self) -> String {
        format!(
            "{} is older than its sources: {} changed {} after it was built",
            self.binary.display(),
            self.source.display(),
            human(self.newer_by),
        )
    }
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; rebuild it with `{}` (or set {ALLOW_STALE_ENV}=1 to run it anyway)",
            self.summary(),
            self.build_command(),
        )
    }
}

/// A duration as a person reads it: seconds, minutes, hours or days.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// The newest of `sources` that is strictly newer than `built`, with its time;
/// `None` when the binary built at `built` is up to date. A source whose time
/// cannot be read is ignored (it may have been deleted while we looked).
pub fn newest_newer_than(built: SystemTime, sources: &[PathBuf]) -> Option<(PathBuf, SystemTime)> {
    sources
        .iter()
        .filter_map(|path| Some((path.clone(), modified(path)?)))
        .filter(|(_, changed)| *changed > built)
        .max_by_key(|(_, changed)| *changed)
}

/// The source files of `crates` (directories under `root`): whenever one is
/// newer than a binary built from them, cargo rebuilds it.
pub fn source_files(root: &Path, crates: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in crates {
        let dir = root.join(krate);
        let build_script = dir.join("build.rs");
        if build_script.is_file() {
            files.push(build_script);
        }
        collect(&dir.join("src"), "rs", &mut files);
        collect(&dir.join("proto"), "proto", &mut files);
    }
    files
}

/// The manifests that decide how `crates` are built: each crate's
/// `Cargo.toml`, and the workspace's `Cargo.toml` and `Cargo.lock`.
pub fn manifest_files(root: &Path, crates: &[&str]) -> Vec<PathBuf> {
    crates
        .iter()
        .map(|krate| root.join(krate).join("Cargo.toml"))
        .chain([root.join("Cargo.toml"), root.join("Cargo.lock")])
        .filter(|path| path.is_file())
        .collect()
}

/// How a binary compares with what it is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Newer than every source and manifest (or not a binary this module knows).
    Fresh,
    /// A manifest changed since: cargo may or may not rebuild the binary.
    ManifestChanged(Stale),
    /// A source changed since: cargo would rebuild it.
    Stale(Stale),
}

/// How `binary`, the build of `package`, compares with its sources and
/// manifests under the workspace `root`.
pub fn check(binary: &Path, package: &str, root: &Path) -> Freshness {
    match crates_of(package) {
        Some(crates) => check_crates(binary, package, crates, root),
        None => Freshness::Fresh,
    }
}

/// [`check`] for a binary built from `crates`.
pub fn check_crates(binary: &Path, package: &str, crates: &[&str], root: &Path) -> Freshness {
    let Some(built) = modified(binary) else {
        return Freshness::Fresh;
    };
    let stale = |(source, changed): (PathBuf, SystemTime)| Stale {
        package: package.to_owned(),
        binary: binary.to_owned(),
        source,
        newer_by: changed.duration_since(built).unwrap_or_default(),
    };
    if let Some(newest) = newest_newer_than(built, &source_files(root, crates)) {
        return Freshness::Stale(stale(newest));
    }
    match newest_newer_than(built, &manifest_files(root, crates)) {
        Some(newest) => Freshness::ManifestChanged(stale(newest)),
        None => Freshness::Fresh,
    }
}

/// [`check`] against this workspace, as the harness applies it before running
/// a binary it found in a target directory: a stale binary is an error unless
/// [`ALLOW_STALE_ENV`] is set; that, and a changed manifest, are warnings on
/// stderr.
pub fn ensure_fresh(binary: &Path, package: &str) -> Result<()> {
    // Canonical, so that files are named without `tests/..`.
    let root = workspace_root();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    match check(binary, package, &root) {
        Freshness::Fresh => {}
        Freshness::ManifestChanged(changed) => warn_once(
            &changed.binary,
            &format!(
                "warning: {}; cargo rebuilds it only if that changed its dependencies or \
                 features (`{}`)",
                changed.summary(),
                changed.build_command()
            ),
        ),
        Freshness::Stale(stale) if allow_stale() => warn_once(
            &stale.binary,
            &format!(
                "warning: {}; running it anyway ({ALLOW_STALE_ENV} is set)",
                stale.summary()
            ),
        ),
        Freshness::Stale(stale) => return Err(HarnessError::StaleBinary(stale)),
    }
    Ok(())
}

/// Says `line` unless a warning about `binary` was said already in this
/// process (a binary is looked up, then started: two checks).
fn warn_once(binary: &Path, line: &str) {
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let first = WARNED.lock().is_ok_and(|mut warned| {
        let first = !warned.iter().any(|w| w == binary);
        if first {
            warned.push(binary.to_owned());
        }
        first
    });
    if first {
        crate::report::to_terminal(line);
    }
}

/// [`ensure_fresh`] for `program` when it is a Phalanx binary in one of this
/// workspace's target directories ([`workspace_binary_candidates`]); a binary
/// elsewhere was not necessarily built from these sources and is taken as it is.
pub fn ensure_fresh_if_built_here(program: &Path) -> Result<()> {
    let Some(name) = program.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    if crates_of(name).is_none() {
        return Ok(());
    }
    let Ok(program_path) = std::fs::canonicalize(program) else {
        return Ok(());
    };
    let built_here = workspace_binary_candidates(name)
        .iter()
        .any(|candidate| std::fs::canonicalize(candidate).is_ok_and(|c| c == program_path));
    if built_here {
        ensure_fresh(program, name)
    } else {
        Ok(())
    }
}

fn allow_stale() -> bool {
    std::env::var(ALLOW_STALE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every file under `dir` (recursively) whose extension is `extension`.
fn collect(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect(&path, extension, out),
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == extension) => {
                out.push(path);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs::{File, FileTimes};

    /// Writes `path` (and its directories) with modification time `at`.
    fn file_at(path: &Path, at: SystemTime) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let file = File::create(path).expect("create");
        file.set_times(FileTimes::new().set_modified(at))
            .expect("set mtime");
    }

    fn ago(seconds: u64) -> SystemTime {
        SystemTime::now() - Duration::from_secs(seconds)
    }

    /// A workspace with one crate `app` depending on `lib`, all written an
    /// hour ago, and `target/debug/phalanx-scheduler` built `built` seconds ago.
    fn workspace(built: u64) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        for file in [
            "Cargo.toml",
            "Cargo.lock",
            "app/Cargo.toml",
            "app/src/main.rs",
            "lib/Cargo.toml",
            "lib/src/deep/mod.rs",
        ] {
            file_at(&root.path().join(file), ago(3600));
        }
        let binary = root.path().join("target/debug/phalanx-scheduler");
        file_at(&binary, ago(built));
        (root, binary)
    }

    /// The workspace's binary checked as built from `app` and `lib`.
    fn check_app(root: &Path, binary: &Path) -> Freshness {
        check_crates(binary, "app", &["app", "lib"], root)
    }

    fn changed_file(freshness: &Freshness) -> Option<&Path> {
        match freshness {
            Freshness::Fresh => None,
            Freshness::Stale(s) | Freshness::ManifestChanged(s) => Some(&s.source),
        }
    }

    #[test]
    fn a_binary_newer_than_every_source_and_manifest_is_fresh() {
        let (root, binary) = workspace(60);
        assert_eq!(check_app(root.path(), &binary), Freshness::Fresh);
    }

    #[test]
    fn the_newest_changed_source_is_named_even_deep_in_a_dependency() {
        let (root, binary) = workspace(600);
        let deep = root.path().join("lib/src/deep/mod.rs");
        file_at(&deep, ago(10));
        file_at(&root.path().join("app/src/main.rs"), ago(300));
        let freshness = check_app(root.path(), &binary);
        assert!(matches!(freshness, Freshness::Stale(_)), "{freshness:?}");
        assert_eq!(changed_file(&freshness), Some(deep.as_path()));
    }

    #[test]
    fn build_scripts_and_protos_are_sources_tests_and_other_crates_are_not() {
        let (root, binary) = workspace(600);
        // Integration tests and other crates are not part of the binary:
        // `cargo build` would not relink it for them.
        file_at(&root.path().join("app/tests/e2e.rs"), ago(5));
        file_at(&root.path().join("app/benches/speed.rs"), ago(5));
        file_at(&root.path().join("other/src/lib.rs"), ago(5));
        file_at(&root.path().join("app/src/notes.txt"), ago(5));
        assert_eq!(check_app(root.path(), &binary), Freshness::Fresh);
        file_at(&root.path().join("app/proto/api.proto"), ago(9));
        let proto = check_app(root.path(), &binary);
        assert!(matches!(proto, Freshness::Stale(_)), "{proto:?}");
        file_at(&root.path().join("app/build.rs"), ago(7));
        let build = check_app(root.path(), &binary);
        assert_eq!(
            changed_file(&build),
            Some(root.path().join("app/build.rs").as_path())
        );
    }

    #[test]
    fn a_changed_manifest_or_lock_file_is_reported_but_not_stale() {
        let (root, binary) = workspace(600);
        file_at(&root.path().join("Cargo.lock"), ago(5));
        file_at(&root.path().join("lib/Cargo.toml"), ago(9));
        let freshness = check_app(root.path(), &binary);
        assert!(
            matches!(freshness, Freshness::ManifestChanged(_)),
            "{freshness:?}"
        );
        assert_eq!(
            changed_file(&freshness),
            Some(root.path().join("Cargo.lock").as_path())
        );
        // A changed source outranks it.
        file_at(&root.path().join("app/src/main.rs"), ago(100));
        assert!(matches!(
            check_app(root.path(), &binary),
            Freshness::Stale(_)
        ));
    }

    #[test]
    fn the_message_names_the_binary_the_source_and_the_build_command() {
        let stale = Stale {
            package: "phalanx-scheduler".to_owned(),
            binary: PathBuf::from("/w/target/release/phalanx-scheduler"),
            source: PathBuf::from("/w/engine/src/lib.rs"),
            newer_by: Duration::from_secs(42),
        };
        let text = stale.to_string();
        for part in [
            "/w/target/release/phalanx-scheduler",
            "/w/engine/src/lib.rs",
            "changed 42 s after",
            "`cargo build --release --bin phalanx-scheduler`",
            ALLOW_STALE_ENV,
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        let debug = Stale {
            binary: PathBuf::from("/w/target/debug/phalanx-scheduler"),
            ..stale
        };
        assert_eq!(debug.build_command(), "cargo build --bin phalanx-scheduler");
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        let text = |s| human(Duration::from_secs(s));
        assert_eq!(text(5), "5 s");
        assert_eq!(text(600), "10 min");
        assert_eq!(text(3 * 3600 + 5), "3 h");
        assert_eq!(text(172_775), "47 h");
        assert_eq!(text(5 * 86_400), "5 days");
    }

    #[test]
    fn check_uses_the_table_and_leaves_unknown_binaries_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let binary = root.path().join("target/debug/phalanx-device-plugin");
        file_at(&binary, ago(600));
        file_at(&root.path().join("runtime/src/lib.rs"), ago(5));
        file_at(&root.path().join("scheduler/src/main.rs"), ago(5));
        let Freshness::Stale(stale) = check(&binary, "phalanx-device-plugin", root.path()) else {
            panic!("runtime/ is a crate of the device plugin");
        };
        assert_eq!(stale.source, root.path().join("runtime/src/lib.rs"));
        assert!(stale.newer_by >= Duration::from_secs(590), "{stale:?}");
        assert_eq!(
            check(&binary, "something-else", root.path()),
            Freshness::Fresh
        );
    }

    /// The `phalanx-*` dependencies a crate's manifest names in its
    /// `[dependencies]` and `[build-dependencies]`, as crate directories.
    fn workspace_dependencies(krate: &str) -> BTreeSet<String> {
        let manifest = std::fs::read_to_string(workspace_root().join(krate).join("Cargo.toml"))
            .expect("manifest");
        let mut section = String::new();
        let mut out = BTreeSet::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if section != "[dependencies]" && section != "[build-dependencies]" {
                continue;
            }
            let Some(name) = line.strip_prefix("phalanx-") else {
                continue;
            };
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            out.insert(name);
        }
        out
    }

    #[test]
    fn table_matches_the_manifests() {
        for (binary, crates) in BINARY_CRATES {
            let own = match *binary {
                "kubectl-phalanx" => "kubectl",
                other => other.strip_prefix("phalanx-").expect("a phalanx binary"),
            };
            assert_eq!(
                crates.first(),
                Some(&own),
                "{binary} lists its own crate first"
            );
            // Every workspace dependency of a listed crate is listed too.
            for krate in *crates {
                for dependency in workspace_dependencies(krate) {
                    assert!(
                        crates.contains(&dependency.as_str()),
                        "{binary}: {krate} depends on phalanx-{dependency}, which is not listed"
                    );
                }
            }
        }
    }
}
