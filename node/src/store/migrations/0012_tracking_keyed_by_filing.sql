-- Tracking events found by their filing, not by their id. The table had two
-- indexes: its primary key, the event id (`institution/transfer/STEP`), and
-- (tracking_code, seq). Every step stored wrote a page of each, both at
-- random: a quarter of a node's WAL at 1 KiB filings. One index on the
-- tracking code alone now finds a filing's timeline; a step is stored once
-- because the store looks for its id in that timeline before storing it
-- (an id is unique within the timeline it is read in). An index of the
-- tracking code alone has short entries, so a random insert splits its pages
-- a third as often as one of (tracking_code, event_id) did.
--
-- A step is kept once: in the envelope its institution signed, whose payload
-- it is. `event` holds it only for a step stored before envelopes were kept
-- (migration 7), and is NULL for every other.
CREATE TABLE tracking_events_new (
    event_id TEXT NOT NULL,
    tracking_code TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    institution TEXT NOT NULL,
    event BLOB,
    envelope BLOB
);
INSERT INTO tracking_events_new
    SELECT event_id, tracking_code, seq, timestamp_ms, institution,
           CASE WHEN envelope IS NULL THEN event END, envelope
    FROM tracking_events ORDER BY rowid;
DROP TABLE tracking_events;
ALTER TABLE tracking_events_new RENAME TO tracking_events;
CREATE INDEX tracking_by_filing ON tracking_events (tracking_code);
