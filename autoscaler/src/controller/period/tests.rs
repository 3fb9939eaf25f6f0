//! [`decide`] fed observations; the plans checked.

use super::*;

fn read(name: &str, reading: Reading) -> MetricRead {
    MetricRead {
        name: name.into(),
        query: format!("sum({name})"),
        reading,
    }
}

#[test]
fn stale_means_absent_unavailable_or_old_never_invalid() {
    let now = Duration::from_secs(1000);
    let max = Duration::from_secs(60);
    let reads = [
        read(
            "fresh",
            Reading::Value {
                value: 1.0,
                sampled_at: Duration::from_secs(990),
            },
        ),
        read(
            "old",
            Reading::Value {
                value: 1.0,
                sampled_at: Duration::from_secs(900),
            },
        ),
        read("gone", Reading::Absent),
        read("down", Reading::Unavailable("connection refused".into())),
        read("nan", Reading::Invalid("NaN".into())),
    ];
    let stale = stale_problems(&reads, now, max);
    let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["old", "gone", "down"]);
    assert_eq!(stale[0].1, "sample is 100s old (max 60s)");
    let statuses = metric_statuses(&reads, now, max);
    assert_eq!(statuses[0].problem, None);
    assert_eq!(statuses[0].value, Some(1.0));
    assert_eq!(
        statuses[1].problem.as_deref(),
        Some("sample is 100s old (max 60s)")
    );
    assert_eq!(statuses[2].value, None, "absent is no value, not zero");
    assert_eq!(statuses[4].problem.as_deref(), Some("NaN"));
    assert_eq!(
        statuses[0].sampled_at,
        Some(Time(Timestamp::from_second(990).expect("time")))
    );
}
