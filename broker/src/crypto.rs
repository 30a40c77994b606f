//! End-to-end encryption of payloads for their recipient institution: HPKE
//! (RFC 9180) base mode with X25519, HKDF-SHA256 and ChaCha20-Poly1305, one
//! single-shot encryption per record. The context (message id, sender,
//! recipient) is bound as associated data, so a ciphertext cannot be replayed
//! under another envelope.

use crate::keys::SigningIdentity;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};

const INFO: &[u8] = b"ecointegra.v1 payload";
/// Bytes of the encapsulated key in front of every ciphertext.
const ENCAPPED: usize = 32;

fn keypair(
    identity: &SigningIdentity,
) -> (
    <X25519HkdfSha256 as Kem>::PrivateKey,
    <X25519HkdfSha256 as Kem>::PublicKey,
) {
    X25519HkdfSha256::derive_keypair(&identity.encryption_ikm())
}

pub(crate) fn public_key(identity: &SigningIdentity) -> [u8; 32] {
    let bytes = keypair(identity).1.to_bytes();
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    out
}

/// Encrypts `plaintext` to the holder of `recipient` (an X25519 public key).
pub fn encrypt(recipient: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let key = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| format!("not an X25519 public key: {e}"))?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<
        ChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(&OpModeS::Base, &key, INFO, plaintext, context)
    .map_err(|e| format!("encryption failed: {e}"))?;
    let mut out = Vec::with_capacity(ENCAPPED + ciphertext.len());
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts with the first of `identities` whose key opens it (the current
/// key first, then keys kept from before a rotation).
pub fn decrypt(
    identities: &[SigningIdentity],
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, String> {
    if sealed.len() < ENCAPPED {
        return Err("the ciphertext is too short".into());
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED);
    let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(encapped)
        .map_err(|e| format!("bad encapsulated key: {e}"))?;
    for identity in identities {
        let (secret, _) = keypair(identity);
        if let Ok(plaintext) =
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &secret,
                &encapped,
                INFO,
                ciphertext,
                context,
            )
        {
            return Ok(plaintext);
        }
    }
    Err("it was not encrypted for this institution's keys, or it was altered".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_the_context_is_bound() {
        let oefa = SigningIdentity::generate();
        let minam = SigningIdentity::generate();
        let sealed = encrypt(&oefa.encryption_public_key(), b"m-1", b"DNI 45781236").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"45781236"));
        assert_eq!(
            decrypt(std::slice::from_ref(&oefa), b"m-1", &sealed).unwrap(),
            b"DNI 45781236"
        );
        assert!(decrypt(std::slice::from_ref(&minam), b"m-1", &sealed).is_err());
        assert!(decrypt(std::slice::from_ref(&oefa), b"m-2", &sealed).is_err());
        // A retired key still opens what was sent to it.
        let rotated = SigningIdentity::generate();
        assert!(decrypt(&[rotated, oefa], b"m-1", &sealed).is_ok());
    }
}
