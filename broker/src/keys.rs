//! An institution's Ed25519 signing key.
//!
//! The key file holds the 32-byte secret as one line of hex. It is written with
//! mode 0600 and the secret never appears in `Debug` output or logs.

use crate::Error;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use std::path::Path;

/// The private half of an institution's identity.
#[derive(Clone)]
pub struct SigningIdentity {
    key: SigningKey,
    /// Its X25519 key pair, derived when first needed.
    encryption: std::sync::OnceLock<crate::crypto::EncryptionKey>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source is available");
        Self::from_secret(secret)
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
            encryption: std::sync::OnceLock::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bad = |reason: &str| Error::KeyFile {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("an Ed25519 secret key is 32 bytes"))?;
        Ok(Self::from_secret(secret))
    }

    /// Writes the secret to a new file readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let io = |e: std::io::Error| Error::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        writeln!(file, "{}", hex::encode(self.key.to_bytes())).map_err(io)?;
        file.sync_all().map_err(io)
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key().as_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Input keying material for the institution's X25519 encryption key,
    /// derived from the signing secret under its own domain tag, so one key
    /// file holds both and they rotate together.
    pub(crate) fn encryption_ikm(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"ecointegra.v1.x25519\0");
        hasher.update(self.key.to_bytes());
        hasher.finalize().into()
    }

    /// The X25519 public key others encrypt content for this institution to.
    pub fn encryption_public_key(&self) -> [u8; 32] {
        self.encryption_key().public
    }

    pub(crate) fn encryption_key(&self) -> &crate::crypto::EncryptionKey {
        self.encryption
            .get_or_init(|| crate::crypto::EncryptionKey::derive(&self.encryption_ikm()))
    }
}

/// Parses a public key written as 64 hex characters.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not hex".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_debug_hides_secret() {
        let dir = std::env::temp_dir().join(format!("ecointegra-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let _ = std::fs::remove_file(&path);
        let id = SigningIdentity::generate();
        id.save(&path).unwrap();
        let loaded = SigningIdentity::load(&path).unwrap();
        assert_eq!(loaded.public_key(), id.public_key());
        let secret_hex = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{id:?}").contains(secret_hex.trim()));
        assert!(
            id.save(&path).is_err(),
            "an existing key file is never overwritten"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
