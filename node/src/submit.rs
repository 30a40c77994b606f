//! Accepting a filing at this institution's desk: validate, stream every
//! document to a fsynced temporary file while hashing it, then store the
//! filing, its documents and its outbox entry in one transaction. A submission
//! rejected half-way leaves nothing behind.

use crate::blobs::TempFile;
use crate::error::{Error, Result, Violation};
use crate::node::Shared;
use crate::store::{DocumentRow, NewFiling, Submitted};
use crate::validate;
use ecointegra_proto::v1::{
    Direction, DocumentHeader, FilingStatus, StoredDocument, SubmitFilingRequest,
    SubmitFilingResponse, submit_filing_request::Part,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};

/// One document being received.
struct Upload {
    index: usize,
    header: DocumentHeader,
    temp: TempFile,
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
}

impl Upload {
    async fn start(shared: &Shared, index: usize, header: DocumentHeader) -> Result<Self> {
        let temp = TempFile::new(shared.blobs.temp_path());
        let file = tokio::fs::File::create(temp.path())
            .await
            .map_err(Error::io("cannot create an upload file"))?;
        Ok(Self {
            index,
            header,
            temp,
            file,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        let total = self.written + data.len() as u64;
        if total > self.header.declared_size {
            return Err(Error::invalid(
                format!("documents[{}].declared_size", self.index),
                format!(
                    "{} bytes were declared, but more were streamed",
                    self.header.declared_size
                ),
            ));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(Error::io("cannot write an upload file"))?;
        self.written = total;
        Ok(())
    }

    /// Checks the size, makes the bytes durable and returns the document.
    async fn finish(self) -> Result<(DocumentRow, TempFile)> {
        if self.written != self.header.declared_size {
            return Err(Error::invalid(
                format!("documents[{}].declared_size", self.index),
                format!(
                    "{} bytes were declared, but {} were streamed",
                    self.header.declared_size, self.written
                ),
            ));
        }
        self.file
            .sync_all()
            .await
            .map_err(Error::io("cannot sync an upload file"))?;
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
        Ok((row, self.temp))
    }
}

/// Accepts a filing from a stream of request parts.
pub async fn submit<S>(shared: &Shared, mut parts: S) -> Result<SubmitFilingResponse>
where
    S: Stream<Item = Result<SubmitFilingRequest>> + Unpin,
{
    let header = match parts.next().await.transpose()?.and_then(|p| p.part) {
        Some(Part::Header(header)) => header,
        _ => {
            return Err(Error::invalid(
                "header",
                "a submission starts with the filing header",
            ));
        }
    };
    let directory = shared.directory();
    let violations = validate::filing_header(&header, &directory, shared.institution());
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    let idempotency_key = Some(header.idempotency_key.trim().to_owned()).filter(|k| !k.is_empty());
    if let Some(key) = idempotency_key.clone()
        && let Some(answer) = shared
            .store
            .run(move |s| s.idempotent_response(&key))
            .await?
    {
        return decode_answer(&answer);
    }

    let max_size = shared.config.transfer.max_document_size;
    let mut documents: Vec<(DocumentRow, TempFile)> = Vec::new();
    let mut current: Option<Upload> = None;
    while let Some(part) = parts.next().await.transpose()? {
        match part.part {
            Some(Part::Document(doc)) => {
                if let Some(upload) = current.take() {
                    documents.push(upload.finish().await?);
                }
                let index = documents.len();
                let violations = validate::document_header(&doc, index, max_size);
                if !violations.is_empty() {
                    return Err(Error::InvalidArgument(violations));
                }
                current = Some(Upload::start(shared, index, doc).await?);
            }
            Some(Part::Chunk(data)) => match current.as_mut() {
                Some(upload) => upload.write(&data).await?,
                None => {
                    return Err(Error::invalid(
                        format!("documents[{}]", documents.len()),
                        "document bytes came before the document's header",
                    ));
                }
            },
            Some(Part::Header(_)) => {
                return Err(Error::invalid(
                    "header",
                    "a submission has exactly one header",
                ));
            }
            None => {
                return Err(Error::invalid(
                    "part",
                    "an empty message is not a submission part",
                ));
            }
        }
    }
    if let Some(upload) = current.take() {
        documents.push(upload.finish().await?);
    }
    if documents.is_empty() {
        return Err(Error::InvalidArgument(vec![Violation::new(
            "documents",
            "a filing carries at least one document",
        )]));
    }

    let now = ecointegra_broker::now_ms();
    let me = shared.institution().to_owned();
    let filing = NewFiling {
        tracking_code: crate::ids::tracking_code(&me, now),
        verification_code: crate::ids::random_code(8),
        transfer_id: crate::ids::transfer_id(),
        direction: Direction::Outbound,
        status: FilingStatus::Registered,
        origin: me,
        destination: header.destination.trim().to_owned(),
        subject: header.subject.trim().to_owned(),
        sender_party: header.sender_party.clone().unwrap_or_default(),
        folio_count: header.folio_count,
        registered_at_ms: now,
        delivered_at_ms: 0,
        origin_registry_number: String::new(),
        documents: documents.iter().map(|(row, _)| row.clone()).collect(),
    };
    let answer = SubmitFilingResponse {
        tracking_code: filing.tracking_code.clone(),
        verification_code: filing.verification_code.clone(),
        documents: filing.documents.iter().map(stored_document).collect(),
        transfer_id: filing.transfer_id.clone(),
        status: FilingStatus::Registered as i32,
    };

    let blobs = shared.blobs.clone();
    let encoded = answer.encode_to_vec();
    let submitted = shared
        .store
        .run(move |store| {
            // Files first: a crash between the two leaves an unreferenced
            // blob, never a filing without its bytes.
            for (row, temp) in documents {
                blobs.adopt(&temp.keep(), &row.sha256)?;
            }
            store.insert_submission(&filing, idempotency_key.as_deref(), |_| encoded)
        })
        .await?;
    match submitted {
        Submitted::New { .. } => {
            shared.relay_wake.notify_one();
            Ok(answer)
        }
        Submitted::Existing(first) => decode_answer(&first),
    }
}

fn decode_answer(bytes: &[u8]) -> Result<SubmitFilingResponse> {
    SubmitFilingResponse::decode(bytes).map_err(|e| Error::Io {
        context: "a stored answer is unreadable".into(),
        source: std::io::Error::other(e),
    })
}

pub fn stored_document(row: &DocumentRow) -> StoredDocument {
    StoredDocument {
        index: row.index,
        name: row.name.clone(),
        media_type: row.media_type.clone(),
        size: row.size,
        sha256: hex::encode(&row.sha256),
    }
}
