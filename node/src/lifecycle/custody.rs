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

/// The institution a tracking code belongs to: the one whose desk issued it
/// (`SENAMHI-2026-...` belongs to `senamhi`).
pub fn owner_of(tracking_code: &str) -> Option<String> {
    let mut parts = tracking_code.rsplitn(3, '-');
    let (_, _, institution) = (parts.next()?, parts.next()?, parts.next()?);
    Some(institution.to_lowercase())
}

/// Whether `sender` may send `transfer`, by what it is and the custody its
/// verified earlier receipts (`receipts`, in hop order) show. An original or
/// a correction comes only from the institution the tracking code belongs
/// to; a forward or an answer only from the institution that holds the
/// filing, that is, the one that signed the last receipt, for the transfer
/// it forwards or answers. Every receipt is for this filing, hops count up
/// from 1 without a gap, and the transfer is the next hop.
pub fn may_send(
    transfer: &ecointegra_proto::v1::Transfer,
    receipts: &[Receipt],
    sender: &str,
) -> Result<(), String> {
    use ecointegra_proto::v1::TransferKind;
    let owner = owner_of(&transfer.tracking_code)
        .ok_or_else(|| format!("{:?} is not a tracking code", transfer.tracking_code))?;
    for (i, receipt) in receipts.iter().enumerate() {
        if receipt.tracking_code != transfer.tracking_code {
            return Err(format!(
                "receipt {i} is for {}, not for {}",
                receipt.tracking_code, transfer.tracking_code
            ));
        }
        if receipt.hop != i as u32 + 1 {
            return Err(format!(
                "receipt {i} is for hop {}, not {}",
                receipt.hop,
                i + 1
            ));
        }
    }
    if let Some(first) = receipts.first()
        && first.origin != owner
    {
        return Err(format!(
            "the first hop of {} came from {}, not from {owner}, whose code it is",
            transfer.tracking_code, first.origin
        ));
    }
    if transfer.hop as usize != receipts.len() + 1 {
        return Err(format!(
            "hop {} does not follow the {} receipt(s) it carries",
            transfer.hop,
            receipts.len()
        ));
    }
    let kind = TransferKind::try_from(transfer.kind).unwrap_or(TransferKind::Unspecified);
    match kind {
        TransferKind::Unspecified => {
            return Err(format!(
                "transfer kind {} is not one a node sends",
                transfer.kind
            ));
        }
        TransferKind::Original | TransferKind::Correction => {
            if sender != owner {
                return Err(format!(
                    "{} belongs to {owner}; {sender} cannot file it",
                    transfer.tracking_code
                ));
            }
            if kind == TransferKind::Original && !receipts.is_empty() {
                return Err("an original transfer carries no earlier receipts".into());
            }
        }
        TransferKind::Forward | TransferKind::Answer => {
            let Some(last) = receipts.last() else {
                return Err(format!(
                    "a {} carries the receipt that shows its sender holds the filing",
                    kind.as_str_name().to_lowercase()
                ));
            };
            if last.receiving_institution != sender {
                return Err(format!(
                    "{} holds {} (the last receipt is theirs), not {sender}",
                    last.receiving_institution, transfer.tracking_code
                ));
            }
            if last.transfer_id != transfer.related_transfer_id {
                return Err(format!(
                    "the transfer relates to {}, but {sender} holds it by transfer {}",
                    transfer.related_transfer_id, last.transfer_id
                ));
            }
            if kind == TransferKind::Answer && transfer.destination != transfer.filed_at {
                return Err(format!(
                    "an answer goes to {}, where the filing was filed",
                    transfer.filed_at
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecointegra_proto::v1::{Transfer, TransferKind};

    const CODE: &str = "SENAMHI-2026-0123ABCD";

    fn receipt(hop: u32, origin: &str, receiver: &str, transfer_id: &str) -> Receipt {
        Receipt {
            transfer_id: transfer_id.into(),
            tracking_code: CODE.into(),
            receiving_institution: receiver.into(),
            origin: origin.into(),
            hop,
            ..Default::default()
        }
    }

    fn transfer(kind: TransferKind, hop: u32, related: &str) -> Transfer {
        Transfer {
            tracking_code: CODE.into(),
            kind: kind as i32,
            hop,
            related_transfer_id: related.into(),
            destination: "minam".into(),
            filed_at: "senamhi".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_original_comes_only_from_the_owner_of_its_code_at_hop_1() {
        let t = transfer(TransferKind::Original, 1, "");
        assert_eq!(owner_of(CODE).as_deref(), Some("senamhi"));
        assert!(may_send(&t, &[], "senamhi").is_ok());
        assert!(
            may_send(&t, &[], "oefa").is_err(),
            "another's tracking code"
        );
        let later = transfer(TransferKind::Original, 2, "");
        assert!(
            may_send(&later, &[], "senamhi").is_err(),
            "hop 2 without receipts"
        );
    }

    #[test]
    fn a_forward_or_answer_comes_only_from_the_holder() {
        let chain = [receipt(1, "senamhi", "oefa", "t1")];
        let forward = transfer(TransferKind::Forward, 2, "t1");
        assert!(may_send(&forward, &chain, "oefa").is_ok());
        assert!(
            may_send(&forward, &chain, "iiap").is_err(),
            "not the holder"
        );
        assert!(may_send(&forward, &[], "oefa").is_err(), "no receipt shown");
        let unrelated = transfer(TransferKind::Forward, 2, "t9");
        assert!(may_send(&unrelated, &chain, "oefa").is_err());
        let mut answer = transfer(TransferKind::Answer, 2, "t1");
        answer.destination = "senamhi".into();
        assert!(may_send(&answer, &chain, "oefa").is_ok());
        let mut misdirected = answer.clone();
        misdirected.destination = "minam".into();
        assert!(may_send(&misdirected, &chain, "oefa").is_err());
        // A chain that does not start at the code's owner, or skips a hop.
        let foreign = [receipt(1, "iiap", "oefa", "t1")];
        assert!(may_send(&forward, &foreign, "oefa").is_err());
        let gap = [receipt(2, "senamhi", "oefa", "t1")];
        assert!(may_send(&forward, &gap, "oefa").is_err());
    }
}
