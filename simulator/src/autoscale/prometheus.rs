//! What the autoscalers read: one Prometheus series (requests in flight over all
//! replicas), scraped at a fixed interval.

use std::collections::VecDeque;

/// The scraped samples of the in-flight series, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Prometheus {
    samples: VecDeque<(u64, f64)>,
    /// Samples older than this are dropped (the longest query window).
    retention: u64,
}

impl Prometheus {
    pub fn new(retention_micros: u64) -> Self {
        Self {
            samples: VecDeque::new(),
            retention: retention_micros,
        }
    }

    pub fn scrape(&mut self, at: u64, value: f64) {
        self.samples.push_back((at, value));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_sub(*t) > self.retention)
        {
            self.samples.pop_front();
        }
    }

    /// The newest sample and its timestamp (an instant query).
    pub fn latest(&self) -> Option<(u64, f64)> {
        self.samples.back().copied()
    }

    /// `avg_over_time(series[window])` at `now`: the mean of the samples in
    /// `(now - window, now]`; None when there are none.
    pub fn avg_over_time(&self, now: u64, window: u64) -> Option<f64> {
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| *t <= now && now - *t < window)
            .fold((0.0, 0u32), |(s, n), (_, v)| (s + v, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_over_time_takes_the_window_and_latest_the_newest() {
        let mut p = Prometheus::new(100);
        assert_eq!(p.latest(), None);
        assert_eq!(p.avg_over_time(0, 60), None);
        for (t, v) in [(0, 1.0), (30, 2.0), (60, 6.0)] {
            p.scrape(t, v);
        }
        assert_eq!(p.latest(), Some((60, 6.0)));
        assert_eq!(p.avg_over_time(60, 60), Some(4.0));
        assert_eq!(p.avg_over_time(60, 61), Some(3.0));
        p.scrape(200, 8.0);
        assert_eq!(p.avg_over_time(200, 1000), Some(8.0));
    }
}
