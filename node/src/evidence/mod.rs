//! Evidence bundles: what proves what happened to a filing, in one ZIP file
//! that `ecointegra evidence verify` checks offline, with nothing but the
//! sector authority's public key, years later, without a running node and
//! without trusting the institution that handed it over.
//!
//! Layout of a bundle:
//! - `index.json` ([`Index`]): what is where. It proves nothing by itself:
//!   the verifier checks every claim against the signed files it points to.
//! - `receipts/hop-NN.envelope`: each hop's signed receipt (cargo de
//!   recepción), byte for byte as its receiver signed it.
//! - `events/NNN.envelope`: each step of the timeline, as the institution
//!   where it happened signed it.
//! - `directory/<institution>.entry`: the sector authority's signed directory
//!   entry (protobuf `SignedDirectoryEntry`) of every institution that signed
//!   something in the bundle, with the keys it retired and until when.
//! - `documents/<transfer>/<index>-<name>`: the documents, when asked for.

pub mod pdf;
pub mod verify;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::blobs::Blobs;
use ecointegra_broker::directory::{DirectoryFile, verify_entry};
use ecointegra_proto::v1::SignedDirectoryEntry;
use ed25519_dalek::VerifyingKey;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::Path;

/// The format tag of `index.json`.
pub const FORMAT: &str = "ecointegra-evidence/1";

/// `index.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: String,
    pub tracking_code: String,
    /// The institution whose node exported the bundle.
    pub exported_by: String,
    pub exported_at: String,
    /// In hop order.
    pub receipts: Vec<String>,
    /// In timeline order.
    pub events: Vec<String>,
    /// Steps this node holds without their signed envelope (stored before
    /// envelopes were kept): not in the bundle, since they prove nothing.
    pub events_without_signature: u32,
    pub directory: Vec<String>,
    pub documents: Vec<DocumentRef>,
}

/// One document in the bundle, and the receipt digest it must match.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    pub file: String,
    pub transfer_id: String,
    pub index: u32,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What a node holds of a filing, ready to write as a bundle.
pub struct Material {
    pub index: Index,
    receipts: Vec<Vec<u8>>,
    events: Vec<Vec<u8>>,
    directory: Vec<Vec<u8>>,
    /// Where the documents are, in `index.documents` order.
    documents: Vec<crate::store::blobs::Stored>,
}

/// Gathers a filing's evidence from a node's store: its receipts, its signed
/// timeline, the directory entries of every signer (from the bootstrap file
/// and the directory topic, the newest verified one of each) and, with
/// `with_documents`, the documents this node holds. `None` if the node holds
/// no copy of the filing.
fn gather(
    store: &Store,
    blobs: &Blobs,
    anchor: &VerifyingKey,
    directory_file: &Path,
    tracking_code: &str,
    with_documents: bool,
) -> Result<Option<Material>> {
    let copies = store.filing_copies(tracking_code)?;
    if copies.is_empty() {
        return Ok(None);
    }
    let chain = store.receipt_chain(tracking_code)?;
    let timeline = store.signed_timeline(tracking_code)?;
    let mut signers: Vec<String> = chain.iter().map(|r| r.signer.clone()).collect();
    let mut events = Vec::new();
    let mut unsigned = 0;
    for (event, signed) in timeline {
        match signed {
            Some(bytes) => {
                signers.push(event.institution.clone());
                events.push(bytes);
            }
            None => unsigned += 1,
        }
    }
    signers.sort();
    signers.dedup();
    let entries = signed_entries(store, anchor, directory_file)?;
    let mut directory = Vec::new();
    let mut directory_files = Vec::new();
    for id in &signers {
        if let Some(signed) = entries.get(id) {
            directory.push(signed.encode_to_vec());
            directory_files.push(format!("directory/{id}.entry"));
        }
    }
    let mut documents = Vec::new();
    let mut stored = Vec::new();
    if with_documents {
        for copy in &copies {
            for doc in &copy.documents {
                documents.push(DocumentRef {
                    file: format!(
                        "documents/{}/{}-{}",
                        copy.transfer_id,
                        doc.index,
                        file_name(&doc.name)
                    ),
                    transfer_id: copy.transfer_id.clone(),
                    index: doc.index,
                    name: doc.name.clone(),
                    size: doc.size,
                    sha256: hex::encode(&doc.sha256),
                });
                stored.push(store.locate(blobs, &doc.sha256, doc.size)?);
            }
        }
    }
    let index = Index {
        format: FORMAT.into(),
        tracking_code: tracking_code.into(),
        exported_by: store.institution().into(),
        exported_at: crate::ids::format_utc(ecointegra_broker::now_ms()),
        receipts: chain
            .iter()
            .map(|r| format!("receipts/hop-{:02}.envelope", r.hop))
            .collect(),
        events: (1..=events.len())
            .map(|i| format!("events/{i:03}.envelope"))
            .collect(),
        events_without_signature: unsigned,
        directory: directory_files,
        documents,
    };
    Ok(Some(Material {
        index,
        receipts: chain.into_iter().map(|r| r.envelope).collect(),
        events,
        directory,
        documents: stored,
    }))
}

