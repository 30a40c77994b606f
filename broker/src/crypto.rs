//! End-to-end encryption of payloads for their recipient institution: HPKE
//! (RFC 9180) base mode, one single-shot encryption per record, with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, and as AEAD ChaCha20-Poly1305 up
//! to envelope schema 3 and AES-256-GCM from schema 4 on (several times
//! faster where the processor has AES instructions, as servers do). The
//! context (message id, sender, recipient) is bound as associated data, so a
//! ciphertext cannot be replayed under another envelope.
//!
//! The KEM is the `hpke` crate's; the key schedule (section 5.1 of the RFC)
//! is written here so that the AEAD can be ring's, which runs the same
//! ciphers about twice (ChaCha20-Poly1305) and eight times (AES-256-GCM) as
//! fast as the `hpke` crate's. The tests check it byte for byte against the
//! `hpke` crate, in both directions.

use crate::keys::SigningIdentity;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, Serializable};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{hkdf, hmac};

const INFO: &[u8] = b"ecointegra.v1 payload";
/// Bytes of the encapsulated key in front of every ciphertext.
pub(crate) const ENCAPPED: usize = 32;
/// Bytes of the AEAD's tag after it.
pub(crate) const TAG: usize = 16;
/// HPKE's identifiers of the KEM (DHKEM(X25519, HKDF-SHA256)) and the KDF.
const KEM_ID: u16 = 0x0020;
const KDF_ID: u16 = 0x0001;

/// The AEAD of a record, which its envelope's schema sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    ChaCha20Poly1305,
    Aes256Gcm,
}

impl Cipher {
    /// The first envelope schema sealed with AES-256-GCM.
    pub const AES_FROM_SCHEMA: u32 = 4;

    /// The AEAD of records in envelope schema `schema`.
    pub fn of_schema(schema: u32) -> Self {
        if schema >= Self::AES_FROM_SCHEMA {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "ChaCha20-Poly1305",
            Cipher::Aes256Gcm => "AES-256-GCM",
        }
    }

