//! Accepting a filing at this institution's desk: validate, stream every
//! document to a fsynced temporary file while hashing it, then store the
//! filing, its documents and its outbox entry in one transaction. A submission
//! rejected half-way leaves nothing behind.

use crate::error::{Error, Result, Violation};
use crate::lifecycle::Desk;
use crate::lifecycle::validate;
use crate::store::blobs::{KEPT_MAX, Received, TempFile};
use crate::store::direct::DirectFile;
use crate::store::{DocumentRow, FilingRow, NewFiling, Submitted};
use ecointegra_proto::v1::{
    Direction, DocumentHeader, FilingHeader, FilingStatus, SubmitFilingRequest,
    SubmitFilingResponse, TransferKind, submit_filing_request::Part,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::{Stream, StreamExt};

mod cut;
use cut::CutThrough;

/// Bytes of a document an upload holds before it writes them out: a small
/// document is created, written and fsynced in one step on a blocking
/// thread, a large one in steps of this size, not one per gRPC message.
const WRITE_AT: usize = 256 * 1024;

/// One document being received.
struct Upload {
    index: usize,
    header: DocumentHeader,
    temp: TempFile,
    /// Created at the first write-out, written around the page cache.
    file: Option<DirectFile>,
    /// Received, hashed, not yet written (under [`WRITE_AT`] between calls,
    /// and under a block once the file is written).
    pending: Vec<u8>,
    /// Bytes in the file so far.
    flushed: u64,
    hasher: Sha256,
    written: u64,
    /// False for an unsized document, whose `declared_size` is the maximum
    /// document size standing in for the size it does not know.
    sized: bool,
    /// For a document that may take a chunk or more, while its chunks go
    /// out as it arrives: the chunk being filled.
    outgoing: Option<Outgoing>,
}

/// The chunk of a document being filled for [`CutThrough`].
struct Outgoing {
    data: Vec<u8>,
    seq: u32,
    offset: u64,
}

impl Upload {
    fn start(
        desk: &Desk,
        index: usize,
        header: DocumentHeader,
        sized: bool,
        cut: Option<&CutThrough>,
    ) -> Self {
        let outgoing = cut
            .filter(|c| c.on() && header.declared_size >= c.chunk_size as u64)
            .map(|c| Outgoing {
                data: Vec::with_capacity(c.chunk_size),
                seq: 0,
                offset: 0,
            });
        Self {
            index,
            header,
            temp: TempFile::new(desk.blobs.temp_path()),
            file: None,
            pending: Vec::new(),
            flushed: 0,
            hasher: Sha256::new(),
            written: 0,
            sized,
            outgoing,
        }
    }

    /// Writes out what is pending (creating the file first if need be): its
    /// whole blocks, or with `last` all of it, and makes the file durable.
    /// One hop to a blocking thread.
    async fn write_out(&mut self, last: bool) -> Result<()> {
        let file = self.file.take();
        let pending = std::mem::take(&mut self.pending);
        let (path, offset) = (self.temp.path().to_owned(), self.flushed);
        let (file, mut pending, written) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut file = match file {
                Some(file) => file,
                None => DirectFile::open(
                    crate::store::blobs::private_file()
                        .write(true)
                        .create(true)
                        .truncate(true),
                    &path,
                )
                .map_err(Error::io("cannot create an upload file"))?,
            };
            let written = if last {
                file.write_end(offset, &pending).map(|()| pending.len())
            } else {
                file.write_blocks(offset, &pending)
            }
            .map_err(Error::io("cannot write an upload file"))?;
            if last {
                file.file()
                    .sync_all()
                    .map_err(Error::io("cannot sync an upload file"))?;
            }
            Ok((file, pending, written))
        })
        .await
        .map_err(Error::task("an upload task failed"))??;
        // What did not fill a block waits for the next write-out; after the
        // last, the bytes stay (the finished upload may hand them on).
        if !last {
            pending.drain(..written);
        }
        self.flushed += written as u64;
        self.file = Some(file);
        self.pending = pending;
        Ok(())
    }

    async fn write(&mut self, data: &[u8], cut: Option<&mut CutThrough>) -> Result<()> {
        let total = self.written + data.len() as u64;
        if total > self.header.declared_size {
            let declared = self.header.declared_size;
            return Err(Error::invalid(
                format!("documents[{}].declared_size", self.index),
                if self.sized {
                    format!("{declared} bytes were declared, but more were streamed")
                } else {
                    format!("is over the maximum document size of {declared} bytes")
                },
            ));
        }
        self.hasher.update(data);
        self.pending.extend_from_slice(data);
        self.written = total;
        if let (Some(out), Some(cut)) = (self.outgoing.as_mut(), cut) {
            let mut rest = data;
            while !rest.is_empty() {
                let take = (cut.chunk_size - out.data.len()).min(rest.len());
                out.data.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if out.data.len() == cut.chunk_size {
                    let full = std::mem::replace(&mut out.data, Vec::with_capacity(cut.chunk_size));
                    cut.publish(self.index as u32, out.seq, out.offset, full)
                        .await;
                    out.seq += 1;
                    out.offset += cut.chunk_size as u64;
                }
            }
        }
        if self.pending.len() >= WRITE_AT {
            self.write_out(false).await?;
        }
        Ok(())
    }

    /// Checks the size and returns the document: a small one's bytes, to be
    /// kept in the store with its filing, or any other's fsynced file.
    async fn finish(mut self, cut: Option<&mut CutThrough>) -> Result<(DocumentRow, Received)> {
        if self.sized && self.written != self.header.declared_size {
            return Err(Error::invalid(
                format!("documents[{}].declared_size", self.index),
                format!(
                    "{} bytes were declared, but {} were streamed",
                    self.header.declared_size, self.written
                ),
            ));
        }
        // Its last chunk, if a whole one went out before (a document under
        // a chunk is left to the relay: its filing may travel in one record).
        if let (Some(out), Some(cut)) = (self.outgoing.take(), cut)
            && out.seq > 0
        {
            if !out.data.is_empty() {
                cut.publish(self.index as u32, out.seq, out.offset, out.data)
                    .await;
            }
            cut.document_sent(self.index as u32).await;
        }
        let received = if self.file.is_none() && self.written <= KEPT_MAX {
            // Never written out: no file was created.
            self.temp.keep();
            Received::Kept(std::mem::take(&mut self.pending))
        } else {
            // Held whole until now (under WRITE_AT): its bytes go on to the
            // relay in memory as well as to the file.
            let whole = self.file.is_none();
            self.write_out(true).await?;
            Received::File(self.temp, whole.then(|| std::mem::take(&mut self.pending)))
        };
        let media_type = if self.header.media_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            self.header.media_type
        };
        let row = DocumentRow {
            index: self.index as u32,
            name: self.header.name,
            media_type,
            size: self.written,
            sha256: self.hasher.finalize().to_vec(),
        };
        Ok((row, received))
    }
}

