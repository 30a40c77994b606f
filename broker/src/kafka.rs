//! Kafka clients: configuration, the idempotent publisher and the inbox consumer.

use crate::Error;
use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header keys on every record, readable by standard Kafka tools.
pub mod headers {
    pub const MESSAGE_TYPE: &str = "ecointegra-message-type";
    pub const SENDER: &str = "ecointegra-sender";
    pub const MESSAGE_ID: &str = "ecointegra-message-id";
    pub const REASON: &str = "ecointegra-dlq-reason";
}

/// The largest record a node produces or accepts by default: librdkafka's
/// own default `message.max.bytes`, below the broker's default topic limit.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1_000_000;

/// Where Kafka is and how to talk to it.
#[derive(Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Free-form librdkafka options (TLS, SASL, tuning), passed through as given.
    pub options: BTreeMap<String, String>,
    /// The largest record, in bytes: the producer's `message.max.bytes` and
    /// the `max.message.bytes` of the topics a node creates. One setting, so
    /// every record the node produces fits every topic it produces to.
    pub max_record_bytes: u32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            options: BTreeMap::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl std::fmt::Debug for KafkaSettings {
    // Options may hold credentials (sasl.password, ssl.key.password): print keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("log_level", "3");
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    /// An admin client, for creating topics.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, Error> {
        self.client_config()
            .create()
            .map_err(|e| Error::kafka("could not create the admin client", e))
    }
}

/// An idempotent producer (`enable.idempotence=true`, `acks=all`).
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<StatsContext>,
    stats: Arc<Mutex<Option<ClientStats>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

/// A few key numbers of librdkafka's statistics for one client, as of its
/// last report (`statistics.interval.ms`).
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Messages waiting in the client's queues.
    pub queued_messages: u64,
    /// Bytes of those messages.
    pub queued_bytes: u64,
    /// Messages sent to (or received from) brokers since the client started.
    pub tx_messages: i64,
    pub tx_message_bytes: i64,
    pub rx_messages: i64,
    pub rx_message_bytes: i64,
    /// Per broker (`host:port/id`): connection state, average round-trip time
    /// in microseconds, transmission errors, retries and request timeouts.
    pub brokers: Vec<BrokerStats>,
}

#[derive(Debug, Clone, Default)]
pub struct BrokerStats {
    pub name: String,
    pub up: bool,
    pub rtt_avg_us: i64,
    pub tx_errors: u64,
    pub tx_retries: u64,
    pub request_timeouts: u64,
}

/// Keeps the last statistics librdkafka reported, and the last client error
/// (an authentication failure, all brokers down), so a probe can say why
/// Kafka does not answer.
#[derive(Clone, Default)]
pub struct StatsContext {
    latest: Arc<Mutex<Option<ClientStats>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for StatsContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client error.");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut brokers: Vec<BrokerStats> = statistics
            .brokers
            .values()
            // Bootstrap placeholders (nodeid -1) duplicate the real brokers.
            .filter(|b| b.nodeid >= 0)
            .map(|b| BrokerStats {
                name: b.name.clone(),
                up: b.state == "UP",
                rtt_avg_us: b.rtt.as_ref().map_or(0, |w| w.avg),
                tx_errors: b.txerrs,
                tx_retries: b.txretries,
                request_timeouts: b.req_timeouts,
            })
            .collect();
        brokers.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshot = ClientStats {
            queued_messages: statistics.msg_cnt,
            queued_bytes: statistics.msg_size,
            tx_messages: statistics.txmsgs,
            tx_message_bytes: statistics.txmsg_bytes,
            rx_messages: statistics.rxmsgs,
            rx_message_bytes: statistics.rxmsg_bytes,
            brokers,
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }
}

/// A record handed to the producer, not yet acknowledged by the broker.
pub struct Pending(DeliveryFuture);

impl Pending {
    /// Waits for the broker's acknowledgement: the partition and offset written.
    pub async fn delivered(self) -> Result<(i32, i64), Error> {
        match self.0.await {
            Ok(Ok(delivery)) => placed(delivery.partition, delivery.offset),
            Ok(Err((e, _))) => Err(Error::kafka("did not acknowledge a record", e)),
            Err(_) => Err(Error::kafka(
                "dropped a record unacknowledged",
                KafkaError::Canceled,
            )),
        }
    }
}

