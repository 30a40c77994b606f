//! The institutions of the sector and their public keys.
//!
//! For now the directory is a TOML file every node is given:
//!
//! ```toml
//! [[institution]]
//! id = "oefa"
//! name = "Organismo de Evaluación y Fiscalización Ambiental"
//! signing_key = "<64 hex characters>"
//! ```

use crate::Error;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One institution as the directory lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    pub id: String,
    pub name: String,
    /// Ed25519 public key, hex.
    pub signing_key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    #[serde(default)]
    pub institution: Vec<EntryFile>,
}

#[derive(Debug, Clone)]
pub struct Institution {
    pub id: String,
    pub name: String,
    pub signing_key: VerifyingKey,
}

/// The verified view of the directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: BTreeMap<String, Institution>,
}

impl Directory {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Directory {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: DirectoryFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Self::from_file(file).map_err(bad)
    }

    pub fn from_file(file: DirectoryFile) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for entry in file.institution {
            if !is_institution_id(&entry.id) {
                return Err(format!(
                    "institution id {:?} must be 1 to 32 lowercase letters, digits or '-'",
                    entry.id
                ));
            }
            let signing_key = crate::keys::parse_public_key(&entry.signing_key)
                .map_err(|e| format!("institution {}: signing_key: {e}", entry.id))?;
            let institution = Institution {
                id: entry.id.clone(),
                name: entry.name,
                signing_key,
            };
            if entries.insert(entry.id.clone(), institution).is_some() {
                return Err(format!("institution {} is listed twice", entry.id));
            }
        }
        Ok(Self { entries })
    }

    pub fn get(&self, id: &str) -> Option<&Institution> {
        self.entries.get(id)
    }

    pub fn institutions(&self) -> impl Iterator<Item = &Institution> {
        self.entries.values()
    }
}

/// Institution ids name Kafka topics, so they are kept to a safe alphabet.
pub fn is_institution_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningIdentity;

    #[test]
    fn parses_and_rejects_bad_entries() {
        let key = SigningIdentity::generate().public_key_hex();
        let good =
            format!("[[institution]]\nid = \"oefa\"\nname = \"OEFA\"\nsigning_key = \"{key}\"\n");
        let dir = Directory::from_file(toml::from_str(&good).unwrap()).unwrap();
        assert_eq!(dir.get("oefa").unwrap().name, "OEFA");

        let twice = format!("{good}{good}");
        let err = Directory::from_file(toml::from_str(&twice).unwrap()).unwrap_err();
        assert!(err.contains("listed twice"), "{err}");

        let bad_key = good.replace(&key, "abcd");
        let err = Directory::from_file(toml::from_str(&bad_key).unwrap()).unwrap_err();
        assert!(err.contains("signing_key"), "{err}");

        let bad_id = good.replace("\"oefa\"", "\"OEFA/x\"");
        let err = Directory::from_file(toml::from_str(&bad_id).unwrap()).unwrap_err();
        assert!(err.contains("institution id"), "{err}");
    }
}
