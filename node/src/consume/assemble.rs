//! Assembling transfers: chunks written in order into partial files, and a
//! manifest whose documents all arrived and hash right adopted into the blob
//! store as an inbound filing, with its signed receipt queued for the origin.
//! A small filing's documents may come inside its manifest instead of as
//! chunks: each small one is kept in the store with the filing (see
//! [`crate::store::blobs`]), a larger one written to the same partial file
//! and adopted alike.
//! Memory stays bounded whatever the document size: chunks go to disk as they
//! come, and documents are hashed from disk.

use super::apply::{Applied, Batch};
use super::{Consumers, Corrupt, Fault, LARGE_TRANSFER, Stop};
use crate::error::{Error, Result};
use crate::lifecycle::deadlines::{Calendar, Day};
use crate::store::blobs::KEPT_MAX;
use crate::store::direct::DirectFile;
use crate::store::{self, Delivery, DocumentRow, NewFiling, Partial, Position, ReceiptRow};
use ecointegra_broker::envelope::Rejection;
use ecointegra_proto::v1::{
    Chunk, Direction, DocumentDigest, Envelope, FilingStatus, Manifest, MessageType, Receipt,
    Transfer, TransferKind,
};
use prost::Message as _;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Partial documents at most: past this many at once, a document's digest
/// is read from its file instead (each state is about 200 bytes).
const RUNNING_MAX: usize = 1024;

/// The SHA-256 of partial documents, fed as their chunks are written in
/// order, so a complete document's digest needs no second pass over its file
/// (which, its pages dropped from the cache once durable, would be read from
/// disk). In memory only: after a restart, or for a document whose chunks
/// did not all come through here in order (a batch rolled back, a resend
/// starting over), the file is read instead. A state is only used when it
/// has taken exactly the document's bytes, from its first.
#[derive(Default)]
pub struct Running(std::sync::Mutex<HashMap<PathBuf, (Sha256, u64)>>);

impl Running {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Sha256, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `data` was written at `offset` of the partial document at `path`
    /// (hashed outside the lock: a chunk takes a while).
    fn feed(&self, path: &Path, offset: u64, data: &[u8]) {
        let state = {
            let mut states = self.states();
            let state = states.remove(path);
            if offset == 0 {
                (states.len() < RUNNING_MAX).then(|| (Sha256::new(), 0))
            } else {
                state.filter(|(_, bytes)| *bytes == offset)
            }
        };
        if let Some((mut hasher, bytes)) = state {
            hasher.update(data);
            let fed = (hasher, bytes + data.len() as u64);
            self.states().insert(path.to_owned(), fed);
        }
    }

    /// The digest of the `size` bytes at `path`, if they all came through
    /// here in order.
    fn digest(&self, path: &Path, size: u64) -> Option<([u8; 32], u64)> {
        match self.states().get(path) {
            Some((hasher, bytes)) if *bytes == size => {
                Some((hasher.clone().finalize().into(), size))
            }
            _ => None,
        }
    }

    /// The document at `path` was adopted or discarded.
    pub(super) fn forget(&self, path: &Path) {
        self.states().remove(path);
    }
}

/// For a large transfer, the digests of the documents whose chunks have all
/// been stored already (committed earlier), computed without the writer's
/// lock. What this cannot settle is checked again under the lock.
pub(super) fn large_digests(
    cx: &Consumers,
    sender: &str,
    manifest: &Manifest,
) -> HashMap<u32, ([u8; 32], u64)> {
    let mut digests = HashMap::new();
    let total: u64 = manifest.documents.iter().map(|d| d.size).sum();
    let Some(transfer) = manifest
        .transfer
        .as_ref()
        .filter(|_| total > LARGE_TRANSFER)
    else {
        return digests;
    };
    for doc in &manifest.documents {
        let complete = cx
            .store
            .partial(sender, &transfer.transfer_id, doc.index)
            .ok()
            .flatten()
            .is_some_and(|p| {
                p.sender == sender && p.next_seq == doc.chunk_count && p.bytes == doc.size
            });
        if complete {
            let Ok(path) = cx
                .blobs
                .partial_path(sender, &transfer.transfer_id, doc.index)
            else {
                continue;
            };
            let digest = cx
                .running
                .digest(&path, doc.size)
                .map(Ok)
                .unwrap_or_else(|| crate::store::blobs::digest_file(&path));
            if let Ok(digest) = digest {
                digests.insert(doc.index, digest);
            }
        }
    }
    digests
}

