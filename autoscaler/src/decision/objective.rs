//! Replicas from what users feel: the queueing delay of requests.
//!
//! A per-replica target on requests in flight (the HPA's way) fixes a utilisation
//! and ignores what a request costs: ten waiting 15k-token prompts and ten
//! waiting 50-token completions read the same. Here the serving series say how
//! busy the replicas are and how long a request holds a slot, and the replicas
//! are sized for the objective itself, "at most `1 - attainment` of requests
//! wait longer than `wait_seconds` for a slot":
//!
//! - **Offered load** (slot-Erlangs): the requests running, plus one slot per
//!   waiting request; at saturation a waiting request counts its slot time
//!   spread over `drain_seconds` if that is more: capacity to keep up with what
//!   arrives and to clear what waits.
//! - **Slot time** comes from the engine's own histogram of the time finished
//!   requests held a slot, so long prompts and long answers weigh what they cost.
//! - **Concurrency per replica** is its slots, or fewer when the KV cache fills
//!   first: a replica running `r` requests at KV-cache use `u` holds about `r / u`
//!   requests of this mix.
//! - **Sizing** is Erlang C (M/M/c): the fewest replicas whose slots keep
//!   `P(wait > t) = C(c, a) · exp(-(c - a) t / S)` within the objective. Pooling
//!   shows: a large service meets the objective at a higher utilisation than a
//!   small one, where a fixed per-replica target pays the small one's margin at
//!   every size.

/// The defaults of a queue-wait metric, chosen in `phalanx-sim autoscale
/// --suite` across every load of the suite (see the README's table).
pub mod defaults {
    use std::time::Duration;

    /// The sizing's own target. What a load measures is lower: the sizing sees
    /// load only once it has arrived, and new replicas take a cold start.
    pub const ATTAINMENT: f64 = 0.998;
    /// A backlog at saturation is sized to be gone in this long: short, because
    /// every waiting request is already late.
    pub const DRAIN_SECONDS: f64 = 5.0;
    /// The mean slot time is taken over finished requests of this window.
    pub const SLOT_TIME_WINDOW: Duration = Duration::from_secs(300);
}

/// The objective: at most `1 - attainment` of requests wait longer than
/// `wait_seconds` for a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueObjective {
    pub wait_seconds: f64,
    pub attainment: f64,
}

/// What one replica is, for sizing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaShape {
    /// Requests a replica serves at once (vLLM `--max-num-seqs`).
    pub slots: u32,
    /// The backlog counts as load spread over this long.
    pub drain_seconds: f64,
}

/// The serving series, summed over the ready replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServingSignals {
    /// Requests holding a slot.
    pub running: f64,
    /// Requests waiting for one.
    pub waiting: f64,
    /// Mean time a request holds its slot; `None` before any has finished.
    pub mean_slot_seconds: Option<f64>,
    /// KV-cache use over the ready replicas, 0..1, if exported.
    pub kv_cache_usage: Option<f64>,
    /// Replicas that export the series.
    pub ready_replicas: u32,
}

/// Why signals could not be turned into replicas.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    #[error("{what} is {value}, not a finite number at or above zero")]
    BadSignal { what: &'static str, value: f64 },
    #[error("the objective needs wait_seconds above 0 and attainment in (0, 1), got {wait_seconds} s and {attainment}")]
    BadObjective { wait_seconds: f64, attainment: f64 },
    #[error("a replica needs at least one slot and drain_seconds above 0")]
    BadShape,
}

/// Replicas running at least this share of their slots are saturated: what waits
/// is backlog.
const SATURATED: f64 = 0.9;

/// The most replicas a sizing considers: beyond this the answer is "more than
/// the target can have" anyway.
const MAX_SIZED_REPLICAS: u32 = 10_000;

