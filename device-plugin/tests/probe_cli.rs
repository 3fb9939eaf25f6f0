//! `phalanx-device-plugin probe` as an operator runs it.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::process::Command;

use phalanx_device_plugin::backend::FakeNode;

fn plugin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phalanx-device-plugin"))
}

#[test]
fn probe_reports_a_fake_node_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.json");
    std::fs::write(
        &file,
        serde_json::to_string(&FakeNode::uniform(4, "NVIDIA A100-SXM4-80GB", 81_920)).unwrap(),
    )
    .unwrap();
    let out = plugin()
        .args([
            "probe",
            "--backend",
            "fake",
            "--events-seconds",
            "0",
            "--fake-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "fake");
    let gpus = report["inventory"]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    assert_eq!(gpus[0]["nvlink_peers"].as_array().unwrap().len(), 3);
    assert_eq!(report["telemetry"].as_array().unwrap().len(), 4);
}

#[test]
fn probe_without_a_driver_says_what_is_missing() {
    if std::path::Path::new("/dev/nvidiactl").exists() {
        return; // a GPU node: NVML is there
    }
    let out = plugin()
        .args(["probe", "--events-seconds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libnvidia-ml.so.1") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_malformed_fake_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, "{ not json").unwrap();
    let out = plugin()
        .args(["probe", "--backend", "fake", "--fake-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.json") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn an_events_window_beyond_an_hour_is_a_usage_error_not_a_panic() {
    for seconds in ["3601", "18446744073709551615"] {
        let out = plugin()
            .args(["probe", "--backend", "fake", "--events-seconds", seconds])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "clap's usage-error status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--events-seconds") && !err.contains("panicked"),
            "{err}"
        );
    }
}
