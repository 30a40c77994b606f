//! The machine's physical limits, measured before the load: SHA-256 speed,
//! Ed25519 signatures and verifications per second, and the latency of a small
//! write plus fsync in the directory the nodes keep their data in. Every
//! filing costs at least its bytes' hashing, one signature per record and
//! several fsyncs; these numbers say how far the results are from that floor.

use ecointegra_broker::keys::SigningIdentity;
use ed25519_dalek::{Signature, Verifier};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let mut file = std::fs::File::create(&path)?;
    let block = [0xa5u8; 4096];
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let mut samples = 0u64;
    while started.elapsed() < budget || samples < 20 {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        latencies.saturating_record(t.elapsed().as_micros() as u64);
        samples += 1;
    }
    drop(file);
    std::fs::remove_file(&path)?;

    Ok(Calibration {
        sha256_gb_per_s,
        ed25519_signs_per_s,
        ed25519_verifies_per_s,
        fsync_p50_us: latencies.value_at_quantile(0.5),
        fsync_p99_us: latencies.value_at_quantile(0.99),
        fsync_samples: samples,
    })
}