/// The replicas the signals need to meet the objective (0 when nothing runs or
/// waits).
pub fn replicas_for_objective(
    signals: &ServingSignals,
    shape: &ReplicaShape,
    objective: &QueueObjective,
) -> Result<f64, ObjectiveError> {
    let QueueObjective {
        wait_seconds,
        attainment,
    } = *objective;
    if !(wait_seconds.is_finite() && wait_seconds > 0.0 && attainment > 0.0 && attainment < 1.0) {
        return Err(ObjectiveError::BadObjective {
            wait_seconds,
            attainment,
        });
    }
    if shape.slots == 0 || !(shape.drain_seconds.is_finite() && shape.drain_seconds > 0.0) {
        return Err(ObjectiveError::BadShape);
    }
    let checked = |what, value: f64| {
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(ObjectiveError::BadSignal { what, value })
        }
    };
    let running = checked("running", signals.running)?;
    let waiting = checked("waiting", signals.waiting)?;
    let slot_seconds = signals
        .mean_slot_seconds
        .map(|s| checked("mean slot time", s))
        .transpose()?
        .filter(|s| *s > 0.0);
    let kv_usage = signals
        .kv_cache_usage
        .map(|u| checked("KV-cache use", u))
        .transpose()?;

    let slots = f64::from(shape.slots);
    let concurrency = match kv_usage {
        Some(usage) if usage > 0.0 && signals.ready_replicas > 0 && running > 0.0 => {
            let per_replica = running / f64::from(signals.ready_replicas);
            (per_replica / usage).clamp(1.0, slots)
        }
        _ => slots,
    }
    .floor()
    .max(1.0);

    let Some(slot_seconds) = slot_seconds else {
        // No request has finished yet: no time scale for the wait, so every
        // request in flight gets a slot.
        return Ok(((running + waiting) / concurrency).ceil());
    };
    // Below saturation a waiting request is about to start (the queue of the
    // steady state, which Erlang C already prices); at saturation the backlog
    // is work the current slots cannot reach, spread over the drain time.
    let capacity = f64::from(signals.ready_replicas) * concurrency;
    let saturated = running >= SATURATED * capacity;
    // Either way a waiting request needs at least a slot of its own.
    let per_waiting = if saturated {
        (slot_seconds / shape.drain_seconds).max(1.0)
    } else {
        1.0
    };
    let offered = running + waiting * per_waiting;
    if offered <= 0.0 {
        return Ok(0.0);
    }
    // A load beyond what any target holds (or a garbage count) is answered
    // without walking the recurrence through millions of servers.
    let most_servers = u64::from(MAX_SIZED_REPLICAS) * concurrency as u64;
    if offered >= most_servers as f64 {
        return Ok(f64::from(MAX_SIZED_REPLICAS));
    }
    let servers = erlang_c_servers(
        offered,
        slot_seconds,
        wait_seconds,
        1.0 - attainment,
        most_servers,
    );
    // Fractional: the decider averages needs over its windows and rounds up once;
    // whole replicas here would round up twice.
    Ok(servers as f64 / concurrency)
}

