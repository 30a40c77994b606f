//! Identifiers: transfer ids, tracking codes, registry numbers, and the
//! random characters of verification codes (the `verification` module makes
//! and checks those).

pub use crate::config::day::civil_from_days;

/// The recipient of sector-wide envelopes (the tracking topic).
pub use ecointegra_broker::envelope::BROADCAST;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a query-string value or a path segment keeps as it is: letters,
/// digits and `-_.~` (RFC 3986's unreserved characters).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query-string value or a path segment.
pub fn url_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

/// Crockford's base32 alphabet: no I, L, O or U, so codes read aloud well.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `len` random characters of Crockford base32.
pub fn random_code(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}

/// Is `id` a transfer id as [`transfer_id`] makes them (32 lowercase hex
/// digits)? Only such ids become file names.
pub fn is_transfer_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Is `code` a tracking code as [`tracking_code`] makes them
/// (`INSTITUTION-YEAR-XXXXXXXX`)?
pub fn is_tracking_code(code: &str) -> bool {
    let mut parts = code.rsplitn(3, '-');
    let (Some(random), Some(year), Some(institution)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (1..=32).contains(&institution.len())
        && institution
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        && year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| ALPHABET.contains(&b))
}

/// 128 random bits, hex.
pub fn transfer_id() -> String {
    random_hex(16)
}

/// A transfer id bound to who sends the transfer and the filing it is for:
/// a 4-byte nonce ([`next_nonce`]), then 12 bytes of the SHA-256 of it with `origin` and
/// `tracking_code`, in hex. An institution that learns another's transfer id
/// cannot make a transfer of its own under it (that would take a 96-bit
/// preimage), so it cannot pre-empt the id at the destination.
pub fn bound_transfer_id(origin: &str, tracking_code: &str) -> String {
    let nonce = next_nonce(ecointegra_broker::now_ms());
    let mut id = hex::encode(nonce);
    id.push_str(&hex::encode(binding(&nonce, origin, tracking_code)));
    id
}

/// The nonce of the next transfer id made here: the time in milliseconds
/// (its low 32 bits, which wrap every 49.7 days), or one more than the last
/// nonce if that is later, so no two ids of a run share one. Ids made one
/// after the other sort one after the other: the rows of a store's commit
/// that are keyed by them (a filing, its receipt, its steps, the messages
/// seen) go to the same few index pages, not a page each at random. The
/// nonce needs no secrecy: transfer ids travel in the sector's timeline,
/// and the binding is what no other institution can make.
fn next_nonce(now_ms: i64) -> [u8; 4] {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(now_ms).unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (next as u32).to_be_bytes(),
            Err(seen) => last = seen,
        }
    }
}

/// Is `id` a transfer id [`bound_transfer_id`] made for `origin` and
/// `tracking_code`?
pub fn transfer_id_binds(id: &str, origin: &str, tracking_code: &str) -> bool {
    if !is_transfer_id(id) {
        return false;
    }
    let mut nonce = [0u8; 4];
    match hex::decode_to_slice(&id[..8], &mut nonce) {
        Ok(()) => hex::encode(binding(&nonce, origin, tracking_code)) == id[8..],
        Err(_) => false,
    }
}

fn binding(nonce: &[u8; 4], origin: &str, tracking_code: &str) -> [u8; 12] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"ecointegra transfer id\0")
        .chain_update(nonce)
        .chain_update(origin.as_bytes())
        .chain_update(b"\0")
        .chain_update(tracking_code.as_bytes())
        .finalize();
    let mut out = [0u8; 12];
    out.copy_from_slice(&digest[..12]);
    out
}

/// `bytes` random bytes, hex: session ids, form tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random source is available");
    hex::encode(buffer)
}

/// A tracking code, e.g. `SENAMHI-2026-7K3M9Q2P`: the institution where it was
/// filed, the year there (UTC offset `utc_offset_minutes`), and 40 random bits.
pub fn tracking_code(institution: &str, now_ms: i64, utc_offset_minutes: i32) -> String {
    format!(
        "{}-{}-{}",
        institution.to_uppercase(),
        year_of(now_ms, utc_offset_minutes),
        random_code(8)
    )
}

/// A registry number, e.g. `OEFA-2026-000042`.
pub fn registry_number(institution: &str, year: i32, sequence: i64) -> String {
    format!("{}-{year}-{sequence:06}", institution.to_uppercase())
}

/// The calendar year of a Unix time in milliseconds where the clock is
/// `utc_offset_minutes` from UTC (Lima: -300): 31 December at 20:00 in Lima
/// is still that year there, though it is 1 January in UTC.
pub fn year_of(ms: i64, utc_offset_minutes: i32) -> i32 {
    let local = ms + i64::from(utc_offset_minutes) * 60_000;
    civil_from_days(local.div_euclid(86_400_000)).0
}

