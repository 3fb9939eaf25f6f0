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

/// Reads every row; a malformed row is an error naming its file and line, and
/// rows must come in time order (as the published trace does).
pub fn read_requests(src: &CsvSource) -> Result<Vec<Request>, TraceError> {
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
    let mut first: Option<f64> = None;
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
        let start = *first.get_or_insert(at);
        requests.push(Request {
            arrival: at - start,
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

    fn src(text: &str) -> CsvSource {
        CsvSource::embedded("t.csv", text)
    }

    #[test]
    fn rows_become_requests_timed_from_the_first() {
        let reqs = read_requests(&src("TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 23:59:59.5000000,374,44\n\
             2023-11-17 00:00:01.2500000,10,20\n"))
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].arrival, 0.0);
        assert!((reqs[1].arrival - 1.75).abs() < 1e-9);
        assert_eq!(reqs[1].context_tokens, 10);
        assert_eq!(reqs[1].generated_tokens, 20);
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
            let err = read_requests(&src(text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }
}
