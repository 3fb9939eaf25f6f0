//! `phalanx-device-plugin run` refuses to start without what it needs.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::process::Command;

fn plugin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phalanx-device-plugin"))
}

#[test]
fn without_a_driver_run_says_nvml_is_missing_and_names_the_fake_backend() {
    if std::path::Path::new("/dev/nvidiactl").exists() {
        return; // a GPU node: NVML is there
    }
    let out = plugin()
        .args([
            "run",
            "--backend",
            "nvml",
            "--node-name",
            "n1",
            "--log-format",
            "text",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("libnvidia-ml.so.1") && stderr.contains("fake backend"),
        "{stderr}"
    );
}

#[test]
fn the_fake_backend_needs_its_file_and_a_node_name() {
    let out = plugin()
        .args(["run", "--backend", "fake", "--node-name", "n1"])
        .env_remove("PHALANX_FAKE_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fake-file"));

    let out = plugin()
        .args([
            "run",
            "--backend",
            "fake",
            "--fake-file",
            "/nonexistent/node.json",
        ])
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--node-name"),
        "clap names the missing flag"
    );
}

#[test]
fn an_assignment_read_timeout_out_of_range_is_refused_naming_the_flag() {
    for bad in ["61", "-1", "ten"] {
        let out = plugin()
            .args([
                "run",
                "--backend",
                "fake",
                "--fake-file",
                "/nonexistent/node.json",
                "--node-name",
                "n1",
                &format!("--assignment-read-timeout-seconds={bad}"),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--assignment-read-timeout-seconds"),
            "{bad}: {stderr}"
        );
    }
}
