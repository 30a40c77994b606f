//! The queue report operators read (gRPC `GetQueues`, `ecointegra queues`,
//! the operator console) and the gauges of `/metrics`: per institution the
//! inbox lag, the outbox backlog, transfers awaiting a receipt, dead letters,
//! the last delivery and throughput; and the filings in trouble, and why.
//!
//! Lag of another institution's inbox comes from the offsets its node commits
//! to Kafka under `<prefix>.node.<institution>`, so an origin sees a stopped
//! destination's inbox filling up.

use super::Watch;
use crate::error::Result;
use crate::store::OutboxEntry;
use crate::telemetry::lag::{Lag, LagReader};
use crate::telemetry::metrics::Gauges;
use ecointegra_proto::v1::{Direction, GetQueuesResponse, InstitutionQueues, TroubledFiling};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long one Kafka query of a lag report may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);
/// A transfer not yet published this long after registration is in trouble.
const UNPUBLISHED_TROUBLE_MS: i64 = 10_000;

/// The node's lag reader, made on first use.
fn reader(watch: &Watch) -> Result<Arc<LagReader>> {
    let mut slot = watch
        .metrics
        .lag_reader
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(reader) = slot.as_ref() {
        return Ok(reader.clone());
    }
    let reader = Arc::new(LagReader::new(&watch.kafka.settings)?);
    *slot = Some(reader.clone());
    Ok(reader)
}

/// Lag of this institution's own inbox, from the positions in its store.
fn own_lag(watch: &Watch, reader: &LagReader) -> Result<Lag> {
    let topic = watch.kafka.inbox_topic();
    let partitions = reader.partitions(&topic, KAFKA_TIMEOUT)?;
    let stored: BTreeMap<i32, i64> = watch.store.inbox_positions(&topic)?.into_iter().collect();
    let positions = partitions
        .iter()
        .map(|p| (*p, stored.get(p).copied()))
        .collect();
    reader.lag(&topic, &positions, KAFKA_TIMEOUT)
}

