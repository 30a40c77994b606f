//! The machine's physical limits, measured before the load: SHA-256 speed,
//! Ed25519 signatures and verifications per second, one HPKE key agreement
//! (sealing and opening a few bytes, as the nodes' crypto does it), the
//! speed of the AEAD the newest envelope schema seals with, one Argon2id
//! verifier of a citizen's code (as the node computes it), the latency
//! of a small write plus fsync in the directory the nodes keep their data
//! in, and what creating a file there costs. [`Floor`] turns them into the
//! least a filing costs with every guarantee kept, so a result shows its
//! distance to that limit.

use ecointegra_broker::crypto;
use ecointegra_broker::keys::SigningIdentity;
use ed25519_dalek::{Signature, Verifier};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SYNC_BLOCK: usize = 4096;

/// Writes 4 KiB at `offset` of `file` and fsyncs it; microseconds.
fn timed_sync(file: &std::fs::File, offset: u64) -> std::io::Result<u64> {
    let started = Instant::now();
    file.write_all_at(&[0xa5u8; SYNC_BLOCK], offset)?;
    file.sync_all()?;
    Ok(started.elapsed().as_micros() as u64)
}

/// Files the calibration creates to time a file's creation.
const CREATES: u32 = 200;

/// Creating a file costs more than this (p50, µs) only when the file system
/// is busy skipping inodes freed a short while ago (see [`slow_creation`]);
/// on this kind of machine, without that, it costs about 15 to 40 µs.
pub const SLOW_CREATE_US: u64 = 150;

/// Creates `n` empty files in `dir` (which must not hold them yet), each
/// timed from its `open` to its `close`; microseconds. The files stay: a
/// freed inode is what makes a creation slow (see [`slow_creation`]), and
/// they go with the work directory.
fn timed_creates(dir: &Path, n: u32) -> std::io::Result<hdrhistogram::Histogram<u64>> {
    std::fs::create_dir_all(dir)?;
    let mut latencies = crate::report::micros();
    for i in 0..n {
        let started = Instant::now();
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(format!("f{i}")))?,
        );
        latencies.saturating_record(started.elapsed().as_micros() as u64);
    }
    Ok(latencies)
}

/// A warning when creating a file cost more than [`SLOW_CREATE_US`]: ext4
/// without a journal (this kind of machine's root file system) does not
/// reuse an inode for 60 s after it was freed, 360 s while the block of the
/// inode table holding it is dirty, and every creation in that block group
/// reads its way past each such inode. Deleting many files just before a
/// run (an earlier run's work directory, `kafka.sh start --fresh`) made
/// each creation cost hundreds of microseconds, and the system arm creates
/// a file per document above 32 KiB at each end where the baseline creates
/// none (in one profile at 100 KiB, 29% of the origin's CPU went to creating
/// its upload files).
pub fn slow_creation(c: &Calibration) -> Option<String> {
    (c.file_create_p50_us > SLOW_CREATE_US).then(|| {
        format!(
            "warning: creating a file in the work directory took {} µs (p50; about 15 to 40 µs when \
             the file system has not freed many inodes in the last minutes): ext4 without a \
             journal skips inodes freed in the last 60 to 360 s, and the system arm creates a \
             file per document above 32 KiB at each end; wait a few minutes after deleting \
             many files (an earlier run's work directory, kafka.sh start --fresh) and run again",
            c.file_create_p50_us
        )
    })
}

/// How often the [`SyncProbe`] syncs: often enough to see stalls of a few
/// tens of milliseconds, seldom enough to add little to the disk's load.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Times a 4 KiB rewrite and fsync of one file beside the nodes' data, every
/// [`PROBE_EVERY`], while a phase runs: what a durable commit waits for on
/// this disk under that phase's load (the calibration's is the idle disk's).
pub struct SyncProbe {
    /// Dropped to stop the probe: its thread waits on this, not on a timer.
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<hdrhistogram::Histogram<u64>>>,
    path: PathBuf,
}

impl SyncProbe {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("sync-probe");
        let file = std::fs::File::create(&path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sync-probe".into())
            .spawn(move || {
                // At least one sample, however short the phase; then one per
                // PROBE_EVERY until the probe is stopped.
                let mut latencies = crate::report::micros();
                loop {
                    latencies.saturating_record(timed_sync(&file, 0)?);
                    if let Err(mpsc::RecvTimeoutError::Disconnected) =
                        stopped.recv_timeout(PROBE_EVERY)
                    {
                        return Ok(latencies);
                    }
                }
            })?;
        Ok(Self { stop, thread, path })
    }

