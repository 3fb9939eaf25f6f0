//! What the `phalanx-sim` command-line tests share: the binary, and a run
//! that must succeed (included by each test file with `mod common;`).

#![allow(clippy::unwrap_used, dead_code)] // a failing unwrap is a failing test

use std::process::Command;

/// The built `phalanx-sim`.
pub fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phalanx-sim"))
}

/// Runs `command` and returns its standard output; the test fails with the
/// command's standard error unless it succeeds.
pub fn stdout_of_success(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
