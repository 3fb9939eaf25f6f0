//! Generated loads for the autoscaler suite: request streams whose rate follows a
//! documented curve, seeded and deterministic per seed.
//!
//! Arrivals are a non-homogeneous Poisson process drawn by thinning: candidate
//! arrivals at the curve's peak rate, each kept with probability rate(t) / peak.
//! Token lengths come in two shapes: chat, resampled (input, output) pairs of the
//! Azure conversation trace so the mix of long and short requests is the real one,
//! and code completion, ~2k-token prompts with under 50 output tokens.
//!
//! Every curve is a multiple of a base rate. The defaults are chosen for
//! [`super::default_scenario`] (16 replicas, 8 slots, target 6 in flight per
//! replica): at its peak every load but the flash crowd needs about 11 replicas at
//! the target (at most 75 % of the cluster), and the flash crowd needs about 19,
//! more than the cluster holds, for its two minutes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::run::Scenario;
use super::trace::Request;

/// The generated loads, in the order the suite runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// Chat; base rate for 10 min, 4x base for 20 min, base again for 10 min (40 min).
    Step,
    /// Chat; base rate for 30 min except 10x base from minute 12 to minute 14.
    FlashCrowd,
    /// Chat; a day compressed to an hour: base at the start, rising as a raised
    /// cosine to 5x base at 30 min and back to base at 60 min.
    Diurnal,
    /// Code completion; 3-minute cycles of 135 s quiet at base rate then a 45 s
    /// burst at 18x base (45 min, 15 bursts).
    CodeBursts,
    /// Chat; the rate rises linearly from base to 4x base over 50 min.
    Drift,
}

/// The token lengths of a load's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenShape {
    /// (input, output) pairs drawn from the Azure conversation trace.
    Chat,
    /// Input uniform in [`CODE_INPUT_TOKENS`], output uniform in [`CODE_OUTPUT_TOKENS`].
    CodeCompletion,
}

/// Prompt tokens of a code-completion request: about 2k (the file around the cursor).
pub const CODE_INPUT_TOKENS: std::ops::RangeInclusive<u32> = 1536..=2560;
/// Output tokens of a code-completion request: a line or a few, under 50.
pub const CODE_OUTPUT_TOKENS: std::ops::RangeInclusive<u32> = 4..=48;

const MINUTE: f64 = 60.0;
/// The code-burst cycle: quiet, then a burst at its end.
const BURST_CYCLE: f64 = 180.0;
const BURST_LENGTH: f64 = 45.0;

impl LoadKind {
    pub const ALL: [LoadKind; 5] = [
        LoadKind::Step,
        LoadKind::FlashCrowd,
        LoadKind::Diurnal,
        LoadKind::CodeBursts,
        LoadKind::Drift,
    ];

