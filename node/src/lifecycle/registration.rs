//! Storing accepted submissions: those that wait at once go in one hop to a
//! blocking thread and one write, each in a savepoint of its own.

use crate::error::Result;
use crate::store::batched::Batched;
use crate::store::blobs::{Blobs, Received, ToKeep};
use crate::store::{ChunksOut, DocumentRow, NewFiling, Store, Submitted};

/// An accepted submission, with everything its transaction writes.
pub struct Registration {
    pub filing: NewFiling,
    pub actor: crate::audit::Actor,
    pub idempotency_key: Option<String>,
    /// The client's answer, encoded.
    pub answer: Vec<u8>,
    pub documents: Vec<(DocumentRow, Received)>,
    pub context: crate::telemetry::trace::TraceContext,
    pub chunks_out: ChunksOut,
    pub audited: crate::audit::Entry,
}

impl Registration {
    /// An original filing registers the citizen's verification code; a
    /// correction keeps the one its original registered.
    fn makes_verifier(&self) -> bool {
        self.filing.kind == ecointegra_proto::v1::TransferKind::Original
    }
}

/// Stores submissions: those that wait at once in one hop to a blocking
/// thread and one write, each in a savepoint of its own. A hop per
/// submission was a third of the blocking threads' wake-ups at the origin
/// of 1 KiB filings, and each of them waited for the writer by itself.
pub type Registrations = Batched<Registration, Submitted>;

pub fn registrations(store: Store, blobs: Blobs) -> Registrations {
    Batched::new(store, move |store, batch| register(store, &blobs, batch))
}

/// Blocking. Makes the verifiers (one at a time, under one of the
/// node's [`crate::verification::slot`]s) and moves documents received as
/// files into the blob store, then stores every filing of `batch`.
fn register(store: &Store, blobs: &Blobs, batch: Vec<Registration>) -> Vec<Result<Submitted>> {
    let slot = batch
        .iter()
        .any(Registration::makes_verifier)
        .then(|| tokio::runtime::Handle::current().block_on(crate::verification::slot()));
    let prepared: Vec<_> = batch
        .into_iter()
        .map(|mut r| -> Result<_> {
            let verifier = if r.makes_verifier() {
                crate::verification::verifier(&r.filing.tracking_code, &r.filing.verification_code)
            } else {
                Vec::new()
            };
            // Files first; small documents in the filing's own transaction.
            let (_, kept) = ToKeep::store(blobs, std::mem::take(&mut r.documents))?;
            Ok((r, verifier, kept))
        })
        .collect();
    drop(slot);
    store.write_each(prepared, "store a submission", |tx, prepared| {
        let (r, verifier, kept) = prepared?;
        let submitted = store.insert_submission(
            tx,
            &r.filing,
            &r.actor,
            verifier,
            r.idempotency_key.as_deref(),
            &r.answer,
        )?;
        if let Submitted::New { filing_id, .. } = submitted {
            kept.keep(tx)?;
            let filing = &r.filing;
            crate::telemetry::trace::keep_submission(
                tx,
                &filing.transfer_id,
                &filing.tracking_code,
                &r.context,
            )?;
            if !r.chunks_out.documents.is_empty() {
                crate::store::outbox::chunks_out(tx, filing_id, &r.chunks_out)?;
            }
            crate::store::audit::insert(tx, &r.audited)?;
        }
        Ok(submitted)
    })
}
