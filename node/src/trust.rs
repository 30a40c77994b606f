//! Trust: the sector directory in force (entries signed by the sector
//! authority) and this institution's own keys. Every stage that signs,
//! seals, verifies or opens a message does it with these.
//!
//! A leaf: uses only the broker crate and [`crate::error`].

use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::keys::SigningIdentity;
use std::sync::{Arc, RwLock};

pub struct Trust {
    /// Signs and seals what this institution sends.
    pub sealer: Sealer,
    /// The sector authority's key: directory entries must be signed by it.
    pub anchor: ed25519_dalek::VerifyingKey,
    /// This institution's keys, current first, then those kept from before a
    /// rotation (for decrypting what is still in flight).
    pub keyring: Vec<SigningIdentity>,
    directory: RwLock<Arc<Directory>>,
}

impl Trust {
    pub fn new(
        sealer: Sealer,
        anchor: ed25519_dalek::VerifyingKey,
        keyring: Vec<SigningIdentity>,
        directory: Directory,
    ) -> Self {
        let trust = Self {
            sealer,
            anchor,
            keyring,
            directory: RwLock::new(Arc::default()),
        };
        trust.set_directory(directory);
        trust
    }

    /// This institution's id.
    pub fn institution(&self) -> &str {
        self.sealer.institution()
    }

    /// The directory in force now.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the directory (a newer signed entry arrived). Its other
    /// institutions are those that read what this one broadcasts.
    pub fn set_directory(&self, directory: Directory) {
        let me = self.institution();
        self.sealer.negotiation().set_members(
            directory
                .institutions()
                .map(|i| i.id.clone())
                .filter(|id| id != me),
        );
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(directory);
    }
}
