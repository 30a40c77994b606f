-- Notifications waiting to go out, and those that went: one row per event
-- and recipient, so an event is never queued twice (a replayed tracking
-- event finds its row). Mail to citizens (channel 'mail', target the
-- address) and webhooks (channel 'webhook', target the URL).
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tracking_code TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    sent_at_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (channel, target, event_id)
);
CREATE INDEX notifications_due ON notifications (sent_at_ms, next_attempt_ms);
-- A citizen's mail for a filing: the key of its unsubscribe link, and when
-- they used it.
CREATE TABLE mail_subscriptions (
    tracking_code TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    unsubscribed_at_ms INTEGER NOT NULL DEFAULT 0
);