impl Batch<'_> {
    pub(super) fn chunk(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        chunk: Chunk,
        hash_ok: bool,
        position: Position<'_>,
    ) -> Result<Applied, Stop> {
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let store = &self.cx.store;
        let key = super::processed_key(&envelope);
        let seen = store::is_processed(c, &key)?;
        let delivered = store::transfer_known(c, &chunk.transfer_id)?;
        if seen || delivered {
            // Already applied, or the whole transfer is stored: nothing to do.
            store.apply_nothing(c, position, Some(&key))?;
            return Ok(Applied::Nothing);
        }
        if !hash_ok {
            let fault = if chunk.sha256.is_empty() {
                format!(
                    "it carries no SHA-256 of its own, which envelope schema {} requires",
                    envelope.schema_version
                )
            } else {
                "the SHA-256 of its data does not match the chunk's digest".to_owned()
            };
            return Err(reject(
                "chunk-hash",
                format!(
                    "chunk {} of document {} of transfer {}: {fault}",
                    chunk.seq, chunk.document_index, chunk.transfer_id
                ),
            ));
        }
        let partial = store::partial(
            c,
            &envelope.sender,
            &chunk.transfer_id,
            chunk.document_index,
        )?
        .unwrap_or(Partial {
            sender: envelope.sender.clone(),
            next_seq: 0,
            bytes: 0,
        });
        if partial.sender != envelope.sender {
            return Err(reject(
                "sender",
                format!(
                    "transfer {} belongs to {}, not to {}",
                    chunk.transfer_id, partial.sender, envelope.sender
                ),
            ));
        }
        if chunk.seq < partial.next_seq {
            store.apply_nothing(c, position, Some(&key))?;
            return Ok(Applied::Nothing);
        }
        if chunk.seq != partial.next_seq || chunk.offset != partial.bytes {
            return Err(reject(
                "chunk-order",
                format!(
                    "transfer {} document {}: expected chunk {} at byte {}, got chunk {} at byte {}",
                    chunk.transfer_id,
                    chunk.document_index,
                    partial.next_seq,
                    partial.bytes,
                    chunk.seq,
                    chunk.offset
                ),
            ));
        }
        let path = self
            .cx
            .blobs
            .partial_path(&envelope.sender, &chunk.transfer_id, chunk.document_index)
            .map_err(|e| reject("identifier", e.to_string()))?;
        write_at(&path, partial.bytes, &chunk.data)
            .map_err(Error::io(format!("cannot write {}", path.display())))?;
        self.cx.running.feed(&path, partial.bytes, &chunk.data);
        self.dirty.insert(path);
        let next = Partial {
            sender: partial.sender,
            next_seq: partial.next_seq + 1,
            bytes: partial.bytes + chunk.data.len() as u64,
        };
        store.apply_chunk(
            c,
            position,
            &key,
            &chunk.transfer_id,
            chunk.document_index,
            &next,
        )?;
        Ok(Applied::Nothing)
    }

    pub(super) fn manifest(
        &mut self,
        c: &Connection,
        envelope: Envelope,
        manifest: Manifest,
        digests: HashMap<u32, ([u8; 32], u64)>,
        position: Position<'_>,
        first: bool,
    ) -> Result<Applied, Stop> {
        let cx = self.cx;
        let reject =
            |code, reason: String| Stop::from(Rejection::new(code, reason).about(&envelope));
        let Some(transfer) = manifest.transfer.clone() else {
            return Err(reject("manifest", "the manifest names no transfer".into()));
        };
        if transfer.origin != envelope.sender || transfer.destination != cx.trust.institution() {
            return Err(reject(
                "manifest",
                format!(
                    "transfer {} claims to go from {} to {}, but {} sent it here",
                    transfer.transfer_id, transfer.origin, transfer.destination, envelope.sender
                ),
            ));
        }
        let key = super::processed_key(&envelope);
        if store::is_processed(c, &key)? {
            cx.store.apply_nothing(c, position, None)?;
            return Ok(Applied::Nothing);
        }
        if let Some(known) = store::filing_by_transfer(c, &transfer.transfer_id)? {
            // Only the transfer's own origin gets its receipt again: anyone
            // else naming a known transfer id learns nothing.
            if known.direction != Direction::Inbound || known.origin != envelope.sender {
                return Err(reject(
                    "manifest",
                    format!(
                        "transfer {} is known here, and {} did not send it",
                        transfer.transfer_id, envelope.sender
                    ),
                ));
            }
            // Sent again: the origin has not seen our receipt. Send it again.
            let origin = envelope.sender.clone();
            cx.store.apply_receipt_resend(
                c,
                position,
                &key,
                &transfer.transfer_id,
                &origin,
                &cx.kafka.topics.inbox(&origin),
            )?;
            return Ok(Applied::ReceiptQueued);
        }
        if manifest.documents.is_empty() {
            return Err(reject(
                "manifest",
                format!("transfer {} has no documents", transfer.transfer_id),
            ));
        }
        for (i, doc) in manifest.documents.iter().enumerate() {
            if doc.index as usize != i || doc.sha256.len() != 32 {
                return Err(reject(
                    "manifest",
                    format!(
                        "transfer {}: document entry {i} is malformed",
                        transfer.transfer_id
                    ),
                ));
            }
            let violations = crate::lifecycle::validate::document_header(
                &ecointegra_proto::v1::DocumentHeader {
                    name: doc.name.clone(),
                    media_type: doc.media_type.clone(),
                    declared_size: doc.size,
                },
                i,
                u64::MAX,
            );
            if let Some(v) = violations.first() {
                return Err(reject(
                    "manifest",
                    format!(
                        "transfer {}: {}: {}",
                        transfer.transfer_id, v.field, v.description
                    ),
                ));
            }
        }

        // Custody first: only who may send this transfer gets its documents read.
        let prior_receipts =
            verify_prior_receipts(&transfer, &cx.trust.directory(), &envelope.sender).map_err(
                |reason| {
                    reject(
                        "chain",
                        format!("transfer {}: {reason}", transfer.transfer_id),
                    )
                },
            )?;

        // Verify every document against the manifest, then adopt it.
        let total: u64 = manifest.documents.iter().map(|d| d.size).sum();
        let mut problems = Vec::new();
        for doc in &manifest.documents {
            let path = cx
                .blobs
                .partial_path(&envelope.sender, &transfer.transfer_id, doc.index)
                .map_err(|e| reject("identifier", e.to_string()))?;
            let partial = store::partial(c, &envelope.sender, &transfer.transfer_id, doc.index)?;
            if kept_whole(doc) {
                // Carried whole in the manifest (checked when opened), or
                // empty, and small: kept in the store with the filing below.
            } else if carried_whole(doc) {
                // Carried whole, larger: one file, written here, made durable
                // before it is adopted.
                write_at(&path, 0, &doc.data)
                    .map_err(Error::io(format!("cannot write {}", path.display())))?;
                self.dirty.insert(path.clone());
            } else {
                let (chunks, bytes) = partial
                    .filter(|p| p.sender == envelope.sender)
                    .map_or((0, 0), |p| (p.next_seq, p.bytes));
                if chunks != doc.chunk_count || bytes != doc.size {
                    problems.push(format!(
                        "document {} ({}): {bytes} of {} bytes in {chunks} of {} chunks arrived",
                        doc.index, doc.name, doc.size, doc.chunk_count
                    ));
                    continue;
                }
            }
            let (digest, size) = match digests.get(&doc.index) {
                Some(known) => *known,
                None if carried_whole(doc) => (Sha256::digest(&doc.data).into(), doc.size),
                // Hashing it here would hold every other writer up.
                None if total > LARGE_TRANSFER && !first => return Err(Stop::Later),
                None => match cx.running.digest(&path, doc.size) {
                    Some(digest) => digest,
                    None => digest_partial(&cx.blobs, &path, &doc.sha256)
                        .map_err(Error::io(format!("cannot read {}", path.display())))?,
                },
            };
            if size != doc.size || digest.as_slice() != doc.sha256.as_slice() {
                problems.push(format!(
                    "document {} ({}): SHA-256 {} of {size} bytes differs from the manifest's {} of {} bytes",
                    doc.index,
                    doc.name,
                    hex::encode(digest),
                    hex::encode(&doc.sha256),
                    doc.size
                ));
            }
        }
        if !problems.is_empty() {
            let incomplete = problems.iter().all(|p| p.contains("arrived"));
            if incomplete && manifest.probe {
                // A probe for chunks not here: the whole transfer follows it.
                tracing::debug!(transfer_id = %transfer.transfer_id, "Probe for an incomplete transfer.");
                cx.store.apply_nothing(c, position, None)?;
                return Ok(Applied::Nothing);
            }
            let rejection = Rejection::new(
                if incomplete { "incomplete" } else { "digest" },
                format!("transfer {}: {}", transfer.transfer_id, problems.join("; ")),
            )
            .about(&envelope);
            return Err(Stop::from(if incomplete {
                Fault::Reject(rejection)
            } else {
                // Corrupt data: forget it, so a re-send starts afresh.
                Fault::Corrupt(Box::new(Corrupt {
                    rejection,
                    transfer_id: transfer.transfer_id.clone(),
                    sender: envelope.sender.clone(),
                    documents: manifest.documents.clone(),
                }))
            }));
        }

        let now = ecointegra_broker::now_ms();
        let me = cx.trust.institution().to_owned();
        let kind = TransferKind::try_from(transfer.kind).unwrap_or(TransferKind::Original);
        let due_date = if kind == TransferKind::Answer {
            String::new()
        } else {
            let calendar = Calendar::new(&cx.config.deadlines);
            let period = crate::lifecycle::deadlines::period_for(
                &cx.config.deadlines,
                &transfer.filing_type,
            );
            calendar
                .add_business_days(Day::of_ms(now, calendar.utc_offset_minutes), period)
                .to_string()
        };
        let filing = NewFiling {
            tracking_code: transfer.tracking_code.clone(),
            verification_code: String::new(),
            transfer_id: transfer.transfer_id.clone(),
            direction: Direction::Inbound,
            status: FilingStatus::Delivered,
            origin: transfer.origin.clone(),
            destination: me.clone(),
            subject: transfer.subject.clone(),
            sender_party: transfer.sender_party.clone().unwrap_or_default(),
            folio_count: transfer.folio_count,
            registered_at_ms: transfer.registered_at_ms,
            delivered_at_ms: now,
            origin_registry_number: transfer.origin_registry_number.clone(),
            documents: manifest
                .documents
                .iter()
                .map(|d| DocumentRow {
                    index: d.index,
                    name: d.name.clone(),
                    media_type: d.media_type.clone(),
                    size: d.size,
                    sha256: d.sha256.clone(),
                })
                .collect(),
            kind,
            related_transfer_id: transfer.related_transfer_id.clone(),
            note: transfer.note.clone(),
            hop: transfer.hop.max(1),
            filing_type: transfer.filing_type.clone(),
            due_date,
            filed_at: if transfer.filed_at.is_empty() {
                transfer.origin.clone()
            } else {
                transfer.filed_at.clone()
            },
            previous_receipt_sha256: transfer.previous_receipt_sha256.clone(),
            sgd: transfer.sgd.clone(),
        };
        let sealer = cx.trust.sealer.clone();
        let origin = envelope.sender.clone();
        // The receipt names the documents; it does not carry them back.
        let mut documents = manifest.documents.clone();
        for doc in &mut documents {
            doc.data = Vec::new();
        }
        let (transfer_id, tracking_code, hop, previous) = (
            filing.transfer_id.clone(),
            filing.tracking_code.clone(),
            filing.hop,
            filing.previous_receipt_sha256.clone(),
        );
        let receipt_for = move |registry_number: &str| {
            let receipt = Receipt {
                transfer_id: transfer_id.clone(),
                tracking_code: tracking_code.clone(),
                receiving_institution: me.clone(),
                registry_number: registry_number.to_owned(),
                received_at_ms: now,
                documents: documents.clone(),
                origin: origin.clone(),
                previous_receipt_sha256: previous.clone(),
                hop,
            };
            let sealed = sealer.seal(
                format!("{transfer_id}/receipt"),
                MessageType::Receipt,
                &origin,
                receipt.encode_to_vec(),
            );
            ReceiptRow {
                transfer_id: transfer_id.clone(),
                tracking_code: tracking_code.clone(),
                hop,
                signer: me.clone(),
                envelope: sealed.encode_to_vec(),
                received_at_ms: now,
            }
        };
        let delivery = Delivery {
            filing,
            prior_receipts,
            receipt: Box::new(receipt_for),
            reply_topic: cx.kafka.topics.inbox(&envelope.sender),
            // The sender's SENT step follows what it knew when it published.
            after_seq: transfer.tracking_seq + 1,
        };
        let mut adopted = Vec::new();
        for doc in &manifest.documents {
            if kept_whole(doc) {
                store::blobs::keep(c, &doc.sha256, &doc.data)?;
                continue;
            }
            let path = cx
                .blobs
                .partial_path(&envelope.sender, &transfer.transfer_id, doc.index)
                .map_err(|e| Stop::from(Rejection::new("identifier", e.to_string())))?;
            // Adopted files must be whole and durable before they are renamed.
            if self.dirty.remove(&path) {
                sync_file(&path)?;
            }
            cx.blobs.adopt_partial(&path, &doc.sha256)?;
            cx.running.forget(&path);
            adopted.push(path);
        }
        let filing_id =
            cx.store
                .apply_delivery(c, position, &super::processed_key(&envelope), &delivery)?;
        // Removed once the batch has committed: until then a crash may need them.
        self.adopted.extend(adopted);
        Ok(match filing_id {
            Some(filing_id) => Applied::Delivered {
                filing_id,
                bytes: total,
                tracking_code: transfer.tracking_code.clone(),
                origin: envelope.sender.clone(),
            },
            None => Applied::Nothing,
        })
    }
}