/// A Unix time in milliseconds as ISO 8601 UTC, e.g. `2026-11-28T17:38:26Z`.
pub fn format_utc(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A Unix time in milliseconds as an `xs:dateTime` at `utc_offset_minutes`
/// from UTC, e.g. `2027-02-01T08:44:55.857-05:00` (as PIDE writes dates).
pub fn format_local(ms: i64, utc_offset_minutes: i32) -> String {
    let local = ms + i64::from(utc_offset_minutes) * 60_000;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400_000));
    let secs = local.div_euclid(1000).rem_euclid(86_400);
    let sign = if utc_offset_minutes < 0 { '-' } else { '+' };
    let offset = utc_offset_minutes.unsigned_abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        local.rem_euclid(1000),
        offset / 60,
        offset % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_written_as_pide_writes_them() {
        // 2027-02-01T13:44:55.857Z, in Lima (UTC-5).
        assert_eq!(
            format_local(1_801_489_495_857, -300),
            "2027-02-01T08:44:55.857-05:00"
        );
        assert_eq!(format_local(0, 0), "1970-01-01T00:00:00.000+00:00");
    }

    #[test]
    fn ids_made_here_are_valid_and_hostile_ones_are_not() {
        assert!(is_transfer_id(&transfer_id()));
        assert!(is_tracking_code(&tracking_code("senamhi", 0, -300)));
        let long = "a".repeat(33);
        let upper = "AB".repeat(16);
        for bad in ["", "../etc/passwd", "/abs", upper.as_str(), long.as_str()] {
            assert!(!is_transfer_id(bad), "{bad:?}");
        }
        for bad in [
            "",
            "SENAMHI-2026-XXXX",
            "senamhi-2026-0123ABCD",
            "../-2026-0123ABCD",
            "X-26-0123ABCD",
        ] {
            assert!(!is_tracking_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn transfer_ids_made_one_after_another_sort_in_that_order_and_never_repeat() {
        let ids: Vec<String> = (0..1_000)
            .map(|_| bound_transfer_id("senamhi", "SENAMHI-2026-0123ABCD"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
        // A clock set back does not make a nonce again.
        let ahead = u32::from_be_bytes(next_nonce(ecointegra_broker::now_ms() + 60_000));
        let after = u32::from_be_bytes(next_nonce(0));
        // (Other tests may take nonces in between.)
        assert!(
            (1..1_000).contains(&after.wrapping_sub(ahead)),
            "{ahead} then {after}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(year_of(1_798_675_200_000, 0), 2026); // 2026-12-31
        assert_eq!(year_of(1_798_761_600_000, 0), 2027); // 2027-01-01
        // 2027-01-01T00:30Z is still 31 December, 19:30, in Lima.
        let new_year_utc = 1_798_761_600_000 + 30 * 60_000;
        assert_eq!(year_of(new_year_utc, -300), 2026);
        assert_eq!(year_of(new_year_utc + 5 * 3_600_000, -300), 2027);
        assert_eq!(format_utc(1_798_761_599_000), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn codes() {
        let code = tracking_code("senamhi", 1_798_675_200_000, -300);
        assert!(code.starts_with("SENAMHI-2026-"), "{code}");
        // Half an hour into 2027 in UTC, 19:30 on 31 December in Lima.
        let code = tracking_code("senamhi", 1_798_761_600_000 + 30 * 60_000, -300);
        assert!(code.starts_with("SENAMHI-2026-"), "{code}");
        assert_eq!(code.len(), "SENAMHI-2026-".len() + 8);
        assert_ne!(random_code(16), random_code(16));
        assert_eq!(registry_number("oefa", 2026, 42), "OEFA-2026-000042");
        assert_eq!(transfer_id().len(), 32);
        let bound = bound_transfer_id("senamhi", "SENAMHI-2026-0123ABCD");
        assert!(is_transfer_id(&bound));
        assert!(transfer_id_binds(
            &bound,
            "senamhi",
            "SENAMHI-2026-0123ABCD"
        ));
        assert!(!transfer_id_binds(&bound, "minam", "SENAMHI-2026-0123ABCD"));
        assert!(!transfer_id_binds(
            &bound,
            "senamhi",
            "SENAMHI-2026-0123ABCE"
        ));
        assert!(!transfer_id_binds(
            &transfer_id(),
            "senamhi",
            "SENAMHI-2026-0123ABCD"
        ));
        assert!(!transfer_id_binds(
            "../../etc/passwd",
            "senamhi",
            "SENAMHI-2026-0123ABCD"
        ));
    }
}
