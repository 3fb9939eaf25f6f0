//! Reading inference traces into requests timed from the trace's first arrival:
//! the Azure LLM inference trace (CSV `TIMESTAMP,ContextTokens,GeneratedTokens`)
//! and the Mooncake trace (JSON lines `{"timestamp": ms, "input_length": n,
//! "output_length": n, ...}`), either one detected from its content.

use serde::Deserialize;

use crate::trace::{CsvSource, TraceError};

/// The Mooncake FAST'25 synthetic trace, `hash_ids` stripped (see `data/README.md`).
pub const EMBEDDED_MOONCAKE_TRACE: &str = include_str!("../../data/mooncake_synthetic.jsonl");
/// The name tables use for the embedded Mooncake trace.
pub const EMBEDDED_MOONCAKE_TRACE_NAME: &str = "mooncake_synthetic.jsonl (embedded)";

/// One inference request of the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Seconds after the first request of the trace.
    pub arrival: f64,
    /// Prompt tokens (prefill).
    pub context_tokens: u32,
    /// Output tokens (decode).
    pub generated_tokens: u32,
}

/// How long a trace may span by default: the published one spans an hour, and a
/// replay is simulated second by second, so a stray far-future row must be refused.
pub const DEFAULT_MAX_TRACE_HOURS: f64 = 48.0;

/// Reads every row; a malformed row is an error naming its file and line, rows must
/// come in time order (as the published trace does), and no row may come more than
/// `max_span_seconds` after the first.
pub fn read_requests(src: &CsvSource, max_span_seconds: f64) -> Result<Vec<Request>, TraceError> {
    let row_error = |line: usize, message: String| TraceError::Row {
        file: src.name.clone(),
        line: line as u64,
        message,
    };
    let mut lines = src.text.lines().enumerate();
    match lines.next() {
        Some((_, header))
            if header
                .trim()
                .eq_ignore_ascii_case("TIMESTAMP,ContextTokens,GeneratedTokens") => {}
        _ => {
            return Err(TraceError::File {
                file: src.name.clone(),
                message: "expected the header TIMESTAMP,ContextTokens,GeneratedTokens".into(),
            })
        }
    }
    let mut requests = Vec::new();
    let mut first: Option<(f64, String)> = None;
    let mut previous = f64::NEG_INFINITY;
    for (index, line) in lines {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [stamp, context, generated] = fields[..] else {
            return Err(row_error(
                line_no,
                format!("expected 3 fields, found {}", fields.len()),
            ));
        };
        let at = parse_timestamp(stamp).map_err(|m| row_error(line_no, m))?;
        if at < previous {
            return Err(row_error(
                line_no,
                format!("timestamp {stamp} is earlier than the row before"),
            ));
        }
        previous = at;
        let tokens = |field: &str, what: &str| {
            field
                .parse::<u32>()
                .map_err(|_| row_error(line_no, format!("{what} {field:?} is not a token count")))
        };
        let context_tokens = tokens(context, "ContextTokens")?;
        let generated_tokens = tokens(generated, "GeneratedTokens")?;
        let (start, first_stamp) = first.get_or_insert_with(|| (at, stamp.to_owned()));
        let arrival = at - *start;
        if arrival > max_span_seconds {
            return Err(row_error(
                line_no,
                format!(
                    "TIMESTAMP {stamp} is {arrival:.0} s ({:.1} h) after the first row \
                     ({first_stamp}); a trace may span at most {} h (--max-trace-hours)",
                    arrival / 3600.0,
                    max_span_seconds / 3600.0
                ),
            ));
        }
        requests.push(Request {
            arrival,
            context_tokens,
            generated_tokens,
        });
    }
    if requests.is_empty() {
        return Err(TraceError::File {
            file: src.name.clone(),
            message: "no requests".into(),
        });
    }
    Ok(requests)
}

/// Reads a trace in either format: JSON lines when the first non-empty line starts
/// with `{`, the Azure CSV otherwise (whose header check then names what it expected).
pub fn read_trace(src: &CsvSource, max_span_seconds: f64) -> Result<Vec<Request>, TraceError> {
    let first = src.text.lines().map(str::trim).find(|l| !l.is_empty());
    if first.is_some_and(|l| l.starts_with('{')) {
        read_mooncake(src, max_span_seconds)
    } else {
        read_requests(src, max_span_seconds)
    }
}

/// One row of the Mooncake trace. Other keys (`hash_ids`, the prompt blocks shared
/// between requests) are ignored: the replica model has no prefix cache.
#[derive(Debug, Deserialize)]
struct MooncakeRow {
    /// Milliseconds from the trace's start.
    timestamp: f64,
    input_length: u32,
    output_length: u32,
}

