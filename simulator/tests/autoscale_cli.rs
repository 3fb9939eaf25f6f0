//! The `phalanx-sim autoscale` command as a user meets it: its JSON contract, its
//! determinism, and its answers to bad input.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phalanx-sim"))
}

/// The first `rows` requests of the shipped trace, as a file of their own.
fn head_of_trace(dir: &std::path::Path, rows: usize) -> std::path::PathBuf {
    let text: Vec<&str> = phalanx_sim::autoscale::EMBEDDED_TRACE
        .lines()
        .take(rows + 1)
        .collect();
    let path = dir.join("head.csv");
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

#[test]
fn json_has_the_summary_the_issue_asks_for_and_the_svg_names_every_autoscaler() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let svg = dir.path().join("out.svg");
    let out = sim()
        .args(["autoscale", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("azure_llm_conv_2023") && stdout.contains("19366 requests"),
        "{stdout}"
    );
    assert!(stdout.contains("targets (issue 6)"), "{stdout}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let summary = v["summary"].as_array().unwrap();
    let names: Vec<&str> = summary
        .iter()
        .map(|row| row["autoscaler"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["phalanx", "hpa", "keda"]);
    for row in summary {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "autoscaler",
                "first_scale_up_delay_seconds",
                "gpu_hours",
                "replica_changes",
                "reversals_within_window",
                "slo_attainment"
            ],
            "{row}"
        );
        let slo = row["slo_attainment"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&slo), "{row}");
        assert!(row["gpu_hours"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["replica_changes"].as_u64().unwrap() > 0, "{row}");
        assert!(row["reversals_within_window"].is_u64(), "{row}");
        assert!(
            row["first_scale_up_delay_seconds"].as_f64().unwrap() >= 0.0,
            "{row}"
        );
    }
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg"));
    for name in ["phalanx", "hpa", "keda", "load"] {
        assert!(svg_text.contains(name), "the plot lacks {name}");
    }
}

#[test]
fn two_runs_on_the_same_trace_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let trace = head_of_trace(dir.path(), 3000);
    let mut outputs = Vec::new();
    for run in 0..2 {
        let json = dir.path().join(format!("run{run}.json"));
        let out = sim()
            .args(["autoscale", "--trace"])
            .arg(&trace)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("3000 requests"));
        outputs.push(std::fs::read(&json).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn bad_traces_and_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,lots,44\n",
    )
    .unwrap();
    let out = sim()
        .args(["autoscale", "--trace"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", bad.display())) && err.contains("lots"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = sim()
        .args(["autoscale", "--trace", "/nonexistent/trace.csv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/trace.csv") && err.contains("cannot read"),
        "{err}"
    );

    for args in [
        ["--slo-seconds", "-1"],
        ["--slo-seconds", "NaN"],
        ["--cold-start", "-5"],
        ["--gpus", "1"],
    ] {
        let out = sim().arg("autoscale").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(args[0]) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_row_far_in_the_future_is_refused_not_replayed_for_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("future.csv");
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n\
         2023-11-16 18:15:47.00,10,44\n9999-11-16 18:15:47.00,10,44\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = sim()
        .args(["autoscale", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4: TIMESTAMP 9999-11-16 18:15:47.00 is ",
            trace.display()
        )) && err.contains("at most 48 h (--max-trace-hours)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        started.elapsed().as_secs() < 60,
        "refused only after replaying"
    );

    for hours in ["0", "-1", "NaN", "inf"] {
        let out = sim()
            .args(["autoscale", "--max-trace-hours", hours])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{hours} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--max-trace-hours") && !err.contains("panicked"),
            "{hours}: {err}"
        );
    }
}
