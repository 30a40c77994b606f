//! Citizen verification codes and the verifiers the sector publishes for them.
//!
//! A verification code is 16 characters of Crockford's base32 (80 random
//! bits), printed in groups of four: `K7Q2-9XWD-M4TA-PR3E`. A citizen may type
//! it in any case, with or without dashes or spaces, and with `O` for `0` or
//! `I`/`L` for `1` ([`normalize`]).
//!
//! The registration event on the tracking topic, which every node and every
//! reader of Kafka sees, carries the code's verifier: Argon2id with a random
//! salt per filing, as a PHC string (`$argon2id$v=19$m=256,t=1,p=1$<salt>$
//! <hash>`), so the parameters travel with it and may change later. Guessing a
//! code offline from it costs up to 2^80 Argon2id evaluations of 256 KiB each:
//! the code's 80 random bits, not the cost of one guess, are what protect it,
//! so the memory is sized for a node that registers thousands of filings a
//! second, not for a password a person chose. Verifiers made with other
//! parameters (19 MiB and 2 passes until December 2026) keep verifying.
//!
//! Filings registered before carry the old form: 32 bytes of SHA-256 over the
//! tracking and (8-character) verification codes. [`verifies`] dispatches on
//! the form, so those codes keep working. A verifier comes from the wire, so
//! [`check`] refuses a malformed one, or one whose parameters would make a
//! node spend more than [`MAX_M_COST`] KiB or [`MAX_WORK`] KiB-passes on it,
//! before anything is computed.

use argon2::password_hash::phc::{Output, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use std::sync::{Mutex, OnceLock};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Characters in a verification code, without the dashes: 80 bits.
pub const CODE_CHARS: usize = 16;

/// Characters in a verification code of the first release (40 bits).
pub const LEGACY_CODE_CHARS: usize = 8;

/// Memory of one evaluation, in KiB. Not OWASP's 19 MiB for passwords: a
/// code is 80 random bits, so even at this size exhausting one filing's codes
/// takes millions of years on hardware a million times faster than a core,
/// while a registration costs a fraction of a millisecond instead of 20.
pub const M_COST: u32 = 256;
/// Passes over the memory (RFC 9106 allows one for Argon2id).
pub const T_COST: u32 = 1;
/// Lanes.
pub const P_COST: u32 = 1;

/// The most memory (KiB) a verifier from the wire may ask for: 64 MiB.
pub const MAX_M_COST: u32 = 64 * 1024;
/// The most passes a verifier from the wire may ask for.
pub const MAX_T_COST: u32 = 8;
/// The most lanes a verifier from the wire may ask for.
pub const MAX_P_COST: u32 = 4;
/// The most work (memory × passes, KiB) a verifier from the wire may ask for:
/// about 7 times the default, a few hundred milliseconds.
pub const MAX_WORK: u64 = 256 * 1024;
/// The longest verifier accepted from the wire, in bytes.
pub const MAX_VERIFIER_BYTES: usize = 256;

/// The largest buffer (in 1 KiB blocks) kept for reuse: what the verifiers
/// of releases before December 2026 need (m = 19 MiB), which keep verifying.
const POOLED_BLOCKS: usize = 19 * 1024;
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;
const LEGACY_BYTES: usize = 32;

/// A new verification code, grouped: `K7Q2-9XWD-M4TA-PR3E`.
pub fn new_code() -> String {
    grouped(&crate::ids::random_code(CODE_CHARS))
}

/// `code` in groups of four characters joined by dashes.
pub fn grouped(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group))
        .collect::<Vec<_>>()
        .join("-")
}

/// The code a citizen typed, as it was issued (upper case, no separators),
/// or `None` if it has a character no code has. Dashes and white space are
/// dropped, case is ignored, and the letters people confuse with digits read
/// as those digits (`O` as `0`; `I` and `L` as `1`), as Crockford's base32
/// decodes them.
pub fn normalize(typed: &str) -> Option<String> {
    let mut code = String::with_capacity(CODE_CHARS);
    for c in typed.chars() {
        match c.to_ascii_uppercase() {
            // Hyphen-minus and the dashes phones and word processors put in.
            '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}' => {}
            c if c.is_whitespace() => {}
            'O' => code.push('0'),
            'I' | 'L' => code.push('1'),
            c @ ('0'..='9' | 'A'..='H' | 'J' | 'K' | 'M' | 'N' | 'P'..='T' | 'V'..='Z') => {
                code.push(c)
            }
            _ => return None,
        }
        if code.len() > CODE_CHARS {
            return None;
        }
    }
    Some(code)
}