/// One part of a document upload, whatever the request that carries it.
pub enum DocPart {
    /// A document whose size is declared up front (gRPC).
    Document(DocumentHeader),
    /// A document whose size is known only at its end (a browser's form
    /// upload): its `declared_size` is ignored and the maximum document size
    /// caps it instead.
    Unsized(DocumentHeader),
    Chunk(prost::bytes::Bytes),
}

/// Receives documents (each a header and its bytes), checking every rule: a
/// small one into memory, any other into a fsynced temporary file. The files
/// vanish if anything fails.
pub async fn receive_documents<S>(desk: &Desk, parts: S) -> Result<Vec<(DocumentRow, Received)>>
where
    S: Stream<Item = Result<DocPart>> + Unpin,
{
    receive(desk, parts, None).await
}

/// [`receive_documents`], publishing large documents' chunks through `cut`
/// as they arrive.
async fn receive<S>(
    desk: &Desk,
    mut parts: S,
    mut cut: Option<&mut CutThrough>,
) -> Result<Vec<(DocumentRow, Received)>>
where
    S: Stream<Item = Result<DocPart>> + Unpin,
{
    let max_size = desk.config.transfer.max_document_size;
    let max_total = desk.config.transfer.max_filing_size;
    let mut documents: Vec<(DocumentRow, Received)> = Vec::new();
    let mut current: Option<Upload> = None;
    while let Some(part) = parts.next().await.transpose()? {
        let (doc, sized) = match part {
            DocPart::Document(doc) => (doc, true),
            DocPart::Unsized(doc) => (
                DocumentHeader {
                    declared_size: max_size,
                    ..doc
                },
                false,
            ),
            DocPart::Chunk(data) => {
                match current.as_mut() {
                    Some(upload) => upload.write(&data, cut.as_deref_mut()).await?,
                    None => {
                        return Err(Error::invalid(
                            format!("documents[{}]", documents.len()),
                            "document bytes came before the document's header",
                        ));
                    }
                }
                continue;
            }
        };
        if let Some(upload) = current.take() {
            documents.push(upload.finish(cut.as_deref_mut()).await?);
            check_total(&documents, 0, max_total)?;
        }
        // One spelling per name: "ó" typed as one character or as "o" and a
        // combining accent is stored the same way (NFC).
        let doc = DocumentHeader {
            name: unicode_normalization::UnicodeNormalization::nfc(doc.name.as_str()).collect(),
            ..doc
        };
        let index = documents.len();
        if index >= validate::MAX_DOCUMENTS {
            return Err(Error::invalid(
                format!("documents[{index}]"),
                format!(
                    "a filing carries at most {} documents",
                    validate::MAX_DOCUMENTS
                ),
            ));
        }
        let violations = validate::document_header(&doc, index, max_size);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        if sized {
            check_total(&documents, doc.declared_size, max_total)?;
        }
        current = Some(Upload::start(desk, index, doc, sized, cut.as_deref()));
    }
    if let Some(upload) = current.take() {
        documents.push(upload.finish(cut).await?);
        check_total(&documents, 0, max_total)?;
    }
    if documents.is_empty() {
        return Err(Error::InvalidArgument(vec![Violation::new(
            "documents",
            "at least one document is required",
        )]));
    }
    Ok(documents)
}

