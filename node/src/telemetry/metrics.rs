//! Prometheus metrics with `prometheus-client`: counters and a histogram the
//! node's stages update as things happen, and values read from the store and
//! Kafka when scraped ([`Gauges`]), encoded in the OpenMetrics text format.
//! librdkafka's cumulative statistics (messages sent, errors, timeouts) are
//! counters, its current ones (queues, connection state, RTT) gauges.
//!
//! Labels have low cardinality: `institution` (on every sample), `topic`,
//! `outcome`, `reason` (a dead letter's short reason code), `direction`,
//! `client`, `broker`; never a filing id.

use ecointegra_broker::kafka::{BrokerStats, ClientStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The media type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric's name starts with it.
const PREFIX: &str = "ecointegra";

/// Upper bounds of the delivery-latency buckets, in seconds: from a fast
/// local transfer to an hour-long outage.
const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Upper bounds of the store-commit buckets, in seconds: from an idle disk's
/// sync to a checkpoint or a device stall.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    topic: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
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
    /// Where the counters below are registered, with this institution's label.
    registry: Registry,
    institution: String,
    /// Filings accepted at this institution's desk.
    submitted: Counter,
    /// Our transfers whose signed receipt arrived.
    delivered: Counter,
    /// Transfers from other institutions stored here.
    received: Counter,
    /// Things that went wrong, by outcome: `publish_error` (a publication
    /// Kafka did not acknowledge; retried), `dead_letter` (a record this node
    /// could not accept).
    failed: Family<OutcomeLabel, Counter>,
    /// Document bytes, by direction: `submitted` at the desk, `received` in
    /// stored transfers.
    document_bytes: Family<DirectionLabel, Counter>,
    /// Kafka records and their bytes, by topic and direction (`produced`,
    /// `consumed`).
    records: Family<RecordLabels, Counter>,
    record_bytes: Family<RecordLabels, Counter>,
    /// From registration at the desk to the stored receipt, in seconds.
    delivery_latency: Histogram,
    /// Each store commit, in seconds.
    store_commit_latency: Histogram,
    /// Dead letters by reason code.
    dead_letters: Family<ReasonLabel, Counter>,
    dead_letters_replayed: Counter,
    dead_letters_discarded: Counter,
    /// Inbox bytes applied, over the last minute.
    pub inbox_bytes_window: Window,
    /// The Kafka reader of the lag queries, made on first use.
    pub(crate) lag_reader: Mutex<Option<std::sync::Arc<crate::telemetry::lag::LagReader>>>,
}

