-- The trace a filing's tracking steps continue (the submission's), kept in
-- its timeline's row instead of a row of its own in `trace_contexts` keyed by
-- the tracking code: at the origin that key sent each submission to a random
-- leaf of the trace contexts' index, a tenth of the origin's WAL pages at
-- 1 KiB filings. First one kept wins, as before.
ALTER TABLE timelines ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
UPDATE timelines SET traceparent =
    (SELECT traceparent FROM trace_contexts WHERE record_key = timelines.tracking_code)
    WHERE tracking_code IN (SELECT record_key FROM trace_contexts);
DELETE FROM trace_contexts WHERE record_key IN (SELECT tracking_code FROM timelines);
