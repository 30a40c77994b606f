-- Chunks published while their document was uploaded (cut-through): the
-- origin lists, per transfer, the documents all of whose chunks Kafka
-- acknowledged then ("0,2"), so its first send is the rest and the manifest.
ALTER TABLE outbox ADD COLUMN chunks_out TEXT NOT NULL DEFAULT '';

-- When a partial document last took a chunk: one whose manifest never
-- comes (an upload abandoned half-way after its first chunks went out) is
-- forgotten after transfer.partial_expiry_hours.
ALTER TABLE partials ADD COLUMN touched_at_ms INTEGER NOT NULL DEFAULT 0;
UPDATE partials SET touched_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