/// Gathers a filing's evidence, off the async threads, and writes the bundle
/// to a file in the data directory that is unlinked at once: it lives while
/// it is read, and nothing is left behind whatever the reader does.
pub async fn bundle(
    desk: &crate::lifecycle::Desk,
    tracking_code: &str,
    with_documents: bool,
) -> Result<std::fs::File> {
    let (blobs, anchor) = (desk.blobs.clone(), desk.trust.anchor);
    let directory_file = desk.config.keys.directory_file.clone();
    let code = tracking_code.to_owned();
    desk.store
        .run(move |store| {
            let material = gather(
                store,
                &blobs,
                &anchor,
                &directory_file,
                &code,
                with_documents,
            )?
            .ok_or_else(|| Error::NotFound(format!("filing {code}")))?;
            let path = blobs.temp_path();
            let file = crate::store::blobs::private_file()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(Error::io(format!("cannot create {}", path.display())))?;
            let _ = std::fs::remove_file(&path);
            let mut file = material
                .write(file)
                .map_err(Error::io("cannot write the evidence bundle"))?;
            std::io::Seek::rewind(&mut file)
                .map_err(Error::io("cannot read the evidence bundle"))?;
            Ok(file)
        })
        .await
}

/// The newest directory entry of each institution, signed by the authority,
/// from the bootstrap file and the directory topic.
fn signed_entries(
    store: &Store,
    anchor: &VerifyingKey,
    directory_file: &Path,
) -> Result<BTreeMap<String, SignedDirectoryEntry>> {
    let mut all = store.directory_entries()?;
    let file = DirectoryFile::read(directory_file)
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    all.extend(file.entry.iter().filter_map(|e| e.to_signed().ok()));
    let mut newest: BTreeMap<String, (u64, SignedDirectoryEntry)> = BTreeMap::new();
    for signed in all {
        let Ok(entry) = verify_entry(&signed, anchor) else {
            continue;
        };
        match newest.get(&entry.institution_id) {
            Some((version, _)) if *version >= entry.version => {}
            _ => {
                newest.insert(entry.institution_id.clone(), (entry.version, signed));
            }
        }
    }
    Ok(newest.into_iter().map(|(id, (_, s))| (id, s)).collect())
}

/// A document's name as a file name inside the bundle: letters, digits, `.`,
/// `-` and `_`, nothing that could climb out of its folder.
fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "document".into(),
        rest => rest.chars().take(120).collect(),
    }
}

impl Material {
    /// Writes the bundle as a ZIP file (documents stored as they are: they
    /// are usually compressed already, and a stored entry can be checked
    /// with any tool).
    pub fn write<W: Write + Seek>(&self, out: W) -> std::io::Result<W> {
        use zip::write::SimpleFileOptions;
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(false);
        let mut zip = zip::ZipWriter::new(out);
        let json = serde_json::to_vec_pretty(&self.index).map_err(std::io::Error::other)?;
        let put = |zip: &mut zip::ZipWriter<W>, name: &str, bytes: &[u8]| {
            zip.start_file(name, options)
                .map_err(std::io::Error::other)?;
            zip.write_all(bytes)
        };
        put(&mut zip, "index.json", &json)?;
        for (name, bytes) in self.index.receipts.iter().zip(&self.receipts) {
            put(&mut zip, name, bytes)?;
        }
        for (name, bytes) in self.index.events.iter().zip(&self.events) {
            put(&mut zip, name, bytes)?;
        }
        for (name, bytes) in self.index.directory.iter().zip(&self.directory) {
            put(&mut zip, name, bytes)?;
        }
        for (doc, stored) in self.index.documents.iter().zip(&self.documents) {
            let large = doc.size >= u32::MAX as u64;
            zip.start_file(&doc.file, options.large_file(large))
                .map_err(std::io::Error::other)?;
            std::io::copy(&mut stored.reader()?, &mut zip)?;
        }
        zip.finish().map_err(std::io::Error::other)
    }
}