impl Metrics {
    /// The metrics of `institution`'s node, which labels every sample.
    pub fn new(institution: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(PREFIX, labels(institution));
        let m = Self {
            registry: Registry::default(),
            institution: institution.to_owned(),
            submitted: Counter::default(),
            delivered: Counter::default(),
            received: Counter::default(),
            failed: Family::default(),
            document_bytes: Family::default(),
            records: Family::default(),
            record_bytes: Family::default(),
            delivery_latency: Histogram::new(LATENCY_BUCKETS),
            store_commit_latency: Histogram::new(COMMIT_BUCKETS),
            dead_letters: Family::default(),
            dead_letters_replayed: Counter::default(),
            dead_letters_discarded: Counter::default(),
            inbox_bytes_window: Window::default(),
            lag_reader: Mutex::new(None),
        };
        // Counter names get their `_total` from the library.
        registry.register(
            "filings_submitted",
            "Filings accepted at this institution's desk",
            m.submitted.clone(),
        );
        registry.register(
            "filings_delivered",
            "Filings sent by this institution whose signed receipt arrived",
            m.delivered.clone(),
        );
        registry.register(
            "filings_received",
            "Filings from other institutions stored and receipted here",
            m.received.clone(),
        );
        registry.register(
            "filings_failed",
            "Failures by outcome: publish_error (retried), dead_letter (not accepted)",
            m.failed.clone(),
        );
        registry.register_with_unit(
            "document",
            "Document bytes submitted at the desk or received in stored transfers",
            Unit::Bytes,
            m.document_bytes.clone(),
        );
        registry.register(
            "kafka_records",
            "Kafka records produced (acknowledged) or consumed, by topic",
            m.records.clone(),
        );
        registry.register_with_unit(
            "kafka_record",
            "Bytes of the Kafka records produced or consumed, by topic",
            Unit::Bytes,
            m.record_bytes.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "From registration at the desk to the destination's stored receipt",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        registry.register_with_unit(
            "store_commit_latency",
            "Each store commit (WAL write, sync and any checkpoint): what every durable answer waits for",
            Unit::Seconds,
            m.store_commit_latency.clone(),
        );
        registry.register(
            "dead_letters",
            "Records this institution could not accept, by reason code",
            m.dead_letters.clone(),
        );
        registry.register(
            "dead_letters_replayed",
            "Dead letters published again by an operator",
            m.dead_letters_replayed.clone(),
        );
        registry.register(
            "dead_letters_discarded",
            "Dead letters discarded by an operator",
            m.dead_letters_discarded.clone(),
        );
        Self { registry, ..m }
    }

    /// A record handed to Kafka and acknowledged.
    pub fn produced(&self, topic: &str, bytes: usize) {
        self.count_record(topic, "produced", bytes);
    }

    /// A record read from Kafka, to be applied (or dead-lettered); `inbox`
    /// if it was read from this institution's inbox.
    pub fn consumed(&self, topic: &str, bytes: usize, inbox: bool) {
        self.count_record(topic, "consumed", bytes);
        if inbox {
            self.inbox_bytes_window.add(bytes as u64);
        }
    }

    fn count_record(&self, topic: &str, direction: &'static str, bytes: usize) {
        let labels = RecordLabels {
            topic: topic.to_owned(),
            direction,
        };
        self.records.get_or_create(&labels).inc();
        self.record_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    /// A filing accepted at the desk with `bytes` of documents.
    pub fn filing_submitted(&self, bytes: u64) {
        self.submitted.inc();
        self.document_bytes
            .get_or_create(&DirectionLabel {
                direction: "submitted",
            })
            .inc_by(bytes);
    }

    /// A transfer from another institution stored here with `bytes` of documents.
    pub fn filing_received(&self, bytes: u64) {
        self.received.inc();
        self.document_bytes
            .get_or_create(&DirectionLabel {
                direction: "received",
            })
            .inc_by(bytes);
    }

    /// One of our transfers was receipted `latency` after registration.
    pub fn receipted(&self, latency: Duration) {
        self.delivered.inc();
        self.delivery_latency.observe(latency.as_secs_f64());
    }

    /// A store commit that took `took`.
    pub fn store_committed(&self, took: Duration) {
        self.store_commit_latency.observe(took.as_secs_f64());
    }

    /// A publication Kafka did not acknowledge; it will be retried.
    pub fn publish_failed(&self) {
        self.failed
            .get_or_create(&OutcomeLabel {
                outcome: "publish_error",
            })
            .inc();
    }

    /// A record this node could not accept went to its dead-letter topic.
    pub fn dead_lettered(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
        self.failed
            .get_or_create(&OutcomeLabel {
                outcome: "dead_letter",
            })
            .inc();
    }

    /// A consumer met a local fault (disk, store) and waits at its record.
    pub fn consumer_stalled(&self) {
        self.failed
            .get_or_create(&OutcomeLabel { outcome: "local" })
            .inc();
    }

    /// A consumer received nothing while records waited for it, and was
    /// built again.
    pub fn consumer_rebuilt(&self) {
        self.failed
            .get_or_create(&OutcomeLabel {
                outcome: "consumer_rebuilt",
            })
            .inc();
    }

    /// A dead letter Kafka refuses for good, kept in the store only.
    pub fn dead_letter_unpublished(&self) {
        self.failed
            .get_or_create(&OutcomeLabel {
                outcome: "dead_letter_unpublished",
            })
            .inc();
    }

    /// An operator published a dead letter again.
    pub fn dead_letter_replayed(&self) {
        self.dead_letters_replayed.inc();
    }

    /// An operator discarded a dead letter.
    pub fn dead_letter_discarded(&self) {
        self.dead_letters_discarded.inc();
    }
}

fn labels(institution: &str) -> impl Iterator<Item = (Cow<'static, str>, Cow<'static, str>)> {
    std::iter::once((
        Cow::Borrowed("institution"),
        Cow::Owned(institution.to_owned()),
    ))
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
    pub kafka: Option<ClientStats>,
    /// Store transactions committed, and the effects (writes of submissions,
    /// consumed records, relay bookkeeping...) they held.
    pub store_commits: (u64, u64),
}

/// The OpenMetrics text exposition of every metric: the counters kept, then
/// `gauges`, read for this scrape.
pub fn render(m: &Metrics, gauges: Gauges) -> String {
    let mut scrape = Registry::with_prefix_and_labels(PREFIX, labels(&m.institution));
    scrape.register_collector(Box::new(gauges));
    let mut out = String::with_capacity(8192);
    prometheus_client::encoding::text::encode_registry(&mut out, &m.registry)
        .and_then(|()| prometheus_client::encoding::text::encode(&mut out, &scrape))
        .expect("writing to a String does not fail");
    out
}

/// One sample without labels of its own.
fn one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
    metric.encode(m)
}

/// One sample per label set.
fn labelled<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), first.metric_type())?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BrokerLabels {
    client: &'static str,
    broker: String,
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        one(
            e,
            "dead_letters_open",
            "Dead letters neither replayed nor discarded.",
            None,
            ConstGauge::new(self.dead_letters_open),
        )?;
        one(
            e,
            "consumers_stalled",
            "Consumers held at a record they cannot get past yet (see /readyz).",
            None,
            ConstGauge::new(self.consumers_stalled),
        )?;
        one(
            e,
            "kafka_up",
            "1 if Kafka answered the node's last probe.",
            None,
            ConstGauge::new(i64::from(self.kafka_up)),
        )?;
        one(
            e,
            "store_commits",
            "Store transactions committed (one fsync each).",
            None,
            ConstCounter::new(self.store_commits.0),
        )?;
        one(
            e,
            "store_effects",
            "Atomic effects written to the store; several share a commit.",
            None,
            ConstCounter::new(self.store_commits.1),
        )?;
        one(
            e,
            "outbox_backlog",
            "Outbox entries: transfers not yet receipted and envelopes not yet acknowledged.",
            None,
            ConstGauge::new(self.outbox_backlog),
        )?;
        one(
            e,
            "pending_receipts",
            "Transfers published and awaiting the destination's receipt.",
            None,
            ConstGauge::new(self.pending_receipts),
        )?;
        one(
            e,
            "oldest_pending_receipt",
            "Age of the oldest transfer awaiting a receipt.",
            Some(Unit::Seconds),
            ConstGauge::new(self.oldest_pending_receipt_seconds),
        )?;
        if let Some((topic, records, seconds)) = &self.inbox_lag {
            let topic = || TopicLabel {
                topic: topic.clone(),
            };
            labelled(
                e,
                "inbox_lag_records",
                "Records in this institution's inbox not yet applied.",
                None,
                [(topic(), ConstGauge::new(*records))],
            )?;
            labelled(
                e,
                "inbox_lag",
                "Age of the oldest record in this institution's inbox not yet applied.",
                Some(Unit::Seconds),
                [(topic(), ConstGauge::new(*seconds))],
            )?;
        }
        if let Some(stats) = &self.kafka {
            librdkafka(e, stats)?;
        }
        Ok(())
    }
}

