//! Checking an evidence bundle offline: every directory entry against the
//! sector authority's key, every receipt and timeline step against its
//! signer's key in force when it was signed, every link of the chain of
//! custody, and every document against the digest its receipt signs.
//!
//! Nothing in a bundle is trusted before it is checked: `index.json` only
//! says where the files are, and what it says of them is checked too. A
//! bundle is hostile input: every entry read has a size cap.

use super::{FORMAT, Index};
use crate::lifecycle::custody;
use ecointegra_broker::directory::{Directory, verify_entry};
use ecointegra_proto::v1::{
    Envelope, FilingStatus, MessageType, SignedDirectoryEntry, TrackingEvent,
};
use ed25519_dalek::VerifyingKey;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The language of the verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Es,
    En,
}

impl Lang {
    fn pick(self, es: String, en: String) -> String {
        match self {
            Lang::Es => es,
            Lang::En => en,
        }
    }
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub text: String,
}

const MAX_INDEX: u64 = 8 << 20;
const MAX_RECORD: u64 = 4 << 20;

/// Checks the bundle at `path`. `Err` when it cannot be read as a bundle at
/// all; otherwise one verdict per step, each failure naming what is wrong.
pub fn verify(path: &Path, authority: &VerifyingKey, lang: Lang) -> Result<Vec<Check>, String> {
    let t = |es: &str, en: &str| lang.pick(es.to_owned(), en.to_owned());
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        format!(
            "{}: {}: {e}",
            path.display(),
            t(
                "no es un paquete de evidencia (ZIP)",
                "not an evidence bundle (ZIP)"
            )
        )
    })?;
    let index: Index = serde_json::from_slice(&read(&mut zip, "index.json", MAX_INDEX)?)
        .map_err(|e| format!("index.json: {e}"))?;
    if index.format != FORMAT {
        return Err(format!(
            "index.json: {} {:?}",
            t("formato desconocido", "unknown format"),
            index.format
        ));
    }
    let code = index.tracking_code.clone();
    let mut checks = Vec::new();
    let mut check = |ok: bool, es: String, en: String| {
        checks.push(Check {
            ok,
            text: lang.pick(es, en),
        })
    };

    // The directory: only entries the authority signed count.
    let mut directory = Directory::default();
    for name in &index.directory {
        let verified = read(&mut zip, name, MAX_RECORD).and_then(|bytes| {
            let signed =
                SignedDirectoryEntry::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            let entry = verify_entry(&signed, authority)?;
            directory.insert(&entry)?;
            Ok(entry)
        });
        match verified {
            Ok(entry) => check(
                true,
                format!(
                    "Directorio: la entrada de {} (versión {}) está firmada por la autoridad del sector",
                    entry.institution_id, entry.version
                ),
                format!(
                    "Directory: {}'s entry (version {}) is signed by the sector authority",
                    entry.institution_id, entry.version
                ),
            ),
            Err(e) => check(
                false,
                format!("Directorio: {name} no es válida: {e}"),
                format!("Directory: {name} is not valid: {e}"),
            ),
        }
    }

    // The chain of custody, hop by hop.
    let mut receipts = Vec::new();
    let mut previous: Vec<u8> = Vec::new();
    for (i, name) in index.receipts.iter().enumerate() {
        let hop = i as u32 + 1;
        let bytes = match read(&mut zip, name, MAX_RECORD) {
            Ok(bytes) => bytes,
            Err(e) => {
                check(
                    false,
                    format!("Constancia {hop}: {e}"),
                    format!("Receipt {hop}: {e}"),
                );
                continue;
            }
        };
        match custody::verify_receipt(&bytes, &directory) {
            Ok(signed) => {
                let r = &signed.receipt;
                let when = crate::ids::format_utc(r.received_at_ms);
                check(
                    true,
                    format!(
                        "Constancia {hop}: {} recibió {} de {} el {when} (registro {}), firmada con una clave vigente entonces",
                        r.receiving_institution, r.tracking_code, r.origin, r.registry_number
                    ),
                    format!(
                        "Receipt {hop}: {} received {} from {} on {when} (registry {}), signed with a key in force then",
                        r.receiving_institution, r.tracking_code, r.origin, r.registry_number
                    ),
                );
                let mut wrong = Vec::new();
                if r.tracking_code != code {
                    wrong.push(t("es de otro expediente", "is for another filing"));
                }
                if r.hop != hop {
                    wrong.push(lang.pick(
                        format!("dice ser del salto {}", r.hop),
                        format!("says it is for hop {}", r.hop),
                    ));
                }
                if r.previous_receipt_sha256 != previous {
                    wrong.push(t(
                        "no enlaza con la constancia anterior (falta un salto o se alteró)",
                        "does not link to the previous receipt (a hop is missing or was altered)",
                    ));
                }
                check(
                    wrong.is_empty(),
                    format!(
                        "Cadena: la constancia {hop} {}",
                        join_or(&wrong, "enlaza con la anterior")
                    ),
                    format!(
                        "Chain: receipt {hop} {}",
                        join_or(&wrong, "links to the one before")
                    ),
                );
                receipts.push(signed.receipt);
            }
            Err(e) => check(
                false,
                format!("Constancia {hop}: no es válida: {e}"),
                format!("Receipt {hop}: not valid: {e}"),
            ),
        }
        previous = Sha256::digest(&bytes).to_vec();
    }

    // The timeline, step by step.
    let mut delivered_hops = Vec::new();
    for name in &index.events {
        match read(&mut zip, name, MAX_RECORD).and_then(|b| event(&b, &directory, &code)) {
            Ok(event) => {
                let status_es = crate::lifecycle::tracking::status_label(event.status);
                let status_en = FilingStatus::try_from(event.status)
                    .map(|s| s.short_name().to_lowercase())
                    .unwrap_or_else(|_| event.status.to_string());
                if event.status == FilingStatus::Delivered as i32 {
                    delivered_hops.push((event.hop, event.institution.clone()));
                }
                let when = crate::ids::format_utc(event.timestamp_ms);
                check(
                    true,
                    format!(
                        "Paso: {status_es} en {} el {when} (salto {}), firmado por {}",
                        event.institution, event.hop, event.institution
                    ),
                    format!(
                        "Step: {status_en} at {} on {when} (hop {}), signed by {}",
                        event.institution, event.hop, event.institution
                    ),
                );
            }
            Err(e) => check(
                false,
                format!("Paso {name}: no es válido: {e}"),
                format!("Step {name}: not valid: {e}"),
            ),
        }
    }
    // Every delivery the signed timeline shows has its receipt here.
    for (hop, institution) in delivered_hops {
        let held = receipts
            .iter()
            .any(|r| r.hop == hop && r.receiving_institution == institution);
        check(
            held,
            format!(
                "Entrega del salto {hop} a {institution}: {}",
                if held {
                    "su constancia está en el paquete"
                } else {
                    "falta su constancia"
                }
            ),
            format!(
                "Delivery of hop {hop} to {institution}: {}",
                if held {
                    "its receipt is in the bundle"
                } else {
                    "its receipt is missing"
                }
            ),
        );
    }

    // The documents, against the digests the receipts sign.
    let signed_digests: BTreeMap<(String, u32), Vec<u8>> = receipts
        .iter()
        .flat_map(|r| {
            r.documents
                .iter()
                .map(|d| ((r.transfer_id.clone(), d.index), d.sha256.clone()))
        })
        .collect();
    for doc in &index.documents {
        let signed = signed_digests.get(&(doc.transfer_id.clone(), doc.index));
        let actual = digest(&mut zip, &doc.file);
        let verdict = match (signed, actual) {
            (None, _) => Err(t(
                "ninguna constancia firma este documento",
                "no receipt signs this document",
            )),
            (_, Err(e)) => Err(e),
            (Some(signed), Ok(actual)) if signed.as_slice() == actual.as_slice() => {
                Ok(hex::encode(actual))
            }
            (Some(signed), Ok(actual)) => {
                let (actual, signed) = (hex::encode(actual), hex::encode(signed));
                Err(lang.pick(
                    format!("su SHA-256 es {actual}, pero la constancia firma {signed}"),
                    format!("its SHA-256 is {actual}, but the receipt signs {signed}"),
                ))
            }
        };
        match verdict {
            Ok(sha) => check(
                true,
                format!(
                    "Documento {}: íntegro (SHA-256 {sha}, el que firma la constancia)",
                    doc.name
                ),
                format!(
                    "Document {}: intact (SHA-256 {sha}, as the receipt signs)",
                    doc.name
                ),
            ),
            Err(e) => check(
                false,
                format!("Documento {}: {e}", doc.name),
                format!("Document {}: {e}", doc.name),
            ),
        }
    }
    if index.events_without_signature > 0 {
        check(
            true,
            format!(
                "Nota: {} paso(s) del historial se registraron antes de guardar sus firmas y no están en el paquete",
                index.events_without_signature
            ),
            format!(
                "Note: {} step(s) of the timeline were stored before their signatures were kept and are not in the bundle",
                index.events_without_signature
            ),
        );
    }
    if index.receipts.is_empty() {
        check(
            false,
            "El paquete no contiene ninguna constancia".into(),
            "The bundle holds no receipt".into(),
        );
    }
    Ok(checks)
}