/// Refuses documents that together (with `next` bytes still to come) exceed
/// `transfer.max_filing_size`.
fn check_total(documents: &[(DocumentRow, Received)], next: u64, max_total: u64) -> Result<()> {
    let total = documents.iter().map(|(row, _)| row.size).sum::<u64>() + next;
    if total > max_total {
        return Err(Error::invalid(
            "documents",
            format!(
                "together the documents take {total} bytes; a filing takes at most {max_total} \
                 (transfer.max_filing_size)"
            ),
        ));
    }
    Ok(())
}

/// Accepts a filing from a stream of request parts, for `caller` (its
/// REGISTERED step names them; idempotency keys are the caller's own).
pub async fn submit<S>(
    desk: &Desk,
    caller: &crate::audit::Actor,
    mut parts: S,
) -> Result<SubmitFilingResponse>
where
    S: Stream<Item = Result<SubmitFilingRequest>> + Unpin,
{
    let header = match parts.next().await.transpose()?.and_then(|p| p.part) {
        Some(Part::Header(header)) if header.sgd.is_some() => {
            return Err(Error::invalid(
                "header.sgd",
                "is set by the PIDE adapter only, for what an SGD hands in",
            ));
        }
        Some(Part::Header(header)) => header,
        _ => {
            return Err(Error::invalid(
                "header",
                "a submission starts with the filing header",
            ));
        }
    };
    let documents = parts.map(|p| match p?.part {
        Some(Part::Document(doc)) => Ok(DocPart::Document(doc)),
        Some(Part::Chunk(data)) => Ok(DocPart::Chunk(data)),
        Some(Part::Header(_)) => Err(Error::invalid(
            "header",
            "a submission has exactly one header",
        )),
        None => Err(Error::invalid(
            "part",
            "an empty message is not a submission part",
        )),
    });
    accept(desk, caller, header, documents).await
}

