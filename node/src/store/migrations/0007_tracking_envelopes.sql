-- Each tracking event as its institution signed it (the envelope, byte for
-- byte), so an evidence bundle can prove every step of a timeline. NULL for
-- events stored before this version.
ALTER TABLE tracking_events ADD COLUMN envelope BLOB;
