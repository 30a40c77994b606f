//! The chain of custody: every hop's signed receipt names the SHA-256 of the
//! previous hop's receipt, so the chain verifies end to end.
//!
//! A receipt is verified with the keys its signer had in force when it
//! signed (the time under its signature): a key rotation leaves the receipts
//! signed before it verifiable for good, and a retired key signs nothing new.

use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope;
use ecointegra_proto::v1::{Envelope, MessageType, Receipt};
use ed25519_dalek::VerifyingKey;
use prost::Message;
use sha2::{Digest, Sha256};

/// A signed receipt that verified.
#[derive(Debug, Clone)]
pub struct SignedReceipt {
    pub envelope: Envelope,
    pub receipt: Receipt,
    /// The signer's key that verified it: its current key, or one it retired
    /// after signing.
    pub key: VerifyingKey,
}

/// Verifies one signed receipt envelope, as anyone who holds it can: a
/// RECEIPT envelope, signed by the institution it names as receiver, with a
/// key that institution had in force when it signed.
pub fn verify_receipt(bytes: &[u8], directory: &Directory) -> Result<SignedReceipt, String> {
    let envelope = Envelope::decode(bytes).map_err(|e| format!("it is not an envelope: {e}"))?;
    if envelope.message_type != MessageType::Receipt as i32 {
        return Err(format!(
            "{} is a message of type {}, not a receipt",
            envelope.message_id, envelope.message_type
        ));
    }
    let receipt =
        Receipt::decode(envelope.payload.as_ref()).map_err(|e| format!("it is unreadable: {e}"))?;
    let key = key_in_force(&envelope, &receipt, directory)?;
    if receipt.receiving_institution != envelope.sender {
        return Err(format!(
            "it names {} as receiver but is signed by {}",
            receipt.receiving_institution, envelope.sender
        ));
    }
    Ok(SignedReceipt {
        envelope,
        receipt,
        key,
    })
}

/// When a receipt was signed, as its signature vouches: the later of its
/// envelope's time and the receipt's own.
pub fn signed_at(envelope: &Envelope, receipt: &Receipt) -> i64 {
    envelope.created_at_ms.max(receipt.received_at_ms)
}

/// The signer's key that verifies the receipt among those it had in force
/// when it signed; a key retired before then verifies nothing.
fn key_in_force(
    envelope: &Envelope,
    receipt: &Receipt,
    directory: &Directory,
) -> Result<VerifyingKey, String> {
    signer_key(envelope, signed_at(envelope, receipt), directory)
}

/// The key of an envelope's signer that verifies it among those the signer
/// had in force at `at` (when the envelope says it was signed); a key retired
/// before then verifies nothing.
pub fn signer_key(
    envelope: &Envelope,
    at: i64,
    directory: &Directory,
) -> Result<VerifyingKey, String> {
    let signer = directory.get(&envelope.sender).ok_or_else(|| {
        format!(
            "it is signed by {}, who is not in the directory",
            envelope.sender
        )
    })?;
    let verifies = |key: &VerifyingKey| envelope::verify_signature(envelope, key).is_ok();
    if let Some(key) = signer.signing_keys_at(at).find(|key| verifies(key)) {
        return Ok(*key);
    }
    match signer.retired_keys.iter().find(|(key, _)| verifies(key)) {
        Some((_, until)) => Err(format!(
            "it is signed at {} with a key {} retired at {}",
            crate::ids::format_utc(at),
            envelope.sender,
            crate::ids::format_utc(*until)
        )),
        None => Err(format!(
            "its signature does not verify against any key of {}",
            envelope.sender
        )),
    }
}

