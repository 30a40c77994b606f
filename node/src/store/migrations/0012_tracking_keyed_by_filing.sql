-- Tracking events found by their filing, not by their id alone. The table
-- had two indexes: its primary key, the event id (`institution/transfer/
-- STEP`, random), and (tracking_code, seq). Every step stored wrote a page of
-- each, both at random: a quarter of a node's WAL at 1 KiB filings. One
-- unique index on (tracking_code, event_id) now does both jobs: it keeps a
-- step from being stored twice (an id is unique within its filing's
-- timeline, where it is read) and finds a filing's timeline.
CREATE TABLE tracking_events_new (
    event_id TEXT NOT NULL,
    tracking_code TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    institution TEXT NOT NULL,
    event BLOB NOT NULL,
    envelope BLOB
);
INSERT INTO tracking_events_new
    SELECT event_id, tracking_code, seq, timestamp_ms, institution, event, envelope
    FROM tracking_events ORDER BY rowid;
DROP TABLE tracking_events;
ALTER TABLE tracking_events_new RENAME TO tracking_events;
CREATE UNIQUE INDEX tracking_by_filing ON tracking_events (tracking_code, event_id);