/// The verifier of `code` for the filing `tracking_code`: Argon2id with a
/// fresh random salt, as a PHC string. Takes a fraction of a millisecond and
/// 256 KiB: call it through [`off_runtime`] from async code.
pub fn verifier(tracking_code: &str, code: &str) -> Vec<u8> {
    let code = normalize(code).unwrap_or_else(|| code.trim().to_uppercase());
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).expect("the OS random source is available");
    let params =
        Params::new(M_COST, T_COST, P_COST, Some(HASH_BYTES)).expect("the parameters are valid");
    let mut hash = [0u8; HASH_BYTES];
    argon2id(params, &password(tracking_code, &code), &salt, &mut hash)
        .expect("a 16-byte salt and a 32-byte output are valid");
    // The PHC string format: base64 without padding.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}",
        b64(&salt),
        b64(&hash)
    )
    .into_bytes()
}

/// One Argon2id evaluation in memory reused from earlier ones. Evaluations
/// run at most one per core ([`off_runtime`]), on whichever blocking
/// threads the runtime has: each allocating its own memory (19 MiB with the
/// parameters of earlier releases) left the allocator holding that much per
/// thread it ever ran on (hundreds of MiB under load). Buffers larger than
/// those earlier parameters need (a verifier from the wire may ask for up to
/// [`MAX_M_COST`]) are not kept.
fn argon2id(params: Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
    let needed = params.block_count();
    let taken = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut blocks = taken.unwrap_or_default();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, out, &mut blocks[..]);
    if blocks.len() <= POOLED_BLOCKS {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).push(blocks);
    }
    result
}

/// The verifier the first release published: SHA-256 over a domain tag, the
/// tracking code and the verification code, both in upper case.
pub fn legacy_verifier(tracking_code: &str, code: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"ecointegra.v1.verifier\0");
    hasher.update(tracking_code.trim().to_uppercase().as_bytes());
    hasher.update(b"\0");
    hasher.update(code.trim().to_uppercase().as_bytes());
    hasher.finalize().to_vec()
}

/// What an Argon2id verifier is computed over: the tracking code binds it to
/// its filing, so a verifier copied to another filing does not carry the code.
fn password(tracking_code: &str, code: &str) -> Vec<u8> {
    let tracking_code = tracking_code.trim().to_uppercase();
    let mut password = b"ecointegra.v2.verifier\0".to_vec();
    password.extend_from_slice(tracking_code.as_bytes());
    password.push(0);
    password.extend_from_slice(code.as_bytes());
    password
}

/// A verifier, parsed and within bounds.
enum Form {
    /// SHA-256, as the first release made them.
    Legacy([u8; LEGACY_BYTES]),
    Argon2id {
        params: Params,
        salt: Salt,
        hash: Output,
    },
}

/// Refuses a verifier that is neither form, or whose parameters are out of
/// bounds; never computes anything. For verifiers from the wire.
pub fn check(verifier: &[u8]) -> Result<(), String> {
    parse(verifier).map(|_| ())
}

