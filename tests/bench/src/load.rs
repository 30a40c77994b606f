//! Driving an arm: closed-loop (a fixed number of filings in flight, each
//! started when one finishes: the maximum throughput) and open-loop (filings
//! started on a fixed schedule whatever happens: the latency at a given load).
//!
//! Open-loop latencies are measured from each filing's *intended* start, not
//! from when it actually started, so a stall delays the filings scheduled
//! during it and shows in the percentiles instead of hiding them (coordinated
//! omission).

use super::baseline::Baseline;
use super::system::System;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One side of the comparison.
#[derive(Clone)]
pub enum Arm {
    Baseline(Arc<Baseline>),
    System(Arc<System>),
    /// Two more nodes, run by another build (`--candidate`).
    Candidate(Arc<System>),
}

impl Arm {
    pub fn name(&self) -> &'static str {
        match self {
            Arm::Baseline(_) => "baseline",
            Arm::System(_) => "system",
            Arm::Candidate(_) => "candidate",
        }
    }

    /// The two nodes of a node arm (none for the baseline).
    pub fn nodes(&self) -> Option<&Arc<System>> {
        match self {
            Arm::Baseline(_) => None,
            Arm::System(s) | Arm::Candidate(s) => Some(s),
        }
    }

    /// Filings that arrived twice, and with the wrong bytes, so far.
    pub fn faults(&self) -> (u64, u64) {
        match self {
            Arm::Baseline(b) => (b.duplicates(), b.mismatches()),
            Arm::System(s) | Arm::Candidate(s) => (s.duplicates(), s.mismatches()),
        }
    }

    /// Moves one document of `size` bytes end to end; times are measured from
    /// `intended`.
    pub async fn transfer(&self, seq: u64, size: u64, intended: Instant) -> Outcome {
        match self {
            Arm::Baseline(b) => b.transfer(seq, size, intended).await,
            Arm::System(s) | Arm::Candidate(s) => s.transfer(seq, size, intended).await,
        }
    }
}

/// How far one filing got, and when.
///
/// For the system: accepted is the gRPC answer (origin durable), delivered is
/// the destination's inbox showing it, receipted is the origin holding the
/// verified receipt (DELIVERED). For the baseline: accepted is Kafka's
/// acknowledgement of every record, delivered is the consumer having read them
/// all, receipted is the reply record having come back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: Option<Duration>,
    pub delivered: Option<Duration>,
    pub receipted: Option<Duration>,
    pub error: Option<String>,
}

/// Latency histograms in microseconds.
pub struct Latencies {
    pub accepted: Histogram<u64>,
    pub delivered: Histogram<u64>,
    pub receipted: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Self {
            accepted: crate::report::micros(),
            delivered: crate::report::micros(),
            receipted: crate::report::micros(),
        }
    }

    fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.accepted.add(&other.accepted);
        let _ = self.delivered.add(&other.delivered);
        let _ = self.receipted.add(&other.receipted);
    }
}

/// What one phase (or several merged) did.
pub struct Phase {
    pub sent: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub receipted: u64,
    pub elapsed: Duration,
    pub latency: Latencies,
    /// The first few failures, in words.
    pub errors: Vec<String>,
}

impl Default for Phase {
    fn default() -> Self {
        Self::new()
    }
}

impl Phase {
    pub fn new() -> Self {
        Self {
            sent: 0,
            accepted: 0,
            delivered: 0,
            receipted: 0,
            elapsed: Duration::ZERO,
            latency: Latencies::new(),
            errors: Vec::new(),
        }
    }

    fn record(&mut self, outcome: Outcome) {
        let micros = |d: Duration| d.as_micros().max(1) as u64;
        self.sent += 1;
        if let Some(d) = outcome.accepted {
            self.accepted += 1;
            self.latency.accepted.saturating_record(micros(d));
        }
        if let Some(d) = outcome.delivered {
            self.delivered += 1;
            self.latency.delivered.saturating_record(micros(d));
        }
        if let Some(d) = outcome.receipted {
            self.receipted += 1;
            self.latency.receipted.saturating_record(micros(d));
        }
        if let Some(error) = outcome.error
            && self.errors.len() < 5
        {
            self.errors.push(error);
        }
    }

    /// Adds another phase's counts, time and latencies to this one.
    pub fn merge(&mut self, other: &Phase) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.delivered += other.delivered;
        self.receipted += other.receipted;
        self.elapsed += other.elapsed;
        self.latency.merge(&other.latency);
        for e in &other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e.clone());
            }
        }
    }

    /// Completed (receipted) filings per second.
    pub fn filings_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.receipted as f64 / secs
        } else {
            0.0
        }
    }
}

/// Keeps `concurrency` filings in flight until `duration` has passed (or
/// `max_filings` were started), and waits for the last ones.
pub async fn closed_loop(
    arm: &Arm,
    size: u64,
    concurrency: usize,
    duration: Duration,
    max_filings: Option<u64>,
    seqs: &Arc<AtomicU64>,
) -> Phase {
    let start = Instant::now();
    let deadline = start + duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let arm = arm.clone();
        let seqs = seqs.clone();
        let started = started.clone();
        workers.spawn(async move {
            let mut phase = Phase::new();
            loop {
                if Instant::now() >= deadline && phase.sent > 0 {
                    break;
                }
                if let Some(max) = max_filings
                    && started.fetch_add(1, Ordering::Relaxed) >= max
                {
                    break;
                }
                let seq = seqs.fetch_add(1, Ordering::Relaxed);
                let outcome = arm.transfer(seq, size, Instant::now()).await;
                let failed = outcome.receipted.is_none();
                phase.record(outcome);
                if failed {
                    // Something is wrong: do not hammer it for the rest of the phase.
                    break;
                }
            }
            phase
        });
    }
    let mut total = Phase::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(phase) => total.merge(&phase),
            Err(e) => total.errors.push(format!("a load task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Starts `count` filings at `rate` per second on a fixed schedule and waits
/// for all of them; latencies count from each one's scheduled start.
pub async fn open_loop(
    arm: &Arm,
    size: u64,
    rate: f64,
    count: u64,
    seqs: &Arc<AtomicU64>,
) -> Phase {
    let start = Instant::now();
    let mut filings = JoinSet::new();
    for i in 0..count {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let arm = arm.clone();
        let seq = seqs.fetch_add(1, Ordering::Relaxed);
        filings.spawn(async move { arm.transfer(seq, size, intended).await });
    }
    let mut total = Phase::new();
    while let Some(joined) = filings.join_next().await {
        match joined {
            Ok(outcome) => total.record(outcome),
            Err(e) => total.errors.push(format!("a load task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total
}
