//! Lines for the person running the tests that the test runner must not
//! hide: a skipped end-to-end test and a warning about a stale binary.
//!
//! libtest captures what `print!` and `eprint!` write and shows it only for a
//! failing test, so these lines go to the process's real stdout and stderr
//! instead, and appear whether the test passes or not (no `--nocapture`).

use std::io::Write;

/// Writes `line` to the real stderr, past the test runner's capture.
pub fn to_terminal(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The line a skipped test prints: `skipped: <test>: <why>`.
pub fn skip_line(test: &str, why: &str) -> String {
    format!("skipped: {test}: {why}")
}

/// Says that `test` is skipped and why, on the real stderr and the real
/// stdout: once when both are the same file (a terminal, or `2>&1`), so the
/// line is not doubled; on each when they go to different places, so neither
/// a log of stdout nor one of stderr misses it.
pub fn skipped(test: &str, why: &str) {
    let line = skip_line(test, why);
    to_terminal(&line);
    if !same_file(1, 2) {
        let _ = writeln!(std::io::stdout(), "{line}");
    }
}

/// Whether two file descriptors of this process refer to the same file.
fn same_file(a: u32, b: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |fd: u32| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok();
    match (meta(a), meta(b)) {
        (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_starts_with_skipped_and_names_the_test_and_reason() {
        assert_eq!(
            skip_line("gangs_bind", "no kwok binary"),
            "skipped: gangs_bind: no kwok binary"
        );
    }

    #[test]
    fn a_descriptor_is_the_same_file_as_itself() {
        assert!(same_file(2, 2));
    }
}