    /// Stops the probe and returns its latencies (µs).
    pub fn finish(self) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        drop(self.stop);
        let latencies = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sync probe panicked"))??;
        std::fs::remove_file(&self.path)?;
        Ok(latencies)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub sha256_gb_per_s: f64,
    /// Signatures of a 512-byte message per second, one core.
    pub ed25519_signs_per_s: f64,
    pub ed25519_verifies_per_s: f64,
    /// A 4 KiB write plus `fsync` of a file in the data directory.
    pub fsync_p50_us: u64,
    pub fsync_p99_us: u64,
    pub fsync_samples: u64,
    /// Creating an empty file in the work directory (open to close), µs: see
    /// [`slow_creation`].
    pub file_create_p50_us: u64,
    pub file_create_p99_us: u64,
    /// Sealing and opening 32 bytes for a recipient (HPKE: the key
    /// agreements, the key schedule, a tiny AEAD), microseconds.
    pub hpke_seal_open_us: f64,
    /// Sealing and opening 1 MiB: the AEAD's bytes, GB/s (each way), with
    /// the AEAD of the newest envelope schema.
    pub aead_gb_per_s: f64,
    /// One Argon2id verifier of a citizen's verification code, milliseconds.
    pub argon2id_ms: f64,
}

/// The least CPU and disk one filing of a size needs with every guarantee
/// the system keeps: one Argon2id verifier (the citizen's code); its bytes
/// hashed at both ends, sealed at the origin and opened at the destination;
/// one key agreement per transfer and one per receipt; one signature made
/// and checked per record (each chunk, the manifest, the receipt) and per
/// tracking step (registered, sent, delivered: each checked by both nodes);
/// the document written once at each end, and three durable commits (the
/// submission, the delivery, the receipt's arrival) of a page each.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Floor {
    pub cpu_ms: f64,
    /// Of which the Argon2id verifier.
    pub argon2id_ms: f64,
    pub disk_kib: f64,
    /// What `cores` cores could move at that CPU cost.
    pub max_filings_per_s: f64,
}

impl Floor {
    pub fn of(c: &Calibration, size: u64, chunk_size: u64, cores: usize) -> Floor {
        let bytes = size as f64;
        let records = size.div_ceil(chunk_size).max(1) as f64 + 2.0;
        let (steps, checks_per_step) = (3.0, 2.0);
        let signing_ms = (records + steps) * 1000.0 / c.ed25519_signs_per_s
            + (records + steps * checks_per_step) * 1000.0 / c.ed25519_verifies_per_s;
        let hashing_ms = 2.0 * bytes / (c.sha256_gb_per_s * 1e6);
        let aead_ms = 2.0 * bytes / (c.aead_gb_per_s * 1e6);
        let agreements_ms = 2.0 * c.hpke_seal_open_us / 1000.0;
        let cpu_ms = c.argon2id_ms + signing_ms + hashing_ms + aead_ms + agreements_ms;
        Floor {
            cpu_ms,
            argon2id_ms: c.argon2id_ms,
            disk_kib: 2.0 * bytes / 1024.0 + 3.0 * 4.0,
            max_filings_per_s: cores as f64 * 1000.0 / cpu_ms,
        }
    }
}