/// An acknowledged record's place in the log, if the broker gave one.
///
/// The idempotent producer also counts a record as delivered when the broker
/// answers a retry of it with DUPLICATE_SEQUENCE_NUMBER, and then has no
/// offset for it (librdkafka reports an invalid one). That answer is not
/// proof the record is in the log: a broker with no state yet for this
/// producer on a partition (one just created, its log not yet open when the
/// first send came) takes a later record's sequence as the start, and the
/// first record's retry then looks like a duplicate of what came before. One
/// run of the tests lost a transfer's first chunk that way. Such a delivery
/// is an error the caller retries: a record already there comes twice, and
/// its message id makes the second a no-op.
fn placed(partition: i32, offset: i64) -> Result<(i32, i64), Error> {
    if offset < 0 {
        return Err(Error::kafka(
            format!(
                "acknowledged a record without its offset (a retry taken for a duplicate) in partition {partition}; it may not be in the log"
            ),
            KafkaError::MessageProduction(RDKafkaErrorCode::DuplicateSequenceNumber),
        ));
    }
    Ok((partition, offset))
}

/// What a record says about itself in its headers.
pub struct RecordMeta<'a> {
    pub message_type: &'a str,
    pub sender: &'a str,
    pub message_id: &'a str,
}

impl Publisher {
    /// `message_timeout` bounds how long one record may wait for Kafka before
    /// its delivery fails and the caller's retry takes over.
    pub fn new(settings: &KafkaSettings, message_timeout: Duration) -> Result<Self, Error> {
        let mut config = settings.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("statistics.interval.ms", "5000")
            .set("linger.ms", "2")
            .set("compression.type", "none")
            .set("message.max.bytes", settings.max_record_bytes.to_string())
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            );
        for (key, value) in &settings.options {
            config.set(key, value);
        }
        let context = StatsContext::default();
        let stats = context.latest.clone();
        let last_error = context.last_error.clone();
        let producer = config
            .create_with_context(context)
            .map_err(|e| Error::kafka("could not create the producer", e))?;
        Ok(Self {
            producer,
            stats,
            last_error,
        })
    }

    /// Hands a record to the producer, waiting while its queue is full.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        meta: &RecordMeta<'_>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Pending, Error> {
        let mut headers = OwnedHeaders::new_with_capacity(3 + extra_headers.len());
        for (name, value) in [
            (headers::MESSAGE_TYPE, meta.message_type),
            (headers::SENDER, meta.sender),
            (headers::MESSAGE_ID, meta.message_id),
        ]
        .into_iter()
        .chain(extra_headers.iter().copied())
        {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(Pending(future)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(Error::kafka(
                        format!("could not queue a record for {topic}"),
                        e,
                    ));
                }
            }
        }
    }

    /// Hands a record to the producer and waits for its acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        meta: &RecordMeta<'_>,
        extra_headers: &[(&str, &str)],
    ) -> Result<(i32, i64), Error> {
        self.enqueue(topic, key, value, meta, extra_headers)
            .await?
            .delivered()
            .await
    }

    /// Asks the cluster for its metadata: is Kafka reachable? Blocking.
    pub fn probe(&self, timeout: Duration) -> Result<(), Error> {
        let last_error = &self.last_error;
        match self.producer.client().fetch_metadata(None, timeout) {
            Ok(_) => {
                *last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
            Err(e) => {
                let why = last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Err(match why {
                    Some(why) => Error::kafka(format!("is not reachable ({why})"), e),
                    None => Error::kafka("is not reachable", e),
                })
            }
        }
    }

    /// Waits until every queued record is acknowledged or `timeout` passes. Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer
            .flush(timeout)
            .map_err(|e| Error::kafka("could not flush the producer", e))
    }

    /// The producer's last librdkafka statistics, if it has reported yet.
    pub fn statistics(&self) -> Option<ClientStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Reads one inbox topic from positions the caller keeps, storing offsets for
/// Kafka only after the caller has made each record's effect durable.
pub struct InboxConsumer {
    consumer: StreamConsumer,
    topic: String,
}

/// How soon a consumer wants each record after it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// At once: a fetch returns as soon as the broker has a record
    /// (transfers and receipts, which someone is waiting for).
    Eager,
    /// Within [`PATIENT_WAIT_MS`]: a fetch waits for [`PATIENT_MIN_BYTES`]
    /// or that long, whichever comes first (the sector's timeline, the
    /// directory), so the broker answers a few large fetches instead of one
    /// per record or two, and the node applies them in larger batches.
    Patient,
}

/// How long a patient fetch waits for records to gather.
pub const PATIENT_WAIT_MS: u32 = 100;
/// How many bytes end a patient fetch's wait early.
pub const PATIENT_MIN_BYTES: u32 = 256 * 1024;

