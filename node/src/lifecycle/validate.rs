//! The rules a submission must meet, desk by every way in (gRPC, CLI, web).
//! Each broken rule names its field, so a client knows what to fix.

use crate::error::Violation;
use crate::store::NewFiling;
use ecointegra_broker::directory::Directory;
use ecointegra_proto::v1::{
    DocumentHeader, FilingHeader, IdentityDocumentType, Party, SgdCargo, SgdDocument,
};

pub const MAX_SUBJECT_CHARS: usize = 500;
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Documents in one filing at most.
pub const MAX_DOCUMENTS: usize = 100;
/// Characters of a clerk's note (forward, answer, archive, observe, reject).
pub const MAX_NOTE_CHARS: usize = 2000;
/// Transfers of one filing at most (its original, forwards and answers).
pub const MAX_HOPS: u32 = 64;
/// The largest logical clock a tracking event or transfer may carry: far
/// above any real filing's steps, far below where counting would wrap.
pub const MAX_TRACKING_SEQ: u64 = 1 << 40;
/// The largest document any node may send (16 TiB): a bound on sizes and
/// offsets from the wire, far above `transfer.max_document_size`.
pub const MAX_DOCUMENT_BYTES: u64 = 1 << 44;

/// Characters of any one PIDE text field (names, units, numbers, dates).
pub const MAX_SGD_FIELD_CHARS: usize = 500;

/// Is `text` exactly `len` ASCII digits?
pub fn digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit())
}

/// Checks PIDE's fields of a filing, each named as PIDE names it.
pub fn sgd_document(sgd: &SgdDocument) -> Vec<Violation> {
    let mut v = Vec::new();
    if !digits(&sgd.cuo, 10) {
        v.push(Violation::new("vcuo", "must be a CUO: 10 digits"));
    }
    if !sgd.cuo_ref.is_empty() && !digits(&sgd.cuo_ref, 10) {
        v.push(Violation::new(
            "vcuoref",
            "must be empty or a CUO: 10 digits",
        ));
    }
    for (ruc, field) in [
        (&sgd.sender_ruc, "vrucentrem"),
        (&sgd.recipient_ruc, "vrucentrec"),
    ] {
        if !digits(ruc, 11) {
            v.push(Violation::new(field, "must be a RUC: 11 digits"));
        }
    }
    for (text, field) in [
        (&sgd.sender_entity_name, "vnomentemi"),
        (&sgd.sender_unit, "vuniorgrem"),
        (&sgd.document_type, "ccodtipdoc"),
        (&sgd.document_number, "vnumdoc"),
        (&sgd.document_date, "dfecdoc"),
        (&sgd.destination_unit, "vuniorgdst"),
        (&sgd.addressee_name, "vnomdst"),
        (&sgd.addressee_position, "vnomcardst"),
        (&sgd.sender_person_document_type, "ctipdociderem"),
        (&sgd.sender_person_document_number, "vnumdociderem"),
    ] {
        if text.chars().count() > MAX_SGD_FIELD_CHARS {
            v.push(Violation::new(
                field,
                format!("must be at most {MAX_SGD_FIELD_CHARS} characters"),
            ));
        }
    }
    v
}

