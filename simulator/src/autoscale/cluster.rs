//! The serving side: inference replicas on a GPU cluster of fixed size, fed from
//! one FIFO queue (a router that hands each request to the least busy ready
//! replica with a free slot and room in its KV cache), with a cold start before
//! a new replica serves.
//!
//! A request holds one slot for its prefill and decode at the slot's share of
//! the replica's throughput, and reserves its whole sequence (prompt and output
//! tokens) in the replica's KV cache while it runs: vLLM allocates blocks as it
//! decodes and preempts when the cache runs out; reserving up front is the same
//! capacity without modelling preemption. A sequence longer than the whole cache
//! runs alone on an idle replica (as a server with a larger context would).
//!
//! Time is integer microseconds from the trace's first request, so runs are exact
//! and deterministic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::prometheus::Scrape;
use super::trace::Request;

/// Microseconds per second.
pub const US: u64 = 1_000_000;

/// Seconds as simulator time.
pub fn micros(seconds: f64) -> u64 {
    (seconds * US as f64).round().max(0.0) as u64
}

/// How a replica serves and what it occupies.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingModel {
    /// Requests a replica serves at once (its batch slots); beyond that they queue.
    pub slots: u32,
    /// Prompt tokens a replica prefills per second, shared evenly by its slots.
    pub prefill_tokens_per_second: f64,
    /// Output tokens a replica decodes per second, shared evenly by its slots.
    pub decode_tokens_per_second: f64,
    /// From scale-up to serving (scheduling, image, model load).
    pub cold_start_seconds: f64,
    /// Tokens a replica's KV cache holds (prompt and output of all its running
    /// requests together).
    pub kv_cache_tokens: u64,
    pub gpus_per_replica: u32,
    pub cluster_gpus: u32,
}

impl ServingModel {
    /// How long one request holds a slot.
    pub fn service_micros(&self, request: &Request) -> u64 {
        let slots = f64::from(self.slots);
        let seconds = f64::from(request.context_tokens) / (self.prefill_tokens_per_second / slots)
            + f64::from(request.generated_tokens) / (self.decode_tokens_per_second / slots);
        micros(seconds).max(1)
    }

    /// KV-cache tokens one request reserves while it runs.
    pub fn kv_tokens(request: &Request) -> u64 {
        u64::from(request.context_tokens) + u64::from(request.generated_tokens)
    }

    /// Replicas the cluster's GPUs can hold at all.
    pub fn replica_capacity(&self) -> u32 {
        self.cluster_gpus / self.gpus_per_replica.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    /// Removed by a scale-down while still serving: takes nothing new, holds its
    /// GPUs until its requests finish.
    Draining,
}

#[derive(Debug, Clone)]
struct Replica {
    state: State,
    running: u32,
    kv_used: u64,
    ready_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Ready(u32),
    /// A request finished on replica `replica`, freeing `kv` tokens after
    /// holding its slot for `service` microseconds.
    Done {
        replica: u32,
        kv: u64,
        service: u64,
    },
}

/// The replicas, the queue and the clock of one run.
#[derive(Debug)]
pub struct Cluster<'a> {
    model: ServingModel,
    requests: &'a [Request],
    replicas: BTreeMap<u32, Replica>,
    next_id: u32,
    queue: VecDeque<usize>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    now: u64,
    /// When each request got a slot.
    started: Vec<Option<u64>>,
    running_total: u32,
    gpu_micros: u128,
    /// Slot time of the requests that finished, and how many did.
    finished_service_micros: u128,
    finished: u64,
    /// GPU time is counted up to here (the end of the trace).
    horizon: u64,
}

