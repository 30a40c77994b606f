//! `ecointegra-bench --smoke` runs end to end against the real broker and
//! reports every arm with matching counts: the baseline, the system, and a
//! candidate build (here the same binary) alternated with them. It measures;
//! nothing here asserts a time.

use ecointegra_tests::{binary, bootstrap};
use std::process::Command;

#[test]
fn bench_smoke_runs_every_arm_and_counts_match() {
    let dir = std::env::temp_dir().join(format!("ecointegra-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("bench.json");
    // The benchmark is its own binary (tests/bench), built beside the node's.
    let bench = binary().with_file_name("ecointegra-bench");
    let output = Command::new(&bench)
        .arg("--node-binary")
        .arg(binary())
        .arg("--candidate")
        .arg(binary())
        .args(["--smoke", "--bootstrap", &bootstrap(), "--out"])
        .arg(&out)
        .arg("--work-dir")
        .arg(&dir)
        .env("ECOINTEGRA_LOG", "warn,rdkafka=warn")
        .output()
        .expect("the ecointegra binary runs (tests/run.sh builds it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["correct"], true, "{report:#}");
    assert_eq!(report["mode"], "smoke");
    assert!(report["calibration"]["sha256_gb_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        report["calibration"]["file_create_p50_us"]
            .as_u64()
            .is_some()
    );
    let on_loopback = ["127.", "localhost:"]
        .iter()
        .any(|local| bootstrap().starts_with(local));
    let sizes = report["sizes"].as_array().unwrap();
    assert!(!sizes.is_empty());
    assert!(
        sizes
            .iter()
            .all(|s| s["size_bytes"].as_u64().unwrap() < 1 << 30),
        "the smoke run skips the 1 GiB document"
    );
    for size in sizes {
        // Two builds compared: the candidate's throughput and CPU against
        // the system's, from the same rounds.
        let versus = &size["ratio_candidate_over_system"];
        assert!(versus["filings_per_s"].as_f64().unwrap() > 0.0, "{versus}");
        assert!(versus["cpu_per_filing"].as_f64().unwrap() > 0.0, "{versus}");
        for arm in ["baseline", "system", "candidate"] {
            let counts = &size[arm]["counts"];
            let sent = counts["sent"].as_u64().unwrap();
            assert!(sent > 0, "{} {arm}: nothing sent", size["label"]);
            for stage in ["accepted", "delivered", "receipted"] {
                assert_eq!(
                    counts[stage].as_u64().unwrap(),
                    sent,
                    "{} {arm} {stage}",
                    size["label"]
                );
            }
            assert_eq!(size[arm]["duplicates"], 0);
            assert_eq!(size[arm]["hash_mismatches"], 0);
            assert!(size[arm]["closed_loop"]["filings_per_s"].as_f64().unwrap() > 0.0);
            // The whole machine's CPU per filing, and the broker's when it
            // runs here, beside the arm's own.
            let budget = &size[arm]["closed_loop_cpu_ms_per_filing"];
            assert!(budget["machine"].as_f64().unwrap() > 0.0, "{budget}");
            if on_loopback {
                assert!(budget["broker"].as_f64().is_some(), "{budget}");
            }
            // The disk's sync latency was measured beside the open loop.
            let synced = &size[arm]["open_loop"]["disk_sync_ms"];
            assert!(synced["count"].as_u64().unwrap() > 0, "{synced}");
            assert!(synced["p99"].as_f64().unwrap() > 0.0, "{synced}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