/// The producer's librdkafka statistics: counts since the client started are
/// counters, the rest gauges.
fn librdkafka(e: &mut DescriptorEncoder, stats: &ClientStats) -> Result<(), std::fmt::Error> {
    let producer = || ClientLabel { client: "producer" };
    labelled(
        e,
        "librdkafka_queued_messages",
        "Messages waiting in librdkafka's queues (statistics).",
        None,
        [(producer(), ConstGauge::new(stats.queued_messages))],
    )?;
    labelled(
        e,
        "librdkafka_queued",
        "Bytes waiting in librdkafka's queues (statistics).",
        Some(Unit::Bytes),
        [(producer(), ConstGauge::new(stats.queued_bytes))],
    )?;
    labelled(
        e,
        "librdkafka_tx_messages",
        "Messages transmitted to brokers since the client started (statistics).",
        None,
        [(
            producer(),
            ConstCounter::new(stats.tx_messages.max(0) as u64),
        )],
    )?;
    labelled(
        e,
        "librdkafka_tx_message",
        "Message bytes transmitted to brokers since the client started (statistics).",
        Some(Unit::Bytes),
        [(
            producer(),
            ConstCounter::new(stats.tx_message_bytes.max(0) as u64),
        )],
    )?;
    labelled(
        e,
        "librdkafka_broker_up",
        "1 if the producer's connection to the broker is up (statistics).",
        None,
        per_broker(stats, |b| ConstGauge::new(i64::from(b.up))),
    )?;
    labelled(
        e,
        "librdkafka_broker_rtt",
        "Average round-trip time to the broker (statistics).",
        Some(Unit::Seconds),
        per_broker(stats, |b| ConstGauge::new(b.rtt_avg_us as f64 / 1e6)),
    )?;
    labelled(
        e,
        "librdkafka_broker_tx_errors",
        "Transmission errors to the broker since the client started (statistics).",
        None,
        per_broker(stats, |b| ConstCounter::new(b.tx_errors)),
    )?;
    labelled(
        e,
        "librdkafka_broker_request_timeouts",
        "Requests to the broker that timed out since the client started (statistics).",
        None,
        per_broker(stats, |b| ConstCounter::new(b.request_timeouts)),
    )
}

