-- The chunk size the documents listed in `chunks_out` were cut at during
-- their upload. The relay's manifest announces that size and cuts the other
-- documents of the transfer at it too, so that a node restarted with another
-- `transfer.chunk_size` between the upload and the first send does not
-- announce chunk counts that the chunks already out do not match. 0 where no
-- chunk went out during the upload.
ALTER TABLE outbox ADD COLUMN chunks_out_size INTEGER NOT NULL DEFAULT 0;
