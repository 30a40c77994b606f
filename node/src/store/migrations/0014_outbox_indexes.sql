-- The outbox holds every transfer awaiting its receipt (thousands while a
-- destination is away) beside the envelopes still to publish. Without
-- these, the relay's read of what is due scanned and sorted all of it at
-- every wake-up (0.5 ms per read beside 10,000 transfers awaiting receipts,
-- 5 ms beside 50,000; 32 µs by index), and every receipt scanned it twice to
-- find its transfer's entry.
CREATE INDEX outbox_due ON outbox (next_attempt_at_ms);
CREATE INDEX outbox_by_filing ON outbox (filing_id) WHERE filing_id IS NOT NULL;
