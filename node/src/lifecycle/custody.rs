//! The chain of custody: every hop's signed receipt names the SHA-256 of the
//! previous hop's receipt, so the chain verifies end to end.

use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope;
use ecointegra_proto::v1::{Envelope, Receipt};
use prost::Message;
use sha2::{Digest, Sha256};

/// Verifies signed receipt envelopes given in hop order: each signature against
/// the directory, each receipt signed by the institution that received, and
/// each naming the digest of the one before it. Returns the receipts.
pub fn verify_chain(envelopes: &[Vec<u8>], directory: &Directory) -> Result<Vec<Receipt>, String> {
    let mut receipts = Vec::with_capacity(envelopes.len());
    let mut previous: Vec<u8> = Vec::new();
    for (i, bytes) in envelopes.iter().enumerate() {
        let sealed = Envelope::decode(bytes.as_slice())
            .map_err(|e| format!("receipt {i} is not an envelope: {e}"))?;
        let signer = directory.get(&sealed.sender).ok_or_else(|| {
            format!(
                "receipt {i} is signed by {}, who is not in the directory",
                sealed.sender
            )
        })?;
        envelope::verify_signature(&sealed, &signer.signing_key)
            .map_err(|e| format!("receipt {i}: {e}"))?;
        let receipt = Receipt::decode(sealed.payload.as_slice())
            .map_err(|e| format!("receipt {i} is unreadable: {e}"))?;
        if receipt.receiving_institution != sealed.sender {
            return Err(format!(
                "receipt {i} names {} as receiver but is signed by {}",
                receipt.receiving_institution, sealed.sender
            ));
        }
        if receipt.previous_receipt_sha256 != previous {
            return Err(format!(
                "receipt {i} (hop {}) names previous digest {:?}, but the previous receipt's is {:?}",
                receipt.hop,
                hex::encode(&receipt.previous_receipt_sha256),
                hex::encode(&previous)
            ));
        }
        previous = Sha256::digest(bytes).to_vec();
        receipts.push(receipt);
    }
    Ok(receipts)
}

/// Where the next hop of a filing hangs in the chain: its hop number and the
/// digest of the latest receipt, given the chain held so far.
pub fn next_link(chain: &[crate::store::ReceiptRow]) -> (u32, Vec<u8>) {
    match chain.last() {
        Some(last) => (last.hop + 1, Sha256::digest(&last.envelope).to_vec()),
        None => (1, Vec::new()),
    }
}
