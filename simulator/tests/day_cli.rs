//! The `phalanx-sim day` command as a user meets it: the embedded trace, its
//! JSON and plots, and its answers to bad input.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use common::{sim, stdout_of_success};

#[test]
fn the_embedded_trace_runs_every_policy_and_writes_json_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("day.json");
    let stdout = stdout_of_success(
        sim()
            .args(["day", "--load", "1", "--large-gangs", "2", "--json"])
            .arg(&json)
            .arg("--plot")
            .arg(dir.path()),
    );
    for policy in ["fifo", "priority", "kueue", "kueue-borrow", "phalanx"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(policy)),
            "{policy}: {stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert_eq!(r["never_placed"], 0, "{}", r["policy"]);
        assert_eq!(r["large_gangs_placed"], 2, "{}", r["policy"]);
        assert_eq!(r["queues"].as_array().unwrap().len(), 4);
        assert!(!r["allocation_curve"].as_array().unwrap().is_empty());
    }
    for plot in ["day-allocation.svg", "day-share-deviation.svg"] {
        let text = std::fs::read_to_string(dir.path().join(plot)).unwrap();
        assert!(text.starts_with("<svg"), "{plot}");
    }
}

#[test]
fn a_malformed_time_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.csv");
    std::fs::write(
        &pods,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,\
         deletion_time,scheduled_time\n\
         a,1000,10,1,1000,,LS,Running,0,100,0\n\
         b,1000,10,1,1000,,LS,Running,soon,100,0\n",
    )
    .unwrap();
    let out = sim().args(["day", "--pods"]).arg(&pods).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pods.csv:3: column 9"), "{stderr}");
}

#[test]
fn a_pod_list_without_times_is_refused_with_the_pod_named() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.csv");
    std::fs::write(
        &pods,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,10,1,1000\n",
    )
    .unwrap();
    let out = sim().args(["day", "--pods"]).arg(&pods).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pod a has no creation_time"), "{stderr}");
}

#[test]
fn a_load_below_one_is_refused() {
    let out = sim().args(["day", "--load", "0.5"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--load must be between 1"));
}