fn parse(verifier: &[u8]) -> Result<Form, String> {
    if verifier.len() == LEGACY_BYTES {
        // No PHC string this module accepts is this short.
        let mut digest = [0u8; LEGACY_BYTES];
        digest.copy_from_slice(verifier);
        return Ok(Form::Legacy(digest));
    }
    if verifier.len() > MAX_VERIFIER_BYTES {
        return Err(format!(
            "verifier bytes {} is above {MAX_VERIFIER_BYTES}",
            verifier.len()
        ));
    }
    let text = std::str::from_utf8(verifier)
        .map_err(|_| "the verifier is neither a SHA-256 nor a PHC string".to_owned())?;
    let phc = PasswordHash::new(text).map_err(|e| format!("the verifier is no PHC string: {e}"))?;
    if phc.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "verifier algorithm {:?} is not argon2id",
            phc.algorithm.as_str()
        ));
    }
    if phc.version != Some(Version::V0x13 as u32) {
        return Err("the verifier is not Argon2 version 19".into());
    }
    let (Some(salt), Some(hash)) = (phc.salt, phc.hash) else {
        return Err("the verifier lacks its salt or its hash".into());
    };
    // m, t and p, each once; nothing else (a key id or associated data would
    // need what no node has).
    let mut costs = [None::<u32>; 3];
    for (name, value) in phc.params.iter() {
        let slot = match name.as_str() {
            "m" => &mut costs[0],
            "t" => &mut costs[1],
            "p" => &mut costs[2],
            other => return Err(format!("verifier parameter {other:?} is not m, t or p")),
        };
        let value = value
            .decimal()
            .map_err(|_| format!("verifier parameter {} is not a number", name.as_str()))?;
        if slot.replace(value).is_some() {
            return Err(format!("verifier parameter {} twice", name.as_str()));
        }
    }
    let [Some(m), Some(t), Some(p)] = costs else {
        return Err("the verifier lacks one of m, t and p".into());
    };
    for (what, value, max) in [
        ("m", m, MAX_M_COST),
        ("t", t, MAX_T_COST),
        ("p", p, MAX_P_COST),
    ] {
        if value > max {
            return Err(format!("verifier {what}={value} is above {max}"));
        }
    }
    if u64::from(m) * u64::from(t) > MAX_WORK {
        return Err(format!(
            "verifier work m×t={} is above {MAX_WORK}",
            u64::from(m) * u64::from(t)
        ));
    }
    if !(16..=64).contains(&hash.len()) {
        return Err(format!("verifier hash of {} bytes", hash.len()));
    }
    let params = Params::new(m, t, p, Some(hash.len()))
        .map_err(|e| format!("verifier parameters m={m},t={t},p={p}: {e}"))?;
    Ok(Form::Argon2id { params, salt, hash })
}

/// Does `typed` match `verifier`, the one the filing `tracking_code`
/// registered (`None` if none is known)? Spends one Argon2id evaluation
/// whatever the answer (with the default parameters where `verifier` has
/// none to give), so an unknown filing and an old one cost what a wrong code
/// does. Call it through [`off_runtime`] from async code.
pub fn verifies(verifier: Option<&[u8]>, tracking_code: &str, typed: &str) -> bool {
    let Some(code) = normalize(typed) else {
        return false;
    };
    let password = password(tracking_code, &code);
    match verifier.map(parse) {
        Some(Ok(Form::Argon2id { params, salt, hash })) => {
            let mut out = vec![0u8; hash.len()];
            argon2id(params, &password, &salt, &mut out).is_ok()
                && bool::from(out.ct_eq(hash.as_bytes()))
        }
        Some(Ok(Form::Legacy(expected))) => {
            dummy(&password);
            code.len() == LEGACY_CODE_CHARS
                && bool::from(legacy_verifier(tracking_code, &code).ct_eq(&expected))
        }
        None | Some(Err(_)) => {
            dummy(&password);
            false
        }
    }
}

/// One evaluation with the default parameters, for its cost alone.
fn dummy(password: &[u8]) {
    let params = Params::new(M_COST, T_COST, P_COST, Some(HASH_BYTES)).expect("valid parameters");
    let mut out = [0u8; HASH_BYTES];
    let _ = argon2id(params, password, b"ecointegra.dummy.salt", &mut out);
}