/// Measures, for about a second (`quick`) or a few seconds. Blocking.
pub fn run(dir: &Path, quick: bool) -> anyhow::Result<Calibration> {
    let budget = if quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };

    let buffer = vec![0x5au8; 1 << 20];
    let mut hasher = Sha256::new();
    let started = Instant::now();
    let mut hashed = 0u64;
    while started.elapsed() < budget {
        hasher.update(&buffer);
        hashed += buffer.len() as u64;
    }
    std::hint::black_box(hasher.finalize());
    let sha256_gb_per_s = hashed as f64 / started.elapsed().as_secs_f64() / 1e9;

    let identity = SigningIdentity::generate();
    let message = [0x17u8; 512];
    let started = Instant::now();
    let mut signs = 0u64;
    let mut signature = [0u8; 64];
    while started.elapsed() < budget {
        signature = identity.sign(&message);
        signs += 1;
    }
    let ed25519_signs_per_s = signs as f64 / started.elapsed().as_secs_f64();
    let key = identity.public_key();
    let signature = Signature::from_bytes(&signature);
    let started = Instant::now();
    let mut verifies = 0u64;
    while started.elapsed() < budget {
        key.verify(&message, &signature)
            .map_err(|e| anyhow::anyhow!("a fresh signature does not verify: {e}"))?;
        verifies += 1;
    }
    let ed25519_verifies_per_s = verifies as f64 / started.elapsed().as_secs_f64();

    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path)?;
    let mut latencies = crate::report::micros();
    let started = Instant::now();
    let mut samples = 0u64;
    while started.elapsed() < budget || samples < 20 {
        latencies.saturating_record(timed_sync(&file, samples * SYNC_BLOCK as u64)?);
        samples += 1;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    let creates = timed_creates(&dir.join("create-probe"), CREATES)?;

    // HPKE, as the nodes seal a record: a few bytes (the key agreements
    // dominate), then 1 MiB (the AEAD's bytes on top).
    let recipient = SigningIdentity::generate();
    let recipient_key = recipient.encryption_public_key();
    let keyring = [recipient];
    let cipher = crypto::Cipher::of_schema(ecointegra_broker::envelope::SCHEMA_VERSION);
    let round_trip = |plaintext: &[u8]| -> anyhow::Result<()> {
        let sealed = crypto::encrypt(cipher, &recipient_key, b"bench", plaintext)
            .map_err(anyhow::Error::msg)?;
        crypto::decrypt(cipher, &keyring, b"bench", &sealed).map_err(anyhow::Error::msg)?;
        Ok(())
    };
    let timed = |plaintext: &[u8], at_least: u32| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut rounds = 0u32;
        while rounds < at_least || started.elapsed() < budget / 2 {
            round_trip(plaintext)?;
            rounds += 1;
        }
        Ok(started.elapsed().as_secs_f64() / f64::from(rounds))
    };
    let small_s = timed(&[7u8; 32], 20)?;
    let large_s = timed(&buffer, 3)?;
    let aead_gb_per_s = 2.0 * buffer.len() as f64 / (large_s - small_s).max(1e-9) / 1e9;

    let started = Instant::now();
    let mut verifiers = 0u32;
    while verifiers < 3 || started.elapsed() < budget / 2 {
        std::hint::black_box(ecointegra_node::verification::verifier(
            "OEFA-2026-ABCDEFGH",
            "K7Q2-9XWD-M4TA-PR3E",
        ));
        verifiers += 1;
    }
    let argon2id_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(verifiers);

    Ok(Calibration {
        hpke_seal_open_us: small_s * 1e6,
        aead_gb_per_s,
        argon2id_ms,
        sha256_gb_per_s,
        ed25519_signs_per_s,
        ed25519_verifies_per_s,
        fsync_p50_us: latencies.value_at_quantile(0.5),
        fsync_p99_us: latencies.value_at_quantile(0.99),
        fsync_samples: samples,
        file_create_p50_us: creates.value_at_quantile(0.5),
        file_create_p99_us: creates.value_at_quantile(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Calibration {
        Calibration {
            sha256_gb_per_s: 1.0,
            ed25519_signs_per_s: 50_000.0,
            ed25519_verifies_per_s: 25_000.0,
            fsync_p50_us: 200,
            fsync_p99_us: 400,
            fsync_samples: 20,
            file_create_p50_us: 25,
            file_create_p99_us: 60,
            hpke_seal_open_us: 100.0,
            aead_gb_per_s: 1.0,
            argon2id_ms: 20.0,
        }
    }

    #[test]
    fn the_floor_adds_up_what_every_filing_must_cost() {
        // 1 KiB: one chunk, so 3 records and 3 steps: 6 signatures (0.12 ms)
        // and 9 checks (0.36 ms); 2 KiB hashed and 2 KiB sealed and opened
        // (0.004 ms); two key agreements (0.2 ms); the verifier (20 ms).
        let floor = Floor::of(&machine(), 1024, 512 * 1024, 2);
        assert!((floor.cpu_ms - 20.684).abs() < 0.01, "{floor:?}");
        assert_eq!(floor.argon2id_ms, 20.0);
        assert_eq!(floor.disk_kib, 2.0 + 12.0);
        assert!((floor.max_filings_per_s - 2000.0 / 20.684).abs() < 0.1);
        // 1 MiB: two chunks, and the bytes count.
        let floor = Floor::of(&machine(), 1 << 20, 512 * 1024, 2);
        assert!(floor.cpu_ms > 20.0 + 4.0 * 1.048, "{floor:?}");
        assert_eq!(floor.disk_kib, 2048.0 + 12.0);
    }

    #[test]
    fn creation_is_timed_once_per_new_file() {
        let dir = std::env::temp_dir().join(format!("bench-creates-{}", std::process::id()));
        let timed = timed_creates(&dir, 7).unwrap();
        assert_eq!(timed.len(), 7);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 7);
        // A name already there is an error, not a file opened again.
        assert!(timed_creates(&dir, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slow_file_creation_is_warned_of() {
        assert!(slow_creation(&machine()).is_none());
        let slow = Calibration {
            file_create_p50_us: 800,
            ..machine()
        };
        let warning = slow_creation(&slow).unwrap();
        assert!(warning.contains("800 µs"), "{warning}");
        let limit = Calibration {
            file_create_p50_us: SLOW_CREATE_US,
            ..machine()
        };
        assert!(slow_creation(&limit).is_none());
    }
}
