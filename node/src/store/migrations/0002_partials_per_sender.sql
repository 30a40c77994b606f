-- Partial documents belong to their sender: another institution naming the
-- same transfer id assembles a document of its own, and cannot block or
-- shadow the real sender's. (Processed message ids are kept per sender by
-- their key, "<sender> <message id>".)
CREATE TABLE partials (
    sender TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (sender, transfer_id, idx)
);
INSERT INTO partials (sender, transfer_id, idx, next_seq, bytes)
    SELECT sender, transfer_id, idx, next_seq, bytes FROM partial_documents;
DROP TABLE partial_documents;
