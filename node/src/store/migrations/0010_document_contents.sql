-- Small documents (see blobs::KEPT_MAX) kept in the store itself, by
-- SHA-256, instead of a file each: written in the transaction that
-- references them, with no file to create, fsync and rename.
CREATE TABLE document_contents (
    sha256 BLOB PRIMARY KEY,
    bytes BLOB NOT NULL
) WITHOUT ROWID;
