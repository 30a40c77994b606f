//! Prometheus metrics: counters the node's stages increment as things happen,
//! gauges read from the store and Kafka when scraped, rendered in the
//! Prometheus text exposition format (version 0.0.4) by hand.
//!
//! Labels have low cardinality: `institution`, `topic`, `outcome`, `reason`
//! (a dead letter's short reason code), `direction`; never a filing id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters told apart by one or two label values.
#[derive(Default)]
pub struct CounterVec(Mutex<BTreeMap<Vec<String>, u64>>);

impl CounterVec {
    pub fn add(&self, labels: &[&str], n: u64) {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += n;
    }

    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Upper bounds of the delivery-latency buckets, in seconds: from a fast
/// local transfer to an hour-long outage.
const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// A histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, value: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            inner.0[i] += 1;
        }
        inner.1 += value;
        inner.2 += 1;
    }
}

/// Events per second over a sliding minute, in one-second slots.
pub struct Window {
    start: Instant,
    slots: Mutex<[(u64, u64); 60]>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            slots: Mutex::new([(u64::MAX, 0); 60]),
        }
    }
}

impl Window {
    pub fn add(&self, n: u64) {
        let second = self.start.elapsed().as_secs();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += n;
    }

    /// The sum over the last 60 seconds.
    pub fn last_minute(&self) -> u64 {
        let now = self.start.elapsed().as_secs();
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(second, _)| *second != u64::MAX && now.saturating_sub(*second) < 60)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Every metric a node keeps. Counters start at zero with each process.
pub struct Metrics {
    /// Filings accepted at this institution's desk.
    pub submitted: Counter,
    /// Our transfers whose signed receipt arrived.
    pub delivered: Counter,
    /// Transfers from other institutions stored here.
    pub received: Counter,
    /// Things that went wrong, by outcome: `publish_error` (a publication
    /// Kafka did not acknowledge; retried), `dead_letter` (a record this node
    /// could not accept).
    pub failed: CounterVec,
    /// Document bytes, by direction: `submitted` at the desk, `received` in
    /// stored transfers.
    pub document_bytes: CounterVec,
    /// Kafka records and their bytes, by topic and direction (`produced`,
    /// `consumed`).
    pub records: CounterVec,
    pub record_bytes: CounterVec,
    /// From registration at the desk to the stored receipt, in seconds.
    pub delivery_latency: Histogram,
    /// Dead letters by reason code.
    pub dead_letters: CounterVec,
    pub dead_letters_replayed: Counter,
    pub dead_letters_discarded: Counter,
    /// Inbox bytes applied, over the last minute.
    pub inbox_bytes_window: Window,
    /// The Kafka reader of the lag queries, made on first use.
    pub(crate) lag_reader: Mutex<Option<std::sync::Arc<crate::telemetry::lag::LagReader>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            submitted: Counter::default(),
            delivered: Counter::default(),
            received: Counter::default(),
            failed: CounterVec::default(),
            document_bytes: CounterVec::default(),
            records: CounterVec::default(),
            record_bytes: CounterVec::default(),
            delivery_latency: Histogram::new(&LATENCY_BUCKETS),
            dead_letters: CounterVec::default(),
            dead_letters_replayed: Counter::default(),
            dead_letters_discarded: Counter::default(),
            inbox_bytes_window: Window::default(),
            lag_reader: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// A record handed to Kafka and acknowledged.
    pub fn produced(&self, topic: &str, bytes: usize) {
        self.records.inc(&[topic, "produced"]);
        self.record_bytes.add(&[topic, "produced"], bytes as u64);
    }

    /// A record read from Kafka, to be applied (or dead-lettered); `inbox`
    /// if it was read from this institution's inbox.
    pub fn consumed(&self, topic: &str, bytes: usize, inbox: bool) {
        self.records.inc(&[topic, "consumed"]);
        self.record_bytes.add(&[topic, "consumed"], bytes as u64);
        if inbox {
            self.inbox_bytes_window.add(bytes as u64);
        }
    }

    /// A filing accepted at the desk with `bytes` of documents.
    pub fn filing_submitted(&self, bytes: u64) {
        self.submitted.inc();
        self.document_bytes.add(&["submitted"], bytes);
    }

    /// A transfer from another institution stored here with `bytes` of documents.
    pub fn filing_received(&self, bytes: u64) {
        self.received.inc();
        self.document_bytes.add(&["received"], bytes);
    }

