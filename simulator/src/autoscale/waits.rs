//! Queue waits over time: requests grouped by when they arrived, so a plot shows
//! when users waited, not only how long on the whole.

use serde::Serialize;

use super::trace::Request;

/// How wide a bucket of [`by_arrival`] is in the runs' results.
pub const WAIT_BUCKET_SECONDS: f64 = 30.0;

/// The waits of the requests that arrived in one bucket of time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitBucket {
    /// Seconds from the first arrival to the bucket's start.
    pub start_seconds: f64,
    pub arrivals: u32,
    /// Requests of the bucket that never got a slot before the run ended.
    pub never_started: u32,
    /// Over the requests that started; `None` when none did.
    pub mean_wait_seconds: Option<f64>,
    /// The 99th percentile (nearest rank) over the requests that started.
    pub p99_wait_seconds: Option<f64>,
}

/// Buckets of `bucket_seconds` from time zero to the last arrival; `waits[i]` is
/// how long `requests[i]` waited for a slot (`None`: it never got one). Empty
/// buckets are kept, with no waits, so the series has no holes in time.
pub fn by_arrival(
    requests: &[Request],
    waits: &[Option<f64>],
    bucket_seconds: f64,
) -> Vec<WaitBucket> {
    let Some(last) = requests.last() else {
        return Vec::new();
    };
    let width = if bucket_seconds.is_finite() && bucket_seconds > 0.0 {
        bucket_seconds
    } else {
        WAIT_BUCKET_SECONDS
    };
    let count = (last.arrival.max(0.0) / width).floor() as usize + 1;
    let mut groups: Vec<(Vec<f64>, u32)> = vec![(Vec::new(), 0); count];
    for (request, wait) in requests.iter().zip(waits) {
        let index = ((request.arrival.max(0.0) / width).floor() as usize).min(count - 1);
        match wait {
            Some(w) => groups[index].0.push(*w),
            None => groups[index].1 += 1,
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (mut started, never_started))| {
            started.sort_by(f64::total_cmp);
            let n = started.len();
            WaitBucket {
                start_seconds: i as f64 * width,
                arrivals: n as u32 + never_started,
                never_started,
                mean_wait_seconds: (n > 0).then(|| started.iter().sum::<f64>() / n as f64),
                p99_wait_seconds: (n > 0)
                    .then(|| started[((n as f64 * 0.99).ceil() as usize).saturating_sub(1)]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(arrival: f64) -> Request {
        Request {
            arrival,
            context_tokens: 1,
            generated_tokens: 1,
        }
    }

    #[test]
    fn waits_fall_into_the_bucket_of_their_arrival() {
        let requests = [at(0.0), at(10.0), at(29.9), at(30.0), at(95.0)];
        let waits = [Some(1.0), Some(3.0), None, Some(0.5), Some(7.0)];
        let buckets = by_arrival(&requests, &waits, 30.0);
        assert_eq!(buckets.len(), 4);
        assert_eq!(buckets[0].arrivals, 3);
        assert_eq!(buckets[0].never_started, 1);
        assert_eq!(buckets[0].mean_wait_seconds, Some(2.0));
        assert_eq!(buckets[0].p99_wait_seconds, Some(3.0));
        assert_eq!(buckets[1].mean_wait_seconds, Some(0.5));
        assert_eq!(buckets[2].start_seconds, 60.0);
        assert_eq!(buckets[2].arrivals, 0);
        assert_eq!(buckets[2].p99_wait_seconds, None);
        assert_eq!(buckets[3].p99_wait_seconds, Some(7.0));
    }

    #[test]
    fn the_p99_is_the_nearest_rank() {
        let requests: Vec<Request> = (0..200).map(|i| at(f64::from(i) * 0.1)).collect();
        let waits: Vec<Option<f64>> = (0..200).map(|i| Some(f64::from(i))).collect();
        let buckets = by_arrival(&requests, &waits, 30.0);
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].p99_wait_seconds, Some(197.0));
        assert!(by_arrival(&[], &[], 30.0).is_empty());
    }
}
