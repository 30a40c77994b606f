//! `FilingService`: submit with a streamed upload, get, download, list and
//! stream the inbox, receipts and the receipt chain, and the clerk actions.

use super::Services;
use crate::error::{Error, Result};
use crate::lifecycle::deadlines::{Calendar, Day};
use crate::lifecycle::workflow::Action;
use crate::store::{DocumentRow, FilingRow};
use crate::submit::DocPart;
use ecointegra_proto::v1::filing_service_server::FilingService;
use ecointegra_proto::v1::{
    AnswerFilingRequest, ArchiveFilingRequest, DueFiling, ExportEvidenceRequest,
    ExportEvidenceResponse, ForwardFilingRequest, GetReceiptChainResponse, ListDueRequest,
    ListDueResponse, ObserveFilingRequest, ReceiveFilingRequest, RejectFilingRequest,
    answer_filing_request,
};
use ecointegra_proto::v1::{
    DownloadDocumentRequest, DownloadDocumentResponse, Envelope, Filing, GetFilingRequest,
    GetReceiptRequest, GetReceiptResponse, InboxEvent, ListInboxRequest, ListInboxResponse,
    Receipt, StreamInboxRequest, SubmitFilingRequest, SubmitFilingResponse,
    download_document_response,
};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub struct FilingApi {
    pub(super) services: Arc<Services>,
    pub(super) cancel: CancellationToken,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const DOWNLOAD_CHUNK: usize = 256 * 1024;

#[tonic::async_trait]
impl FilingService for FilingApi {
    async fn submit_filing(
        &self,
        request: Request<Streaming<SubmitFilingRequest>>,
    ) -> Result<Response<SubmitFilingResponse>, Status> {
        let who = crate::grpc::auth::actor_of(&request);
        let caller = crate::telemetry::trace::from_metadata(request.metadata());
        let (span, trace) =
            crate::telemetry::trace::start_span(self.services.otlp.as_deref(), caller, || {
                tracing::info_span!(
                    "SubmitFiling",
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    ecointegra.tracking_code = tracing::field::Empty,
                )
            });
        let parts = request.into_inner().map(|part| {
            part.map_err(|status| Error::invalid("stream", status.message().to_owned()))
        });
        let answer = crate::telemetry::trace::CURRENT
            .scope(
                trace,
                crate::submit::submit(&self.services.desk, &who, parts),
            )
            .await
            .inspect_err(|_| {
                span.record("otel.status_code", "error");
            })?;
        span.record("ecointegra.tracking_code", answer.tracking_code.as_str());
        tracing::info!(
            tracking_code = %answer.tracking_code,
            documents = answer.documents.len(),
            "Filing accepted."
        );
        Ok(Response::new(answer))
    }

    async fn get_filing(
        &self,
        request: Request<GetFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let request = request.into_inner();
        let filing = self
            .filing(request.tracking_code, &request.transfer_id)
            .await?;
        let code = filing.tracking_code.clone();
        let copies = self
            .services
            .desk
            .store
            .run(move |s| s.filing_copies(&code))
            .await?;
        let mut answer = filing.to_proto();
        answer.copies = copies.iter().map(FilingRow::to_copy).collect();
        Ok(Response::new(answer))
    }

    type DownloadDocumentStream = ResponseStream<DownloadDocumentResponse>;

    async fn download_document(
        &self,
        request: Request<DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let request = request.into_inner();
        let filing = self
            .filing(request.tracking_code, &request.transfer_id)
            .await?;
        let document = filing
            .documents
            .iter()
            .find(|d| d.index == request.document_index)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "document {} of filing {}",
                    request.document_index, filing.tracking_code
                ))
            })?
            .clone();
        let desk = &self.services.desk;
        let mut file = desk
            .store
            .open_document(&desk.blobs, &document.sha256, document.size)
            .await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let first =
                download_document_response::Part::Document(DocumentRow::to_proto(&document));
            if tx
                .send(Ok(DownloadDocumentResponse { part: Some(first) }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
                match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buffer.truncate(n);
                        let part = download_document_response::Part::Chunk(buffer);
                        if tx
                            .send(Ok(DownloadDocumentResponse { part: Some(part) }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Error::io("cannot read a document")(e).into()))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.page_size {
            0 => 50,
            n => n.min(500),
        };
        let before = if request.page_token.is_empty() {
            None
        } else {
            Some(request.page_token.parse::<i64>().map_err(|_| {
                Error::invalid("page_token", "is not a token this service returned")
            })?)
        };
        let rows = self
            .services
            .desk
            .store
            .run(move |s| s.inbox_page(before, limit))
            .await?;
        let next_page_token = if rows.len() == limit as usize {
            rows.last().map(|f| f.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListInboxResponse {
            filings: rows.iter().map(FilingRow::to_proto).collect(),
            next_page_token,
        }))
    }

    type StreamInboxStream = ResponseStream<InboxEvent>;

    async fn stream_inbox(
        &self,
        request: Request<StreamInboxRequest>,
    ) -> Result<Response<Self::StreamInboxStream>, Status> {
        let cursor = request.into_inner().cursor;
        let mut cursor: i64 = if cursor.is_empty() {
            0
        } else {
            cursor
                .parse()
                .map_err(|_| Error::invalid("cursor", "is not a cursor this service returned"))?
        };
        let services = self.services.clone();
        let cancel = self.cancel.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut head = services.inbox_head.subscribe();
            loop {
                // Mark the head seen before reading, so a filing stored
                // between the read and the wait still wakes us.
                head.borrow_and_update();
                let rows = match services
                    .desk
                    .store
                    .run(move |s| s.inbox_after(cursor, 100))
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for filing in &rows {
                    cursor = filing.id;
                    let event = InboxEvent {
                        cursor: filing.id.to_string(),
                        filing: Some(filing.to_proto()),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if rows.len() < 100 {
                    tokio::select! {
                        changed = head.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_receipt(
        &self,
        request: Request<GetReceiptRequest>,
    ) -> Result<Response<GetReceiptResponse>, Status> {
        let filing = self.filing(request.into_inner().tracking_code, "").await?;
        let transfer_id = filing.transfer_id.clone();
        let stored = self
            .services
            .desk
            .store
            .run(move |s| s.receipt(&transfer_id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("a receipt for {}", filing.tracking_code)))?;
        let sealed = Envelope::decode(stored.envelope.as_slice()).map_err(|e| Error::Io {
            context: "a stored receipt is unreadable".into(),
            source: std::io::Error::other(e),
        })?;
        let receipt = Receipt::decode(sealed.payload.as_ref()).map_err(|e| Error::Io {
            context: "a stored receipt is unreadable".into(),
            source: std::io::Error::other(e),
        })?;
        let directory = self.services.desk.trust.directory();
        // Verified with the key its signer had in force when it signed, which
        // a later key rotation may have retired: that is the key returned.
        let checked = crate::lifecycle::custody::verify_receipt(&stored.envelope, &directory)
            .ok()
            .filter(|checked| checked.envelope.sender == stored.signer);
        let verified = checked.is_some()
            && crate::consume::apply::digests_match(&receipt.documents, &filing.documents).is_ok();
        let signer_key = checked
            .map(|c| c.key)
            .or_else(|| directory.get(&stored.signer).map(|i| i.signing_key));
        Ok(Response::new(GetReceiptResponse {
            receipt: Some(receipt),
            signed_envelope: stored.envelope,
            signer: stored.signer,
            signer_public_key: signer_key
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default(),
            verified,
        }))
    }

    async fn get_receipt_chain(
        &self,
        request: Request<GetReceiptRequest>,
    ) -> Result<Response<GetReceiptChainResponse>, Status> {
        let code = request.into_inner().tracking_code.trim().to_uppercase();
        if code.is_empty() {
            return Err(Error::invalid("tracking_code", "is required").into());
        }
        let lookup = code.clone();
        let chain = self
            .services
            .desk
            .store
            .run(move |s| s.receipt_chain(&lookup))
            .await?;
        if chain.is_empty() {
            return Err(Error::NotFound(format!("receipts for {code}")).into());
        }
        let receipts: Vec<Vec<u8>> = chain.into_iter().map(|r| r.envelope).collect();
        let verified = crate::lifecycle::custody::verify_chain(
            &receipts,
            &self.services.desk.trust.directory(),
        )
        .is_ok();
        Ok(Response::new(GetReceiptChainResponse {
            receipts,
            verified,
        }))
    }

    type ExportEvidenceStream = ResponseStream<ExportEvidenceResponse>;

    async fn export_evidence(
        &self,
        request: Request<ExportEvidenceRequest>,
    ) -> Result<Response<Self::ExportEvidenceStream>, Status> {
        let request = request.into_inner();
        let code = request.tracking_code.trim().to_uppercase();
        if code.is_empty() {
            return Err(Error::invalid("tracking_code", "is required").into());
        }
        let file =
            crate::evidence::bundle(&self.services.desk, &code, request.with_documents).await?;
        let mut file = tokio::fs::File::from_std(file);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
                let next = match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buffer.truncate(n);
                        Ok(ExportEvidenceResponse { data: buffer })
                    }
                    Err(e) => Err(Error::io("cannot read the evidence bundle")(e).into()),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn receive_filing(
        &self,
        request: Request<ReceiveFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        let action = Action::Receive {
            registry_number: r.registry_number,
            office: r.office,
            cargo: None,
        };
        self.act(&actor, r.tracking_code, r.action_id, action).await
    }

    async fn observe_filing(
        &self,
        request: Request<ObserveFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        self.act(
            &actor,
            r.tracking_code,
            r.action_id,
            Action::Observe {
                reason: r.reason,
                cargo: None,
            },
        )
        .await
    }

    async fn reject_filing(
        &self,
        request: Request<RejectFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        self.act(
            &actor,
            r.tracking_code,
            r.action_id,
            Action::Reject { reason: r.reason },
        )
        .await
    }

    async fn forward_filing(
        &self,
        request: Request<ForwardFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        let action = Action::Forward {
            destination: r.destination.trim().to_owned(),
            note: r.note,
        };
        self.act(&actor, r.tracking_code, r.action_id, action).await
    }

    async fn answer_filing(
        &self,
        request: Request<Streaming<AnswerFilingRequest>>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let mut parts = request.into_inner();
        let header = match parts.message().await? {
            Some(AnswerFilingRequest {
                part: Some(answer_filing_request::Part::Header(h)),
            }) => h,
            _ => return Err(Error::invalid("header", "an answer starts with its header").into()),
        };
        let documents = crate::submit::receive_documents(
            &self.services.desk,
            parts.map(|p| {
                match p
                    .map_err(|s| Error::invalid("stream", s.message().to_owned()))?
                    .part
                {
                    Some(answer_filing_request::Part::Document(d)) => Ok(DocPart::Document(d)),
                    Some(answer_filing_request::Part::Chunk(c)) => Ok(DocPart::Chunk(c)),
                    _ => Err(Error::invalid("header", "an answer has exactly one header")),
                }
            }),
        )
        .await?;
        let action = Action::Answer {
            note: header.note,
            documents,
        };
        self.act(&actor, header.tracking_code, header.action_id, action)
            .await
    }

    async fn archive_filing(
        &self,
        request: Request<ArchiveFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        let actor = crate::grpc::auth::actor_of(&request);
        let r = request.into_inner();
        self.act(
            &actor,
            r.tracking_code,
            r.action_id,
            Action::Archive { note: r.note },
        )
        .await
    }

    async fn list_due(
        &self,
        request: Request<ListDueRequest>,
    ) -> Result<Response<ListDueResponse>, Status> {
        let within = request.into_inner().within_days as i64;
        let calendar = Calendar::new(&self.services.desk.config.deadlines);
        let today = Day::of_ms(ecointegra_broker::now_ms(), calendar.utc_offset_minutes);
        let open = self
            .services
            .desk
            .store
            .run(|s| s.open_with_due_date())
            .await?;
        let filings = open
            .iter()
            .filter_map(|f| Day::parse(&f.due_date).map(|due| (f, due)))
            .filter(|(_, due)| due.0 - today.0 <= within)
            .map(|(f, due)| DueFiling {
                filing: Some(f.to_proto()),
                business_days_left: calendar.business_days_between(today, due),
            })
            .collect();
        Ok(Response::new(ListDueResponse { filings }))
    }
}

impl FilingApi {
    async fn act(
        &self,
        actor: &crate::audit::Actor,
        tracking_code: String,
        action_id: String,
        action: Action,
    ) -> Result<Response<Filing>, Status> {
        let filing = crate::lifecycle::workflow::act(
            &self.services.desk,
            tracking_code,
            action_id,
            action,
            actor,
        )
        .await?;
        Ok(Response::new(filing))
    }

    /// The copy of a filing a request names (see `GetFilingRequest`).
    async fn filing(&self, tracking_code: String, transfer_id: &str) -> Result<FilingRow> {
        let code = tracking_code.trim().to_owned();
        if code.is_empty() {
            return Err(Error::invalid("tracking_code", "is required"));
        }
        let transfer_id = transfer_id.trim().to_owned();
        if !transfer_id.is_empty() && !crate::ids::is_transfer_id(&transfer_id) {
            return Err(Error::invalid("transfer_id", "is not a transfer id"));
        }
        let lookup = code.clone();
        let copy = (!transfer_id.is_empty()).then_some(transfer_id.clone());
        self.services
            .desk
            .store
            .run(move |s| s.filing_copy(&lookup, copy.as_deref()))
            .await?
            .ok_or_else(|| match transfer_id.as_str() {
                "" => Error::NotFound(format!("filing {code}")),
                id => Error::NotFound(format!("transfer {id} of filing {code}")),
            })
    }
}
