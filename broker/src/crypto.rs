//! End-to-end encryption of payloads for their recipient institution: HPKE
//! (RFC 9180) base mode, one single-shot encryption per record up to
//! envelope schema 5 and from schema 6 on records sealed in a sender's
//! session to the recipient's key ([`Sessions`]), with
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
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// What [`EncryptionKey::decap_session`] opened lately.
    opened: Arc<Mutex<Opened>>,
}

/// The shared secrets of the encapsulated keys a key opened lately, for
/// records sealed in a sender's session ([`Sessions`]): one X25519
/// multiplication per session instead of one per record. At most
/// [`OPENED_MAX`], the oldest out first; only signed records of listed
/// institutions reach a decryption, and a key not held is opened as before.
#[derive(Default)]
struct Opened {
    secrets: HashMap<[u8; 32], [u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

/// Encapsulated keys whose shared secrets a key holds at once: more than the
/// sessions a sector's institutions keep open to one recipient.
const OPENED_MAX: usize = 1024;

impl EncryptionKey {
    pub(crate) fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = X25519HkdfSha256::derive_keypair(ikm);
        let mut key = Self {
            secret: [0; 32],
            public: [0; 32],
            opened: Arc::default(),
        };
        key.secret.copy_from_slice(&secret.to_bytes());
        key.public.copy_from_slice(&public.to_bytes());
        key
    }

    /// [`EncryptionKey::decap`] of a session's encapsulated key, held for
    /// the session's next records.
    fn decap_session(&self, encapped: &[u8; 32]) -> Option<[u8; 32]> {
        let held = |opened: &Opened| opened.secrets.get(encapped).copied();
        if let Some(shared) = held(&self.opened.lock().unwrap_or_else(|e| e.into_inner())) {
            return Some(shared);
        }
        let shared = self.decap(encapped)?;
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.secrets.insert(*encapped, shared).is_none() {
            opened.order.push_back(*encapped);
            while opened.order.len() > OPENED_MAX {
                if let Some(oldest) = opened.order.pop_front() {
                    opened.secrets.remove(&oldest);
                }
            }
        }
        Some(shared)
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
/// `shared_secret` (the KEM's) and `info` ([`INFO`], or from schema 6 on
/// [`salted_info`]).
fn key_and_nonce(cipher: Cipher, shared_secret: &[u8], info: &[u8]) -> (LessSafeKey, Nonce) {
    let suite = hpke_suite(cipher);
    let labels = Labels(&suite);
    let psk_id_hash = labels.extract(b"", b"psk_id_hash", b"");
    let info_hash = labels.extract(b"", b"info_hash", info);
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
    let (shared, encapped) = encap(recipient)?;
    let schedule = key_and_nonce(cipher, &shared, INFO);
    seal_after(&[&encapped], schedule, context, plaintext)
}

/// Encap of DHKEM(X25519, HKDF-SHA256) to `recipient` with a fresh
/// ephemeral key: the shared secret and the encapsulated key.
fn encap(recipient: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
    let key = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| format!("not an X25519 public key: {e}"))?;
    let (shared, encapped) =
        X25519HkdfSha256::encap(&key, None).map_err(|e| format!("encryption failed: {e}"))?;
    Ok((shared.0.into(), encapped.to_bytes().into()))
}

/// `head` (what the recipient needs to make the key: the encapsulated key,
/// and a salt), then `plaintext` encrypted under `key` and `nonce` with
/// `context` as associated data, then the tag.
fn seal_after(
    head: &[&[u8]],
    (key, nonce): (LessSafeKey, Nonce),
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    let start: usize = head.iter().map(|part| part.len()).sum();
    let mut sealed = Vec::with_capacity(start + plaintext.len() + TAG);
    head.iter().for_each(|part| sealed.extend_from_slice(part));
    sealed.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(context), &mut sealed[start..])
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
    open_with(
        identities,
        ciphertext,
        |key| {
            let shared = key.decap(encapped)?;
            Some(key_and_nonce(cipher, &shared, INFO))
        },
        context,
    )
}

/// The plaintext of `ciphertext` (and its tag) under the AEAD key and nonce
/// `schedule` makes for the first of `identities` whose key opens it (the
/// current key first, then keys kept from before a rotation).
fn open_with(
    identities: &[SigningIdentity],
    ciphertext: &[u8],
    schedule: impl Fn(&EncryptionKey) -> Option<(LessSafeKey, Nonce)>,
    context: &[u8],
) -> Result<Vec<u8>, String> {
    let mut plaintext = Vec::new();
    for identity in identities {
        let Some((key, nonce)) = schedule(identity.encryption_key()) else {
            continue;
        };
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

/// Bytes of the salt a record sealed in a session carries after the
/// encapsulated key ([`encrypt_in_session`]).
pub(crate) const SALT: usize = 16;
/// The info of a record sealed in a session, before its salt.
const SESSION_INFO: &[u8] = b"ecointegra.v6 payload";
/// How long a sender seals to one recipient key under one encapsulation.
const SESSION: Duration = Duration::from_secs(60);

/// The key schedule's info of a record sealed in a session: its own salt
/// makes its own AEAD key and nonce.
fn salted_info(salt: &[u8]) -> Vec<u8> {
    [SESSION_INFO, salt].concat()
}

/// A sender's encapsulations, one per recipient key, each reused for
/// [`SESSION`] (envelope schema 6 on): HPKE's base mode with the same KEM
/// output for many records, each record's key schedule given its own random
/// salt as info, so no two records share a key and nonce. It costs one X25519
/// agreement per recipient a minute instead of two per record (the
/// ephemeral's and the shared secret's), and weakens nothing base mode
/// gives: a recipient's key opens all that was sealed to it either way, and
/// the ephemeral secret is dropped once the encapsulation is made, as
/// before; what is kept for the session is its shared secret, in the
/// sender's memory, beside the plaintexts it seals.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<[u8; 32], Session>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Session {
    encapped: [u8; 32],
    shared: [u8; 32],
    since: Instant,
}

impl Sessions {
    /// The session to `recipient`, a new one if it has none or it is
    /// [`SESSION`] old.
    fn to(&self, recipient: &[u8; 32]) -> Result<Session, String> {
        let now = Instant::now();
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = sessions.get(recipient)
            && now.duration_since(session.since) < SESSION
        {
            return Ok(*session);
        }
        let (shared, encapped) = encap(recipient)?;
        let session = Session {
            encapped,
            shared,
            since: now,
        };
        // Keys a rotation replaced go once their sessions are old.
        sessions.retain(|_, s| now.duration_since(s.since) < SESSION);
        sessions.insert(*recipient, session);
        Ok(session)
    }
}

/// Encrypts `plaintext` with `cipher` to the holder of `recipient` in this
/// sender's session to it ([`Sessions`]): the encapsulated key, the salt,
/// the ciphertext and its tag.
pub fn encrypt_in_session(
    cipher: Cipher,
    sessions: &Sessions,
    recipient: &[u8; 32],
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    let session = sessions.to(recipient)?;
    let mut salt = [0u8; SALT];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let schedule = key_and_nonce(cipher, &session.shared, &salted_info(&salt));
    seal_after(&[&session.encapped, &salt], schedule, context, plaintext)
}

/// Decrypts a record sealed in a session ([`encrypt_in_session`]) with the
/// first of `identities` whose key opens it.
pub fn decrypt_in_session(
    cipher: Cipher,
    identities: &[SigningIdentity],
    context: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, String> {
    if sealed.len() < ENCAPPED + SALT + TAG {
        return Err("the ciphertext is too short".into());
    }
    let (encapped, rest) = sealed.split_at(ENCAPPED);
    let (salt, ciphertext) = rest.split_at(SALT);
    let encapped: &[u8; 32] = encapped.try_into().expect("split at 32 bytes");
    let info = salted_info(salt);
    open_with(
        identities,
        ciphertext,
        |key| {
            let shared = key.decap_session(encapped)?;
            Some(key_and_nonce(cipher, &shared, &info))
        },
        context,
    )
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

    /// Records sealed in one session share its encapsulated key and nothing
    /// else: each has its own salt, so its own key and nonce (the same
    /// plaintext twice gives two unrelated ciphertexts); the recipient opens
    /// the session once and then only derives keys; a changed salt, key,
    /// ciphertext or context, or another recipient, opens nothing; a record
    /// opens at a node that never saw the session's first; a new recipient
    /// key gets a session of its own.
    #[test]
    fn records_sealed_in_a_session_each_have_their_own_key() {
        let cipher = Cipher::Aes256Gcm;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).unwrap();
        let (oefa, minam) = (
            SigningIdentity::from_secret(secret),
            SigningIdentity::generate(),
        );
        let sessions = Sessions::default();
        let to_oefa = oefa.encryption_public_key();
        let seal = |text: &[u8]| encrypt_in_session(cipher, &sessions, &to_oefa, b"m-1", text);
        let (first, second) = (
            seal(b"DNI 45781236").unwrap(),
            seal(b"DNI 45781236").unwrap(),
        );
        assert_eq!(first[..ENCAPPED], second[..ENCAPPED], "one session");
        assert_ne!(
            first[ENCAPPED..ENCAPPED + SALT],
            second[ENCAPPED..ENCAPPED + SALT]
        );
        assert_ne!(first[ENCAPPED + SALT..], second[ENCAPPED + SALT..]);
        assert!(!first.windows(8).any(|w| w == b"45781236"));

        let keys = std::slice::from_ref(&oefa);
        let opened = |sealed: &[u8]| decrypt_in_session(cipher, keys, b"m-1", sealed);
        assert_eq!(opened(&first).unwrap(), b"DNI 45781236");
        let held = oefa.encryption_key().opened.lock().unwrap().secrets.len();
        assert_eq!(held, 1, "the session's secret is held");
        assert_eq!(opened(&second).unwrap(), b"DNI 45781236");
        assert_eq!(
            oefa.encryption_key().opened.lock().unwrap().secrets.len(),
            1
        );

        for at in [
            0,
            ENCAPPED,
            ENCAPPED + SALT - 1,
            ENCAPPED + SALT,
            second.len() - 1,
        ] {
            let mut altered = second.clone();
            altered[at] ^= 1;
            assert!(opened(&altered).is_err(), "byte {at}");
        }
        assert!(decrypt_in_session(cipher, keys, b"m-2", &second).is_err());
        assert!(decrypt_in_session(cipher, std::slice::from_ref(&minam), b"m-1", &second).is_err());
        assert!(opened(&second[..ENCAPPED + SALT + TAG - 1]).is_err());
        // Not single-shot HPKE: neither reads the other.
        assert!(decrypt(cipher, keys, b"m-1", &second).is_err());
        // Another node holding the same key, nothing held yet.
        let fresh = SigningIdentity::from_secret(secret);
        assert_eq!(
            decrypt_in_session(cipher, &[fresh], b"m-1", &second).unwrap(),
            b"DNI 45781236"
        );
        // Another recipient key: another session.
        let to_minam = encrypt_in_session(
            cipher,
            &sessions,
            &minam.encryption_public_key(),
            b"m-1",
            b"x",
        )
        .unwrap();
        assert_ne!(to_minam[..ENCAPPED], first[..ENCAPPED]);
    }

    /// What a key holds of the sessions it opened is bounded.
    #[test]
    fn the_sessions_a_key_holds_are_bounded() {
        let oefa = SigningIdentity::generate();
        let keys = std::slice::from_ref(&oefa);
        let to_oefa = oefa.encryption_public_key();
        let mut first = None;
        for _ in 0..OPENED_MAX + 5 {
            let sealed = encrypt_in_session(
                Cipher::Aes256Gcm,
                &Sessions::default(),
                &to_oefa,
                b"m",
                b"x",
            )
            .unwrap();
            decrypt_in_session(Cipher::Aes256Gcm, keys, b"m", &sealed).unwrap();
            first.get_or_insert(sealed);
        }
        let opened = oefa.encryption_key().opened.lock().unwrap();
        assert_eq!(
            (opened.secrets.len(), opened.order.len()),
            (OPENED_MAX, OPENED_MAX)
        );
        let first: [u8; 32] = first.unwrap()[..ENCAPPED].try_into().unwrap();
        assert!(!opened.secrets.contains_key(&first), "the oldest went");
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
