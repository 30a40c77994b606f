-- The web console's sign-ins, kept across restarts until they expire. A
-- session is found by the SHA-256 of its cookie's value: the store never
-- holds a value that would sign anyone in.
CREATE TABLE web_sessions (
    id_sha256 BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at_ms);
