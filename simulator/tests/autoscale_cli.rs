//! The `phalanx-sim autoscale` command as a user meets it: its JSON contract, its
//! determinism, and its answers to bad input.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use common::{sim, stdout_of_success};

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
    let stdout = stdout_of_success(
        sim()
            .args(["autoscale", "--json"])
            .arg(&json)
            .arg("--svg")
            .arg(&svg),
    );
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
        let stdout = stdout_of_success(
            sim()
                .args(["autoscale", "--trace"])
                .arg(&trace)
                .arg("--json")
                .arg(&json),
        );
        assert!(stdout.contains("3000 requests"));
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

#[test]
fn the_suite_runs_every_load_and_a_users_trace_in_one_table_with_plots_and_json() {
    let dir = tempfile::tempdir().unwrap();
    // A user's Mooncake-format trace: the first 500 rows of the embedded one.
    let mine = dir.path().join("mine.jsonl");
    let head: Vec<&str> = phalanx_sim::autoscale::trace::EMBEDDED_MOONCAKE_TRACE
        .lines()
        .take(500)
        .collect();
    std::fs::write(&mine, head.join("\n")).unwrap();
    let json = dir.path().join("suite.json");
    let plots = dir.path().join("plots");
    let stdout = stdout_of_success(
        sim()
            .args(["autoscale", "--suite", "--seed", "7", "--trace"])
            .arg(&mine)
            .arg("--json")
            .arg(&json)
            .arg("--plot")
            .arg(&plots),
    );
    let loads = [
        "azure-conv",
        "mooncake",
        "step-4x",
        "flash-crowd-10x",
        "diurnal",
        "code-bursts",
        "drift",
        "mine",
    ];
    for load in loads {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(load) && l.contains("phalanx")),
            "no phalanx row for {load}: {stdout}"
        );
    }
    assert!(stdout.contains("seed 7"), "{stdout}");
    assert!(
        stdout.contains("8.8/s (4x)"),
        "the header names the rates: {stdout}"
    );
    assert_eq!(
        stdout.matches("  phalanx: SLO >= max(hpa, keda) ").count(),
        8,
        "one verdict per load: {stdout}"
    );
    let met_line = stdout
        .lines()
        .find(|l| l.starts_with("targets met on "))
        .unwrap();
    assert!(met_line.ends_with(" of 8 loads"), "{met_line}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let json_loads = v["loads"].as_array().unwrap();
    let names: Vec<&str> = json_loads
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, loads);
    let mut met = 0;
    for load in json_loads {
        let results = load["results"].as_array().unwrap();
        let scalers: Vec<&str> = results
            .iter()
            .map(|r| r["autoscaler"].as_str().unwrap())
            .collect();
        assert_eq!(
            scalers,
            ["phalanx", "hpa", "keda", "oracle"],
            "{}",
            load["name"]
        );
        for r in results {
            assert!(!r["timeline"].as_array().unwrap().is_empty());
            assert!(!r["waits_by_arrival"].as_array().unwrap().is_empty());
        }
        let verdict = load["verdict"].as_object().unwrap();
        assert_eq!(verdict.len(), 4, "{verdict:?}");
        met += usize::from(load["targets_met"].as_bool().unwrap());
    }
    assert_eq!(v["loads_with_targets_met"].as_u64().unwrap() as usize, met);
    assert_eq!(met_line, format!("targets met on {met} of 8 loads"));

    for load in loads {
        let svg = std::fs::read_to_string(plots.join(format!("suite-{load}.svg"))).unwrap();
        for text in [
            "spec.replicas",
            "demand",
            "p99 queue wait",
            "phalanx",
            "hpa",
            "keda",
        ] {
            assert!(svg.contains(text), "suite-{load}.svg lacks {text:?}");
        }
    }
}

#[test]
fn the_suite_refuses_a_bad_trace_by_file_and_line_and_suite_only_options_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1}\n\
         {\"timestamp\": 1, \"input_length\": \"many\", \"output_length\": 1}\n",
    )
    .unwrap();
    let out = sim()
        .args(["autoscale", "--suite", "--trace"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: input_length: invalid type", bad.display())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    for (args, expected) in [
        (vec!["--plot", "x"], "--suite"),
        (vec!["--seed", "3"], "--suite"),
        (
            vec!["--suite", "--svg", "x.svg"],
            "cannot be used with '--svg",
        ),
        (
            vec!["--trace", "a.csv", "--trace", "b.csv"],
            "--trace may be given once without --suite",
        ),
    ] {
        let out = sim().arg("autoscale").args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
