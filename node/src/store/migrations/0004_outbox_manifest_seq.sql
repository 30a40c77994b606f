-- The timeline step a transfer's first manifest carried, recorded when Kafka
-- did not acknowledge that publication: if the receipt comes back anyway (the
-- records had arrived), the filing's SENT step is numbered right after it.
ALTER TABLE outbox ADD COLUMN manifest_seq INTEGER NOT NULL DEFAULT 0;