    /// The name tables and plot files use.
    pub fn name(self) -> &'static str {
        match self {
            LoadKind::Step => "step-4x",
            LoadKind::FlashCrowd => "flash-crowd-10x",
            LoadKind::Diurnal => "diurnal",
            LoadKind::CodeBursts => "code-bursts",
            LoadKind::Drift => "drift",
        }
    }

    /// Requests per second the curve multiplies, by default (see the module docs).
    pub fn default_base_rate(self) -> f64 {
        match self {
            LoadKind::Step => 2.2,
            LoadKind::FlashCrowd => 1.5,
            LoadKind::Diurnal => 1.8,
            LoadKind::CodeBursts => 2.0,
            LoadKind::Drift => 2.2,
        }
    }

    pub fn duration_seconds(self) -> f64 {
        match self {
            LoadKind::Step => 40.0 * MINUTE,
            LoadKind::FlashCrowd => 30.0 * MINUTE,
            LoadKind::Diurnal => 60.0 * MINUTE,
            LoadKind::CodeBursts => 45.0 * MINUTE,
            LoadKind::Drift => 50.0 * MINUTE,
        }
    }

    pub fn shape(self) -> TokenShape {
        match self {
            LoadKind::CodeBursts => TokenShape::CodeCompletion,
            _ => TokenShape::Chat,
        }
    }

    /// The rate at `t` seconds as a multiple of the base rate.
    pub fn multiplier(self, t: f64) -> f64 {
        match self {
            LoadKind::Step if (10.0 * MINUTE..30.0 * MINUTE).contains(&t) => 4.0,
            LoadKind::FlashCrowd if (12.0 * MINUTE..14.0 * MINUTE).contains(&t) => 10.0,
            LoadKind::Diurnal => {
                let phase = std::f64::consts::TAU * t / self.duration_seconds();
                1.0 + 4.0 * (1.0 - phase.cos()) / 2.0
            }
            LoadKind::CodeBursts if t.rem_euclid(BURST_CYCLE) >= BURST_CYCLE - BURST_LENGTH => 18.0,
            LoadKind::Drift => 1.0 + 3.0 * (t / self.duration_seconds()).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }

    /// The largest [`LoadKind::multiplier`] over the run.
    pub fn peak_multiplier(self) -> f64 {
        match self {
            LoadKind::Step | LoadKind::Drift => 4.0,
            LoadKind::FlashCrowd => 10.0,
            LoadKind::Diurnal => 5.0,
            LoadKind::CodeBursts => 18.0,
        }
    }

    /// The curve in words, with the rates for `base` requests per second.
    pub fn describe(self, base: f64) -> String {
        let r = |m: f64| format!("{:.1}/s", base * m);
        match self {
            LoadKind::Step => format!(
                "chat; {} for 10 min, {} (4x) to 30 min, {} to 40 min",
                r(1.0),
                r(4.0),
                r(1.0)
            ),
            LoadKind::FlashCrowd => format!(
                "chat; {} for 30 min, {} (10x) from 12 to 14 min",
                r(1.0),
                r(10.0)
            ),
            LoadKind::Diurnal => format!(
                "chat; a day in 60 min: {} rising (raised cosine) to {} at 30 min and back",
                r(1.0),
                r(5.0)
            ),
            LoadKind::CodeBursts => format!(
                "code completion; 3-min cycles: 135 s at {} then a 45 s burst at {} (18x), 45 min",
                r(1.0),
                r(18.0)
            ),
            LoadKind::Drift => format!(
                "chat; rising linearly from {} to {} (4x) over 50 min",
                r(1.0),
                r(4.0)
            ),
        }
    }
}

/// The (input, output) token pairs chat loads draw from; never empty.
#[derive(Debug, Clone)]
pub struct ChatTokens(Vec<(u32, u32)>);

impl ChatTokens {
    /// The pairs of `requests` (a real trace); `None` when there are none.
    pub fn from_requests(requests: &[Request]) -> Option<Self> {
        (!requests.is_empty()).then(|| {
            ChatTokens(
                requests
                    .iter()
                    .map(|r| (r.context_tokens, r.generated_tokens))
                    .collect(),
            )
        })
    }

    fn draw(&self, rng: &mut impl Rng) -> (u32, u32) {
        self.0[rng.random_range(0..self.0.len())]
    }
}

/// One generated load: a curve and the base rate it multiplies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedLoad {
    pub kind: LoadKind,
    /// Requests per second at multiplier 1.
    pub base_rate: f64,
}

impl GeneratedLoad {
    /// The load at its default base rate.
    pub fn new(kind: LoadKind) -> Self {
        GeneratedLoad {
            kind,
            base_rate: kind.default_base_rate(),
        }
    }

