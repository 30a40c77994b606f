//! A consumer that receives nothing while records wait for it is built again.
//!
//! librdkafka has been seen to stop handing a topic's records to the node
//! for good after partition leaders died and came back (a consumer assigned
//! its partitions; the records were in the log, the node's positions behind
//! them, no error reported), the same stall upstream reports describe for
//! `assign()`. Nothing in the node would notice: a filing's timeline, or a
//! whole inbox, would wait until the node restarted.
//!
//! So the consumer loop, after [`QUIET`] without a record, compares each
//! partition's high watermark with the client's position (where it was
//! assigned, before it has handed anything over). Records
//! waiting for [`STUCK_AFTER`] with none arriving mean the client is stuck:
//! the loop logs why, counts it (`filings_failed{outcome="consumer_rebuilt"}`)
//! and builds the consumer again from the positions in the store, as at
//! start. Nothing is lost or applied twice: between batches every record
//! received is applied, with its position, in the store.

use ecointegra_broker::kafka::InboxConsumer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Silence after which the loop looks at what waits for it.
pub(super) const QUIET: Duration = Duration::from_secs(10);
/// How long records may wait with none arriving before the consumer is
/// taken for stuck.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(20);
/// How long a watermark query may take, per partition.
const QUERY: Duration = Duration::from_secs(5);

/// Where a consumer was assigned, and since when records wait for it.
#[derive(Debug)]
pub(super) struct Watch {
    /// The offset each partition was assigned at (0: its beginning).
    assigned: BTreeMap<i32, i64>,
    /// Since when records have waited with none arriving.
    waiting_since: Option<Instant>,
}

impl Watch {
    /// A consumer just assigned these partitions at these next offsets.
    pub(super) fn new(assigned: &[(i32, Option<i64>)]) -> Self {
        Self {
            assigned: assigned
                .iter()
                .map(|(partition, next)| (*partition, next.unwrap_or(0)))
                .collect(),
            waiting_since: None,
        }
    }

    /// Records arrived.
    pub(super) fn received(&mut self) {
        self.waiting_since = None;
    }

    /// Given, at `now` after a quiet spell, each partition's (low, high)
    /// watermarks and the client's own position: why the consumer is stuck,
    /// if records have waited [`STUCK_AFTER`] or longer with none arriving.
    pub(super) fn check(&mut self, now: Instant, marks: &[Marks]) -> Option<String> {
        let waiting: Vec<(i32, i64, i64)> = marks
            .iter()
            .filter_map(|m| {
                // The client moves past what it does not hand over (markers,
                // aborted records); below the low watermark, retention has
                // removed the records and the client starts at the oldest.
                let assigned = self.assigned.get(&m.partition).copied().unwrap_or(0);
                let from = m.position.unwrap_or(assigned).max(m.low);
                (m.high > from).then_some((m.partition, from, m.high - from))
            })
            .collect();
        if waiting.is_empty() {
            self.waiting_since = None;
            return None;
        }
        let since = *self.waiting_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        (waited >= STUCK_AFTER).then(|| {
            let parts: Vec<String> = waiting
                .iter()
                .map(|(partition, from, count)| {
                    format!("{count} at partition {partition} from offset {from}")
                })
                .collect();
            format!(
                "records wait ({}) and none arrived for {} s",
                parts.join(", "),
                (waited + QUIET).as_secs()
            )
        })
    }
}

/// Where a partition stands.
#[derive(Debug, Clone, Copy)]
pub(super) struct Marks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    /// The offset the client hands over next, if it has handed any.
    pub position: Option<i64>,
}

/// Each assigned partition's watermarks, asked of its leader, and the
/// client's position; `None` if any cannot be had now (Kafka down, a leader
/// moving): then nothing is decided.
pub(super) async fn marks(consumer: &Arc<InboxConsumer>) -> Option<Vec<Marks>> {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || {
        consumer
            .positions()
            .ok()?
            .into_iter()
            .map(|(partition, position)| {
                let (low, high) = consumer.watermarks(partition, QUERY).ok()?;
                Some(Marks {
                    partition,
                    low,
                    high,
                    position,
                })
            })
            .collect()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition `partition` holds `low..high`; the client has handed
    /// nothing over yet.
    fn holds(partition: i32, low: i64, high: i64) -> Marks {
        Marks {
            partition,
            low,
            high,
            position: None,
        }
    }

    #[test]
    fn records_waiting_with_none_arriving_make_a_consumer_stuck_after_a_while() {
        let start = Instant::now();
        let mut watch = Watch::new(&[(0, Some(5)), (1, None)]);
        // Nothing beyond what it expects: not stuck, however long.
        let caught_up = [holds(0, 0, 5), holds(1, 0, 0)];
        assert_eq!(watch.check(start, &caught_up), None);
        assert_eq!(watch.check(start + 10 * STUCK_AFTER, &caught_up), None);

        // Two records wait at partition 1: not yet, then stuck.
        let waiting = [holds(0, 0, 5), holds(1, 0, 2)];
        assert_eq!(watch.check(start, &waiting), None);
        assert_eq!(watch.check(start + STUCK_AFTER / 2, &waiting), None);
        let why = watch.check(start + STUCK_AFTER, &waiting).unwrap();
        assert!(why.contains("2 at partition 1 from offset 0"), "{why}");
    }

    #[test]
    fn a_record_arriving_starts_the_wait_again() {
        let start = Instant::now();
        let mut watch = Watch::new(&[(0, Some(5))]);
        assert_eq!(watch.check(start, &[holds(0, 0, 9)]), None);
        // Records 5 and 6 handed over: the client's position is 7.
        watch.received();
        let at = |position| Marks {
            position: Some(position),
            ..holds(0, 0, 9)
        };
        // Still waiting (7 and 8), but the clock started again.
        assert_eq!(watch.check(start + STUCK_AFTER, &[at(7)]), None);
        let why = watch.check(start + 2 * STUCK_AFTER, &[at(7)]);
        assert!(why.unwrap().contains("2 at partition 0 from offset 7"));
        // Caught up: no longer waiting.
        watch.received();
        assert_eq!(watch.check(start + 3 * STUCK_AFTER, &[at(9)]), None);
    }

    #[test]
    fn records_removed_by_retention_are_not_waited_for() {
        let start = Instant::now();
        // The node was away longer than the inbox's retention: its position
        // (3) is below the oldest record kept (10).
        let mut watch = Watch::new(&[(0, Some(3))]);
        assert_eq!(watch.check(start, &[holds(0, 10, 10)]), None);
        assert_eq!(watch.check(start + STUCK_AFTER, &[holds(0, 10, 10)]), None);
        assert_eq!(watch.check(start + STUCK_AFTER, &[holds(0, 10, 12)]), None);
        let why = watch.check(start + 2 * STUCK_AFTER, &[holds(0, 10, 12)]);
        assert!(why.unwrap().contains("2 at partition 0 from offset 10"));
    }

    #[test]
    fn offsets_the_client_moved_past_without_a_record_are_not_waited_for() {
        let start = Instant::now();
        // Offsets 5 and 6 hold no record the client hands over (a
        // transaction's marker, an aborted record): its position is 7.
        let mut watch = Watch::new(&[(0, Some(5))]);
        let past = [Marks {
            position: Some(7),
            ..holds(0, 0, 7)
        }];
        assert_eq!(watch.check(start, &past), None);
        assert_eq!(watch.check(start + 2 * STUCK_AFTER, &past), None);
    }
}