/// One sample per broker the producer knows.
fn per_broker<M>(stats: &ClientStats, value: impl Fn(&BrokerStats) -> M) -> Vec<(BrokerLabels, M)> {
    stats
        .brokers
        .iter()
        .map(|b| {
            let labels = BrokerLabels {
                client: "producer",
                broker: b.name.clone(),
            };
            (labels, value(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_help_type_and_cumulative_buckets() {
        let m = Metrics::new("oefa");
        m.filing_submitted(10);
        m.filing_submitted(20);
        m.dead_lettered("decode");
        m.receipted(Duration::from_millis(300));
        m.receipted(Duration::from_secs(20));
        m.store_committed(Duration::from_micros(700));
        m.store_committed(Duration::from_millis(120));
        let text = render(&m, Gauges::default());
        for line in [
            "# TYPE ecointegra_filings_submitted counter\n",
            "ecointegra_filings_submitted_total{institution=\"oefa\"} 2\n",
            "ecointegra_document_bytes_total{institution=\"oefa\",direction=\"submitted\"} 30\n",
            "ecointegra_dead_letters_total{institution=\"oefa\",reason=\"decode\"} 1\n",
            "# TYPE ecointegra_delivery_latency_seconds histogram\n",
            "# UNIT ecointegra_delivery_latency_seconds seconds\n",
            "ecointegra_delivery_latency_seconds_bucket{institution=\"oefa\",le=\"0.5\"} 1\n",
            "ecointegra_delivery_latency_seconds_bucket{institution=\"oefa\",le=\"30.0\"} 2\n",
            "ecointegra_delivery_latency_seconds_count{institution=\"oefa\"} 2\n",
            "# TYPE ecointegra_store_commit_latency_seconds histogram\n",
            "ecointegra_store_commit_latency_seconds_bucket{institution=\"oefa\",le=\"0.001\"} 1\n",
            "ecointegra_store_commit_latency_seconds_bucket{institution=\"oefa\",le=\"0.1\"} 1\n",
            "ecointegra_store_commit_latency_seconds_bucket{institution=\"oefa\",le=\"0.25\"} 2\n",
            "ecointegra_store_commit_latency_seconds_count{institution=\"oefa\"} 2\n",
            "ecointegra_kafka_up{institution=\"oefa\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn librdkafka_counts_are_counters_and_its_state_gauges() {
        let stats = ClientStats {
            tx_messages: 7,
            brokers: vec![BrokerStats {
                name: "127.0.0.1:9092/1".into(),
                up: true,
                tx_errors: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let gauges = Gauges {
            kafka: Some(stats),
            ..Default::default()
        };
        let text = render(&Metrics::new("oefa"), gauges);
        for line in [
            "# TYPE ecointegra_librdkafka_tx_messages counter\n",
            "ecointegra_librdkafka_tx_messages_total{institution=\"oefa\",client=\"producer\"} 7\n",
            "# TYPE ecointegra_librdkafka_broker_tx_errors counter\n",
            "# TYPE ecointegra_librdkafka_broker_up gauge\n",
            "ecointegra_librdkafka_broker_up{institution=\"oefa\",client=\"producer\",broker=\"127.0.0.1:9092/1\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn the_window_sums_the_last_minute() {
        let w = Window::default();
        w.add(3);
        w.add(4);
        assert_eq!(w.last_minute(), 7);
    }
}