    fn hpke_id(self) -> u16 {
        match self {
            Cipher::Aes256Gcm => 0x0002,
            Cipher::ChaCha20Poly1305 => 0x0003,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// An institution's X25519 key pair, derived from its identity
/// (DeriveKeyPair of RFC 9180) once, when first used.
#[derive(Clone)]
pub(crate) struct EncryptionKey {
    secret: [u8; 32],
    pub(crate) public: [u8; 32],
}

impl EncryptionKey {
    pub(crate) fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = X25519HkdfSha256::derive_keypair(ikm);
        let mut key = Self {
            secret: [0; 32],
            public: [0; 32],
        };
        key.secret.copy_from_slice(&secret.to_bytes());
        key.public.copy_from_slice(&public.to_bytes());
        key
    }

    /// Decap of DHKEM(X25519, HKDF-SHA256): the shared secret of `encapped`,
    /// with this key's public half already known (the `hpke` crate derives
    /// it again from the secret at every call: a scalar multiplication).
    fn decap(&self, encapped: &[u8; 32]) -> Option<[u8; 32]> {
        let dh = MontgomeryPoint(*encapped)
            .mul_clamped(self.secret)
            .to_bytes();
        // A low-order point gives an all-zero secret: refused (RFC 9180,
        // 7.1.4), without a comparison whose time depends on the secret.
        if dh.iter().fold(0u8, |acc, b| acc | b) == 0 {
            return None;
        }
        let labels = Labels(KEM_SUITE);
        let prk = labels.extract(b"", b"eae_prk", &dh);
        let mut context = [0u8; 64];
        context[..32].copy_from_slice(encapped);
        context[32..].copy_from_slice(&self.public);
        let mut shared = [0u8; 32];
        labels.expand(&prk, b"shared_secret", &context, &mut shared);
        Some(shared)
    }
}

/// A length for ring's HKDF-Expand.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The KEM's suite id, which its labels carry.
const KEM_SUITE: &[u8] = &[b'K', b'E', b'M', 0x00, 0x20];

/// HPKE's suite id for `cipher`, which the key schedule's labels carry.
fn hpke_suite(cipher: Cipher) -> [u8; 10] {
    let mut suite_id = [0u8; 10];
    suite_id[..4].copy_from_slice(b"HPKE");
    suite_id[4..6].copy_from_slice(&KEM_ID.to_be_bytes());
    suite_id[6..8].copy_from_slice(&KDF_ID.to_be_bytes());
    suite_id[8..].copy_from_slice(&cipher.hpke_id().to_be_bytes());
    suite_id
}

/// HPKE's labelled HKDF under one suite id.
struct Labels<'a>(&'a [u8]);

impl Labels<'_> {
    /// LabeledExtract: HKDF-Extract (an HMAC keyed by the salt; an empty salt
    /// keys it as HashLen zeros would) of the labelled input.
    fn extract(&self, salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
        let mut context = hmac::Context::with_key(&key);
        for part in [b"HPKE-v1".as_slice(), self.0, label, ikm] {
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// LabeledExpand of `prk` into `out`.
    fn expand(&self, prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
        let length = (out.len() as u16).to_be_bytes();
        let parts = [length.as_slice(), b"HPKE-v1", self.0, label, info];
        hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk)
            .expand(&parts, Len(out.len()))
            .and_then(|okm| okm.fill(out))
            .expect("HKDF-SHA256 expands to 32 bytes and fewer");
    }
}

/// The key schedule of HPKE's base mode: the AEAD's key and base nonce for
/// `shared_secret` (the KEM's) and [`INFO`].
fn key_and_nonce(cipher: Cipher, shared_secret: &[u8]) -> (LessSafeKey, Nonce) {
    let suite = hpke_suite(cipher);
    let labels = Labels(&suite);
    let psk_id_hash = labels.extract(b"", b"psk_id_hash", b"");
    let info_hash = labels.extract(b"", b"info_hash", INFO);
    let mut context = [0u8; 65];
    context[1..33].copy_from_slice(&psk_id_hash);
    context[33..].copy_from_slice(&info_hash);
    let secret = labels.extract(shared_secret, b"secret", b"");
    let mut key = [0u8; 32];
    labels.expand(&secret, b"key", &context, &mut key);
    let mut nonce = [0u8; 12];
    labels.expand(&secret, b"base_nonce", &context, &mut nonce);
    let key = UnboundKey::new(cipher.algorithm(), &key).expect("a 32-byte key");
    (
        LessSafeKey::new(key),
        // One message per context (sequence number 0): the base nonce.
        Nonce::assume_unique_for_key(nonce),
    )
}

/// Encrypts `plaintext` with `cipher` to the holder of `recipient` (an
/// X25519 public key): the encapsulated key, the ciphertext and its tag.
pub fn encrypt(
    cipher: Cipher,
    recipient: &[u8; 32],
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    let key = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| format!("not an X25519 public key: {e}"))?;
    let (shared, encapped) =
        X25519HkdfSha256::encap(&key, None).map_err(|e| format!("encryption failed: {e}"))?;
    let (key, nonce) = key_and_nonce(cipher, &shared.0);
    let mut sealed = Vec::with_capacity(ENCAPPED + plaintext.len() + TAG);
    sealed.extend_from_slice(&encapped.to_bytes());
    sealed.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(context), &mut sealed[ENCAPPED..])
        .map_err(|_| "encryption failed".to_owned())?;
    sealed.extend_from_slice(tag.as_ref());
    Ok(sealed)
}