/// Did this document of a manifest come whole inside it (its length was
/// checked when opened), or is it empty: no chunk to wait for?
fn carried_whole(doc: &DocumentDigest) -> bool {
    doc.data.len() as u64 == doc.size
}

/// Is it kept in the store: carried whole and small? No file.
fn kept_whole(doc: &DocumentDigest) -> bool {
    doc.size <= KEPT_MAX && carried_whole(doc)
}

/// Writes `data` at `offset` as the end of the file, dropping any tail a
/// crash left beyond it; around the page cache where it can
/// ([`DirectFile`]). Not durable yet: the batch fsyncs the file before it
/// commits.
fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let open = || {
        DirectFile::open(
            crate::store::blobs::private_file()
                .create(true)
                .truncate(false)
                .write(true),
            path,
        )
    };
    let mut file = open()?;
    if file.file().metadata()?.nlink() > 1 {
        // Linked into the blob store by a filing whose transaction never
        // committed (a crash): written into a copy of its own, so the blob
        // stays as it was.
        drop(file);
        let mut copy = path.as_os_str().to_owned();
        copy.push(".copy");
        std::fs::copy(path, &copy)?;
        std::fs::rename(&copy, path)?;
        file = open()?;
    }
    file.write_end(offset, data)
}

/// Makes a written partial file durable. One already adopted (renamed into
/// the blob store, fsynced on the way) is gone from here: nothing to do.
pub(super) fn sync_file(path: &std::path::Path) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file
            .sync_data()
            .map(|()| crate::store::blobs::drop_cached(&file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(Error::io(format!("cannot sync {}", path.display())))
}

/// Removes the partial files no partial document of the store counts: those
/// its filing adopted before a crash kept them from being removed, and
/// those written in a batch that never committed (its records come again).
/// Run before the inbox is read.
pub(super) fn sweep_partials(cx: &Consumers) -> Result<()> {
    for (path, named) in cx.blobs.partial_files() {
        let counted = match named {
            Some((sender, transfer_id, index)) => {
                cx.store.partial(&sender, &transfer_id, index)?.is_some()
            }
            None => false,
        };
        if !counted {
            cx.blobs.forget_partial(&path);
        }
    }
    Ok(())
}

/// The digest of a complete partial document. If a crash came after the file
/// was adopted but before its filing committed, the partial file is gone and
/// the blob it became holds the same bytes.
fn digest_partial(
    blobs: &crate::store::blobs::Blobs,
    path: &std::path::Path,
    sha256: &[u8],
) -> std::io::Result<([u8; 32], u64)> {
    match crate::store::blobs::digest_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::store::blobs::digest_file(&blobs.path(sha256))
        }
        other => other,
    }
}

