-- The PIDE adapter (document-management systems over IOTramite).
-- A filing's PIDE fields (an encoded SgdDocument; NULL: none) and its CUO.
ALTER TABLE filings ADD COLUMN sgd BLOB;
ALTER TABLE filings ADD COLUMN cuo TEXT NOT NULL DEFAULT '';
CREATE INDEX filings_by_cuo ON filings (cuo) WHERE cuo <> '';

-- What this institution's SGD handed in, by CUO: the same request again is
-- answered as the first time; the CUO with other content is refused.
CREATE TABLE sgd_requests (
    cuo TEXT PRIMARY KEY,
    request_sha256 BLOB NOT NULL,
    tracking_code TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);

-- The destination's cargo (an encoded SgdCargo) of a filing that came from
-- or went to an SGD, by transfer.
CREATE TABLE sgd_cargos (
    transfer_id TEXT PRIMARY KEY,
    cargo BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);

-- Links from which this institution's SGD downloads a delivered filing's
-- annexes: a random token each, until it expires.
CREATE TABLE sgd_links (
    token TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
