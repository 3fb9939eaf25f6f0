//! Reading the Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`)
//! into requests timed from the trace's first arrival.

use crate::trace::{CsvSource, TraceError};

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
}