impl InboxConsumer {
    /// `group_id` is stable per institution, so lag tools see the committed offsets.
    pub fn new(
        settings: &KafkaSettings,
        group_id: &str,
        topic: &str,
        fetch: Fetch,
    ) -> Result<Self, Error> {
        let mut config = settings.client_config();
        if fetch == Fetch::Patient {
            config
                .set("fetch.wait.max.ms", PATIENT_WAIT_MS.to_string())
                .set("fetch.min.bytes", PATIENT_MIN_BYTES.to_string());
        }
        config
            .set("group.id", group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Bounds the records librdkafka prefetches: memory stays small
            // however large the documents in flight.
            .set("queued.max.messages.kbytes", "8192")
            // When that bound is reached librdkafka waits this long before
            // fetching again (default 1000 ms): a large transfer would stall
            // the partition for a second each time the node catches up.
            .set("fetch.queue.backoff.ms", "10")
            .set("fetch.max.bytes", "8388608")
            // A fetch ends with whatever part of the next record batch fits
            // its partition's share; the client drops that part and fetches
            // it again. At the default 1 MiB share two 512 KiB chunks miss by
            // a few hundred bytes, so every other chunk crossed the network
            // twice (measured: the destination read 1.9 bytes from the
            // broker per byte the origin wrote). A share as large as the
            // whole fetch wastes at most one batch in sixteen.
            .set("max.partition.fetch.bytes", "8388608");
        for (key, value) in &settings.options {
            config.set(key, value);
        }
        let consumer = config
            .create()
            .map_err(|e| Error::kafka("could not create the consumer", e))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partitions. Blocking.
    pub fn partitions(&self, timeout: Duration) -> Result<Vec<i32>, Error> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| Error::kafka(format!("has no metadata for {}", self.topic), e))?;
        // A topic created a moment ago may not have leaders yet; assigning
        // then has been seen to leave a partition unread. Wait for leaders.
        if let Some(p) = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.leader() < 0 || p.error().is_some())
        {
            return Err(Error::kafka(
                format!("has no leader yet for {} partition {}", self.topic, p.id()),
                KafkaError::MetadataFetch(RDKafkaErrorCode::LeaderNotAvailable),
            ));
        }
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::kafka(
                format!("has no partitions for {}", self.topic),
                KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
            ));
        }
        Ok(partitions)
    }

    /// The offset the client will hand over next, per assigned partition
    /// (`None` before it has handed any).
    pub fn positions(&self) -> Result<Vec<(i32, Option<i64>)>, Error> {
        let list = self
            .consumer
            .position()
            .map_err(|e| Error::kafka("has no positions", e))?;
        Ok(list
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(next) => (e.partition(), Some(next)),
                _ => (e.partition(), None),
            })
            .collect())
    }

    /// The (low, high) watermarks of `partition`, asked of its leader (the
    /// high one is the last stable offset: this client reads committed
    /// records only). Blocking.
    pub fn watermarks(&self, partition: i32, timeout: Duration) -> Result<(i64, i64), Error> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
            .map_err(|e| Error::kafka(format!("has no watermarks for {}", self.topic), e))
    }

    /// Starts reading each partition at the given next offset, or at the
    /// beginning where none is known.
    pub fn assign(&self, positions: &[(i32, Option<i64>)]) -> Result<(), Error> {
        let mut list = TopicPartitionList::new();
        for (partition, next) in positions {
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            list.add_partition_offset(&self.topic, *partition, offset)
                .map_err(|e| Error::kafka("rejected a partition offset", e))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| Error::kafka("could not assign partitions", e))
    }

    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, Error> {
        self.consumer
            .recv()
            .await
            .map_err(|e| Error::kafka("could not read a record", e))
    }

    /// Marks the record at `offset` processed, for the next commit to Kafka.
    pub fn store_offset(&self, partition: i32, offset: i64) -> Result<(), Error> {
        self.consumer
            .store_offset(&self.topic, partition, offset)
            .map_err(|e| Error::kafka("could not store an offset", e))
    }

    /// Commits stored offsets now. Blocking.
    pub fn commit(&self) -> Result<(), Error> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(Error::kafka("could not commit offsets", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS and SASL reach librdkafka through the free-form options: the
    /// client is built with OpenSSL and accepts them (no broker needed).
    #[test]
    fn tls_and_sasl_options_are_accepted() {
        let settings = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            options: [
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "oefa"),
                ("sasl.password", "not-logged"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        };
        Publisher::new(&settings, Duration::from_secs(1))
            .expect("librdkafka accepts TLS and SASL options");
        assert!(!format!("{settings:?}").contains("not-logged"));
    }

    /// A delivery with no offset is not taken for a record in the log: the
    /// caller gets an error it retries (not a permanent one), naming why.
    #[test]
    fn a_delivery_without_an_offset_is_retried() {
        assert_eq!(placed(1, 0).unwrap(), (1, 0));
        assert_eq!(placed(0, 41).unwrap(), (0, 41));
        for invalid in [-1, -1001] {
            let error = placed(1, invalid).unwrap_err();
            assert!(!error.is_permanent(), "{error}");
            let text = format!("{error}");
            assert!(text.contains("without its offset"), "{text}");
        }
    }
}
