//! `OperationsService`: are documents flowing, and what to do when they are
//! not. Queues per institution (inbox lag, outbox backlog, transfers awaiting
//! a receipt, dead letters, last delivery, throughput), the filings in trouble
//! and why, and dead-letter handling (list, inspect, replay, discard).
//!
//! Lag of another institution's inbox comes from the offsets its node commits
//! to Kafka under `<prefix>.node.<institution>`, so an origin sees a stopped
//! destination's inbox filling up.

use crate::error::{Error, Result};
use crate::lag::{Lag, LagReader};
use crate::metrics::Gauges;
use crate::node::Shared;
use crate::store::OutboxKind;
use ecointegra_proto::v1::operations_service_server::{OperationsService, OperationsServiceServer};
use ecointegra_proto::v1::{
    DeadLetterDetail, DeadLetterEntry, Direction, DiscardDeadLetterRequest, GetDeadLetterRequest,
    GetQueuesRequest, GetQueuesResponse, InstitutionQueues, ListDeadLettersRequest,
    ListDeadLettersResponse, ReplayDeadLettersRequest, ReplayDeadLettersResponse, TroubledFiling,
};
use rusqlite::params;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long one Kafka query of a lag report may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);
/// A transfer not yet published this long after registration is in trouble.
const UNPUBLISHED_TROUBLE_MS: i64 = 10_000;

/// Creates the tables of dead letters and trace contexts.
pub fn create_schema(conn: &rusqlite::Connection) -> Result<()> {
    conn.execute_batch(crate::dead_letters::SCHEMA)
        .and_then(|_| conn.execute_batch(crate::trace::SCHEMA))
        .map_err(Error::store("cannot create the operations schema"))
}

pub fn server(shared: Arc<Shared>) -> OperationsServiceServer<OperationsApi> {
    OperationsServiceServer::new(OperationsApi { shared })
}

pub struct OperationsApi {
    shared: Arc<Shared>,
}

/// The node's lag reader, made on first use.
fn reader(shared: &Shared) -> Result<Arc<LagReader>> {
    let mut slot = shared
        .metrics
        .lag_reader
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(reader) = slot.as_ref() {
        return Ok(reader.clone());
    }
    let reader = Arc::new(LagReader::new(&shared.config.kafka_settings())?);
    *slot = Some(reader.clone());
    Ok(reader)
}

/// Lag of this institution's own inbox, from the positions in its store.
fn own_lag(shared: &Shared, reader: &LagReader) -> Result<Lag> {
    let topic = shared.inbox_topic();
    let partitions = reader.partitions(&topic, KAFKA_TIMEOUT)?;
    let stored: BTreeMap<i32, i64> = shared.store.inbox_positions(&topic)?.into_iter().collect();
    let positions = partitions
        .iter()
        .map(|p| (*p, stored.get(p).copied()))
        .collect();
    reader.lag(&topic, &positions, KAFKA_TIMEOUT)
}

/// Lag of another institution's inbox, from its group's committed offsets.
fn peer_lag(shared: &Shared, reader: &LagReader, institution: &str) -> Result<Lag> {
    let topic = shared.topics.inbox(institution);
    let partitions = reader.partitions(&topic, KAFKA_TIMEOUT)?;
    if partitions.is_empty() {
        return Ok(Lag::default());
    }
    let group = format!("{}.node.{institution}", shared.topics.prefix());
    let positions = reader.committed(&group, &topic, &partitions, KAFKA_TIMEOUT)?;
    reader.lag(&topic, &positions, KAFKA_TIMEOUT)
}

/// One outbox entry as the queue report needs it.
struct OutboxEntry {
    recipient: String,
    transfer: bool,
    attempts: u32,
    tracking_code: String,
    transfer_id: String,
    registered_at_ms: i64,
}

