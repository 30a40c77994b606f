-- Small documents' bytes (blobs::KEPT_MAX) appended in the order they
-- arrive, found by their SHA-256 through an index of their own. Keyed by
-- the digest itself, every insert went to a random leaf of a tree holding
-- each document's first hundred bytes or so, about eight to a 1 KiB page:
-- at 100,000 documents of 1 KiB that tree was eight times larger than the
-- page cache, and an insert cost three times what it does here (72 µs
-- against 25, SQLite from Python, 1 KiB pages, WAL). The index of digests
-- alone holds about twenty to a page, and the table grows at its end.
CREATE TABLE document_contents_new (
    id INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL,
    bytes BLOB NOT NULL
);
INSERT INTO document_contents_new (sha256, bytes)
    SELECT sha256, bytes FROM document_contents;
DROP TABLE document_contents;
ALTER TABLE document_contents_new RENAME TO document_contents;
CREATE UNIQUE INDEX document_contents_by_sha256 ON document_contents (sha256);