/// Checks the receipts a transfer carries: each signed by its receiver, each
/// naming the previous one, the last one named by the transfer itself, and
/// the custody they show lets `sender` send it.
fn verify_prior_receipts(
    transfer: &Transfer,
    directory: &ecointegra_broker::directory::Directory,
    sender: &str,
) -> Result<Vec<ReceiptRow>, String> {
    let receipts = crate::lifecycle::custody::verify_chain(&transfer.prior_receipts, directory)?;
    crate::lifecycle::custody::may_send(transfer, &receipts, sender)?;
    let expected = transfer
        .prior_receipts
        .last()
        .map(|last| Sha256::digest(last).to_vec())
        .unwrap_or_default();
    if transfer.previous_receipt_sha256 != expected {
        return Err("the transfer does not name the digest of the last receipt it carries".into());
    }
    Ok(receipts
        .into_iter()
        .zip(&transfer.prior_receipts)
        .map(|(r, envelope)| ReceiptRow {
            transfer_id: r.transfer_id,
            tracking_code: r.tracking_code,
            hop: r.hop,
            signer: r.receiving_institution,
            envelope: envelope.clone(),
            received_at_ms: r.received_at_ms,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_digest_counts_only_a_document_fed_whole_and_in_order() {
        let running = Running::default();
        let (a, b) = (Path::new("a"), Path::new("b"));
        let whole: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let digest = |bytes: &[u8]| -> [u8; 32] { Sha256::digest(bytes).into() };

        // In order, from the first byte: the digest of the whole.
        running.feed(a, 0, &whole[..1000]);
        assert_eq!(running.digest(a, 3000), None, "not all of it yet");
        running.feed(a, 1000, &whole[1000..2000]);
        running.feed(a, 2000, &whole[2000..]);
        assert_eq!(running.digest(a, 3000), Some((digest(&whole), 3000)));

        // A chunk fed twice (its batch rolled back, then sent again): gone,
        // and what follows cannot bring it back.
        running.feed(b, 0, &whole[..1000]);
        running.feed(b, 1000, &whole[1000..2000]);
        running.feed(b, 1000, &whole[1000..2000]);
        running.feed(b, 2000, &whole[2000..]);
        assert_eq!(running.digest(b, 3000), None);
        // Starting over from the first byte starts a new digest.
        for start in [0, 1000, 2000] {
            running.feed(b, start, &whole[start as usize..start as usize + 1000]);
        }
        assert_eq!(running.digest(b, 3000), Some((digest(&whole), 3000)));
        running.forget(b);
        assert_eq!(running.digest(b, 3000), None);
        // A gap (a chunk that never came through here): gone.
        running.feed(b, 0, &whole[..1000]);
        running.feed(b, 2000, &whole[2000..]);
        assert_eq!(running.digest(b, 2000), None);

        // At most RUNNING_MAX documents at once; past that, the file is read.
        for i in 0..RUNNING_MAX + 10 {
            running.feed(Path::new(&format!("many/{i}")), 0, b"x");
        }
        assert_eq!(running.states().len(), RUNNING_MAX);
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ecointegra-assemble-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Chunks land at their offsets; a chunk written again after a crash
    /// (the same offset) replaces what a torn write left beyond it, so the
    /// document's digest is that of the chunks, once each.
    #[test]
    fn chunks_written_again_after_a_crash_leave_the_document_whole() {
        let dir = scratch("rewrite");
        let path = dir.join("doc.0");
        write_at(&path, 0, b"hola ").unwrap();
        write_at(&path, 5, b"mundo, torn tail").unwrap();
        // The second chunk again, as a restart re-applies it.
        write_at(&path, 5, b"mundo").unwrap();
        sync_file(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hola mundo");
        let (digest, size) = crate::store::blobs::digest_file(&path).unwrap();
        assert_eq!(size, 10);
        assert_eq!(digest.as_slice(), Sha256::digest(b"hola mundo").as_slice());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A manifest adopts a partial document, and its batch never commits (a
    /// crash): the chunks after the last committed one come again and are
    /// written into the same file, which still holds the ones before, so the
    /// document is whole when the manifest comes again.
    #[test]
    fn a_partial_adopted_by_a_batch_that_never_committed_is_still_whole() {
        let dir = scratch("uncommitted");
        let blobs = crate::store::blobs::Blobs::open(&dir).unwrap();
        let partial = blobs.partial_path("senamhi", &"ab".repeat(16), 0).unwrap();
        let sha = Sha256::digest(b"hola mundo").to_vec();
        // The first chunk committed in a batch before; the second in the
        // batch whose manifest adopted the document and then crashed.
        write_at(&partial, 0, b"hola ").unwrap();
        write_at(&partial, 5, b"mundo").unwrap();
        sync_file(&partial).unwrap();
        let blob = blobs.adopt_partial(&partial, &sha).unwrap();
        assert_eq!(std::fs::read(&blob).unwrap(), b"hola mundo");
        // After the restart: the second chunk again (into a copy: the blob
        // is not written through its link), then the manifest.
        write_at(&partial, 5, b"mundo").unwrap();
        assert_eq!(std::fs::read(&blob).unwrap(), b"hola mundo");
        {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (
                std::fs::metadata(&partial).unwrap(),
                std::fs::metadata(&blob).unwrap(),
            );
            assert_ne!(a.ino(), b.ino());
        }
        let (digest, size) = digest_partial(&blobs, &partial, &sha).unwrap();
        assert_eq!((digest.to_vec(), size), (sha.clone(), 10));
        assert_eq!(blobs.adopt_partial(&partial, &sha).unwrap(), blob);
        // Once committed, the partial file goes; the blob stays.
        assert_eq!(blobs.partial_files().len(), 1);
        blobs.forget_partial(&partial);
        assert!(blobs.partial_files().is_empty());
        assert_eq!(std::fs::read(&blob).unwrap(), b"hola mundo");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A partial file already adopted into the blob store (a crash between
    /// the rename and the commit, as a release before this one adopted) is
    /// read from the blob it became.
    #[test]
    fn an_adopted_partial_is_read_from_its_blob() {
        let dir = scratch("adopted");
        let blobs = crate::store::blobs::Blobs::open(&dir).unwrap();
        let partial = dir.join("gone.0");
        std::fs::write(&partial, b"contenido").unwrap();
        let sha = Sha256::digest(b"contenido").to_vec();
        blobs.adopt(&partial, &sha).unwrap();
        assert!(!partial.exists());
        let (digest, size) = digest_partial(&blobs, &partial, &sha).unwrap();
        assert_eq!((digest.to_vec(), size), (sha, 9));
        sync_file(&partial).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
