//! The sector directory: the institutions, their keys and their status, each
//! entry signed by the sector authority.
//!
//! Every node is configured with the authority's public key (the trust anchor)
//! and a bootstrap file of signed entries; newer entries arrive on the
//! compacted `<prefix>.directory` topic. An entry the anchor did not sign, or
//! one older than what a node holds, is refused.
//!
//! The bootstrap file is TOML, one `[[entry]]` per institution, as
//! `ecointegra directory sign` writes it:
//!
//! ```toml
//! [[entry]]
//! institution_id = "oefa"
//! display_name = "Organismo de Evaluación y Fiscalización Ambiental"
//! ruc = "20521286769"
//! signing_key = "<64 hex>"
//! encryption_key = "<64 hex>"
//! status = "active"
//! valid_from_ms = 0
//! valid_until_ms = 0
//! version = 1
//! signature = "<128 hex>"
//! ```

use crate::Error;
use crate::keys::SigningIdentity;
use ecointegra_proto::v1::{DirectoryEntry, EntryStatus, RetiredKey, SignedDirectoryEntry};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const DOMAIN: &[u8] = b"ecointegra.v1.DirectoryEntry\0";

/// Institution ids name Kafka topics, so they are kept to a safe alphabet.
pub fn is_institution_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Signs directory entries: held by the sector authority only.
pub struct Authority {
    identity: SigningIdentity,
}

impl Authority {
    pub fn new(identity: SigningIdentity) -> Self {
        Self { identity }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.identity.public_key()
    }

    pub fn sign(&self, entry: &DirectoryEntry) -> SignedDirectoryEntry {
        let bytes = entry.encode_to_vec();
        let mut message = DOMAIN.to_vec();
        message.extend_from_slice(&bytes);
        SignedDirectoryEntry {
            signature: self.identity.sign(&message).to_vec(),
            entry: bytes,
        }
    }
}

/// Checks an entry's signature against the trust anchor and its contents.
pub fn verify_entry(
    signed: &SignedDirectoryEntry,
    anchor: &VerifyingKey,
) -> Result<DirectoryEntry, String> {
    let signature = Signature::from_slice(&signed.signature)
        .map_err(|_| "the signature is not 64 bytes".to_owned())?;
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&signed.entry);
    anchor
        .verify_strict(&message, &signature)
        .map_err(|_| "the entry is not signed by the sector authority".to_owned())?;
    let entry = DirectoryEntry::decode(signed.entry.as_slice())
        .map_err(|e| format!("the entry is unreadable: {e}"))?;
    Institution::from_entry(&entry)?;
    Ok(entry)
}

/// One institution as the directory lists it.
#[derive(Debug, Clone)]
pub struct Institution {
    pub id: String,
    pub name: String,
    pub ruc: String,
    pub signing_key: VerifyingKey,
    pub encryption_key: [u8; 32],
    pub status: EntryStatus,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub version: u64,
    /// Earlier signing keys and until when they are still accepted.
    pub retired_keys: Vec<(VerifyingKey, i64)>,
    /// The first two digits of the CUOs its node issues (0: none assigned).
    pub cuo_prefix: u32,
}