/// Reads Mooncake JSON lines with the same rules as [`read_requests`]: every
/// malformed row is an error naming file, line and field, rows come in time order,
/// and none more than `max_span_seconds` after the first.
pub fn read_mooncake(src: &CsvSource, max_span_seconds: f64) -> Result<Vec<Request>, TraceError> {
    let row_error = |line: usize, message: String| TraceError::Row {
        file: src.name.clone(),
        line: line as u64,
        message,
    };
    let mut requests = Vec::new();
    let mut first: Option<f64> = None;
    let mut previous = f64::NEG_INFINITY;
    for (index, line) in src.text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut json = serde_json::Deserializer::from_str(line);
        let row: MooncakeRow = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let field = e.path().to_string();
            // `.` is the row itself and `?` a place the parser had not reached.
            let message = if field == "." || field.contains('?') {
                e.inner().to_string()
            } else {
                format!("{field}: {}", e.inner())
            };
            row_error(line_no, message)
        })?;
        json.end()
            .map_err(|e| row_error(line_no, format!("after the row: {e}")))?;
        let at = row.timestamp / 1000.0;
        if at < previous {
            return Err(row_error(
                line_no,
                format!("timestamp {} is earlier than the row before", row.timestamp),
            ));
        }
        previous = at;
        let start = *first.get_or_insert(at);
        let arrival = at - start;
        if arrival > max_span_seconds {
            return Err(row_error(
                line_no,
                format!(
                    "timestamp {} ms is {arrival:.0} s ({:.1} h) after the first row; \
                     a trace may span at most {} h (--max-trace-hours)",
                    row.timestamp,
                    arrival / 3600.0,
                    max_span_seconds / 3600.0
                ),
            ));
        }
        requests.push(Request {
            arrival,
            context_tokens: row.input_length,
            generated_tokens: row.output_length,
        });
    }
    if requests.is_empty() {
        return Err(TraceError::File {
            file: src.name.clone(),
            message: "no requests".into(),
        });
    }
    Ok(requests)
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` as seconds since 1970-01-01 (UTC assumed; only
/// differences matter).
fn parse_timestamp(stamp: &str) -> Result<f64, String> {
    let bad = || format!("timestamp {stamp:?} is not YYYY-MM-DD HH:MM:SS[.fraction]");
    let (date, time) = stamp.split_once(' ').ok_or_else(bad)?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day)), None) = (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) else {
        return Err(bad());
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock_parts = clock.split(':').map(|p| p.parse::<i64>());
    let (Some(Ok(hour)), Some(Ok(minute)), Some(Ok(second)), None) = (
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
    ) else {
        return Err(bad());
    };
    if !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0..=60).contains(&second) {
        return Err(bad());
    }
    let fraction = if fraction.is_empty() {
        0.0
    } else if fraction.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.{fraction}").parse::<f64>().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    let days = days_from_civil(year, month, day);
    Ok((days * 86_400 + hour * 3_600 + minute * 60 + second) as f64 + fraction)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil` algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HOURS_48: f64 = DEFAULT_MAX_TRACE_HOURS * 3600.0;

    fn src(text: &str) -> CsvSource {
        CsvSource::embedded("t.csv", text)
    }

    #[test]
    fn rows_become_requests_timed_from_the_first() {
        let reqs = read_requests(
            &src("TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 23:59:59.5000000,374,44\n\
             2023-11-17 00:00:01.2500000,10,20\n"),
            HOURS_48,
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].arrival, 0.0);
        assert!((reqs[1].arrival - 1.75).abs() < 1e-9);
        assert_eq!(reqs[1].context_tokens, 10);
        assert_eq!(reqs[1].generated_tokens, 20);
    }

    #[test]
    fn a_row_beyond_the_horizon_is_refused_with_its_timestamp() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:15:46.6805900,374,44\n\
             2023-11-16 18:15:50.9951690,396,109\n\
             9999-11-16 18:15:51.0000000,1,1\n";
        let err = read_requests(&src(text), HOURS_48).unwrap_err().to_string();
        assert!(
            err.starts_with("t.csv:4: TIMESTAMP 9999-11-16 18:15:51.0000000 is ")
                && err.contains("after the first row (2023-11-16 18:15:46.6805900)")
                && err.contains("at most 48 h"),
            "{err}"
        );
        let two_days = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 00:00:00,1,1\n2023-11-18 00:00:00,1,1\n2023-11-18 00:00:01,1,1\n";
        assert_eq!(
            read_requests(&src(two_days), HOURS_48)
                .unwrap_err()
                .to_string(),
            "t.csv:4: TIMESTAMP 2023-11-18 00:00:01 is 172801 s (48.0 h) after the first row \
             (2023-11-16 00:00:00); a trace may span at most 48 h (--max-trace-hours)"
        );
        assert_eq!(
            read_requests(&src(two_days), HOURS_48 + 1.0).unwrap().len(),
            3
        );
    }

    #[test]
    fn the_civil_calendar_counts_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 11, 16), 19_677);
    }

    #[test]
    fn bad_rows_name_their_line() {
        for (text, expected) in [
            ("x,y\n", "header"),
            ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,1\n",
                "t.csv:2: expected 3 fields",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,1,2\n2023-13-16 10:00:00,1,2\n",
                "t.csv:3: timestamp",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,-1,2\n",
                "ContextTokens \"-1\"",
            ),
            (
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:05,1,2\n2023-11-16 10:00:00,1,2\n",
                "earlier than the row before",
            ),
        ] {
            let err = read_requests(&src(text), HOURS_48).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    fn jsonl(text: &str) -> CsvSource {
        CsvSource::embedded("t.jsonl", text)
    }

    #[test]
    fn mooncake_rows_become_requests_in_seconds_from_the_first() {
        let reqs = read_mooncake(
            &jsonl(
                "{\"timestamp\": 1000, \"input_length\": 40160, \"output_length\": 6, \"hash_ids\": [0, 1]}\n\
                 \n\
                 {\"timestamp\": 3500, \"input_length\": 10, \"output_length\": 20}\n",
            ),
            HOURS_48,
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].arrival, 0.0);
        assert_eq!(reqs[0].context_tokens, 40160);
        assert!((reqs[1].arrival - 2.5).abs() < 1e-9);
        assert_eq!(reqs[1].generated_tokens, 20);
    }

    #[test]
    fn bad_mooncake_rows_name_their_line_and_field() {
        let ok = "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1}\n";
        for (text, expected) in [
            (String::new(), "t.jsonl: no requests"),
            (
                format!("{ok}{{\"timestamp\": 5, \"output_length\": 1}}\n"),
                "t.jsonl:2: missing field `input_length`",
            ),
            (
                format!("{ok}{{\"timestamp\": 5, \"input_length\": -3, \"output_length\": 1}}\n"),
                "t.jsonl:2: input_length: invalid value: integer `-3`",
            ),
            (
                format!(
                    "{ok}{{\"timestamp\": \"x\", \"input_length\": 1, \"output_length\": 1}}\n"
                ),
                "t.jsonl:2: timestamp: invalid type",
            ),
            (
                format!("{ok}{{\"timestamp\": 5, \"input_length\": 1, \"output_length\": 1.5}}\n"),
                "t.jsonl:2: output_length: invalid type: floating point",
            ),
            (
                format!("{ok}{{\"timestamp\": 5,\n"),
                "t.jsonl:2: EOF while parsing",
            ),
            (
                format!("{ok}{{\"timestamp\": 5, \"input_length\": 1, \"output_length\": 1}} x\n"),
                "t.jsonl:2: after the row: trailing characters",
            ),
            (
                format!("{{\"timestamp\": 9, \"input_length\": 1, \"output_length\": 1}}\n{ok}"),
                "t.jsonl:2: timestamp 0 is earlier than the row before",
            ),
            (
                format!(
                    "{ok}{{\"timestamp\": 172800001, \"input_length\": 1, \"output_length\": 1}}\n"
                ),
                "t.jsonl:2: timestamp 172800001 ms is 172800 s (48.0 h) after the first row; \
                 a trace may span at most 48 h (--max-trace-hours)",
            ),
        ] {
            let err = read_mooncake(&jsonl(&text), HOURS_48)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(expected),
                "{err:?} does not start with {expected:?}"
            );
        }
    }

    #[test]
    fn either_format_is_read_by_its_content() {
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,7,8\n";
        let json = "\n  {\"timestamp\": 0, \"input_length\": 7, \"output_length\": 8}\n";
        for text in [csv, json] {
            let reqs = read_trace(&src(text), HOURS_48).unwrap();
            assert_eq!((reqs[0].context_tokens, reqs[0].generated_tokens), (7, 8));
        }
        // A CSV with a bad row still reports the CSV's own error, and a file that is
        // neither names the CSV header it expected.
        assert!(read_trace(
            &src("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,7\n"),
            HOURS_48
        )
        .unwrap_err()
        .to_string()
        .starts_with("t.csv:2: expected 3 fields"));
        assert!(read_trace(&src("[1, 2]\n"), HOURS_48)
            .unwrap_err()
            .to_string()
            .contains("expected the header TIMESTAMP,ContextTokens,GeneratedTokens"));
    }

    #[test]
    fn the_embedded_mooncake_trace_reads_whole() {
        let reqs = read_trace(&jsonl(EMBEDDED_MOONCAKE_TRACE), HOURS_48).unwrap();
        assert_eq!(reqs.len(), 3993);
        let mean_input = reqs
            .iter()
            .map(|r| f64::from(r.context_tokens))
            .sum::<f64>()
            / reqs.len() as f64;
        assert!((mean_input - 15_325.5).abs() < 1.0, "{mean_input}");
    }
}