    /// One of our transfers was receipted `latency` after registration.
    pub fn receipted(&self, latency: Duration) {
        self.delivered.inc();
        self.delivery_latency.observe(latency.as_secs_f64());
    }
}

/// Values read when scraped.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub kafka_up: bool,
    pub outbox_backlog: i64,
    pub pending_receipts: i64,
    pub oldest_pending_receipt_seconds: f64,
    pub dead_letters_open: i64,
    /// Consumers held at a record they cannot get past yet.
    pub consumers_stalled: i64,
    /// (topic, records, seconds) when Kafka could be asked.
    pub inbox_lag: Option<(String, i64, f64)>,
    pub kafka: Option<ecointegra_broker::kafka::ClientStats>,
    /// Store transactions committed, and the effects (writes of submissions,
    /// consumed records, relay bookkeeping...) they held.
    pub store_commits: (u64, u64),
}

/// The text exposition of every metric.
pub fn render(institution: &str, m: &Metrics, g: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let inst = format!("institution=\"{}\"", escape(institution));
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (suffix_labels, value) in samples {
            let _ = writeln!(out, "{name}{suffix_labels} {value}");
        }
    };
    let one = |v: String| vec![(format!("{{{inst}}}"), v)];
    let labelled = |names: &[&str], vec: &CounterVec| -> Vec<(String, String)> {
        vec.snapshot()
            .into_iter()
            .map(|(values, n)| {
                let mut labels = inst.clone();
                for (name, value) in names.iter().zip(values) {
                    let _ = write!(labels, ",{name}=\"{}\"", escape(&value));
                }
                (format!("{{{labels}}}"), n.to_string())
            })
            .collect()
    };

    family(
        "ecointegra_filings_submitted_total",
        "counter",
        "Filings accepted at this institution's desk.",
        one(m.submitted.get().to_string()),
    );
    family(
        "ecointegra_filings_delivered_total",
        "counter",
        "Filings sent by this institution whose signed receipt arrived.",
        one(m.delivered.get().to_string()),
    );
    family(
        "ecointegra_filings_received_total",
        "counter",
        "Filings from other institutions stored and receipted here.",
        one(m.received.get().to_string()),
    );
    family(
        "ecointegra_filings_failed_total",
        "counter",
        "Failures by outcome: publish_error (retried), dead_letter (not accepted).",
        labelled(&["outcome"], &m.failed),
    );
    family(
        "ecointegra_document_bytes_total",
        "counter",
        "Document bytes submitted at the desk or received in stored transfers.",
        labelled(&["direction"], &m.document_bytes),
    );
    family(
        "ecointegra_kafka_records_total",
        "counter",
        "Kafka records produced (acknowledged) or consumed, by topic.",
        labelled(&["topic", "direction"], &m.records),
    );
    family(
        "ecointegra_kafka_record_bytes_total",
        "counter",
        "Bytes of the Kafka records produced or consumed, by topic.",
        labelled(&["topic", "direction"], &m.record_bytes),
    );
    {
        let (buckets, sum, count) = m
            .delivery_latency
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut samples = Vec::new();
        let mut cumulative = 0;
        for (bound, n) in m.delivery_latency.bounds.iter().zip(&buckets) {
            cumulative += n;
            samples.push((
                format!("_bucket{{{inst},le=\"{bound}\"}}"),
                cumulative.to_string(),
            ));
        }
        samples.push((format!("_bucket{{{inst},le=\"+Inf\"}}"), count.to_string()));
        samples.push((format!("_sum{{{inst}}}"), sum.to_string()));
        samples.push((format!("_count{{{inst}}}"), count.to_string()));
        family(
            "ecointegra_delivery_latency_seconds",
            "histogram",
            "From registration at the desk to the destination's stored receipt.",
            samples,
        );
    }
    family(
        "ecointegra_dead_letters_total",
        "counter",
        "Records this institution could not accept, by reason code.",
        labelled(&["reason"], &m.dead_letters),
    );
    family(
        "ecointegra_dead_letters_replayed_total",
        "counter",
        "Dead letters published again by an operator.",
        one(m.dead_letters_replayed.get().to_string()),
    );
    family(
        "ecointegra_dead_letters_discarded_total",
        "counter",
        "Dead letters discarded by an operator.",
        one(m.dead_letters_discarded.get().to_string()),
    );
    family(
        "ecointegra_dead_letters_open",
        "gauge",
        "Dead letters neither replayed nor discarded.",
        one(g.dead_letters_open.to_string()),
    );
    family(
        "ecointegra_consumers_stalled",
        "gauge",
        "Consumers held at a record they cannot get past yet (see /readyz).",
        one(g.consumers_stalled.to_string()),
    );
    family(
        "ecointegra_kafka_up",
        "gauge",
        "1 if Kafka answered the node's last probe.",
        one(u8::from(g.kafka_up).to_string()),
    );
    family(
        "ecointegra_store_commits_total",
        "counter",
        "Store transactions committed (one fsync each).",
        one(g.store_commits.0.to_string()),
    );
    family(
        "ecointegra_store_effects_total",
        "counter",
        "Atomic effects written to the store; several share a commit.",
        one(g.store_commits.1.to_string()),
    );
    family(
        "ecointegra_outbox_backlog",
        "gauge",
        "Outbox entries: transfers not yet receipted and envelopes not yet acknowledged.",
        one(g.outbox_backlog.to_string()),
    );
    family(
        "ecointegra_pending_receipts",
        "gauge",
        "Transfers published and awaiting the destination's receipt.",
        one(g.pending_receipts.to_string()),
    );
    family(
        "ecointegra_oldest_pending_receipt_seconds",
        "gauge",
        "Age of the oldest transfer awaiting a receipt.",
        one(g.oldest_pending_receipt_seconds.to_string()),
    );
    if let Some((topic, records, seconds)) = &g.inbox_lag {
        let labels = format!("{{{inst},topic=\"{}\"}}", escape(topic));
        family(
            "ecointegra_inbox_lag_records",
            "gauge",
            "Records in this institution's inbox not yet applied.",
            vec![(labels.clone(), records.to_string())],
        );
        family(
            "ecointegra_inbox_lag_seconds",
            "gauge",
            "Age of the oldest record in this institution's inbox not yet applied.",
            vec![(labels, seconds.to_string())],
        );
    }
    if let Some(stats) = &g.kafka {
        let producer = |v: String| vec![(format!("{{{inst},client=\"producer\"}}"), v)];
        family(
            "ecointegra_librdkafka_queued_messages",
            "gauge",
            "Messages waiting in librdkafka's queues (statistics).",
            producer(stats.queued_messages.to_string()),
        );
        family(
            "ecointegra_librdkafka_queued_bytes",
            "gauge",
            "Bytes waiting in librdkafka's queues (statistics).",
            producer(stats.queued_bytes.to_string()),
        );
        family(
            "ecointegra_librdkafka_tx_messages",
            "gauge",
            "Messages transmitted to brokers since the client started (statistics).",
            producer(stats.tx_messages.to_string()),
        );
        family(
            "ecointegra_librdkafka_tx_message_bytes",
            "gauge",
            "Message bytes transmitted to brokers since the client started (statistics).",
            producer(stats.tx_message_bytes.to_string()),
        );
        let per_broker = |f: &dyn Fn(&ecointegra_broker::kafka::BrokerStats) -> String| {
            stats
                .brokers
                .iter()
                .map(|b| {
                    (
                        format!(
                            "{{{inst},client=\"producer\",broker=\"{}\"}}",
                            escape(&b.name)
                        ),
                        f(b),
                    )
                })
                .collect::<Vec<_>>()
        };
        family(
            "ecointegra_librdkafka_broker_up",
            "gauge",
            "1 if the producer's connection to the broker is up (statistics).",
            per_broker(&|b| u8::from(b.up).to_string()),
        );
        family(
            "ecointegra_librdkafka_broker_rtt_seconds",
            "gauge",
            "Average round-trip time to the broker (statistics).",
            per_broker(&|b| (b.rtt_avg_us as f64 / 1e6).to_string()),
        );
        family(
            "ecointegra_librdkafka_broker_tx_errors",
            "gauge",
            "Transmission errors to the broker since the client started (statistics).",
            per_broker(&|b| b.tx_errors.to_string()),
        );
        family(
            "ecointegra_librdkafka_broker_request_timeouts",
            "gauge",
            "Requests to the broker that timed out since the client started (statistics).",
            per_broker(&|b| b.request_timeouts.to_string()),
        );
    }
    out
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_help_type_and_cumulative_buckets() {
        let m = Metrics::default();
        m.submitted.add(2);
        m.dead_letters.inc(&["decode"]);
        m.receipted(Duration::from_millis(300));
        m.receipted(Duration::from_secs(20));
        let text = render("oefa", &m, &Gauges::default());
        assert!(text.contains("ecointegra_filings_submitted_total{institution=\"oefa\"} 2\n"));
        assert!(
            text.contains(
                "ecointegra_dead_letters_total{institution=\"oefa\",reason=\"decode\"} 1\n"
            )
        );
        assert!(text.contains(
            "ecointegra_delivery_latency_seconds_bucket{institution=\"oefa\",le=\"0.5\"} 1\n"
        ));
        assert!(text.contains(
            "ecointegra_delivery_latency_seconds_bucket{institution=\"oefa\",le=\"30\"} 2\n"
        ));
        assert!(
            text.contains("ecointegra_delivery_latency_seconds_count{institution=\"oefa\"} 2\n")
        );
        assert!(text.contains("# TYPE ecointegra_delivery_latency_seconds histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_window_sums_the_last_minute() {
        let w = Window::default();
        w.add(3);
        w.add(4);
        assert_eq!(w.last_minute(), 7);
    }
}
