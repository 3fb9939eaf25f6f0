//! The binary's own contract, without a cluster: its commands are listed,
//! bad flags are refused by name, and no cluster to talk to is one clear
//! error. (Against a real control plane: tests/tests/kubectl_plugin.rs,
//! which also needs this test target, so that `cargo test` builds the
//! binary.)

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-phalanx"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs")
}

#[test]
fn help_lists_the_three_commands() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["why", "gpus", "sim"] {
        assert!(text.contains(command), "{command} missing from\n{text}");
    }
    assert!(text.contains("Usage: kubectl phalanx"), "{text}");
}

#[test]
fn a_bad_flag_value_is_refused_naming_the_flag() {
    let out = run(&["sim", "p", "--gpu-milli", "half"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--gpu-milli"), "{text}");
    let out = run(&["why", "p", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn without_a_cluster_it_says_so_in_one_error() {
    let out = run(&["why", "p"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with(
            "error: no cluster to talk to (is KUBECONFIG or a kubeconfig context set?)"
        ),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}
