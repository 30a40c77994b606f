//! The notification outbox: mail to citizens and calls to the institution's
//! webhooks, queued in the transaction that stores the step they tell of. A
//! step is queued once per recipient (a replayed event finds its row), and a
//! mail server or an endpoint that is down delays it, never loses it.
//! The node's notifier (module `notify`) sends them.

use super::*;
use ecointegra_proto::v1::{FilingStatus, Party, TrackingEvent};
use serde::{Deserialize, Serialize};

/// Who is told of which steps.
#[derive(Debug, Default, Clone)]
pub struct Rules {
    /// Mail the citizens who gave an address (`[notify.smtp]` is set).
    pub mail: bool,
    /// Webhook URLs, each with the statuses it wants (empty: all).
    pub webhooks: Vec<(String, Vec<FilingStatus>)>,
    /// The institution's SGD over PIDE (`[pide] sgd_url`): filings delivered
    /// here go to it, and the cargos of those it handed in come back to it.
    pub sgd: Option<String>,
}

/// The steps a citizen is mailed of from the sector's timeline; observations
/// and rejections are mailed when their notice, with the reason, arrives.
const MAILED_STEPS: &[FilingStatus] = &[
    FilingStatus::Delivered,
    FilingStatus::Forwarded,
    FilingStatus::Answered,
    FilingStatus::Archived,
];

/// What a notification tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    /// Unique per step: receivers deduplicate by it.
    pub event_id: String,
    pub tracking_code: String,
    /// e.g. `DELIVERED`.
    pub status: String,
    /// Where the step happened.
    pub institution: String,
    pub hop: u32,
    /// Who holds the filing after it.
    pub holder: String,
    pub at_ms: i64,
    /// Mail: the reason of an observation or a rejection.
    #[serde(default)]
    pub reason: String,
    /// Mail: the key of the filing's unsubscribe link.
    #[serde(default)]
    pub unsubscribe: String,
    /// SGD: the transfer delivered, or whose cargo arrived.
    #[serde(default)]
    pub transfer_id: String,
}

/// A notification to send.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub channel: String,
    pub target: String,
    pub told: Told,
    pub attempts: u32,
}

/// Notifications per channel and target, for operators.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub channel: String,
    pub target: String,
    pub pending: i64,
    /// Pending ones that failed at least once.
    pub failing: i64,
    pub oldest_pending_ms: i64,
    pub last_error: String,
    pub sent: i64,
}

impl Store {
    /// Queues what a newly stored step tells: to each webhook that wants its
    /// status, for filings this institution holds, and to the citizen who
    /// filed here with an address.
    pub(crate) fn queue_step(&self, tx: &Connection, event: &TrackingEvent) -> Result<()> {
        let rules = self.notify.clone();
        if !rules.mail && rules.webhooks.is_empty() {
            return Ok(());
        }
        let status = FilingStatus::try_from(event.status).unwrap_or_default();
        let told = Told {
            event_id: event.event_id.clone(),
            tracking_code: event.tracking_code.clone(),
            status: status.short_name().to_owned(),
            institution: event.institution.clone(),
            hop: event.hop,
            holder: event.holder.clone(),
            at_ms: event.timestamp_ms,
            reason: String::new(),
            unsubscribe: String::new(),
            transfer_id: String::new(),
        };
        if !rules.webhooks.is_empty() && held_here(tx, &event.tracking_code)? {
            for (url, wanted) in &rules.webhooks {
                if wanted.is_empty() || wanted.contains(&status) {
                    insert(tx, "webhook", url, &told)?;
                }
            }
        }
        if rules.mail && MAILED_STEPS.contains(&status) {
            self.queue_mail(tx, told)?;
        }
        Ok(())
    }

    /// Queues, for the institution's SGD, a transfer delivered here
    /// (`DELIVERED`) or the cargo of one it handed in (`RECEIVED`,
    /// `OBSERVED`).
    pub(crate) fn queue_sgd(
        &self,
        tx: &Connection,
        (tracking_code, transfer_id): (&str, &str),
        status: FilingStatus,
        by: &str,
    ) -> Result<()> {
        let Some(url) = &self.notify.sgd else {
            return Ok(());
        };
        let told = Told {
            transfer_id: transfer_id.to_owned(),
            ..self.told_now(
                format!("sgd/{transfer_id}/{}", status.short_name()),
                tracking_code,
                status,
                by,
            )
        };
        insert(tx, "sgd", url, &told)
    }

    /// What this node tells now of `status`, which `by` set on a filing it
    /// holds (no hop: not a step of the sector's timeline).
    fn told_now(
        &self,
        event_id: String,
        tracking_code: &str,
        status: FilingStatus,
        by: &str,
    ) -> Told {
        Told {
            event_id,
            tracking_code: tracking_code.to_owned(),
            status: status.short_name().to_owned(),
            institution: by.to_owned(),
            hop: 0,
            holder: self.institution.clone(),
            at_ms: ecointegra_broker::now_ms(),
            reason: String::new(),
            unsubscribe: String::new(),
            transfer_id: String::new(),
        }
    }

    /// Queues an observation or a rejection for the citizen, with its reason.
    pub(crate) fn queue_notice_mail(
        &self,
        tx: &Connection,
        message_id: &str,
        tracking_code: &str,
        (status, reason): (FilingStatus, &str),
        by: &str,
    ) -> Result<()> {
        if !self.notify.mail {
            return Ok(());
        }
        let told = Told {
            reason: reason.to_owned(),
            ..self.told_now(format!("notice/{message_id}"), tracking_code, status, by)
        };
        self.queue_mail(tx, told)
    }