/// Accepts a filing: its header, then its documents, whatever way they came
/// in (gRPC or the web console). The same rules apply to both. An
/// idempotency key belongs to `caller`: another caller using the same key
/// files a filing of its own, and learns nothing of the first.
pub async fn accept<S>(
    desk: &Desk,
    caller: &crate::audit::Actor,
    header: FilingHeader,
    documents: S,
) -> Result<SubmitFilingResponse>
where
    S: Stream<Item = Result<DocPart>> + Unpin,
{
    let answer = match accept_unaudited(desk, caller, header, documents).await {
        // A new filing's audit line committed with it.
        Ok(Accepted::New(answer)) => return Ok(answer),
        Ok(Accepted::Again(answer)) => Ok(answer),
        Err(error) => Err(error),
    };
    let code = answer.as_ref().map_or("", |a| a.tracking_code.as_str());
    desk.store.audit(caller, SUBMIT, code, &answer).await;
    answer
}

/// What a submission came to.
enum Accepted {
    /// Stored now, with its audit line.
    New(SubmitFilingResponse),
    /// Stored before under the same idempotency key: the first answer again.
    Again(SubmitFilingResponse),
}

const SUBMIT: &str = "submit filing";

async fn accept_unaudited<S>(
    desk: &Desk,
    caller: &crate::audit::Actor,
    mut header: FilingHeader,
    documents: S,
) -> Result<Accepted>
where
    S: Stream<Item = Result<DocPart>> + Unpin,
{
    // A correction (subsanación) continues this institution's observed filing.
    let corrected = match header.corrects_tracking_code.trim() {
        "" => None,
        code => {
            let code = code.to_uppercase();
            let observed = correctable(desk, &code).await?;
            if header.destination.trim().is_empty() {
                header.destination = observed.0.destination.clone();
            } else if header.destination.trim() != observed.0.destination {
                return Err(Error::invalid(
                    "header.destination",
                    format!(
                        "a correction goes back to {}, which observed it",
                        observed.0.destination
                    ),
                ));
            }
            Some(observed)
        }
    };
    let directory = desk.trust.directory();
    if let Some(reason) = directory
        .get(desk.institution())
        .and_then(|me| me.inactive_reason(ecointegra_broker::now_ms()))
    {
        return Err(Error::FailedPrecondition(format!(
            "{reason}; it cannot send filings"
        )));
    }
    let violations = validate::filing_header(&header, &directory, desk.institution());
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    let idempotency_key = Some(header.idempotency_key.trim())
        .filter(|k| !k.is_empty())
        .map(|key| caller_key(&caller.name, key));
    if let Some(key) = idempotency_key.clone()
        && let Some(answer) = desk.store.run(move |s| s.idempotent_response(&key)).await?
    {
        return decode_answer(&answer).map(Accepted::Again);
    }

    // Named before its documents arrive, so that their chunks can go out
    // as they do.
    let me = desk.institution().to_owned();
    let (tracking_code, verification_code, kind, related, hop, previous) = match corrected {
        None => (
            crate::ids::tracking_code(
                &me,
                ecointegra_broker::now_ms(),
                desk.config.deadlines.utc_offset_minutes,
            ),
            crate::verification::new_code(),
            TransferKind::Original,
            String::new(),
            1,
            Vec::new(),
        ),
        Some((observed, (hop, previous))) => (
            observed.tracking_code.clone(),
            observed.verification_code.clone(),
            TransferKind::Correction,
            observed.transfer_id.clone(),
            hop,
            previous,
        ),
    };
    let transfer_id = crate::ids::bound_transfer_id(&me, &tracking_code);
    let destination = header.destination.trim().to_owned();
    let context = crate::telemetry::trace::submission_context(&tracking_code);
    let mut cut = CutThrough::start(desk, &transfer_id, &destination, context.to_string());
    let documents = receive(desk, documents, cut.as_mut()).await?;
    let chunks_out = match cut {
        Some(cut) => cut.finish().await,
        None => Default::default(),
    };

    let now = ecointegra_broker::now_ms();
    let filing_type = match header.filing_type.trim() {
        "" => "general".to_owned(),
        t => t.to_lowercase(),
    };
    let filing = NewFiling {
        tracking_code,
        verification_code,
        transfer_id,
        direction: Direction::Outbound,
        status: FilingStatus::Registered,
        origin: me.clone(),
        destination,
        subject: header.subject.trim().to_owned(),
        sender_party: header.sender_party.clone().unwrap_or_default(),
        folio_count: header.folio_count,
        registered_at_ms: now,
        delivered_at_ms: 0,
        origin_registry_number: String::new(),
        documents: documents.iter().map(|(row, _)| row.clone()).collect(),
        kind,
        related_transfer_id: related,
        note: String::new(),
        hop,
        filing_type,
        due_date: String::new(),
        filed_at: me,
        previous_receipt_sha256: previous,
        sgd: header.sgd.clone(),
    };
    let prior_receipt_bytes = match &filing.kind {
        TransferKind::Correction => {
            let code = filing.tracking_code.clone();
            let hop = filing.hop;
            desk.store
                .run(move |s| s.receipt_chain(&code))
                .await?
                .iter()
                .filter(|r| r.hop < hop)
                .map(|r| r.envelope.len())
                .sum()
        }
        _ => 0,
    };
    validate::manifest_fits(
        &filing,
        prior_receipt_bytes,
        desk.config.kafka.max_record_bytes,
    )
    .map_err(|v| Error::InvalidArgument(vec![v]))?;
    let answer = SubmitFilingResponse {
        tracking_code: filing.tracking_code.clone(),
        verification_code: filing.verification_code.clone(),
        documents: filing.documents.iter().map(DocumentRow::to_proto).collect(),
        transfer_id: filing.transfer_id.clone(),
        status: FilingStatus::Registered as i32,
    };

    let registration = crate::lifecycle::registration::Registration {
        audited: crate::audit::Entry::of(
            caller,
            SUBMIT,
            &filing.tracking_code,
            &Ok::<_, Error>(()),
        ),
        filing,
        actor: caller.clone(),
        idempotency_key,
        answer: answer.encode_to_vec(),
        documents,
        context,
        chunks_out,
    };
    let submitted = desk.registrations.call(registration).await?;
    match submitted {
        Submitted::New { .. } => {
            desk.metrics
                .filing_submitted(answer.documents.iter().map(|d| d.size).sum());
            desk.relay_wake.notify_one();
            Ok(Accepted::New(answer))
        }
        Submitted::Existing(first) => decode_answer(&first).map(Accepted::Again),
    }
}

