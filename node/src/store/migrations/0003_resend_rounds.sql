-- Re-sends of a transfer without a receipt back off: each full send waits
-- twice as long as the one before (up to a cap), a manifest-only probe comes
-- before the next full send, and after `transfer.max_sends` full sends the
-- relay gives up and the filing is shown in trouble until an operator
-- re-sends it by hand.
ALTER TABLE outbox ADD COLUMN full_sends INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN probed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN gave_up_at_ms INTEGER NOT NULL DEFAULT 0;
-- Rows queued before the change: their publications so far were all full.
UPDATE outbox SET full_sends = attempts WHERE kind = 1;