/// Checks a cargo's fields, each named as PIDE names it.
pub fn sgd_cargo(cargo: &SgdCargo) -> Vec<Violation> {
    let mut v = Vec::new();
    if !matches!(cargo.flag.as_str(), "R" | "O") {
        v.push(Violation::new(
            "cflgest",
            "must be R (received) or O (observed)",
        ));
    }
    for (text, field, max) in [
        (&cargo.registry_number, "vnumregstd", MAX_SGD_FIELD_CHARS),
        (&cargo.registry_year, "vanioregstd", 4),
        (&cargo.registered_at, "dfecregstd", MAX_SGD_FIELD_CHARS),
        (&cargo.unit, "vuniorgstd", MAX_SGD_FIELD_CHARS),
        (&cargo.user, "vusuregstd", MAX_SGD_FIELD_CHARS),
        (&cargo.observation, "vobs", MAX_NOTE_CHARS),
        (&cargo.annexes_received, "vdesanxstdrec", MAX_NOTE_CHARS),
    ] {
        if text.chars().count() > max {
            v.push(Violation::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
    }
    v
}

/// Checks a filing header; `me` is this node's institution.
pub fn filing_header(header: &FilingHeader, directory: &Directory, me: &str) -> Vec<Violation> {
    let mut v = Vec::new();
    let destination = header.destination.trim();
    if destination.is_empty() {
        v.push(Violation::new("header.destination", "is required"));
    } else if destination == me {
        v.push(Violation::new(
            "header.destination",
            format!("{destination:?} is this institution; a filing travels to another one"),
        ));
    } else if let Some(institution) = directory.get(destination) {
        if let Some(reason) = institution.inactive_reason(ecointegra_broker::now_ms()) {
            v.push(Violation::new("header.destination", reason));
        }
    } else {
        v.push(Violation::new(
            "header.destination",
            format!("{destination:?} is not an institution of the sector directory"),
        ));
    }
    let subject = header.subject.trim();
    if subject.is_empty() {
        v.push(Violation::new("header.subject", "must not be empty"));
    } else if subject.chars().count() > MAX_SUBJECT_CHARS {
        v.push(Violation::new(
            "header.subject",
            format!("must be at most {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    if header.folio_count == 0 {
        v.push(Violation::new("header.folio_count", "must be at least 1"));
    }
    if header.idempotency_key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        v.push(Violation::new(
            "header.idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    if let Some(sgd) = &header.sgd {
        v.extend(sgd_document(sgd).into_iter().map(|x| Violation {
            field: format!("header.sgd.{}", x.field),
            ..x
        }));
    }
    match &header.sender_party {
        None => v.push(Violation::new("header.sender_party", "is required")),
        Some(party) => v.extend(sender_party(party)),
    }
    v
}

fn sender_party(party: &Party) -> Vec<Violation> {
    let mut v = Vec::new();
    let name = party.name.trim();
    if name.is_empty() {
        v.push(Violation::new("header.sender_party.name", "is required"));
    } else if name.chars().count() > 200 || name.chars().any(char::is_control) {
        v.push(Violation::new(
            "header.sender_party.name",
            "must be at most 200 characters, without control characters",
        ));
    }
    let number = party.document_number.trim();
    let field = "header.sender_party.document_number";
    match IdentityDocumentType::try_from(party.document_type) {
        Ok(IdentityDocumentType::Dni) => {
            if !(number.len() == 8 && number.bytes().all(|b| b.is_ascii_digit())) {
                v.push(Violation::new(field, "a DNI is exactly 8 digits"));
            }
        }
        Ok(IdentityDocumentType::Ruc) => {
            if let Err(problem) = check_ruc(number) {
                v.push(Violation::new(field, problem));
            }
        }
        Ok(IdentityDocumentType::Ce) => {
            if !((9..=12).contains(&number.len())
                && number.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                v.push(Violation::new(field, "a CE is 9 to 12 letters or digits"));
            }
        }
        _ => v.push(Violation::new(
            "header.sender_party.document_type",
            "must be DNI, RUC or CE",
        )),
    }
    if !party.email.is_empty() && !looks_like_email(party.email.trim()) {
        v.push(Violation::new(
            "header.sender_party.email",
            "is not an email address",
        ));
    }
    v
}

/// A RUC is 11 digits, starts with 10, 15, 16, 17 or 20, and ends with a
/// modulo-11 check digit.
pub fn check_ruc(number: &str) -> Result<(), &'static str> {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if number.len() != 11 || digits.len() != 11 {
        return Err("a RUC is exactly 11 digits");
    }
    if !["10", "15", "16", "17", "20"].contains(&&number[..2]) {
        return Err("a RUC starts with 10, 15, 16, 17 or 20");
    }
    const WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    let check = (11 - sum % 11) % 10;
    if digits[10] != check {
        return Err("the RUC's check digit does not match");
    }
    Ok(())
}

fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.len() <= 254
}

/// Checks one document's header; `index` names it in the field path.
pub fn document_header(header: &DocumentHeader, index: usize, max_size: u64) -> Vec<Violation> {
    let mut v = Vec::new();
    let field = |name: &str| format!("documents[{index}].{name}");
    let name = &header.name;
    if name.is_empty() {
        v.push(Violation::new(field("name"), "is required"));
    } else if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        v.push(Violation::new(
            field("name"),
            "must be a plain file name, without path separators or control characters",
        ));
    } else if let Some(c) = name.chars().find(|c| is_format_character(*c)) {
        v.push(Violation::new(
            field("name"),
            format!(
                "must not hold invisible formatting characters (U+{:04X}): they can make a name read as another",
                c as u32
            ),
        ));
    } else if name == "." || name == ".." || name.len() > MAX_NAME_BYTES {
        v.push(Violation::new(
            field("name"),
            format!("must be a file name of 1 to {MAX_NAME_BYTES} bytes (UTF-8)"),
        ));
    }
    if header.media_type.len() > 127
        || header
            .media_type
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        v.push(Violation::new(field("media_type"), "is not a media type"));
    }
    if header.declared_size > max_size {
        v.push(Violation::new(
            field("declared_size"),
            format!(
                "{} bytes is over the maximum document size of {max_size} bytes",
                header.declared_size
            ),
        ));
    }
    v
}

/// Is `c` a Unicode format character (general category Cf: bidirectional
/// overrides and isolates, zero-width spaces and joiners, the byte-order
/// mark, invisible operators, tags)? Such characters display as nothing, or
/// reorder what follows: `factura\u{202E}fdp.exe` reads as `factura exe.pdf`.
pub fn is_format_character(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruc_check_digit() {
        assert!(check_ruc("20131368829").is_ok(), "OEFA's RUC");
        assert!(check_ruc("20131368828").is_err());
        assert!(check_ruc("2013136882").is_err());
        assert!(check_ruc("30131368829").is_err());
    }

    #[test]
    fn document_names() {
        let header = |name: &str| DocumentHeader {
            name: name.into(),
            media_type: "application/pdf".into(),
            declared_size: 10,
        };
        assert!(document_header(&header("carta.pdf"), 0, 100).is_empty());
        assert!(document_header(&header("resolución-ñandú.pdf"), 0, 100).is_empty());
        assert!(document_header(&header(&"a".repeat(255)), 0, 100).is_empty());
        let long = format!("{}.pdf", "ñ".repeat(126));
        for bad in [
            "../etc/passwd",
            "a\\b.pdf",
            "a\nb.pdf",
            "",
            "..",
            "factura\u{202E}fdp.exe",
            "carta\u{200B}.pdf",
            "\u{FEFF}carta.pdf",
            long.as_str(),
        ] {
            let v = document_header(&header(bad), 2, 100);
            assert_eq!(v[0].field, "documents[2].name", "{bad:?}");
        }
        let v = document_header(
            &DocumentHeader {
                declared_size: 101,
                ..header("a.pdf")
            },
            0,
            100,
        );
        assert_eq!(v[0].field, "documents[0].declared_size");
    }
}

/// Checks that the manifest of `filing`'s transfer (its header, one entry per
/// document, and `prior_receipt_bytes` of earlier hops' receipts) fits one
/// Kafka record of `max_record_bytes` with its envelope, before the filing is
/// accepted: a manifest that cannot be published would otherwise be found
/// out only after every chunk went out.
pub fn manifest_fits(
    filing: &NewFiling,
    prior_receipt_bytes: usize,
    max_record_bytes: u32,
) -> Result<(), Violation> {
    let party = &filing.sender_party;
    // Field tags, lengths, ids, digests and numbers: generous per item.
    let fixed = 1024
        + filing.subject.len()
        + filing.note.len()
        + filing.filing_type.len()
        + filing.origin_registry_number.len()
        + party.name.len()
        + party.document_number.len()
        + party.email.len();
    let documents: usize = filing
        .documents
        .iter()
        .map(|d| d.name.len() + d.media_type.len() + 96)
        .sum();
    let bytes = fixed + documents + prior_receipt_bytes + 8 * filing.hop as usize;
    let limit = (max_record_bytes - crate::config::RECORD_OVERHEAD) as usize;
    if bytes <= limit {
        return Ok(());
    }
    Err(Violation::new(
        "documents",
        format!(
            "the filing's manifest (its {} document entries{}) would take about {bytes} bytes, \
             more than the {limit} one Kafka record leaves for it (kafka.max_record_bytes): \
             send fewer documents or shorter names",
            filing.documents.len(),
            if prior_receipt_bytes > 0 {
                " and the receipts of earlier hops"
            } else {
                ""
            }
        ),
    ))
}

#[cfg(test)]
mod manifest_tests {
    use super::*;
    use crate::store::DocumentRow;

    fn filing(documents: usize, name_len: usize) -> NewFiling {
        NewFiling {
            documents: (0..documents)
                .map(|i| DocumentRow {
                    index: i as u32,
                    name: "n".repeat(name_len),
                    media_type: "application/pdf".into(),
                    size: 1,
                    sha256: vec![0; 32],
                })
                .collect(),
            hop: 1,
            ..NewFiling::default()
        }
    }

    #[test]
    fn a_manifest_must_fit_one_record_with_its_envelope() {
        let limit = crate::config::MIN_RECORD_BYTES;
        assert!(manifest_fits(&filing(MAX_DOCUMENTS, 255), 0, limit).is_ok());
        // The receipts of many earlier hops do not fit a small record.
        let refused = manifest_fits(&filing(MAX_DOCUMENTS, 255), 90_000, limit).unwrap_err();
        assert_eq!(refused.field, "documents");
        assert!(refused.description.contains("earlier hops"));
        assert!(manifest_fits(&filing(MAX_DOCUMENTS, 255), 90_000, 1_000_000).is_ok());
    }
}