/// The fewest servers with which an M/M/c queue of `offered` Erlangs and mean
/// service `service_seconds` keeps `P(wait > wait_seconds)` at most `miss`.
fn erlang_c_servers(
    offered: f64,
    service_seconds: f64,
    wait_seconds: f64,
    miss: f64,
    limit: u64,
) -> u64 {
    // Erlang B by its recurrence, one server at a time: B(0) = 1,
    // B(k) = a B(k-1) / (k + a B(k-1)); then C = c B / (c - a (1 - B)).
    let mut blocking = 1.0_f64;
    for servers in 1..=limit {
        blocking = offered * blocking / (servers as f64 + offered * blocking);
        let c = servers as f64;
        if c <= offered {
            continue;
        }
        let waits = c * blocking / (c - offered * (1.0 - blocking));
        let late = waits * (-(c - offered) * wait_seconds / service_seconds).exp();
        if late <= miss {
            return servers;
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const OBJECTIVE: QueueObjective = QueueObjective {
        wait_seconds: 2.0,
        attainment: 0.99,
    };
    const SHAPE: ReplicaShape = ReplicaShape {
        slots: 8,
        drain_seconds: 60.0,
    };

    fn signals(running: f64, waiting: f64, slot_seconds: f64) -> ServingSignals {
        ServingSignals {
            running,
            waiting,
            mean_slot_seconds: Some(slot_seconds),
            kv_cache_usage: None,
            ready_replicas: 4,
        }
    }

    #[test]
    fn erlang_c_matches_a_textbook_case() {
        // 10 Erlangs on 12 servers: C(12, 10) = 0.4494 (standard tables).
        // P(wait > 0.5 S) = 0.4494 e^{-1} = 0.165: 12 servers miss 0.1, 13 meet it
        // (C(13, 10) = 0.2853, times e^{-1.5} = 0.064).
        assert_eq!(erlang_c_servers(10.0, 1.0, 0.5, 0.1, 100), 13);
        assert_eq!(erlang_c_servers(10.0, 1.0, 0.5, 0.2, 100), 12);
    }

    #[test]
    fn bigger_services_run_hotter_for_the_same_objective() {
        let small = replicas_for_objective(&signals(12.0, 0.0, 8.0), &SHAPE, &OBJECTIVE).unwrap();
        let large = replicas_for_objective(&signals(120.0, 0.0, 8.0), &SHAPE, &OBJECTIVE).unwrap();
        let utilisation = |running: f64, replicas: f64| running / (replicas * 8.0);
        assert!(
            utilisation(120.0, large) > utilisation(12.0, small) + 0.1,
            "{small} for 12 running, {large} for 120"
        );
    }

    #[test]
    fn a_backlog_of_long_requests_needs_more_than_one_of_short_ones() {
        let long = replicas_for_objective(&signals(32.0, 40.0, 12.0), &SHAPE, &OBJECTIVE).unwrap();
        let short = replicas_for_objective(&signals(32.0, 40.0, 1.0), &SHAPE, &OBJECTIVE).unwrap();
        assert!(long > short, "long {long}, short {short}");
    }

    #[test]
    fn a_full_kv_cache_lowers_the_concurrency_a_replica_offers() {
        let mut full = signals(24.0, 0.0, 8.0);
        full.kv_cache_usage = Some(1.0); // 6 per replica fill the cache
        let open = replicas_for_objective(&signals(24.0, 0.0, 8.0), &SHAPE, &OBJECTIVE).unwrap();
        let bound = replicas_for_objective(&full, &SHAPE, &OBJECTIVE).unwrap();
        assert!(bound > open, "kv-bound {bound}, slot-bound {open}");
    }

    #[test]
    fn no_load_needs_nothing_and_no_time_scale_gives_everyone_a_slot() {
        assert_eq!(
            replicas_for_objective(&signals(0.0, 0.0, 8.0), &SHAPE, &OBJECTIVE).unwrap(),
            0.0
        );
        let mut early = signals(10.0, 7.0, 1.0);
        early.mean_slot_seconds = None;
        assert_eq!(
            replicas_for_objective(&early, &SHAPE, &OBJECTIVE).unwrap(),
            3.0
        );
    }

    #[test]
    fn a_load_beyond_any_target_is_answered_with_the_most_replicas_sized() {
        let huge = signals(1e12, 1e12, 1.0);
        assert_eq!(
            replicas_for_objective(&huge, &SHAPE, &OBJECTIVE).unwrap(),
            f64::from(MAX_SIZED_REPLICAS)
        );
    }

    #[test]
    fn bad_signals_and_objectives_are_refused_by_name() {
        let nan = signals(f64::NAN, 0.0, 1.0);
        assert!(replicas_for_objective(&nan, &SHAPE, &OBJECTIVE)
            .unwrap_err()
            .to_string()
            .starts_with("running is NaN"));
        let bad = QueueObjective {
            wait_seconds: 2.0,
            attainment: 1.0,
        };
        assert!(matches!(
            replicas_for_objective(&signals(1.0, 0.0, 1.0), &SHAPE, &bad),
            Err(ObjectiveError::BadObjective { .. })
        ));
    }
}