fn join_or(wrong: &[String], fine: &str) -> String {
    if wrong.is_empty() {
        fine.to_owned()
    } else {
        wrong.join("; ")
    }
}

/// A signed tracking event of filing `code`, verified.
fn event(bytes: &[u8], directory: &Directory, code: &str) -> Result<TrackingEvent, String> {
    let envelope = Envelope::decode(bytes).map_err(|e| e.to_string())?;
    if envelope.message_type != MessageType::TrackingEvent as i32 {
        return Err(format!("{} is not a tracking event", envelope.message_id));
    }
    let event = TrackingEvent::decode(envelope.payload.as_ref()).map_err(|e| e.to_string())?;
    custody::signer_key(
        &envelope,
        envelope.created_at_ms.max(event.timestamp_ms),
        directory,
    )?;
    if event.institution != envelope.sender {
        return Err(format!(
            "it names {} but is signed by {}",
            event.institution, envelope.sender
        ));
    }
    if event.tracking_code != code {
        return Err(format!(
            "it is a step of {}, not of {code}",
            event.tracking_code
        ));
    }
    Ok(event)
}

/// An entry of the bundle, whole, if it is at most `cap` bytes.
fn read<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    cap: u64,
) -> Result<Vec<u8>, String> {
    let entry = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    entry
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("{name} is larger than {cap} bytes"));
    }
    Ok(bytes)
}

/// The SHA-256 of an entry, streamed.
fn digest<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let mut entry = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut entry, &mut hasher).map_err(|e| format!("{name}: {e}"))?;
    Ok(hasher.finalize().to_vec())
}