    /// Mail for the citizen who filed `told`'s filing here, if they gave an
    /// address and did not unsubscribe.
    fn queue_mail(&self, tx: &Connection, mut told: Told) -> Result<()> {
        let party: Option<Vec<u8>> = row(
            tx,
            "SELECT sender_party FROM filings WHERE timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) AND direction = ?2
                 AND origin = ?3 ORDER BY id LIMIT 1",
            params![
                told.tracking_code,
                ecointegra_proto::v1::Direction::Outbound as i64,
                self.institution
            ],
            |r| r.get(0),
        )
        .optional()
        .map_err(Error::store("cannot read the filing's sender"))?;
        let Some(email) = party
            .and_then(|b| Party::decode(b.as_slice()).ok())
            .map(|p| p.email.trim().to_owned())
            .filter(|e| !e.is_empty())
        else {
            return Ok(());
        };
        exec(
            tx,
            "INSERT OR IGNORE INTO mail_subscriptions (tracking_code, token) VALUES (?1, ?2)",
            params![told.tracking_code, crate::ids::random_code(24)],
        )
        .map_err(Error::store("cannot record the mail subscription"))?;
        let (token, unsubscribed): (String, i64) = row(
            tx,
            "SELECT token, unsubscribed_at_ms FROM mail_subscriptions WHERE tracking_code = ?1",
            [&told.tracking_code],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(Error::store("cannot read the mail subscription"))?;
        if unsubscribed > 0 {
            return Ok(());
        }
        told.unsubscribe = token;
        insert(tx, "mail", &email, &told)
    }

    /// Stops mail for a filing, given the key of its unsubscribe link; false
    /// if the key is not the filing's.
    pub fn unsubscribe(&self, tracking_code: &str, token: &str) -> Result<bool> {
        let (code, token) = (tracking_code.to_owned(), token.to_owned());
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE mail_subscriptions SET unsubscribed_at_ms = ?3
                 WHERE tracking_code = ?1 AND token = ?2 AND unsubscribed_at_ms = 0",
                params![code, token, ecointegra_broker::now_ms()],
            )
            .map_err(Error::store("cannot unsubscribe"))?;
            row(
                tx,
                "SELECT COUNT(*) FROM mail_subscriptions WHERE tracking_code = ?1 AND token = ?2",
                params![code, token],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(Error::store("cannot unsubscribe"))
        })
    }

    /// Notifications due now, oldest first.
    pub fn due_notifications(&self, now_ms: i64, limit: u32) -> Result<Vec<Pending>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, channel, target, payload, attempts FROM notifications
                     WHERE sent_at_ms = 0 AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(Error::store("cannot read notifications"))?;
            let rows = stmt
                .query_map(params![now_ms, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, u32>(4)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(Error::store("cannot read notifications"))?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, channel, target, payload, attempts)| {
                    Some(Pending {
                        id,
                        channel,
                        target,
                        told: serde_json::from_slice(&payload).ok()?,
                        attempts,
                    })
                })
                .collect())
        })
    }

    /// Records how sending a notification went: sent, or failed (tried again
    /// at `retry_at_ms`).
    pub fn notification_sent(
        &self,
        id: i64,
        outcome: std::result::Result<(), (String, i64)>,
    ) -> Result<()> {
        self.write(move |tx| {
            let now = ecointegra_broker::now_ms();
            match &outcome {
                Ok(()) => exec(
                    tx,
                    "UPDATE notifications SET sent_at_ms = ?2, attempts = attempts + 1, last_error = ''
                     WHERE id = ?1",
                    params![id, now],
                ),
                Err((why, retry_at)) => exec(
                    tx,
                    "UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = ?2,
                     last_error = ?3 WHERE id = ?1",
                    params![id, retry_at, why],
                ),
            }
            .map(drop)
            .map_err(Error::store("cannot record a notification"))
        })
    }

    /// The notification backlog per channel and target.
    pub fn notification_backlog(&self) -> Result<Vec<Backlog>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT channel, CASE channel WHEN 'mail' THEN '' ELSE target END AS t,
                            SUM(sent_at_ms = 0), SUM(sent_at_ms = 0 AND attempts > 0),
                            COALESCE(MIN(CASE WHEN sent_at_ms = 0 THEN created_at_ms END), 0),
                            COALESCE((SELECT last_error FROM notifications n2
                                      WHERE n2.channel = n.channel AND n2.last_error != ''
                                      AND (n.channel = 'mail' OR n2.target = n.target)
                                      ORDER BY n2.id DESC LIMIT 1), ''),
                            SUM(sent_at_ms > 0)
                     FROM notifications n GROUP BY channel, t ORDER BY channel, t",
                )
                .map_err(Error::store("cannot read notifications"))?;
            stmt.query_map([], |r| {
                Ok(Backlog {
                    channel: r.get(0)?,
                    target: r.get(1)?,
                    pending: r.get(2)?,
                    failing: r.get(3)?,
                    oldest_pending_ms: r.get(4)?,
                    last_error: r.get(5)?,
                    sent: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::store("cannot read notifications"))
        })
    }
}

fn held_here(tx: &Connection, tracking_code: &str) -> Result<bool> {
    row(
        tx,
        "SELECT 1 FROM filings WHERE timeline = (SELECT id FROM timelines WHERE tracking_code = ?1) LIMIT 1",
        [tracking_code],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(Error::store("cannot read filings"))
}

fn insert(tx: &Connection, channel: &str, target: &str, told: &Told) -> Result<()> {
    let payload = serde_json::to_vec(told).expect("a notification serialises");
    exec(
        tx,
        "INSERT OR IGNORE INTO notifications (channel, target, event_id, tracking_code, payload, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            channel,
            target,
            told.event_id,
            told.tracking_code,
            payload,
            ecointegra_broker::now_ms()
        ],
    )
    .map(drop)
    .map_err(Error::store("cannot queue a notification"))
}