/// Runs `f` (a verifier to make or check) on the blocking pool, with a
/// [`slot`].
pub async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let _slot = slot().await;
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Leave to make or check verifiers while it is held, at most one holder
/// per core at a time: each evaluation takes up to [`MAX_M_COST`] KiB, so a
/// burst of look-ups queues here instead of taking the node's memory. For a
/// blocking task that makes a verifier among other work (no hop of its own).
pub async fn slot() -> tokio::sync::SemaphorePermit<'static> {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores.clamp(1, 8))
    });
    slots
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const FILING: &str = "SENAMHI-2026-7K3M9Q2P";

    #[test]
    fn codes_are_80_bits_in_groups_of_four() {
        let code = new_code();
        assert_eq!(code.len(), 19, "{code}");
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for group in groups {
            assert_eq!(group.len(), 4, "{code}");
            assert!(
                group
                    .bytes()
                    .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)),
                "{code}"
            );
        }
        assert_eq!(normalize(&code).unwrap().len(), CODE_CHARS);
        assert_ne!(new_code(), new_code());
        assert_eq!(grouped("K7Q29XWDM4TAPR3E"), "K7Q2-9XWD-M4TA-PR3E");
    }

    #[test]
    fn codes_are_read_as_people_type_them() {
        let issued = Some("K7Q29XWDM4TAPR3E".to_owned());
        for typed in [
            "K7Q2-9XWD-M4TA-PR3E",
            "k7q2-9xwd-m4ta-pr3e",
            "k7q29xwdm4tapr3e",
            " K7Q2 9XWD M4TA PR3E ",
            "K7Q2–9XWD–M4TA–PR3E",
        ] {
            assert_eq!(normalize(typed), issued, "{typed:?}");
        }
        // O is 0; I and L are 1.
        assert_eq!(normalize("o0O-iIlL1").as_deref(), Some("00011111"));
        for bad in [
            "K7Q2-9XWD-M4TA-PR3U",
            "K7Q2*9XWD",
            "K7Q2-9XWD-M4TA-PR3EX",
            "ñ",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_verifier_is_a_salted_argon2id_phc_string_that_round_trips() {
        let code = "K7Q2-9XWD-M4TA-PR3O";
        let verifier = super::verifier(FILING, code);
        let text = std::str::from_utf8(&verifier).unwrap();
        assert!(text.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{text}");
        assert!(check(&verifier).is_ok());
        // A salt per filing: the same code gives another verifier.
        assert_ne!(super::verifier(FILING, code), verifier);
        assert!(verifies(Some(&verifier), FILING, code));
        assert!(verifies(Some(&verifier), FILING, "k7q29xwdm4tapr30"));
        assert!(verifies(Some(&verifier), " senamhi-2026-7k3m9q2p ", code));
        assert!(!verifies(Some(&verifier), FILING, "K7Q2-9XWD-M4TA-PR31"));
        assert!(!verifies(Some(&verifier), FILING, ""));
        // Bound to its filing.
        assert!(!verifies(Some(&verifier), "SENAMHI-2026-7K3M9Q2Q", code));
        assert!(!verifies(None, FILING, code));
    }

    #[test]
    fn verifiers_are_the_argon2_crates_own_phc_strings() {
        use argon2::PasswordHasher;
        // One the crate's hasher made (as releases before pooled memory did,
        // with their 19 MiB and 2 passes) verifies here...
        let code = normalize("K7Q2-9XWD-M4TA-PR3O").unwrap();
        let earlier = Params::new(19 * 1024, 2, P_COST, Some(HASH_BYTES)).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, earlier)
            .hash_password_with_salt(&password(FILING, &code), &[9u8; SALT_BYTES])
            .unwrap()
            .to_string();
        assert!(
            theirs.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{theirs}"
        );
        assert!(verifies(Some(theirs.as_bytes()), FILING, &code));
        assert!(!verifies(
            Some(theirs.as_bytes()),
            FILING,
            "K7Q2-9XWD-M4TA-PR31"
        ));
        let params = Params::new(M_COST, T_COST, P_COST, Some(HASH_BYTES)).unwrap();
        // ... and one made here is what the crate makes for the same salt.
        let ours = String::from_utf8(super::verifier(FILING, &code)).unwrap();
        let salt = PasswordHash::new(&ours).unwrap().salt.unwrap();
        let again = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(&password(FILING, &code), &salt)
            .unwrap()
            .to_string();
        assert_eq!(ours, again);
    }

    #[test]
    fn an_old_sha256_verifier_still_verifies_its_8_character_code() {
        let old = legacy_verifier(FILING, "9CVZWART");
        assert_eq!(old.len(), 32);
        assert!(check(&old).is_ok());
        assert!(verifies(Some(&old), FILING, "9CVZWART"));
        assert!(verifies(Some(&old), FILING, "9cvz-wart"));
        assert!(!verifies(Some(&old), FILING, "9CVZWARX"));
        assert!(!verifies(Some(&old), "SENAMHI-2026-7K3M9Q2Q", "9CVZWART"));
        // A code with an O read as 0 matches what was issued with the 0.
        let zero = legacy_verifier(FILING, "0CVZWART");
        assert!(verifies(Some(&zero), FILING, "ocvzwart"));
    }

    #[test]
    fn hostile_verifiers_are_refused_before_anything_is_computed() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let hash = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let hostile = [
            // 4 GiB, a million passes, many lanes, too much work in all.
            format!("$argon2id$v=19$m=4194304,t=2,p=1${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=1000000,p=1${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=255${salt}${hash}"),
            format!("$argon2id$v=19$m=65536,t=8,p=1${salt}${hash}"),
            format!("$argon2id$v=19$m=99999999999999999999,t=2,p=1${salt}${hash}"),
            // Other algorithms, versions, shapes.
            format!("$argon2i$v=19$m=19456,t=2,p=1${salt}${hash}"),
            format!("$argon2id$v=16$m=19456,t=2,p=1${salt}${hash}"),
            format!("$argon2id$m=19456,t=2,p=1${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt}"),
            format!("$argon2id$v=19$m=19456,t=2${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1,m=8${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1,data=AAAA${salt}${hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt}$AAAA"),
            format!("$argon2id$v=19$m=19456,t=2,p=1$!!${hash}"),
            "$argon2id$v=19$m=19456,t=2,p=1".to_owned(),
            format!(
                "$argon2id$v=19$m=19456,t=2,p=1${salt}${hash}{}",
                "A".repeat(300)
            ),
            "garbage".to_owned(),
            String::new(),
        ];
        for verifier in &hostile {
            let started = Instant::now();
            assert!(check(verifier.as_bytes()).is_err(), "{verifier}");
            assert!(!verifies(
                Some(verifier.as_bytes()),
                FILING,
                "K7Q2-9XWD-M4TA-PR3E"
            ));
            // One evaluation with the default parameters at most, never theirs.
            assert!(started.elapsed() < Duration::from_secs(5), "{verifier}");
        }
        for bytes in [vec![0xff; 40], vec![b'$'; 31], vec![0; 33], vec![b'$'; 257]] {
            assert!(check(&bytes).is_err(), "{bytes:?}");
        }
        // The bounds themselves are fine: a new node may raise the defaults.
        let raised = format!("$argon2id$v=19$m=65536,t=4,p=4${salt}${hash}");
        assert!(check(raised.as_bytes()).is_ok());
    }

    /// 100,000 verifiers mutated from a real one (digits inserted into the
    /// parameters, bytes flipped, cut): parsing never panics, and nothing out
    /// of bounds passes.
    #[test]
    fn mutated_verifiers_never_panic_nor_pass_out_of_bounds() {
        let seed = super::verifier(FILING, "K7Q2-9XWD-M4TA-PR3E");
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..100_000 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len() + 1);
                match next(4) {
                    0 => bytes.insert(at, b'0' + next(10) as u8),
                    1 => bytes.truncate(at),
                    2 if at < bytes.len() => bytes[at] ^= 1 << next(8),
                    _ => bytes.insert(at, b"$,=9"[next(4)]),
                }
            }
            if let Ok(Form::Argon2id { params, salt, hash }) = parse(&bytes) {
                accepted += 1;
                assert!(params.m_cost() <= MAX_M_COST, "{bytes:?}");
                assert!(params.t_cost() <= MAX_T_COST, "{bytes:?}");
                assert!(params.p_cost() <= MAX_P_COST, "{bytes:?}");
                assert!(
                    u64::from(params.m_cost()) * u64::from(params.t_cost()) <= MAX_WORK,
                    "{bytes:?}"
                );
                assert!(salt.len() >= 8 && (16..=64).contains(&hash.len()));
            }
        }
        assert!(accepted > 0, "no mutation kept a valid form");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_runs_off_the_runtime() {
        let verifier = off_runtime(|| super::verifier(FILING, "K7Q2-9XWD-M4TA-PR3E")).await;
        let ok = off_runtime(move || verifies(Some(&verifier), FILING, "k7q29xwdm4tapr3e")).await;
        assert!(ok);
    }
}
