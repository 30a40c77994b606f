//! Consumer lag as Kafka sees it: how many records of an inbox topic a node
//! has not applied yet, and how old the oldest of them is.
//!
//! For this node's own inbox the positions come from its store (where they
//! are kept with each record's effect); for another institution's inbox they
//! are the offsets its node commits under its consumer group, exactly what
//! Burrow or kafka_exporter read. Every call blocks: run it with
//! `spawn_blocking`.

use crate::error::{Error, Result};
use ecointegra_broker::kafka::KafkaSettings;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lag of one topic under one set of positions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Records not applied yet, over every partition.
    pub records: i64,
    /// Age of the oldest of them, in seconds (0 when there is none).
    pub seconds: f64,
}

/// Kafka clients for lag queries, made once per node.
pub struct LagReader {
    settings: KafkaSettings,
    /// Reads watermarks, metadata and the first unapplied records.
    reader: BaseConsumer,
    /// One idle client per consumer group whose committed offsets are read
    /// (a client reads the offsets of its own group only). None joins its
    /// group or commits anything.
    groups: Mutex<HashMap<String, std::sync::Arc<BaseConsumer>>>,
    /// One reading of first records at a time: they share `reader`'s assignment.
    reading: Mutex<()>,
}

fn config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("log_level", "3")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Only the first record of a partition is wanted: fetch little.
        .set("fetch.max.bytes", "1048576")
        .set("max.partition.fetch.bytes", "1048576")
        .set("queued.max.messages.kbytes", "2048");
    for (key, value) in &settings.options {
        config.set(key, value);
    }
    config
}

fn kafka(context: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error + '_ {
    move |source| {
        Error::Broker(ecointegra_broker::Error::Kafka {
            context: context.to_owned(),
            source,
        })
    }
}

impl LagReader {
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        let mut reader_config = config(settings);
        // A group id librdkafka requires but that never joins or commits.
        reader_config.set("group.id", "ecointegra.lag-reader");
        let reader = reader_config
            .create()
            .map_err(kafka("could not create the lag reader"))?;
        Ok(Self {
            settings: settings.clone(),
            reader,
            groups: Mutex::new(HashMap::new()),
            reading: Mutex::new(()),
        })
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
        let metadata = self
            .reader
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka("has no metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    /// The offsets `group` has committed on `topic` (None where it has none).
    pub fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, Option<i64>>> {
        let client = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            match groups.get(group) {
                Some(c) => c.clone(),
                None => {
                    let mut c = config(&self.settings);
                    c.set("group.id", group);
                    let consumer: BaseConsumer =
                        c.create().map_err(kafka("could not create a lag client"))?;
                    let consumer = std::sync::Arc::new(consumer);
                    groups.insert(group.to_owned(), consumer.clone());
                    consumer
                }
            }
        };
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(topic, *p);
        }
        let committed = client
            .committed_offsets(list, timeout)
            .map_err(kafka("could not read committed offsets"))?;
        Ok(partitions
            .iter()
            .map(|p| {
                let offset = committed
                    .find_partition(topic, *p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                (*p, offset)
            })
            .collect())
    }

    /// Lag of `topic` for the next offsets to read per partition (None: from
    /// the beginning).
    pub fn lag(
        &self,
        topic: &str,
        positions: &BTreeMap<i32, Option<i64>>,
        timeout: Duration,
    ) -> Result<Lag> {
        let mut lag = Lag::default();
        let mut behind = Vec::new();
        for (partition, next) in positions {
            let (low, high) = self
                .reader
                .fetch_watermarks(topic, *partition, timeout)
                .map_err(kafka("could not read watermarks"))?;
            let next = next.unwrap_or(low).max(low);
            if high > next {
                lag.records += high - next;
                behind.push((*partition, next));
            }
        }
        if let Some(oldest_ms) = self.oldest_timestamp(topic, &behind, timeout)? {
            let now = ecointegra_broker::now_ms();
            lag.seconds = (now - oldest_ms).max(0) as f64 / 1000.0;
        }
        Ok(lag)
    }

    /// The smallest timestamp among the records at `positions`.
    fn oldest_timestamp(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
        timeout: Duration,
    ) -> Result<Option<i64>> {
        if positions.is_empty() {
            return Ok(None);
        }
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = TopicPartitionList::new();
        for (partition, offset) in positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(kafka("rejected a partition offset"))?;
        }
        self.reader
            .assign(&list)
            .map_err(kafka("could not assign partitions"))?;
        let mut waiting: HashMap<i32, i64> = positions.iter().copied().collect();
        let mut oldest: Option<i64> = None;
        let deadline = Instant::now() + timeout;
        while !waiting.is_empty() && Instant::now() < deadline {
            if let Some(Ok(message)) = self.reader.poll(Duration::from_millis(100))
                && waiting.remove(&message.partition()).is_some()
                && let Some(ts) = message.timestamp().to_millis()
            {
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
            }
        }
        let _ = self.reader.unassign();
        Ok(oldest)
    }
}
