//! The `phalanx-autoscaler` binary's offline commands: `check-config` and `crd`.

#![cfg(feature = "controller")]

use std::process::Command;

fn autoscaler(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_phalanx-autoscaler"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/autoscaler-config.example.yaml"
    );
    let (ok, stdout, stderr) = autoscaler(&["check-config", "--config", example]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(": valid"), "{stdout}");
}

#[test]
fn check_config_names_the_bad_key_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "prometheus:\n  timeoutSeconds: -1\n").expect("write");
    let (ok, _, stderr) = autoscaler(&["check-config", "--config", &path.display().to_string()]);
    assert!(!ok, "a negative timeout must fail");
    assert!(
        stderr.contains("prometheus.timeoutSeconds: must be a number of seconds above 0"),
        "{stderr}"
    );
    let (ok, _, stderr) = autoscaler(&["check-config", "--config", "/nonexistent/autoscaler.yaml"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read the autoscaler config"),
        "{stderr}"
    );
}

#[test]
fn crd_prints_the_inference_autoscaler_definition() {
    let (ok, stdout, stderr) = autoscaler(&["crd"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("name: inferenceautoscalers.phalanx.dev"),
        "{stdout}"
    );
    assert!(stdout.contains("kind: InferenceAutoscaler"), "{stdout}");
    assert!(
        stdout.contains("status: {}"),
        "the status subresource: {stdout}"
    );
}
