//! What the autoscalers read: the serving series the replicas export (summed over
//! replicas, as the presets' queries sum them), scraped at a fixed interval.
//!
//! The series mirror vLLM's: requests waiting and running
//! (`vllm:num_requests_waiting`, `vllm:num_requests_running`), KV-cache use
//! (`vllm:kv_cache_usage_perc`, averaged over ready replicas) and the
//! `vllm:request_inference_time_seconds` histogram's sum and count (time each
//! finished request held its slot). The baselines read requests in flight,
//! waiting plus running.

use std::collections::VecDeque;

/// One scrape of every series, summed over the replicas that export them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scrape {
    /// Requests waiting for a slot.
    pub waiting: f64,
    /// Requests holding a slot.
    pub running: f64,
    /// KV-cache tokens in use over the ready replicas' capacity, 0..1.
    pub kv_cache_usage: f64,
    /// Ready replicas, the ones that export the series.
    pub ready: f64,
    /// Counter: slot-seconds of the requests that finished.
    pub inference_seconds_sum: f64,
    /// Counter: requests that finished.
    pub inference_count: f64,
}

impl Scrape {
    /// Waiting plus running: what the HPA-like and KEDA-like baselines read.
    pub fn in_flight(&self) -> f64 {
        self.waiting + self.running
    }
}

/// The scraped samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Prometheus {
    samples: VecDeque<(u64, Scrape)>,
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

    pub fn scrape(&mut self, at: u64, value: Scrape) {
        self.samples.push_back((at, value));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_sub(*t) > self.retention)
        {
            self.samples.pop_front();
        }
    }

    /// The newest scrape and its timestamp (instant queries).
    pub fn latest(&self) -> Option<(u64, Scrape)> {
        self.samples.back().copied()
    }

    /// `avg_over_time(series[window])` at `now` of one series: the mean of the
    /// samples in `(now - window, now]`; None when there are none.
    pub fn avg_over_time(
        &self,
        now: u64,
        window: u64,
        series: impl Fn(&Scrape) -> f64,
    ) -> Option<f64> {
        let (sum, n) = self
            .within(now, window)
            .fold((0.0, 0u32), |(s, n), (_, v)| (s + series(v), n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// `increase(counter[window])` at `now`: the newest minus the oldest sample
    /// of the window (no extrapolation); None with fewer than two samples.
    pub fn increase(&self, now: u64, window: u64, series: impl Fn(&Scrape) -> f64) -> Option<f64> {
        let mut samples = self.within(now, window);
        let first = samples.next()?;
        let last = samples.last()?;
        Some(series(&last.1) - series(&first.1))
    }

    fn within(&self, now: u64, window: u64) -> impl Iterator<Item = &(u64, Scrape)> {
        self.samples
            .iter()
            .filter(move |(t, _)| *t <= now && now - *t < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(waiting: f64, finished: f64) -> Scrape {
        Scrape {
            waiting,
            inference_count: finished,
            ..Scrape::default()
        }
    }

    #[test]
    fn avg_over_time_takes_the_window_and_latest_the_newest() {
        let mut p = Prometheus::new(100);
        assert_eq!(p.latest(), None);
        assert_eq!(p.avg_over_time(0, 60, Scrape::in_flight), None);
        for (t, v) in [(0, 1.0), (30, 2.0), (60, 6.0)] {
            p.scrape(t, queue(v, t as f64));
        }
        assert_eq!(p.latest().map(|(t, s)| (t, s.waiting)), Some((60, 6.0)));
        assert_eq!(p.avg_over_time(60, 60, Scrape::in_flight), Some(4.0));
        assert_eq!(p.avg_over_time(60, 61, Scrape::in_flight), Some(3.0));
        assert_eq!(p.increase(60, 61, |s| s.inference_count), Some(60.0));
        assert_eq!(p.increase(60, 20, |s| s.inference_count), None);
        p.scrape(200, queue(8.0, 200.0));
        assert_eq!(p.avg_over_time(200, 1000, Scrape::in_flight), Some(8.0));
    }
}