/// Lag of another institution's inbox, from its group's committed offsets.
fn peer_lag(watch: &Watch, reader: &LagReader, institution: &str) -> Result<Lag> {
    let topic = watch.kafka.topics.inbox(institution);
    let partitions = reader.partitions(&topic, KAFKA_TIMEOUT)?;
    if partitions.is_empty() {
        return Ok(Lag::default());
    }
    let group = format!("{}.node.{institution}", watch.kafka.topics.prefix());
    let positions = reader.committed(&group, &topic, &partitions, KAFKA_TIMEOUT)?;
    reader.lag(&topic, &positions, KAFKA_TIMEOUT)
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// The whole queue report. Blocking: store reads and Kafka queries.
pub fn queues(watch: &Watch) -> Result<GetQueuesResponse> {
    let now = ecointegra_broker::now_ms();
    let me = watch.trust.institution().to_owned();
    let kafka_reachable = *watch.kafka.up.borrow();
    let outbox = watch.store.outbox_entries()?;
    let (dead_open, dead_total) = watch.store.dead_letter_counts()?;
    let reader = reader(watch).ok();
    let directory = watch.trust.directory();
    let mut institutions = vec![me.clone()];
    institutions.extend(
        directory
            .institutions()
            .map(|i| i.id.clone())
            .filter(|id| *id != me),
    );

    let mut rows = Vec::new();
    let mut lags: BTreeMap<String, Option<Lag>> = BTreeMap::new();
    for id in &institutions {
        let local = *id == me;
        let lag = if kafka_reachable {
            reader.as_ref().and_then(|r| {
                let lag = if local {
                    own_lag(watch, r)
                } else {
                    peer_lag(watch, r, id)
                };
                lag.map_err(|error| tracing::debug!(%error, institution = %id, "Lag not known."))
                    .ok()
            })
        } else {
            None
        };
        lags.insert(id.clone(), lag);
        let mine = |e: &&OutboxEntry| local || e.recipient == *id;
        let backlog = outbox
            .iter()
            .filter(mine)
            .filter(|e| !e.transfer || e.attempts == 0)
            .count() as i64;
        let pending: Vec<&OutboxEntry> = outbox
            .iter()
            .filter(mine)
            .filter(|e| e.transfer && e.attempts > 0)
            .collect();
        let oldest = pending.iter().map(|e| e.registered_at_ms).min();
        let (last, last_minute) = if local {
            watch.store.deliveries(Direction::Inbound, None, now)?
        } else {
            watch.store.deliveries(Direction::Outbound, Some(id), now)?
        };
        rows.push(InstitutionQueues {
            institution: id.clone(),
            local,
            lag_known: lag.is_some(),
            inbox_lag_records: lag.map_or(0, |l| l.records),
            inbox_lag_seconds: lag.map_or(0.0, |l| l.seconds),
            outbox_backlog: backlog,
            pending_receipts: pending.len() as i64,
            oldest_pending_receipt_seconds: oldest.map_or(0.0, |t| seconds(now - t)),
            dead_letters_open: if local { dead_open } else { 0 },
            dead_letters_total: if local { dead_total } else { 0 },
            last_delivery_at_ms: last,
            deliveries_last_minute: last_minute,
            bytes_last_minute: if local {
                watch.metrics.inbox_bytes_window.last_minute() as i64
            } else {
                0
            },
            envelope_schema: if local {
                ecointegra_broker::envelope::SCHEMA_VERSION
            } else {
                watch.trust.sealer.negotiation().version_for(id)
            },
        });
    }

    // Filings in trouble, and why.
    let receipt_timeout_ms = watch.config.transfer.receipt_timeout_secs as i64 * 1000;
    let mut troubled = Vec::new();
    for e in outbox.iter().filter(|e| e.transfer) {
        let age = now - e.registered_at_ms;
        let reason = if e.attempts == 0 {
            if age < UNPUBLISHED_TROUBLE_MS {
                continue;
            }
            if kafka_reachable {
                format!(
                    "not yet published to Kafka after {}; the relay keeps retrying (see the node's log)",
                    human(age)
                )
            } else {
                format!(
                    "not yet published after {}: Kafka is not reachable",
                    human(age)
                )
            }
        } else {
            if age < receipt_timeout_ms && e.attempts < 2 {
                continue;
            }
            let mut reason = if e.gave_up_at_ms > 0 {
                format!(
                    "no receipt from {} after {} and {} full send(s); the relay stopped re-sending it {} ago: \
                     once the cause is fixed, re-send it by hand (ecointegra resend --node ... {})",
                    e.recipient,
                    human(age),
                    e.full_sends,
                    human(now - e.gave_up_at_ms),
                    e.transfer_id
                )
            } else {
                format!(
                    "no receipt from {} after {} and {} publication(s)",
                    e.recipient,
                    human(age),
                    e.attempts
                )
            };
            match lags.get(&e.recipient).copied().flatten() {
                Some(lag) if lag.records > 0 => reason.push_str(&format!(
                    "; {}'s node has not read {} record(s) of its inbox, the oldest for {} — is it running?",
                    e.recipient,
                    lag.records,
                    human((lag.seconds * 1000.0) as i64)
                )),
                Some(_) => reason.push_str(&format!(
                    "; {}'s node has read its whole inbox, so it refused the transfer: its operators should look at its dead letters",
                    e.recipient
                )),
                None => {}
            }
            reason
        };
        troubled.push(TroubledFiling {
            tracking_code: e.tracking_code.clone(),
            transfer_id: e.transfer_id.clone(),
            counterpart: e.recipient.clone(),
            since_ms: e.registered_at_ms,
            reason,
            dead_letter_id: 0,
        });
    }
    // Kafka not answering, or the sector's topics not as this node needs them.
    for problem in watch.kafka.problems.borrow().iter() {
        troubled.push(TroubledFiling {
            tracking_code: String::new(),
            transfer_id: String::new(),
            counterpart: "kafka".into(),
            since_ms: now,
            reason: problem.clone(),
            dead_letter_id: 0,
        });
    }
    // A consumer held at a record: nothing after it is applied until it is.
    for (topic, stall) in watch.stalls.current() {
        troubled.push(TroubledFiling {
            tracking_code: String::new(),
            transfer_id: String::new(),
            counterpart: topic.clone(),
            since_ms: stall.since_ms,
            reason: format!(
                "the consumer of {topic} is stalled for {}: {}; it retries by itself and resumes once the cause is fixed",
                human(now - stall.since_ms),
                stall.reason
            ),
            dead_letter_id: 0,
        });
    }
    // One line per transfer and reason among the open dead letters.
    let letters = watch.store.dead_letters(false, 1000)?;
    let mut seen = std::collections::BTreeSet::new();
    for letter in letters.iter().rev() {
        if !seen.insert((letter.record_key.clone(), letter.reason_code.clone())) {
            continue;
        }
        troubled.push(TroubledFiling {
            tracking_code: String::new(),
            transfer_id: letter.record_key.clone(),
            counterpart: letter.claimed_sender.clone(),
            since_ms: letter.dead_at_ms,
            reason: format!(
                "dead-lettered here ({}): {}; replay it once the cause is fixed (ecointegra dlq replay {})",
                letter.reason_code, letter.reason, letter.id
            ),
            dead_letter_id: letter.id,
        });
    }
    let notifications = watch
        .store
        .notification_backlog()?
        .into_iter()
        .map(|b| ecointegra_proto::v1::NotificationQueue {
            channel: b.channel,
            target: b.target,
            pending: b.pending,
            failing: b.failing,
            oldest_pending_seconds: if b.pending > 0 {
                seconds(now - b.oldest_pending_ms)
            } else {
                0.0
            },
            last_error: b.last_error,
            sent: b.sent,
        })
        .collect();
    Ok(GetQueuesResponse {
        institution: me,
        generated_at_ms: now,
        kafka_reachable,
        institutions: rows,
        troubled,
        notifications,
    })
}

/// Gauges for `/metrics`. Blocking.
pub fn gauges(watch: &Watch) -> Gauges {
    let now = ecointegra_broker::now_ms();
    let kafka_up = *watch.kafka.up.borrow();
    let outbox = watch.store.outbox_entries().unwrap_or_default();
    let pending: Vec<&OutboxEntry> = outbox
        .iter()
        .filter(|e| e.transfer && e.attempts > 0)
        .collect();
    let inbox_lag = if kafka_up {
        reader(watch)
            .and_then(|r| own_lag(watch, &r))
            .ok()
            .map(|lag| (watch.kafka.inbox_topic(), lag.records, lag.seconds))
    } else {
        None
    };
    Gauges {
        kafka_up,
        outbox_backlog: outbox.len() as i64,
        pending_receipts: pending.len() as i64,
        oldest_pending_receipt_seconds: pending
            .iter()
            .map(|e| e.registered_at_ms)
            .min()
            .map_or(0.0, |t| seconds(now - t)),
        dead_letters_open: watch.store.dead_letter_counts().map_or(0, |c| c.0),
        consumers_stalled: watch.stalls.current().len() as i64,
        inbox_lag,
        kafka: watch.kafka.publisher.statistics(),
        store_commits: watch.store.commits(),
    }
}