impl Institution {
    fn from_entry(entry: &DirectoryEntry) -> Result<Self, String> {
        let id = &entry.institution_id;
        if !is_institution_id(id) {
            return Err(format!(
                "institution id {id:?} must be 1 to 32 lowercase letters, digits or '-'"
            ));
        }
        let key = |bytes: &[u8], what: &str| -> Result<VerifyingKey, String> {
            let array: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("institution {id}: {what} is not 32 bytes"))?;
            VerifyingKey::from_bytes(&array)
                .map_err(|_| format!("institution {id}: {what} is not an Ed25519 key"))
        };
        if !entry.ruc.is_empty()
            && (entry.ruc.len() != 11 || !entry.ruc.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("institution {id}: ruc must be 11 digits"));
        }
        if entry.cuo_prefix != 0 && !(10..=99).contains(&entry.cuo_prefix) {
            return Err(format!(
                "institution {id}: cuo_prefix must be 10 to 99 (or 0: none)"
            ));
        }
        let status = EntryStatus::try_from(entry.status).unwrap_or_default();
        if status == EntryStatus::Unspecified {
            return Err(format!(
                "institution {id}: status must be active or suspended"
            ));
        }
        Ok(Self {
            id: id.clone(),
            name: entry.display_name.clone(),
            ruc: entry.ruc.clone(),
            signing_key: key(&entry.signing_key, "signing_key")?,
            encryption_key: entry
                .encryption_key
                .as_slice()
                .try_into()
                .map_err(|_| format!("institution {id}: encryption_key is not 32 bytes"))?,
            status,
            valid_from_ms: entry.valid_from_ms,
            valid_until_ms: entry.valid_until_ms,
            version: entry.version,
            retired_keys: entry
                .retired_signing_keys
                .iter()
                .map(|r| {
                    Ok((
                        key(&r.signing_key, "a retired signing key")?,
                        r.accept_until_ms,
                    ))
                })
                .collect::<Result<_, String>>()?,
            cuo_prefix: entry.cuo_prefix,
        })
    }

    /// The signing keys in force at `at_ms`: the current one, and each
    /// retired one not yet past its `accept_until_ms`. What an institution
    /// signed at a time stays verifiable with the keys in force then, after
    /// any later rotation.
    pub fn signing_keys_at(&self, at_ms: i64) -> impl Iterator<Item = &VerifyingKey> {
        std::iter::once(&self.signing_key).chain(
            self.retired_keys
                .iter()
                .filter(move |(_, until)| at_ms <= *until)
                .map(|(key, _)| key),
        )
    }

    /// Why the institution may not act at `now_ms`, if it may not.
    pub fn inactive_reason(&self, now_ms: i64) -> Option<String> {
        if self.status == EntryStatus::Suspended {
            return Some(format!(
                "institution {} is suspended in the sector directory",
                self.id
            ));
        }
        if now_ms < self.valid_from_ms {
            return Some(format!(
                "institution {}'s directory entry is not valid yet",
                self.id
            ));
        }
        if self.valid_until_ms != 0 && now_ms > self.valid_until_ms {
            return Some(format!("institution {}'s directory entry expired", self.id));
        }
        None
    }
}

/// The verified view of the directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: BTreeMap<String, Institution>,
}

impl Directory {
    /// Loads and verifies a bootstrap file. Any entry that does not verify is
    /// an error: the file is configuration.
    pub fn load(path: &Path, anchor: &VerifyingKey) -> Result<Self, Error> {
        let bad = |reason: String| Error::Directory {
            path: path.to_owned(),
            reason,
        };
        let file = DirectoryFile::read(path)?;
        let mut directory = Directory::default();
        for (i, entry) in file.entry.iter().enumerate() {
            let signed = entry
                .to_signed()
                .map_err(|e| bad(format!("entry {i}: {e}")))?;
            let entry =
                verify_entry(&signed, anchor).map_err(|e| bad(format!("entry {i}: {e}")))?;
            directory
                .insert(&entry)
                .map_err(|e| bad(format!("entry {i}: {e}")))?;
        }
        Ok(directory)
    }