impl<'a> Cluster<'a> {
    /// `initial` replicas, ready at time zero.
    pub fn new(model: ServingModel, requests: &'a [Request], initial: u32, horizon: u64) -> Self {
        let mut cluster = Self {
            model,
            requests,
            replicas: BTreeMap::new(),
            next_id: 0,
            queue: VecDeque::new(),
            events: BinaryHeap::new(),
            sequence: 0,
            now: 0,
            started: vec![None; requests.len()],
            running_total: 0,
            gpu_micros: 0,
            finished_service_micros: 0,
            finished: 0,
            horizon,
        };
        let initial = initial.min(cluster.model.replica_capacity());
        for _ in 0..initial {
            let id = cluster.next_id;
            cluster.next_id += 1;
            cluster.replicas.insert(
                id,
                Replica {
                    state: State::Ready,
                    running: 0,
                    kv_used: 0,
                    ready_at: 0,
                },
            );
        }
        cluster
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// `spec.replicas`: starting and ready replicas (draining ones are on their way out).
    pub fn spec_replicas(&self) -> u32 {
        self.count(|s| s != State::Draining)
    }

    pub fn ready_replicas(&self) -> u32 {
        self.count(|s| s == State::Ready)
    }

    /// Requests queued or being served: what the replicas export as their load.
    pub fn in_flight(&self) -> u32 {
        self.queue.len() as u32 + self.running_total
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The most `spec.replicas` the free GPUs allow now (draining replicas still hold theirs).
    pub fn placeable_replicas(&self) -> u32 {
        self.model
            .replica_capacity()
            .saturating_sub(self.count(|s| s == State::Draining))
    }

    pub fn gpu_hours(&self) -> f64 {
        self.gpu_micros as f64 / US as f64 / 3600.0
    }

    pub fn started(&self) -> &[Option<u64>] {
        &self.started
    }

    fn count(&self, keep: impl Fn(State) -> bool) -> u32 {
        self.replicas.values().filter(|r| keep(r.state)).count() as u32
    }

    fn push(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.push(Reverse((at, self.sequence, event)));
    }

    /// Moves the clock to `to`, counting GPU time and handling every replica event
    /// on the way (ones at `to` included).
    pub fn advance_to(&mut self, to: u64) {
        while let Some(Reverse((at, _, event))) = self.events.peek().copied() {
            if at > to {
                break;
            }
            self.events.pop();
            self.tick_clock(at);
            match event {
                Event::Ready(id) => {
                    if let Some(replica) = self.replicas.get_mut(&id) {
                        if replica.state == State::Starting && replica.ready_at == at {
                            replica.state = State::Ready;
                        }
                    }
                }
                Event::Done {
                    replica: id,
                    kv,
                    service,
                } => {
                    self.running_total -= 1;
                    self.finished += 1;
                    self.finished_service_micros += u128::from(service);
                    let remove = match self.replicas.get_mut(&id) {
                        Some(replica) => {
                            replica.running -= 1;
                            replica.kv_used -= kv;
                            replica.state == State::Draining && replica.running == 0
                        }
                        None => false,
                    };
                    if remove {
                        self.replicas.remove(&id);
                    }
                }
            }
            self.dispatch();
        }
        self.tick_clock(to);
    }

    fn tick_clock(&mut self, to: u64) {
        if to <= self.now {
            return;
        }
        let from = self.now.min(self.horizon);
        let until = to.min(self.horizon);
        if until > from {
            let gpus = self.replicas.len() as u128 * u128::from(self.model.gpus_per_replica);
            self.gpu_micros += gpus * u128::from(until - from);
        }
        self.now = to;
    }

    /// A request arrives now.
    pub fn arrive(&mut self, index: usize) {
        self.queue.push_back(index);
        self.dispatch();
    }

    /// Hands queued requests, in order, to the least busy ready replicas with a
    /// free slot and room in the KV cache; the first that fits nowhere waits, and
    /// the ones behind it too (first come, first served, as vLLM's default).
    fn dispatch(&mut self) {
        while let Some(&index) = self.queue.front() {
            let slots = self.model.slots;
            let capacity = self.model.kv_cache_tokens;
            let kv = ServingModel::kv_tokens(&self.requests[index]);
            let Some((&id, _)) = self
                .replicas
                .iter()
                .filter(|(_, r)| {
                    r.state == State::Ready
                        && r.running < slots
                        && (r.kv_used + kv <= capacity || r.running == 0)
                })
                .min_by_key(|(id, r)| (r.running, r.kv_used, **id))
            else {
                return;
            };
            self.queue.pop_front();
            if let Some(replica) = self.replicas.get_mut(&id) {
                replica.running += 1;
                replica.kv_used += kv;
            }
            self.running_total += 1;
            self.started[index] = Some(self.now);
            let service = self.model.service_micros(&self.requests[index]);
            self.push(
                self.now + service,
                Event::Done {
                    replica: id,
                    kv,
                    service,
                },
            );
        }
    }

    /// What the replicas export now (the simulated Prometheus scrapes this).
    pub fn scrape(&self) -> Scrape {
        let ready = self.ready_replicas();
        let (kv_used, kv_capacity) = self
            .replicas
            .values()
            .filter(|r| r.state == State::Ready)
            .fold((0u64, 0u64), |(used, cap), r| {
                (used + r.kv_used, cap + self.model.kv_cache_tokens)
            });
        Scrape {
            waiting: self.queue.len() as f64,
            running: f64::from(self.running_total),
            kv_cache_usage: if kv_capacity == 0 {
                0.0
            } else {
                (kv_used as f64 / kv_capacity as f64).min(1.0)
            },
            ready: f64::from(ready),
            inference_seconds_sum: self.finished_service_micros as f64 / US as f64,
            inference_count: self.finished as f64,
        }
    }

    /// Sets `spec.replicas` to `target` (at most what the GPUs allow) and returns
    /// what was applied. Scale-down drops starting replicas first, then the least
    /// busy ready ones; a busy one drains.
    pub fn scale_to(&mut self, target: u32) -> u32 {
        let spec = self.spec_replicas();
        // Draining replicas never outnumber the GPUs left over, so this is >= spec.
        let target = target.min(self.placeable_replicas());
        if target > spec {
            for _ in spec..target {
                let id = self.next_id;
                self.next_id += 1;
                let ready_at = self.now + micros(self.model.cold_start_seconds);
                self.replicas.insert(
                    id,
                    Replica {
                        state: State::Starting,
                        running: 0,
                        kv_used: 0,
                        ready_at,
                    },
                );
                self.push(ready_at, Event::Ready(id));
            }
        } else if target < spec {
            for _ in target..spec {
                let victim = self
                    .replicas
                    .iter()
                    .filter(|(_, r)| r.state != State::Draining)
                    .max_by_key(|(id, r)| (r.state == State::Starting, Reverse(r.running), **id))
                    .map(|(id, _)| *id);
                let Some(id) = victim else { break };
                let idle = self.replicas.get(&id).is_some_and(|r| r.running == 0);
                if idle {
                    self.replicas.remove(&id);
                } else if let Some(replica) = self.replicas.get_mut(&id) {
                    replica.state = State::Draining;
                }
            }
            self.dispatch();
        }
        self.spec_replicas()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn model() -> ServingModel {
        ServingModel {
            slots: 2,
            prefill_tokens_per_second: 2000.0,
            decode_tokens_per_second: 20.0,
            cold_start_seconds: 10.0,
            kv_cache_tokens: 2_100,
            gpus_per_replica: 2,
            cluster_gpus: 6,
        }
    }

    fn request(arrival: f64) -> Request {
        // 1000 / (2000 / 2) + 10 / (20 / 2) = 1 + 1 = 2 s of service.
        Request {
            arrival,
            context_tokens: 1000,
            generated_tokens: 10,
        }
    }

    #[test]
    fn requests_queue_when_slots_are_full_and_replicas_start_after_the_cold_start() {
        let reqs: Vec<Request> = (0..4).map(|_| request(0.0)).collect();
        let mut c = Cluster::new(model(), &reqs, 1, micros(100.0));
        for i in 0..4 {
            c.arrive(i);
        }
        assert_eq!(c.in_flight(), 4);
        assert_eq!(c.queued(), 2);
        assert_eq!(c.scale_to(2), 2);
        assert_eq!(c.ready_replicas(), 1);
        c.advance_to(micros(2.0));
        // The first two finished at 2 s; the queued two started then.
        assert_eq!(c.started()[2], Some(micros(2.0)));
        assert_eq!(c.in_flight(), 2);
        c.advance_to(micros(10.0));
        assert_eq!(c.ready_replicas(), 2);
        // Three replicas of 2 GPUs fill the 6-GPU cluster.
        assert_eq!(c.scale_to(9), 3);
        c.advance_to(micros(100.0));
        // Two replicas for 100 s and one for 90 s, 2 GPUs each.
        assert!((c.gpu_hours() - (2.0 * 100.0 + 90.0) * 2.0 / 3600.0).abs() < 1e-9);
    }

    #[test]
    fn a_busy_replica_drains_and_holds_its_gpus_until_done() {
        let reqs = vec![request(0.0)];
        let mut c = Cluster::new(model(), &reqs, 3, micros(100.0));
        c.arrive(0);
        assert_eq!(c.scale_to(0), 0);
        // The busy one still holds its GPUs: only two replicas fit.
        assert_eq!(c.placeable_replicas(), 2);
        assert_eq!(c.in_flight(), 1);
        c.advance_to(micros(2.0));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.placeable_replicas(), 3);
        assert!((c.gpu_hours() - 2.0 * 2.0 / 3600.0).abs() < 1e-9);
    }

    #[test]
    fn the_kv_cache_bounds_what_runs_and_a_huge_sequence_runs_alone() {
        let long = |arrival| Request {
            arrival,
            context_tokens: 1_490,
            generated_tokens: 10,
        };
        let huge = Request {
            arrival: 0.0,
            context_tokens: 9_000,
            generated_tokens: 10,
        };
        let reqs = vec![long(0.0), long(0.0), huge];
        let mut c = Cluster::new(model(), &reqs, 1, micros(100.0));
        for i in 0..3 {
            c.arrive(i);
        }
        // Two slots, but 1,500 + 1,500 tokens overflow the 2,100-token cache.
        assert_eq!(c.scrape().running, 1.0);
        assert_eq!(c.scrape().waiting, 2.0);
        assert!((c.scrape().kv_cache_usage - 1_500.0 / 2_100.0).abs() < 1e-9);
        let first = c.model.service_micros(&reqs[0]);
        c.advance_to(first);
        assert_eq!(c.started()[1], Some(first));
        // The huge one waits for an idle replica, then runs alone.
        assert_eq!(c.started()[2], None);
        c.advance_to(2 * first);
        assert_eq!(c.started()[2], Some(2 * first));
        assert_eq!(c.scrape().inference_count, 2.0);
        assert!((c.scrape().inference_seconds_sum - 2.0 * first as f64 / US as f64).abs() < 1e-9);
    }
}
