//! The `phalanx-sim openb` command as a user meets it: its output contract and its
//! answers to bad input.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use common::{sim, stdout_of_success};

#[test]
fn json_and_svg_follow_the_output_contract() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let stdout = stdout_of_success(
        sim()
            .args([
                "openb",
                "--quiet",
                "--policies",
                "fgd,bestfit",
                "--seeds",
                "42-43",
                "--json",
            ])
            .arg(&json)
            .arg("--svg")
            .arg(&svg),
    );
    assert!(
        stdout.contains("openb_pod_list_default") && stdout.contains("paper"),
        "{stdout}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let summary = v["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2);
    for key in [
        "policy",
        "pods_file",
        "seeds",
        "mean_unallocated_gpu_pct_at_100",
        "min_unallocated_gpu_pct_at_100",
        "max_unallocated_gpu_pct_at_100",
        "mean_wall_seconds_per_run",
    ] {
        assert!(!summary[0][key].is_null(), "summary lacks {key}");
    }
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for key in [
        "policy",
        "seed",
        "unallocated_gpu_pct_at_100",
        "unallocated_gpu_pct_at_130",
        "wall_seconds",
    ] {
        assert!(!runs[0][key].is_null(), "run lacks {key}");
    }
    let curve = runs[0]["allocation_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 131);
    assert!(curve.iter().all(|x| x.is_number()));
    let alloc_100 = curve[100].as_f64().unwrap();
    let unalloc = runs[0]["unallocated_gpu_pct_at_100"].as_f64().unwrap();
    assert!((alloc_100 + unalloc - 100.0).abs() < 1e-9);

    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg_text.starts_with("<svg") && svg_text.contains("fgd") && svg_text.contains("bestfit")
    );
}

#[test]
fn unknown_policy_lists_the_valid_ones() {
    let out = sim()
        .args(["openb", "--policies", "fgd,tetris"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tetris")
            && err.contains("random, dotprod, clustering, packing, bestfit, fgd, phalanx"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn malformed_csv_row_names_file_and_line_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.csv");
    std::fs::write(
        &pods,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,100,1,500\np1,1000,lots,1,500\n",
    )
    .unwrap();
    let out = sim()
        .args(["openb", "--quiet", "--seeds", "1", "--pods"])
        .arg(&pods)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", pods.display())), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_files_and_bad_numbers_are_clear_errors() {
    let out = sim()
        .args(["openb", "--nodes", "/nonexistent/nodes.csv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/nodes.csv") && err.contains("cannot read"),
        "{err}"
    );

    for args in [["--tune", "-1"], ["--tune", "NaN"], ["--seeds", "9-1"]] {
        let out = sim().arg("openb").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(args[0]) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_node_list_with_a_gpu_node_lacking_a_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.csv");
    std::fs::write(
        &nodes,
        "sn,cpu_milli,memory_mib,gpu,model\nn0,1000,100,2,\n",
    )
    .unwrap();
    let out = sim()
        .args(["openb", "--quiet", "--seeds", "1", "--nodes"])
        .arg(&nodes)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("n0") && err.contains("no GPU model"), "{err}");
}

/// Runs `openb` on one seed and one policy with the given node and pod files.
fn openb_with(nodes: Option<&std::path::Path>, pods: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = sim();
    cmd.args(["openb", "--quiet", "--seeds", "1", "--policies", "fgd"]);
    if let Some(nodes) = nodes {
        cmd.arg("--nodes").arg(nodes);
    }
    if let Some(pods) = pods {
        cmd.arg("--pods").arg(pods);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.success(), err)
}

#[test]
fn a_node_with_four_billion_gpus_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.csv");
    std::fs::write(
        &nodes,
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,T4\nn1,64000,262144,4294967295,T4\n",
    )
    .unwrap();
    let (ok, err) = openb_with(Some(&nodes), None);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:3: gpu = 4294967295: more than the 16 GPUs",
            nodes.display()
        )),
        "{err}"
    );
}

#[test]
fn gpu_requests_outside_openb_semantics_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.csv");
    for (row, field) in [
        ("p1,1000,100,1,-5", "gpu_milli = -5"),
        ("p1,1000,100,1,1500", "gpu_milli = 1500"),
        ("p1,1000,100,0,500", "gpu_milli = 500: with num_gpu = 0"),
        ("p1,1000,100,32,1000", "num_gpu = 32"),
    ] {
        std::fs::write(
            &pods,
            format!("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,100,1,500\n{row}\n"),
        )
        .unwrap();
        let (ok, err) = openb_with(None, Some(&pods));
        assert!(!ok, "{row} accepted");
        assert!(
            err.contains(&format!("{}:3: {field}", pods.display())),
            "{row}: {err}"
        );
    }
}

#[test]
fn pods_asking_for_a_model_no_node_has_are_warned_about_once_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods.csv");
    std::fs::write(
        &pods,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n\
         p0,1000,100,1,500,T4\np1,1000,100,1,500,A100\np2,1000,100,1,1000,A100|T4\n\
         p3,1000,100,2,1000,H100\n",
    )
    .unwrap();
    let (ok, err) = openb_with(None, Some(&pods));
    assert!(ok, "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("2 pod(s) ask for GPU model \"A100\"")
            && warnings[0].contains("(first: p1)")
            && warnings[1].contains("1 pod(s) ask for GPU model \"H100\""),
        "{err}"
    );
}

#[test]
fn batch_windows_bound_and_paired_differences_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let stdout = stdout_of_success(
        sim()
            .args([
                "openb",
                "--quiet",
                "--policies",
                "fgd,phalanx",
                "--seeds",
                "42-43",
                "--batch",
                "4",
                "--bound",
                "--json",
            ])
            .arg(&json),
    );
    for expected in [
        "windows of 4 arrivals placed together, largest-first",
        "vs fgd ± SE",
        "placing every arrived share: unallocated >=",
        "more GPUs than their best packing",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in {stdout}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let summary = v["summary"].as_array().unwrap();
    let fgd = summary.iter().find(|s| s["policy"] == "fgd").unwrap();
    let phalanx = summary.iter().find(|s| s["policy"] == "phalanx").unwrap();
    assert!(
        fgd["vs_fgd_mean"].is_null(),
        "FGD is not compared with itself"
    );
    let mean = phalanx["vs_fgd_mean"].as_f64().unwrap();
    let expected = phalanx["mean_unallocated_gpu_pct_at_100"].as_f64().unwrap()
        - fgd["mean_unallocated_gpu_pct_at_100"].as_f64().unwrap();
    assert!((mean - expected).abs() < 1e-9, "{mean} vs {expected}");
    assert!(phalanx["vs_fgd_standard_error"].as_f64().unwrap() >= 0.0);
    assert!(phalanx["beats_fgd_by_two_standard_errors"].is_boolean());
}

#[test]
fn a_batch_of_nothing_or_an_unknown_order_is_refused() {
    for args in [
        vec!["--batch", "0"],
        vec!["--batch", "-3"],
        vec!["--batch", "4", "--batch-order", "smallest-first"],
    ] {
        let out = sim().arg("openb").args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--batch") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