/// Verifies signed receipt envelopes given in hop order: each one by
/// [`verify_receipt`], and each naming the digest of the one before it.
/// Returns the receipts.
pub fn verify_chain(envelopes: &[Vec<u8>], directory: &Directory) -> Result<Vec<Receipt>, String> {
    let mut receipts = Vec::with_capacity(envelopes.len());
    let mut previous: Vec<u8> = Vec::new();
    for (i, bytes) in envelopes.iter().enumerate() {
        let receipt = verify_receipt(bytes, directory)
            .map_err(|e| format!("receipt {i}: {e}"))?
            .receipt;
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
    use ecointegra_broker::directory::entry_for;
    use ecointegra_broker::envelope::Sealer;
    use ecointegra_broker::keys::SigningIdentity;
    use ecointegra_proto::v1::{RetiredKey, Transfer, TransferKind};

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

    /// A sector where oefa rotated its signing key: `old` retired at
    /// `retired_at_ms`, `new` current.
    struct Rotated {
        directory: Directory,
        old: SigningIdentity,
        new: SigningIdentity,
        minam: SigningIdentity,
    }

    fn rotated(retired_at_ms: i64) -> Rotated {
        let (old, new, minam) = (
            SigningIdentity::generate(),
            SigningIdentity::generate(),
            SigningIdentity::generate(),
        );
        let mut directory = Directory::default();
        let mut oefa = entry_for("oefa", "OEFA", &new, 2);
        oefa.retired_signing_keys.push(RetiredKey {
            signing_key: old.public_key().as_bytes().to_vec(),
            accept_until_ms: retired_at_ms,
        });
        directory.insert(&oefa).unwrap();
        directory
            .insert(&entry_for("minam", "MINAM", &minam, 1))
            .unwrap();
        Rotated {
            directory,
            old,
            new,
            minam,
        }
    }

    /// `receipt` signed by `identity`, its envelope dated `at_ms`.
    fn signed(identity: &SigningIdentity, receipt: &Receipt, at_ms: i64) -> Vec<u8> {
        let mut sealed = Sealer::new(receipt.receiving_institution.clone(), identity.clone()).seal(
            format!("{}/receipt", receipt.transfer_id),
            MessageType::Receipt,
            &receipt.origin,
            receipt.encode_to_vec(),
        );
        sealed.created_at_ms = at_ms;
        sealed.signature = identity.sign(&envelope::canonical_bytes(&sealed)).to_vec();
        sealed.encode_to_vec()
    }

    fn at(mut receipt: Receipt, received_at_ms: i64) -> Receipt {
        receipt.received_at_ms = received_at_ms;
        receipt
    }

    const ROTATION: i64 = 1_780_000_000_000;

    #[test]
    fn a_retired_key_verifies_what_it_signed_before_its_retirement() {
        let s = rotated(ROTATION);
        let hop1 = receipt(1, "senamhi", "oefa", "t1");
        let before = signed(
            &s.old,
            &at(hop1.clone(), ROTATION - 60_000),
            ROTATION - 60_000,
        );
        let verified = verify_receipt(&before, &s.directory).unwrap();
        assert_eq!(
            verified.key,
            s.old.public_key(),
            "the retired key verified it"
        );
        assert!(verify_chain(&[before], &s.directory).is_ok());
        // Signed at the very time of retirement: still in force.
        let last = signed(&s.old, &at(hop1.clone(), ROTATION), ROTATION);
        assert!(verify_receipt(&last, &s.directory).is_ok());
        // The current key verifies whatever the time.
        let by_new = signed(&s.new, &at(hop1, ROTATION + 60_000), ROTATION + 60_000);
        assert_eq!(
            verify_receipt(&by_new, &s.directory).unwrap().key,
            s.new.public_key()
        );
    }

    #[test]
    fn a_retired_key_verifies_nothing_signed_after_its_retirement() {
        let s = rotated(ROTATION);
        let hop1 = receipt(1, "senamhi", "oefa", "t1");
        let after = signed(&s.old, &at(hop1.clone(), ROTATION + 1), ROTATION + 1);
        let why = verify_receipt(&after, &s.directory).unwrap_err();
        assert!(why.contains("with a key oefa retired at"), "{why}");
        assert!(verify_chain(&[after], &s.directory).is_err());
        // Both times are under the signature: backdating one is not enough.
        let half = signed(&s.old, &at(hop1.clone(), ROTATION + 1), ROTATION - 60_000);
        assert!(verify_receipt(&half, &s.directory).is_err());
        let half = signed(&s.old, &at(hop1.clone(), ROTATION - 60_000), ROTATION + 1);
        assert!(verify_receipt(&half, &s.directory).is_err());
        // A key oefa never had verifies nothing at any time.
        let stranger = signed(&SigningIdentity::generate(), &hop1, ROTATION - 60_000);
        let why = verify_receipt(&stranger, &s.directory).unwrap_err();
        assert!(
            why.contains("does not verify against any key of oefa"),
            "{why}"
        );
    }

    #[test]
    fn a_chain_signed_across_a_rotation_verifies() {
        let s = rotated(ROTATION);
        let hop1 = signed(
            &s.old,
            &at(receipt(1, "senamhi", "oefa", "t1"), ROTATION - 60_000),
            ROTATION - 60_000,
        );
        let mut second = at(receipt(2, "oefa", "minam", "t2"), ROTATION + 60_000);
        second.previous_receipt_sha256 = Sha256::digest(&hop1).to_vec();
        let hop2 = signed(&s.minam, &second, ROTATION + 60_000);
        let chain = verify_chain(&[hop1.clone(), hop2.clone()], &s.directory).unwrap();
        assert_eq!(chain.len(), 2);
        // Had oefa retired the key before it signed hop 1, the chain breaks there.
        let early = rotated(ROTATION - 120_000);
        let why = verify_chain(&[hop1], &early.directory).unwrap_err();
        assert!(why.starts_with("receipt 0:"), "{why}");
    }

    #[test]
    fn only_a_receipt_signed_by_its_receiver_is_one() {
        let s = rotated(ROTATION);
        let hop1 = receipt(1, "senamhi", "oefa", "t1");
        let mut notice = Sealer::new("oefa", s.new.clone()).seal(
            "t1/receipt".into(),
            MessageType::Notice,
            "senamhi",
            hop1.encode_to_vec(),
        );
        notice.signature = s.new.sign(&envelope::canonical_bytes(&notice)).to_vec();
        let why = verify_receipt(&notice.encode_to_vec(), &s.directory).unwrap_err();
        assert!(why.contains("not a receipt"), "{why}");
        // minam signs a receipt naming oefa as receiver.
        let mut claimed = Sealer::new("minam", s.minam.clone()).seal(
            "t1/receipt".into(),
            MessageType::Receipt,
            "senamhi",
            hop1.encode_to_vec(),
        );
        claimed.signature = s.minam.sign(&envelope::canonical_bytes(&claimed)).to_vec();
        let why = verify_receipt(&claimed.encode_to_vec(), &s.directory).unwrap_err();
        assert!(
            why.contains("names oefa as receiver but is signed by minam"),
            "{why}"
        );
    }
}