fn outbox_entries(shared: &Shared) -> Result<Vec<OutboxEntry>> {
    shared.store.read(|c| {
        let mut stmt = c
            .prepare(
                "SELECT o.recipient, o.kind, o.attempts, COALESCE(f.tracking_code, ''),
                        COALESCE(f.transfer_id, o.record_key), COALESCE(f.registered_at_ms, 0)
                 FROM outbox o LEFT JOIN filings f ON f.id = o.filing_id ORDER BY o.id",
            )
            .map_err(Error::store("cannot read the outbox"))?;
        stmt.query_map([], |r| {
            Ok(OutboxEntry {
                recipient: r.get(0)?,
                transfer: r.get::<_, i64>(1)? == OutboxKind::Transfer as i64,
                attempts: r.get(2)?,
                tracking_code: r.get(3)?,
                transfer_id: r.get(4)?,
                registered_at_ms: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::store("cannot read the outbox"))
    })
}

/// (last delivery, deliveries in the last minute) of filings in `direction`,
/// optionally to one destination.
fn deliveries(
    shared: &Shared,
    direction: Direction,
    destination: Option<&str>,
    now: i64,
) -> Result<(i64, i64)> {
    shared.store.read(|c| {
        c.query_row(
            "SELECT COALESCE(MAX(delivered_at_ms), 0), COALESCE(SUM(delivered_at_ms >= ?3), 0)
             FROM filings WHERE direction = ?1 AND delivered_at_ms > 0 AND (?2 = '' OR destination = ?2)",
            params![direction as i64, destination.unwrap_or(""), now - 60_000],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(Error::store("cannot read deliveries"))
    })
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
pub fn queues(shared: &Shared) -> Result<GetQueuesResponse> {
    let now = ecointegra_broker::now_ms();
    let me = shared.institution().to_owned();
    let kafka_reachable = *shared.kafka_up.borrow();
    let outbox = outbox_entries(shared)?;
    let (dead_open, dead_total) = crate::dead_letters::counts(&shared.store)?;
    let reader = reader(shared).ok();
    let directory = shared.directory();
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
                    own_lag(shared, r)
                } else {
                    peer_lag(shared, r, id)
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
            deliveries(shared, Direction::Inbound, None, now)?
        } else {
            deliveries(shared, Direction::Outbound, Some(id), now)?
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
                shared.metrics.inbox_bytes_window.last_minute() as i64
            } else {
                0
            },
        });
    }

    // Filings in trouble, and why.
    let receipt_timeout_ms = shared.config.transfer.receipt_timeout_secs as i64 * 1000;
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
            let mut reason = format!(
                "no receipt from {} after {} and {} publication(s)",
                e.recipient,
                human(age),
                e.attempts
            );
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
    // One line per transfer and reason among the open dead letters.
    let letters = crate::dead_letters::list(&shared.store, false, 1000)?;
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
    Ok(GetQueuesResponse {
        institution: me,
        generated_at_ms: now,
        kafka_reachable,
        institutions: rows,
        troubled,
    })
}

/// Gauges for `/metrics`. Blocking.
pub fn gauges(shared: &Shared) -> Gauges {
    let now = ecointegra_broker::now_ms();
    let kafka_up = *shared.kafka_up.borrow();
    let outbox = outbox_entries(shared).unwrap_or_default();
    let pending: Vec<&OutboxEntry> = outbox
        .iter()
        .filter(|e| e.transfer && e.attempts > 0)
        .collect();
    let inbox_lag = if kafka_up {
        reader(shared)
            .and_then(|r| own_lag(shared, &r))
            .ok()
            .map(|lag| (shared.inbox_topic(), lag.records, lag.seconds))
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
        dead_letters_open: crate::dead_letters::counts(&shared.store).map_or(0, |c| c.0),
        inbox_lag,
        kafka: shared.publisher.statistics(),
        store_commits: shared.store.commits(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            context: "an operations task failed".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn get_queues(
        &self,
        _: Request<GetQueuesRequest>,
    ) -> Result<Response<GetQueuesResponse>, Status> {
        let shared = self.shared.clone();
        Ok(Response::new(blocking(move || queues(&shared)).await?))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000),
        };
        let dead_letters = self
            .shared
            .store
            .run(move |s| crate::dead_letters::list(s, request.include_closed, limit))
            .await?;
        Ok(Response::new(ListDeadLettersResponse { dead_letters }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetterDetail>, Status> {
        let id = request.into_inner().id;
        let detail = self
            .shared
            .store
            .run(move |s| crate::dead_letters::detail(s, id))
            .await?;
        Ok(Response::new(detail))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let ids = match (request.all_open, request.ids.is_empty()) {
            (true, true) => self.shared.store.run(crate::dead_letters::open_ids).await?,
            (false, false) => request.ids,
            (true, false) => {
                return Err(Error::invalid("ids", "must be empty when all_open is set").into());
            }
            (false, true) => {
                return Err(Error::invalid(
                    "ids",
                    "name at least one dead letter, or set all_open",
                )
                .into());
            }
        };
        let mut outcomes = Vec::with_capacity(ids.len());
        // In order, each acknowledged before the next: chunks stay before
        // their manifest.
        for id in ids {
            outcomes.push(crate::dead_letters::replay(&self.shared, id).await?);
        }
        Ok(Response::new(ReplayDeadLettersResponse { outcomes }))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<DiscardDeadLetterRequest>,
    ) -> Result<Response<DeadLetterEntry>, Status> {
        // Who: as given, or as the caller authenticated.
        let caller = request
            .extensions()
            .get::<crate::auth::Caller>()
            .map(|c| c.name.clone());
        let mut r = request.into_inner();
        if r.by.trim().is_empty()
            && let Some(name) = caller.filter(|n| n != "anonymous")
        {
            r.by = name;
        }
        let (entry, changed) = self
            .shared
            .store
            .run(move |s| crate::dead_letters::discard(s, r.id, &r.by, &r.reason))
            .await?;
        if changed {
            self.shared.metrics.dead_letters_discarded.inc();
            tracing::info!(
                dead_letter = entry.id,
                by = %entry.discarded_by,
                reason = %entry.discard_reason,
                "Dead letter discarded."
            );
        }
        Ok(Response::new(entry))
    }
}
