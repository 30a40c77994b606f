-- Migration 1: the schema of the releases before numbered migrations (the
-- tables of schema.rs, dead_letters.rs and traces.rs), verbatim. `IF NOT
-- EXISTS` is what lets a store those releases created (user_version 0, every
-- table already there) be adopted as version 1 unchanged.
-- Never edit an applied migration: add the next numbered file.
CREATE TABLE IF NOT EXISTS filings (
    id INTEGER PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    verification_code TEXT NOT NULL,
    transfer_id TEXT NOT NULL UNIQUE,
    direction INTEGER NOT NULL,
    status INTEGER NOT NULL,
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    subject TEXT NOT NULL,
    sender_party BLOB NOT NULL,
    folio_count INTEGER NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER NOT NULL DEFAULT 0,
    registry_number TEXT NOT NULL,
    origin_registry_number TEXT NOT NULL DEFAULT '',
    kind INTEGER NOT NULL,
    related_transfer_id TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    hop INTEGER NOT NULL,
    filing_type TEXT NOT NULL DEFAULT '',
    due_date TEXT NOT NULL DEFAULT '',
    internal_registry_number TEXT NOT NULL DEFAULT '',
    office TEXT NOT NULL DEFAULT '',
    filed_at TEXT NOT NULL,
    previous_receipt_sha256 BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS filings_by_tracking ON filings(tracking_code);
CREATE INDEX IF NOT EXISTS filings_by_direction ON filings(direction, id);
CREATE TABLE IF NOT EXISTS documents (
    filing_id INTEGER NOT NULL REFERENCES filings(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    PRIMARY KEY (filing_id, idx)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    filing_id INTEGER NOT NULL,
    response BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    filing_id INTEGER,
    recipient TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    record_key TEXT NOT NULL,
    envelope BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS receipts (
    transfer_id TEXT PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    hop INTEGER NOT NULL,
    signer TEXT NOT NULL,
    envelope BLOB NOT NULL,
    sha256 BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_by_tracking ON receipts(tracking_code, hop);
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY,
    response BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tracking_events (
    event_id TEXT PRIMARY KEY,
    tracking_code TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    institution TEXT NOT NULL,
    event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tracking_by_code ON tracking_events(tracking_code, seq);
CREATE TABLE IF NOT EXISTS directory_entries (
    institution_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tracking_clocks (
    tracking_code TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS partial_documents (
    transfer_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sender TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, idx)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    dlq_topic TEXT NOT NULL,
    dlq_partition INTEGER NOT NULL,
    dlq_offset INTEGER NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    claimed_sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    record_key TEXT NOT NULL,
    dead_at_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    letter BLOB NOT NULL,
    replayed_at_ms INTEGER NOT NULL DEFAULT 0,
    discarded_at_ms INTEGER NOT NULL DEFAULT 0,
    discarded_by TEXT NOT NULL DEFAULT '',
    discard_reason TEXT NOT NULL DEFAULT '',
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE TABLE IF NOT EXISTS trace_contexts (
    record_key TEXT PRIMARY KEY,
    traceparent TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