    /// Takes a verified entry if it is newer than what is held. Returns whether
    /// it changed anything.
    pub fn insert(&mut self, entry: &DirectoryEntry) -> Result<bool, String> {
        let institution = Institution::from_entry(entry)?;
        match self.entries.get(&institution.id) {
            Some(held) if held.version > institution.version => Err(format!(
                "entry version {} of {} is older than the version {} held",
                institution.version, institution.id, held.version
            )),
            Some(held) if held.version == institution.version => Ok(false),
            _ => {
                self.entries.insert(institution.id.clone(), institution);
                Ok(true)
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Institution> {
        self.entries.get(id)
    }

    /// The institution, if it exists and may act now.
    pub fn active(&self, id: &str, now_ms: i64) -> Option<&Institution> {
        self.get(id).filter(|i| i.inactive_reason(now_ms).is_none())
    }

    pub fn institutions(&self) -> impl Iterator<Item = &Institution> {
        self.entries.values()
    }

    /// An institution's name as the directory gives it, its id in capitals
    /// otherwise: how people see it.
    pub fn display_name(&self, id: &str) -> String {
        match self.get(id) {
            Some(i) if !i.name.is_empty() => i.name.clone(),
            _ => id.to_uppercase(),
        }
    }

    /// The institution whose RUC is `ruc`.
    pub fn by_ruc(&self, ruc: &str) -> Option<&Institution> {
        self.entries
            .values()
            .find(|i| !ruc.is_empty() && i.ruc == ruc)
    }
}

/// The bootstrap file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    #[serde(default)]
    pub entry: Vec<EntryToml>,
}

impl DirectoryFile {
    /// Reads and parses a bootstrap file (its entries are not verified).
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Directory {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        toml::from_str(&text).map_err(|e| bad(e.to_string()))
    }
}

/// One signed entry, readable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryToml {
    pub institution_id: String,
    pub display_name: String,
    #[serde(default)]
    pub ruc: String,
    pub signing_key: String,
    pub encryption_key: String,
    pub status: String,
    #[serde(default)]
    pub valid_from_ms: i64,
    #[serde(default)]
    pub valid_until_ms: i64,
    pub version: u64,
    #[serde(default)]
    pub retired_signing_keys: Vec<RetiredKeyToml>,
    /// Written only when assigned, so releases before it read the file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cuo_prefix: u32,
    pub signature: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKeyToml {
    pub signing_key: String,
    pub accept_until_ms: i64,
}

impl EntryToml {
    pub fn from_signed(signed: &SignedDirectoryEntry) -> Result<Self, String> {
        let e = DirectoryEntry::decode(signed.entry.as_slice()).map_err(|e| e.to_string())?;
        Ok(Self {
            institution_id: e.institution_id,
            display_name: e.display_name,
            ruc: e.ruc,
            signing_key: hex::encode(e.signing_key),
            encryption_key: hex::encode(e.encryption_key),
            status: match EntryStatus::try_from(e.status) {
                Ok(EntryStatus::Suspended) => "suspended".into(),
                _ => "active".into(),
            },
            valid_from_ms: e.valid_from_ms,
            valid_until_ms: e.valid_until_ms,
            version: e.version,
            retired_signing_keys: e
                .retired_signing_keys
                .iter()
                .map(|r| RetiredKeyToml {
                    signing_key: hex::encode(&r.signing_key),
                    accept_until_ms: r.accept_until_ms,
                })
                .collect(),
            cuo_prefix: e.cuo_prefix,
            signature: hex::encode(&signed.signature),
        })
    }

    pub fn to_entry(&self) -> Result<DirectoryEntry, String> {
        let bytes = |text: &str, what: &str| {
            hex::decode(text.trim()).map_err(|_| format!("{what} is not hex"))
        };
        Ok(DirectoryEntry {
            institution_id: self.institution_id.clone(),
            display_name: self.display_name.clone(),
            ruc: self.ruc.clone(),
            signing_key: bytes(&self.signing_key, "signing_key")?,
            encryption_key: bytes(&self.encryption_key, "encryption_key")?,
            status: match self.status.as_str() {
                "active" => EntryStatus::Active as i32,
                "suspended" => EntryStatus::Suspended as i32,
                other => return Err(format!("status {other:?} is not active or suspended")),
            },
            valid_from_ms: self.valid_from_ms,
            valid_until_ms: self.valid_until_ms,
            version: self.version,
            retired_signing_keys: self
                .retired_signing_keys
                .iter()
                .map(|r| {
                    Ok(RetiredKey {
                        signing_key: bytes(&r.signing_key, "retired signing_key")?,
                        accept_until_ms: r.accept_until_ms,
                    })
                })
                .collect::<Result<_, String>>()?,
            cuo_prefix: self.cuo_prefix,
        })
    }

    pub fn to_signed(&self) -> Result<SignedDirectoryEntry, String> {
        Ok(SignedDirectoryEntry {
            entry: self.to_entry()?.encode_to_vec(),
            signature: hex::decode(self.signature.trim())
                .map_err(|_| "signature is not hex".to_owned())?,
        })
    }
}

/// A directory entry for an institution holding `identity`, active from now on.
pub fn entry_for(id: &str, name: &str, identity: &SigningIdentity, version: u64) -> DirectoryEntry {
    DirectoryEntry {
        institution_id: id.to_owned(),
        display_name: name.to_owned(),
        ruc: String::new(),
        signing_key: identity.public_key().as_bytes().to_vec(),
        encryption_key: identity.encryption_public_key().to_vec(),
        status: EntryStatus::Active as i32,
        valid_from_ms: 0,
        valid_until_ms: 0,
        version,
        retired_signing_keys: Vec::new(),
        cuo_prefix: 0,
    }
}

/// Writes signed entries as a bootstrap file.
pub fn write_file(path: &Path, entries: &[SignedDirectoryEntry]) -> Result<(), Error> {
    let file = DirectoryFile {
        entry: entries
            .iter()
            .map(EntryToml::from_signed)
            .collect::<Result<_, _>>()
            .map_err(|reason| Error::Directory {
                path: path.to_owned(),
                reason,
            })?,
    };
    let text = toml::to_string_pretty(&file).map_err(|e| Error::Directory {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, format!("# The sector directory, signed by the sector authority (ecointegra directory sign).\n\n{text}"))
        .map_err(|e| Error::Io { context: format!("cannot write {}", path.display()), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_entries_verify_and_tampering_is_refused() {
        let authority = Authority::new(SigningIdentity::generate());
        let oefa = SigningIdentity::generate();
        let signed = authority.sign(&entry_for("oefa", "OEFA", &oefa, 1));
        let entry = verify_entry(&signed, &authority.public_key()).unwrap();
        assert_eq!(entry.institution_id, "oefa");

        // A changed entry, or one signed by someone else, is refused.
        let mut tampered = signed.clone();
        let mut changed = DirectoryEntry::decode(tampered.entry.as_slice()).unwrap();
        changed.display_name = "Otra".into();
        tampered.entry = changed.encode_to_vec();
        assert!(verify_entry(&tampered, &authority.public_key()).is_err());
        let impostor = Authority::new(SigningIdentity::generate());
        let forged = impostor.sign(&entry_for("oefa", "OEFA", &oefa, 2));
        assert!(verify_entry(&forged, &authority.public_key()).is_err());

        // The readable form round-trips to the same signed bytes.
        let toml = EntryToml::from_signed(&signed).unwrap();
        let back = toml.to_signed().unwrap();
        assert!(verify_entry(&back, &authority.public_key()).is_ok());
    }

    #[test]
    fn older_versions_do_not_replace_newer_ones() {
        let id = SigningIdentity::generate();
        let mut directory = Directory::default();
        assert!(directory.insert(&entry_for("oefa", "v2", &id, 2)).unwrap());
        assert!(directory.insert(&entry_for("oefa", "v1", &id, 1)).is_err());
        assert!(!directory.insert(&entry_for("oefa", "v2", &id, 2)).unwrap());
        assert!(directory.insert(&entry_for("oefa", "v3", &id, 3)).unwrap());
        assert_eq!(directory.get("oefa").unwrap().name, "v3");
    }
}