/// Decrypts with the first of `identities` whose key opens it (the current
/// key first, then keys kept from before a rotation).
pub fn decrypt(
    cipher: Cipher,
    identities: &[SigningIdentity],
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, String> {
    if sealed.len() < ENCAPPED + TAG {
        return Err("the ciphertext is too short".into());
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED);
    let encapped: &[u8; 32] = encapped.try_into().expect("split at 32 bytes");
    let mut plaintext = Vec::new();
    for identity in identities {
        let Some(shared) = identity.encryption_key().decap(encapped) else {
            continue;
        };
        let (key, nonce) = key_and_nonce(cipher, &shared);
        plaintext.clear();
        plaintext.extend_from_slice(ciphertext);
        if let Ok(opened) = key.open_in_place(nonce, Aad::from(context), &mut plaintext) {
            let len = opened.len();
            plaintext.truncate(len);
            return Ok(plaintext);
        }
    }
    Err("it was not encrypted for this institution's keys, or it was altered".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::aead::{AesGcm256, ChaCha20Poly1305};
    use hpke::kdf::HkdfSha256;
    use hpke::{OpModeR, OpModeS};

    const BOTH: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    #[test]
    fn only_the_recipient_opens_and_the_context_is_bound() {
        for cipher in BOTH {
            let oefa = SigningIdentity::generate();
            let minam = SigningIdentity::generate();
            let sealed = encrypt(
                cipher,
                &oefa.encryption_public_key(),
                b"m-1",
                b"DNI 45781236",
            )
            .unwrap();
            assert!(!sealed.windows(8).any(|w| w == b"45781236"));
            let open = |keys: &[SigningIdentity], context: &[u8], sealed: &[u8]| {
                decrypt(cipher, keys, context, sealed)
            };
            assert_eq!(
                open(std::slice::from_ref(&oefa), b"m-1", &sealed).unwrap(),
                b"DNI 45781236"
            );
            assert!(open(std::slice::from_ref(&minam), b"m-1", &sealed).is_err());
            assert!(open(std::slice::from_ref(&oefa), b"m-2", &sealed).is_err());
            // Any byte changed, or the other cipher: not opened.
            for at in [0, ENCAPPED, sealed.len() - 1] {
                let mut altered = sealed.clone();
                altered[at] ^= 1;
                assert!(open(std::slice::from_ref(&oefa), b"m-1", &altered).is_err());
            }
            // A low-order point as the encapsulated key (its shared secret
            // is all zeros): refused.
            let mut low_order = sealed.clone();
            low_order[..ENCAPPED].fill(0);
            assert!(open(std::slice::from_ref(&oefa), b"m-1", &low_order).is_err());
            assert!(
                EncryptionKey::derive(&oefa.encryption_ikm())
                    .decap(&[0; 32])
                    .is_none()
            );
            let other = BOTH.into_iter().find(|c| *c != cipher).unwrap();
            assert!(decrypt(other, std::slice::from_ref(&oefa), b"m-1", &sealed).is_err());
            assert!(open(std::slice::from_ref(&oefa), b"m-1", &sealed[..ENCAPPED + 3]).is_err());
            // A retired key still opens what was sent to it.
            let rotated = SigningIdentity::generate();
            assert!(open(&[rotated, oefa], b"m-1", &sealed).is_ok());
        }
    }

    /// The key schedule written here agrees with the `hpke` crate's, for
    /// both ciphers: each opens what the other sealed.
    #[test]
    fn it_is_rfc_9180_as_the_hpke_crate_implements_it() {
        fn check<A: hpke::aead::Aead>(cipher: Cipher) {
            let oefa = SigningIdentity::generate();
            let recipient = oefa.encryption_public_key();
            let plaintext = b"%PDF-1.7 informe de monitoreo".repeat(100);
            let (secret, public) = X25519HkdfSha256::derive_keypair(&oefa.encryption_ikm());
            assert_eq!(public.to_bytes().as_slice(), recipient.as_slice());

            let ours = encrypt(cipher, &recipient, b"aad", &plaintext).unwrap();
            let (encapped, sealed) = ours.split_at(ENCAPPED);
            let mut theirs = hpke::setup_receiver::<A, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &secret,
                &<X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(encapped).unwrap(),
                INFO,
            )
            .unwrap();
            assert_eq!(theirs.open(sealed, b"aad").unwrap(), plaintext);

            let (encapped, sealed) = hpke::single_shot_seal::<A, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &public,
                INFO,
                &plaintext,
                b"aad",
            )
            .unwrap();
            let theirs = [encapped.to_bytes().as_slice(), &sealed].concat();
            assert_eq!(
                decrypt(cipher, std::slice::from_ref(&oefa), b"aad", &theirs).unwrap(),
                plaintext
            );
        }
        check::<ChaCha20Poly1305>(Cipher::ChaCha20Poly1305);
        check::<AesGcm256>(Cipher::Aes256Gcm);
    }
}
