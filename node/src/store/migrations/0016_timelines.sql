-- A filing's timeline under a number of this store's own, given the first
-- time the store hears of its tracking code. A filing's steps, copies and
-- receipts were each found by an index of their tracking code, whose random
-- part sent every one of them to a random leaf of its index: in a node's WAL
-- at 1 KiB filings, those three indexes were four pages in ten of every
-- commit. Now only the first that a node hears of a filing goes to a random
-- leaf (of `timelines`' index of tracking codes); steps, copies and receipts
-- are found by the timeline's number, which grows with the filings, so their
-- indexes grow at their ends.
--
-- `seq` is the timeline's logical clock: the highest step number stored or
-- learned from another node's transfer or notice (`tracking_clocks`
-- before, which it replaces).
CREATE TABLE timelines (
    id INTEGER PRIMARY KEY,
    tracking_code TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL
);
INSERT INTO timelines (tracking_code, seq)
    SELECT tracking_code, MAX(seq) FROM (
        SELECT tracking_code, seq, rowid AS position FROM tracking_events
        UNION ALL
        SELECT tracking_code, seq, NULL FROM tracking_clocks
        UNION ALL
        SELECT tracking_code, 0, NULL FROM filings
        UNION ALL
        SELECT tracking_code, 0, NULL FROM receipts
    )
    GROUP BY tracking_code
    ORDER BY MIN(position);
DROP TABLE tracking_clocks;

ALTER TABLE tracking_events ADD COLUMN timeline INTEGER NOT NULL DEFAULT 0;
UPDATE tracking_events SET timeline =
    (SELECT id FROM timelines WHERE timelines.tracking_code = tracking_events.tracking_code);
DROP INDEX tracking_by_filing;
CREATE INDEX tracking_by_timeline ON tracking_events (timeline);

ALTER TABLE filings ADD COLUMN timeline INTEGER NOT NULL DEFAULT 0;
UPDATE filings SET timeline =
    (SELECT id FROM timelines WHERE timelines.tracking_code = filings.tracking_code);
DROP INDEX filings_by_tracking;
CREATE INDEX filings_by_timeline ON filings (timeline);

ALTER TABLE receipts ADD COLUMN timeline INTEGER NOT NULL DEFAULT 0;
UPDATE receipts SET timeline =
    (SELECT id FROM timelines WHERE timelines.tracking_code = receipts.tracking_code);
DROP INDEX receipts_by_tracking;
CREATE INDEX receipts_by_timeline ON receipts (timeline, hop);