    /// Requests per second the curve asks for at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.base_rate * self.kind.multiplier(t)
    }

    pub fn peak_rate(&self) -> f64 {
        self.base_rate * self.kind.peak_multiplier()
    }

    /// Replicas the load needs at its peak rate at the scenario's target (Little's
    /// law: peak rate x the mean slot time of `requests`, over the target per replica).
    pub fn peak_replicas_needed(&self, requests: &[Request], scenario: &Scenario) -> f64 {
        if requests.is_empty() {
            return 0.0;
        }
        let mean_service = requests
            .iter()
            .map(|r| scenario.serving.service_micros(r) as f64 / 1e6)
            .sum::<f64>()
            / requests.len() as f64;
        self.peak_rate() * mean_service / scenario.target_in_flight_per_replica
    }

    /// The requests for `seed`: the same seed gives the same requests, and every
    /// load draws from its own stream, so loads of one seed are independent.
    pub fn generate(&self, seed: u64, chat: &ChatTokens) -> Vec<Request> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(self.kind as u64);
        let peak = self.peak_rate();
        let end = self.kind.duration_seconds();
        let mut requests = Vec::new();
        if !(peak.is_finite() && peak > 0.0) {
            return requests;
        }
        let mut t = 0.0;
        loop {
            // 1 - U lies in (0, 1], so the gap is finite.
            t += -(1.0 - rng.random::<f64>()).ln() / peak;
            if t >= end {
                break;
            }
            if rng.random::<f64>() * peak >= self.rate_at(t) {
                continue;
            }
            let (context_tokens, generated_tokens) = match self.kind.shape() {
                TokenShape::Chat => chat.draw(&mut rng),
                TokenShape::CodeCompletion => (
                    rng.random_range(CODE_INPUT_TOKENS),
                    rng.random_range(CODE_OUTPUT_TOKENS),
                ),
            };
            requests.push(Request {
                arrival: t,
                context_tokens,
                generated_tokens,
            });
        }
        requests
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

    use super::*;
    use crate::autoscale::trace::{read_requests, DEFAULT_MAX_TRACE_HOURS};
    use crate::autoscale::{default_scenario, EMBEDDED_TRACE};
    use crate::trace::CsvSource;

    fn chat() -> ChatTokens {
        let src = CsvSource::embedded("azure", EMBEDDED_TRACE);
        ChatTokens::from_requests(&read_requests(&src, DEFAULT_MAX_TRACE_HOURS * 3600.0).unwrap())
            .unwrap()
    }

    /// Measured arrivals per second in [from, to).
    fn measured_rate(requests: &[Request], from: f64, to: f64) -> f64 {
        requests
            .iter()
            .filter(|r| (from..to).contains(&r.arrival))
            .count() as f64
            / (to - from)
    }

    #[test]
    fn the_same_seed_gives_the_same_requests_and_another_seed_others() {
        let chat = chat();
        for kind in LoadKind::ALL {
            let load = GeneratedLoad::new(kind);
            let a = load.generate(7, &chat);
            assert!(!a.is_empty(), "{kind:?}");
            assert_eq!(a, load.generate(7, &chat), "{kind:?}");
            assert_ne!(a, load.generate(8, &chat), "{kind:?}");
            assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
            assert!(a.last().unwrap().arrival < kind.duration_seconds());
        }
        // Loads of one seed draw from streams of their own.
        let step = GeneratedLoad::new(LoadKind::Step).generate(7, &chat);
        let drift = GeneratedLoad::new(LoadKind::Drift).generate(7, &chat);
        assert_ne!(step[..10], drift[..10]);
    }

    #[test]
    fn the_documented_phases_arrive_at_their_documented_rates() {
        let chat = chat();
        // (load, from s, to s, documented requests per second)
        let phases = [
            (LoadKind::Step, 0.0, 600.0, 2.2),
            (LoadKind::Step, 600.0, 1800.0, 8.8),
            (LoadKind::Step, 1800.0, 2400.0, 2.2),
            (LoadKind::FlashCrowd, 0.0, 720.0, 1.5),
            (LoadKind::FlashCrowd, 720.0, 840.0, 15.0),
            (LoadKind::FlashCrowd, 840.0, 1800.0, 1.5),
            // The raised cosine: mean over its first and last 5 minutes, and around
            // the peak at 30 min.
            (LoadKind::Diurnal, 0.0, 300.0, 1.8 * 1.0901),
            (LoadKind::Diurnal, 1500.0, 2100.0, 1.8 * 4.9099),
            (LoadKind::Diurnal, 3300.0, 3600.0, 1.8 * 1.0901),
            (LoadKind::CodeBursts, 0.0, 135.0, 2.0),
            (LoadKind::CodeBursts, 135.0, 180.0, 36.0),
            (LoadKind::CodeBursts, 2655.0, 2700.0, 36.0),
            (LoadKind::Drift, 0.0, 600.0, 2.2 * 1.3),
            (LoadKind::Drift, 2400.0, 3000.0, 2.2 * 3.7),
        ];
        for seed in [1, 2, 3] {
            for (kind, from, to, rate) in phases {
                let requests = GeneratedLoad::new(kind).generate(seed, &chat);
                let measured = measured_rate(&requests, from, to);
                // Five standard deviations of a Poisson count, and 3 % slack.
                let expected = rate * (to - from);
                let tolerance = (5.0 * expected.sqrt() + 0.03 * expected) / (to - from);
                assert!(
                    (measured - rate).abs() <= tolerance,
                    "{kind:?} seed {seed} [{from}, {to}): {measured:.2}/s, documented {rate:.2}/s"
                );
            }
        }
    }

    #[test]
    fn the_base_rate_scales_the_whole_curve() {
        let chat = chat();
        let load = GeneratedLoad {
            kind: LoadKind::Step,
            base_rate: 1.0,
        };
        let requests = load.generate(3, &chat);
        let high = measured_rate(&requests, 600.0, 1800.0);
        assert!((high - 4.0).abs() < 0.3, "{high}");
    }

    #[test]
    fn code_completion_requests_have_code_shaped_tokens_and_chat_the_traces() {
        let chat = chat();
        let code = GeneratedLoad::new(LoadKind::CodeBursts).generate(5, &chat);
        assert!(code
            .iter()
            .all(|r| (1536..=2560).contains(&r.context_tokens)
                && (4..50).contains(&r.generated_tokens)));
        let mean_input = code
            .iter()
            .map(|r| f64::from(r.context_tokens))
            .sum::<f64>()
            / code.len() as f64;
        assert!((mean_input - 2048.0).abs() < 50.0, "{mean_input}");
        let pairs: std::collections::HashSet<(u32, u32)> = chat.0.iter().copied().collect();
        let step = GeneratedLoad::new(LoadKind::Step).generate(5, &chat);
        assert!(step
            .iter()
            .all(|r| pairs.contains(&(r.context_tokens, r.generated_tokens))));
        assert!(step.iter().any(|r| r.context_tokens > 2560));
    }

    #[test]
    fn default_peaks_fit_three_quarters_of_the_cluster_except_the_flash_crowd() {
        let chat = chat();
        let cluster = f64::from(default_scenario().serving.replica_capacity());
        assert_eq!(cluster, 16.0);
        for kind in LoadKind::ALL {
            let load = GeneratedLoad::new(kind);
            let needed = load.peak_replicas_needed(&load.generate(42, &chat), &default_scenario());
            if kind == LoadKind::FlashCrowd {
                assert!(needed > cluster, "{kind:?} needs only {needed:.1}");
            } else {
                assert!(
                    (0.6 * cluster..=0.75 * cluster).contains(&needed),
                    "{kind:?} needs {needed:.1} of {cluster} replicas at its peak"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the seed and base rate: arrivals in time order within the
        /// load's duration, never above what the curve's peak could produce, and
        /// code-completion tokens within their bounds.
        #[test]
        fn any_seed_and_rate_give_ordered_bounded_requests(
            seed in proptest::prelude::any::<u64>(),
            kind in proptest::sample::select(LoadKind::ALL.to_vec()),
            base_rate in 0.05f64..3.0,
        ) {
            let chat = chat_pool();
            let load = GeneratedLoad { kind, base_rate };
            let requests = load.generate(seed, &chat);
            proptest::prop_assert!(requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
            proptest::prop_assert!(requests
                .iter()
                .all(|r| (0.0..kind.duration_seconds()).contains(&r.arrival)));
            let mean = load.peak_rate() * kind.duration_seconds();
            proptest::prop_assert!((requests.len() as f64) < mean + 6.0 * mean.sqrt() + 10.0);
            if kind.shape() == TokenShape::CodeCompletion {
                proptest::prop_assert!(requests.iter().all(|r| CODE_INPUT_TOKENS
                    .contains(&r.context_tokens)
                    && CODE_OUTPUT_TOKENS.contains(&r.generated_tokens)));
            }
        }
    }

    /// The Azure pairs, read once for all property cases.
    fn chat_pool() -> ChatTokens {
        static POOL: std::sync::OnceLock<ChatTokens> = std::sync::OnceLock::new();
        POOL.get_or_init(chat).clone()
    }
}