/// The observed filing a correction continues, and where the correction
/// hangs in the chain of custody.
async fn correctable(desk: &Desk, code: &str) -> Result<(FilingRow, (u32, Vec<u8>))> {
    let lookup = code.to_owned();
    let (filing, chain) = desk
        .store
        .run(move |s| {
            Ok((
                s.latest(&lookup, Direction::Outbound)?,
                s.receipt_chain(&lookup)?,
            ))
        })
        .await?;
    let Some(filing) = filing.filter(|f| f.kind != TransferKind::Answer) else {
        return Err(Error::invalid(
            "header.corrects_tracking_code",
            format!("no filing of this institution has tracking code {code}"),
        ));
    };
    if filing.status != FilingStatus::Observed {
        return Err(Error::FailedPrecondition(format!(
            "filing {code} is {}; only an OBSERVED filing can be corrected",
            crate::lifecycle::workflow::status_name(filing.status)
        )));
    }
    if !chain.iter().any(|r| r.transfer_id == filing.transfer_id) {
        return Err(Error::FailedPrecondition(format!(
            "filing {code} was observed, but its receipt has not arrived yet; try again shortly"
        )));
    }
    let link = crate::lifecycle::custody::next_link(&chain);
    Ok((filing, link))
}

fn decode_answer(bytes: &[u8]) -> Result<SubmitFilingResponse> {
    SubmitFilingResponse::decode(bytes).map_err(|e| Error::Io {
        context: "a stored answer is unreadable".into(),
        source: std::io::Error::other(e),
    })
}

/// An idempotency key as stored: the caller's, unambiguously (the length of
/// the caller's name first, so no two (caller, key) pairs collide).
fn caller_key(caller: &str, key: &str) -> String {
    format!("{}:{caller}:{key}", caller.len())
}
