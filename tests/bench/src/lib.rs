//! `ecointegra-bench`: the end-to-end transfer measured against raw Kafka,
//! side by side in one run, against one broker.
//!
//! The run calibrates the machine first (SHA-256, Ed25519, fsync), starts two
//! nodes and the raw-Kafka baseline, then for every document size alternates
//! the arms (baseline, system, baseline, system, ...): first closed-loop for
//! the maximum throughput, then open-loop at half the system's maximum for the
//! latency percentiles. With `--candidate`, another build's two nodes run as
//! a third arm, taking turns with the system after the baseline in every
//! round. It prints a table as it goes and writes every number
//! to a JSON file. It measures and reports; it asserts no time. It does check
//! correctness, and exits non-zero if any count differs or anything arrived
//! twice or with the wrong digest.
//!
//! # Layout
//! - [`calibrate`]: the machine's physical limits.
//! - [`payload`]: distinct document bytes without holding documents in memory.
//! - [`baseline`]: the raw-Kafka arm, with the nodes' own client types.
//! - [`system`]: the two-node arm, nodes as child processes.
//! - [`load`]: closed- and open-loop drivers, outcomes and histograms.
//! - [`procfs`]: CPU, peak memory and disk writes from `/proc`.
//! - [`report`]: the JSON structures and the terminal table.

pub mod baseline;
pub mod calibrate;
pub mod load;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod system;

use anyhow::Context;
use baseline::Baseline;
use ecointegra_broker::kafka::KafkaSettings;
use ecointegra_node::config::Config;
use load::{Arm, Phase};
use procfs::{Delta, Sample};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use report::{ArmReport, Counts, OpenLoop, Ratio, Report, SizeReport, Throughput};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use system::System;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Options of `ecointegra-bench`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ecointegra-bench",
    version,
    about = "The end-to-end transfer measured against raw Kafka, side by side"
)]
pub struct BenchArgs {
    /// Kafka bootstrap servers; the broker must be running.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// A seconds-long run (1 KiB and 1 MiB, one round, short phases) that
    /// checks the benchmark works; its numbers mean little.
    #[arg(long)]
    pub smoke: bool,
    /// Leave the 1 GiB document out of a full run.
    #[arg(long)]
    pub without_1gib: bool,
    /// Document sizes to run instead of the default matrix, e.g. `1K,1M,1G`.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<String>,
    /// Alternations of the two arms per size (default: 1 smoke, 3 full).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds of each measured phase (default: 1 smoke, 5 full).
    #[arg(long)]
    pub phase_secs: Option<f64>,
    /// Seconds of 1 KiB load per arm before anything is measured (default:
    /// 0 smoke, 10 full): a broker just started runs its request paths
    /// interpreted until the JVM has compiled them, and the first rounds
    /// then measured it, not the arms.
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Filings per second of the open loop instead of half the system's
    /// maximum: two builds compared at the same load (their maxima differ).
    #[arg(long)]
    pub open_rate: Option<f64>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
    /// Directory for the nodes' keys, configs, logs and data (default: a new
    /// directory under the system's temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory afterwards (it is always kept after a failure).
    #[arg(long)]
    pub keep: bool,
    /// The `ecointegra` binary that runs the nodes (default: the one beside
    /// this program, as cargo builds them).
    #[arg(long, env = "ECOINTEGRA_BIN")]
    pub node_binary: Option<PathBuf>,
    /// Another `ecointegra` binary, run as a third arm: two more nodes on
    /// topics of their own, alternated with the other arms in every round,
    /// so two builds are compared under the same conditions (a machine's
    /// speed drifts from one run to the next by more than most changes move
    /// it). The open loop runs both at the same rate.
    #[arg(long)]
    pub candidate: Option<PathBuf>,
}

impl BenchArgs {
    /// The node binary this run starts.
    pub fn node_binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.node_binary {
            return Ok(path.clone());
        }
        let here = std::env::current_exe()?;
        let beside = here.with_file_name("ecointegra");
        anyhow::ensure!(
            beside.exists(),
            "no `ecointegra` binary beside {}; build it (cargo build --release -p ecointegra-node) or pass --node-binary",
            here.display()
        );
        Ok(beside)
    }
}

/// How long one filing may take before it counts as lost.
pub(crate) fn completion_timeout(size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs_f64(size as f64 / 2e6)
}

/// Filings in flight in the closed loop: enough to fill the pipeline, not so
/// many that large documents only measure queueing.
fn concurrency_for(size: u64) -> usize {
    match size {
        s if s <= 4 * KIB => 64,
        s if s <= 128 * KIB => 32,
        s if s <= 2 * MIB => 16,
        s if s <= 16 * MIB => 4,
        _ => 1,
    }
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (digits, unit) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], KIB),
        Some('M') => (&t[..t.len() - 1], MIB),
        Some('G') => (&t[..t.len() - 1], GIB),
        _ => (t, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .with_context(|| format!("--sizes: {text:?} is not a size like 100K, 1M or 1G"))?;
    anyhow::ensure!(n > 0, "--sizes: {text:?} is empty");
    Ok(n * unit)
}

/// What a run measures.
struct Plan {
    smoke: bool,
    sizes: Vec<u64>,
    rounds: u32,
    phase: Duration,
    /// Load per arm before measuring (besides one filing each).
    warmup: Duration,
    /// Fewest filings in one open-loop phase.
    min_open_loop: u64,
    /// `--open-rate`: the open loop's rate, when not half the maximum.
    open_rate: Option<f64>,
}

impl Plan {
    fn of(args: &BenchArgs) -> anyhow::Result<Plan> {
        let sizes = if !args.sizes.is_empty() {
            args.sizes
                .iter()
                .map(|s| parse_size(s))
                .collect::<anyhow::Result<_>>()?
        } else if args.smoke {
            vec![KIB, MIB]
        } else if args.without_1gib {
            vec![KIB, 100 * KIB, MIB, 10 * MIB]
        } else {
            vec![KIB, 100 * KIB, MIB, 10 * MIB, GIB]
        };
        let phase_secs = args
            .phase_secs
            .unwrap_or(if args.smoke { 1.0 } else { 5.0 });
        anyhow::ensure!(phase_secs > 0.0, "--phase-secs must be positive");
        let warmup_secs = args
            .warmup_secs
            .unwrap_or(if args.smoke { 0.0 } else { 10.0 });
        anyhow::ensure!(warmup_secs >= 0.0, "--warmup-secs may not be negative");
        if let Some(rate) = args.open_rate {
            anyhow::ensure!(rate > 0.0, "--open-rate must be positive");
        }
        Ok(Plan {
            smoke: args.smoke,
            sizes,
            rounds: args.rounds.unwrap_or(if args.smoke { 1 } else { 3 }).max(1),
            phase: Duration::from_secs_f64(phase_secs),
            warmup: Duration::from_secs_f64(warmup_secs),
            min_open_loop: if args.smoke { 5 } else { 20 },
            open_rate: args.open_rate,
        })
    }
}

/// Runs the benchmark; exits non-zero if correctness failed.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::of(&args)?;
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let prefix = format!("bench-{}-{}", std::process::id(), hex::encode(random));
    let root = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("ecointegra-bench"))
        .join(&prefix);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let started_at_unix_ms = ecointegra_broker::now_ms();
    println!(
        "ecointegra bench ({} run): Kafka at {}, topic prefix {prefix}, work directory {}",
        if plan.smoke { "smoke" } else { "full" },
        args.bootstrap,
        root.display()
    );

    let broker_partitions = broker_partitions(&args.bootstrap).await?;
    let broker_pid = local_broker(&args.bootstrap);
    println!(
        "broker: {broker_partitions} partitions before this run; {}",
        match broker_pid {
            Some(pid) => format!("process {pid} on this machine (its CPU is counted)"),
            None => "not a process of this machine (its CPU is not counted)".to_owned(),
        }
    );
    if broker_partitions > CROWDED_BROKER {
        println!(
            "warning: a broker holding more than {CROWDED_BROKER} partitions spends its CPU \
             collecting garbage and slows both arms; measure on a fresh one \
             (deploy/kafka/kafka.sh stop, then start --fresh)"
        );
    }

    let quick = plan.smoke;
    let calibration_dir = root.join("calibration");
    let calibration =
        tokio::task::spawn_blocking(move || calibrate::run(&calibration_dir, quick)).await??;
    println!(
        "calibration: SHA-256 {:.2} GB/s, Ed25519 {:.0} signatures/s and {:.0} verifications/s, \
         4 KiB write+fsync p50 {} µs p99 {} µs, file creation p50 {} µs p99 {} µs, \
         HPKE seal+open {:.0} µs, {} {:.2} GB/s, Argon2id verifier {:.1} ms",
        calibration.sha256_gb_per_s,
        calibration.ed25519_signs_per_s,
        calibration.ed25519_verifies_per_s,
        calibration.fsync_p50_us,
        calibration.fsync_p99_us,
        calibration.file_create_p50_us,
        calibration.file_create_p99_us,
        calibration.hpke_seal_open_us,
        ecointegra_broker::crypto::Cipher::of_schema(ecointegra_broker::envelope::SCHEMA_VERSION)
            .name(),
        calibration.aead_gb_per_s,
        calibration.argon2id_ms
    );
    if let Some(warning) = calibrate::slow_creation(&calibration) {
        println!("{warning}");
    }

    let defaults = Config::default();
    let chunk_size = defaults.transfer.chunk_size as u64;
    let payload = Arc::new(payload::Payload::new()?);
    let system = System::start(
        &args.node_binary()?,
        &root,
        &args.bootstrap,
        &prefix,
        payload.clone(),
    )
    .await
    .context("the nodes did not start")?;
    let candidate = match &args.candidate {
        None => None,
        Some(binary) => {
            let started = System::start(
                binary,
                &root.join("candidate"),
                &args.bootstrap,
                &format!("{prefix}.candidate"),
                payload.clone(),
            )
            .await;
            match started {
                Ok(c) => {
                    println!(
                        "candidate: {} (its own two nodes, topics {prefix}.candidate.*)",
                        binary.display()
                    );
                    Some(c)
                }
                Err(e) => {
                    system.shutdown().await;
                    return Err(e.context("the candidate's nodes did not start"));
                }
            }
        }
    };
    let settings = kafka_settings(&args.bootstrap);
    let baseline = Baseline::start(
        &settings,
        &prefix,
        defaults.kafka.partitions,
        chunk_size,
        Duration::from_millis(defaults.kafka.message_timeout_ms),
        payload,
    )
    .await;
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            system.shutdown().await;
            if let Some(c) = &candidate {
                c.shutdown().await;
            }
            return Err(e.context("the baseline could not start"));
        }
    };

    let measured = measure(
        &plan,
        &system,
        candidate.as_ref(),
        &baseline,
        broker_pid,
        &root.join("sync-probe"),
    )
    .await;
    let mut problems = match &measured {
        Ok(_) => system
            .verify_stores()
            .into_iter()
            .chain(candidate.iter().flat_map(|c| {
                c.verify_stores()
                    .into_iter()
                    .map(|p| format!("candidate: {p}"))
            }))
            .collect(),
        Err(_) => Vec::new(),
    };
    baseline.shutdown().await;
    system.shutdown().await;
    if let Some(c) = &candidate {
        c.shutdown().await;
    }
    if !args.keep {
        // A run moves gigabytes the broker would otherwise keep for its
        // retention time, run after run.
        match delete_topics(&args.bootstrap, &prefix).await {
            Ok(n) => println!("deleted this run's {n} topics ({prefix}.*)"),
            Err(e) => println!("could not delete this run's topics ({prefix}.*): {e:#}"),
        }
    }
    let mut sizes = measured?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for size in &mut sizes {
        size.floor = Some(calibrate::Floor::of(
            &calibration,
            size.size_bytes,
            chunk_size,
            cores,
        ));
    }

    for size in &sizes {
        for (arm, r) in size.arms() {
            if !r.counts.all_equal() || r.counts.sent == 0 {
                problems.push(format!(
                    "{} {arm}: sent {}, accepted {}, delivered {}, receipted {}",
                    size.label,
                    r.counts.sent,
                    r.counts.accepted,
                    r.counts.delivered,
                    r.counts.receipted
                ));
            }
            if r.duplicates > 0 || r.hash_mismatches > 0 {
                problems.push(format!(
                    "{} {arm}: {} duplicates, {} hash or content mismatches",
                    size.label, r.duplicates, r.hash_mismatches
                ));
            }
            problems.extend(
                r.errors
                    .iter()
                    .map(|e| format!("{} {arm}: {e}", size.label)),
            );
        }
    }
    let report = Report {
        tool: "ecointegra bench",
        mode: if plan.smoke { "smoke" } else { "full" },
        started_at_unix_ms,
        machine: report::Machine::describe(),
        kafka_bootstrap: args.bootstrap.clone(),
        broker_partitions,
        topic_prefix: prefix,
        chunk_size,
        rounds: plan.rounds,
        phase_secs: plan.phase.as_secs_f64(),
        calibration,
        correct: problems.is_empty(),
        problems,
        notes: notes(),
        sizes,
    };

    println!();
    report::print_header();
    for size in &report.sizes {
        report::print_size(size);
    }
    println!();
    for size in &report.sizes {
        report::print_candidate(size);
    }
    report::print_floors(&report.sizes);
    println!(
        "(floor: the least CPU and disk a filing needs with every guarantee kept, from the \
         calibration; floor filings/s: what the machine's cores could move at that CPU)"
    );
    println!(
        "(filings/s and MB/s: closed loop; latencies: open loop at half the system's maximum, \
         submit to receipt (baseline: send to reply); CPU: nodes for the system, this process \
         for the baseline; peak RSS: origin/destination, or this process)"
    );
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, json + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("results written to {}", args.out.display());

    if report.correct {
        if !args.keep {
            let _ = std::fs::remove_dir_all(&root);
        }
        println!("correctness: every count matched, no duplicates, every digest verified");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "CORRECTNESS FAILED (work directory kept: {}):",
            root.display()
        );
        for p in &report.problems {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Deletes every topic named `<prefix>.*`; returns how many there were.
async fn delete_topics(bootstrap: &str, prefix: &str) -> anyhow::Result<usize> {
    use rdkafka::admin::AdminOptions;
    let mine = format!("{prefix}.");
    let (admin, topics) = topics(bootstrap).await?;
    let names: Vec<String> = topics
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(&mine))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&refs, &options).await? {
        if let Err((topic, code)) = result {
            anyhow::bail!("cannot delete {topic}: {code}");
        }
    }
    Ok(names.len())
}

/// The bench's own clients' settings for the broker at `bootstrap`.
fn kafka_settings(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        options: BTreeMap::new(),
        ..Default::default()
    }
}

/// Every topic the broker holds, with its partition count, and the admin
/// client that listed them, for more calls.
async fn topics(bootstrap: &str) -> anyhow::Result<(Admin, Vec<(String, usize)>)> {
    let admin = kafka_settings(bootstrap).admin()?;
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .context("cannot list the topics")?;
        let topics = metadata
            .topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        anyhow::Ok((admin, topics))
    })
    .await?
}

/// Partitions on the broker before this run: a broker left holding
/// thousands (topics other runs and tests left behind) spends much of its
/// CPU collecting garbage, and both arms' numbers with it.
async fn broker_partitions(bootstrap: &str) -> anyhow::Result<usize> {
    let (_, topics) = topics(bootstrap).await?;
    Ok(topics.iter().map(|(_, partitions)| partitions).sum())
}

type Admin = AdminClient<DefaultClientContext>;

/// Above this many partitions a measured broker is not one at rest.
const CROWDED_BROKER: usize = 1000;

fn notes() -> Vec<String> {
    vec![
        "Closed loop: a fixed number of filings in flight per arm (`concurrency`), each waiting for its receipt (baseline: reply) before the next starts.".into(),
        "Open loop: arrivals on a fixed schedule at half the system's closed-loop rate (or --open-rate) for both arms; latencies count from each filing's intended start (corrected for coordinated omission).".into(),
        "Baseline: raw rdkafka with the nodes' Publisher and InboxConsumer (acks=all, idempotence, same chunk size); destination-to-origin reply of 512 bytes in place of the receipt. It runs inside the bench process, so its CPU and RSS are this process's.".into(),
        "System: origin and destination are `ecointegra node run` child processes; CPU, peak RSS (VmHWM, reset per size through clear_refs) and write_bytes come from /proc/<pid>. The client (this process) is reported separately as `client`.".into(),
        "Disk bytes: write_bytes of the measured processes; the Kafka broker's own writes are not counted for either arm (they are listed by process as `broker` when it runs on this machine).".into(),
        "Machine CPU per filing: the closed loops' busy time of every CPU (/proc/stat) per filing, split into the arm's processes, the broker's (when its bootstrap address is this machine's loopback) and `other`; all of them share the machine, so it bounds the filings/s this machine can reach at that cost.".into(),
    ]
}

/// The process listening on the first address of `bootstrap`, if that
/// address is this machine's loopback: the broker the run shares the
/// machine with.
fn local_broker(bootstrap: &str) -> Option<u32> {
    let first = bootstrap.split(',').next()?.trim();
    let (host, port) = first.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    local.then(|| procfs::listening_pid(port.parse().ok()?))?
}

/// Where a process's counters come from.
#[derive(Clone, Copy)]
enum Source {
    /// This process (the bench, the system's client).
    This,
    Pid(u32),
    /// Every CPU of the machine, whatever runs on it.
    Machine,
}

/// The counters of every process an arm's work runs in, and of what shares
/// the machine with it (the broker, the whole machine).
struct Processes {
    names: Vec<(&'static str, Source)>,
}

impl Processes {
    fn of(names: Vec<(&'static str, Source)>, broker: Option<u32>) -> Processes {
        let mut names = names;
        names.extend(broker.map(|pid| ("broker", Source::Pid(pid))));
        names.push(("machine", Source::Machine));
        Processes { names }
    }

    fn read(&self) -> Vec<Sample> {
        self.names
            .iter()
            .map(|(_, source)| match source {
                Source::This => Sample::read(None),
                Source::Pid(pid) => Sample::read(Some(*pid)),
                Source::Machine => Sample::machine(),
            })
            .collect()
    }
}

/// One arm's results for one size, as they accumulate.
struct Tally {
    closed: Phase,
    closed_rounds: Vec<Throughput>,
    open: Phase,
    /// The sync probe's latencies during the open loops (µs).
    open_syncs: hdrhistogram::Histogram<u64>,
    usage: Vec<Delta>,
    /// The same, in the closed loops only.
    closed_usage: Vec<Delta>,
    duplicates_before: u64,
    mismatches_before: u64,
}

impl Tally {
    fn new(processes: usize, duplicates_before: u64, mismatches_before: u64) -> Tally {
        Tally {
            closed: Phase::new(),
            closed_rounds: Vec::new(),
            open: Phase::new(),
            open_syncs: report::micros(),
            usage: vec![Delta::default(); processes],
            closed_usage: vec![Delta::default(); processes],
            duplicates_before,
            mismatches_before,
        }
    }

    fn add_usage(&mut self, before: &[Sample], after: &[Sample]) {
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            self.usage[i] += a.since(b);
        }
    }

    fn add_closed_usage(&mut self, before: &[Sample], after: &[Sample]) {
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            let used = a.since(b);
            self.usage[i] += used;
            self.closed_usage[i] += used;
        }
    }
}

async fn measure(
    plan: &Plan,
    system: &Arc<System>,
    candidate: Option<&Arc<System>>,
    baseline: &Arc<Baseline>,
    broker: Option<u32>,
    probe_dir: &Path,
) -> anyhow::Result<Vec<SizeReport>> {
    let seqs = Arc::new(AtomicU64::new(0));
    let mut arms = vec![Arm::Baseline(baseline.clone()), Arm::System(system.clone())];
    arms.extend(candidate.map(|c| Arm::Candidate(c.clone())));
    let me = std::process::id();
    let processes: Vec<Processes> = arms
        .iter()
        .map(|arm| match arm.nodes() {
            None => Processes::of(vec![("bench", Source::This)], broker),
            Some(s) => Processes::of(
                vec![
                    ("origin", Source::Pid(s.origin.pid)),
                    ("destination", Source::Pid(s.destination.pid)),
                    ("client", Source::This),
                ],
                broker,
            ),
        })
        .collect();

    // Warm-up, not counted: one filing (topics, consumer assignment,
    // connections), then the broker's warm-up load.
    for arm in &arms {
        let warm = load::closed_loop(arm, KIB, 1, Duration::ZERO, Some(1), &seqs).await;
        if warm.receipted != 1 {
            anyhow::bail!(
                "the {} warm-up filing did not complete: {}",
                arm.name(),
                warm.errors.join("; ")
            );
        }
        if plan.warmup.is_zero() {
            continue;
        }
        let warm =
            load::closed_loop(arm, KIB, concurrency_for(KIB), plan.warmup, None, &seqs).await;
        if !warm.errors.is_empty() || warm.receipted == 0 {
            anyhow::bail!(
                "the {} warm-up load did not complete: {}",
                arm.name(),
                warm.errors.join("; ")
            );
        }
        println!(
            "warm-up: {} {} filings of 1 KiB in {:.1} s (not counted)",
            arm.name(),
            warm.receipted,
            warm.elapsed.as_secs_f64()
        );
    }
    println!("warm-up done: every arm moves a filing end to end");

    let cpus = report::Machine::describe().cpus;
    let mut reports = Vec::new();
    for &size in &plan.sizes {
        let label = report::size_label(size);
        let concurrency = concurrency_for(size);
        let huge = size >= GIB;
        let mut rss_reset = procfs::reset_peak_rss(me);
        for s in arms.iter().filter_map(Arm::nodes) {
            for pid in [s.origin.pid, s.destination.pid] {
                rss_reset &= procfs::reset_peak_rss(pid);
            }
        }
        let mut tallies: Vec<Tally> = arms
            .iter()
            .zip(&processes)
            .map(|(arm, p)| {
                let (duplicates, mismatches) = arm.faults();
                Tally::new(p.names.len(), duplicates, mismatches)
            })
            .collect();
        let rounds = if huge { 1 } else { plan.rounds };
        let max_filings = huge.then_some(1);
        for round in 1..=rounds {
            for i in turn_order(arms.len(), round) {
                let arm = &arms[i];
                let before = processes[i].read();
                let phase =
                    load::closed_loop(arm, size, concurrency, plan.phase, max_filings, &seqs).await;
                let after = processes[i].read();
                let throughput = Throughput::of(&phase, size);
                println!(
                    "[{label}] round {round}/{rounds} {:<8} closed loop x{concurrency}: {:>5} filings in {:>6.2} s, {:>8.1} filings/s, {:>8.1} MB/s{}",
                    arm.name(),
                    phase.receipted,
                    throughput.secs,
                    throughput.filings_per_s,
                    throughput.mb_per_s,
                    if phase.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ERRORS: {}", phase.errors.join("; "))
                    }
                );
                let tally = &mut tallies[i];
                tally.add_closed_usage(&before, &after);
                tally.closed_rounds.push(throughput);
                tally.closed.merge(&phase);
            }
        }
        let system_max = tallies[1].closed.filings_per_s();
        let rate = (!huge && system_max > 0.0).then(|| plan.open_rate.unwrap_or(system_max / 2.0));
        if let Some(rate) = rate {
            let count = ((rate * plan.phase.as_secs_f64()).ceil() as u64).max(plan.min_open_loop);
            for round in 1..=rounds {
                for i in turn_order(arms.len(), round) {
                    let arm = &arms[i];
                    let before = processes[i].read();
                    let probe = calibrate::SyncProbe::start(probe_dir)?;
                    let phase = load::open_loop(arm, size, rate, count, &seqs).await;
                    let synced = probe.finish()?;
                    let after = processes[i].read();
                    let receipted = report::LatencySummary::of(&phase.latency.receipted);
                    let disk_sync = report::LatencySummary::of(&synced);
                    println!(
                        "[{label}] round {round}/{rounds} {:<8} open loop at {rate:>7.1}/s: {:>5} filings, submit-to-receipt p50 {:>8.1} ms p99 {:>8.1} ms, disk sync p99 {:>6.1} ms max {:>6.1} ms{}",
                        arm.name(),
                        phase.receipted,
                        receipted.p50,
                        receipted.p99,
                        disk_sync.p99,
                        disk_sync.max,
                        if phase.errors.is_empty() {
                            String::new()
                        } else {
                            format!(" ERRORS: {}", phase.errors.join("; "))
                        }
                    );
                    let tally = &mut tallies[i];
                    tally.add_usage(&before, &after);
                    tally.open.merge(&phase);
                    tally.open_syncs.add(&synced)?;
                }
            }
        }

        let peak = |pid: Option<u32>| Sample::read(pid).peak_rss_kib;
        let mut reported =
            tallies
                .into_iter()
                .zip(&arms)
                .zip(&processes)
                .map(|((tally, arm), processes)| {
                    let (workers, peaks): (&[&str], _) = match arm.nodes() {
                        None => (&["bench"], BTreeMap::from([("bench", peak(None))])),
                        Some(s) => (
                            &["origin", "destination"],
                            BTreeMap::from([
                                ("origin", peak(Some(s.origin.pid))),
                                ("destination", peak(Some(s.destination.pid))),
                            ]),
                        ),
                    };
                    arm_report(tally, size, rate, processes, workers, peaks, arm.faults())
                });
        let (Some(baseline_report), Some(system_report)) = (reported.next(), reported.next())
        else {
            unreachable!("the baseline and the system are always measured")
        };
        let candidate_report = reported.next();
        let mut size_report = SizeReport {
            label,
            size_bytes: size,
            concurrency,
            open_loop_rate_per_s: rate,
            ratio_system_over_baseline: Ratio::of(&system_report, &baseline_report, false),
            ratio_candidate_over_system: candidate_report
                .as_ref()
                .map(|c| Ratio::of(c, &system_report, true)),
            baseline: baseline_report,
            system: system_report,
            candidate: candidate_report,
            floor: None,
        };
        if !rss_reset {
            size_report.system.errors.push(
                "peak RSS could not be reset per size: it is the peak since the process started"
                    .into(),
            );
        }
        println!();
        report::print_budget(&size_report, cpus);
        report::print_header();
        report::print_size(&size_report);
        report::print_candidate(&size_report);
        println!();
        reports.push(size_report);
    }
    Ok(reports)
}

/// The order in which round `round` runs `arms` arms (by index): the
/// baseline first, then the system and the candidate, whose order flips
/// every round so that neither always follows the other (what one leaves
/// behind, a checkpoint or a flush, falls on the next).
fn turn_order(arms: usize, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..arms).collect();
    if round.is_multiple_of(2) && arms > 2 {
        order[1..].reverse();
    }
    order
}

/// Turns one arm's tally into its report. `workers` names the processes whose
/// CPU and disk writes count as the arm's cost.
fn arm_report(
    tally: Tally,
    size: u64,
    rate: Option<f64>,
    processes: &Processes,
    workers: &[&str],
    peak_rss_kib: BTreeMap<&'static str, u64>,
    (duplicates_now, mismatches_now): (u64, u64),
) -> ArmReport {
    let mut all = Phase::new();
    all.merge(&tally.closed);
    all.merge(&tally.open);
    let filings = all.receipted.max(1) as f64;
    let closed_filings = tally.closed.receipted.max(1) as f64;
    let closed_loop_cpu_ms_per_filing = processes
        .names
        .iter()
        .zip(&tally.closed_usage)
        .map(|((name, _), usage)| (*name, usage.cpu_s * 1000.0 / closed_filings))
        .collect();
    let mut cpu = BTreeMap::new();
    let mut disk = BTreeMap::new();
    let (mut cpu_total, mut disk_total) = (0.0, 0.0);
    for ((name, _), usage) in processes.names.iter().zip(&tally.usage) {
        let c = usage.cpu_s / filings;
        let d = usage.write_bytes as f64 / filings;
        cpu.insert(*name, c);
        if *name != "machine" {
            disk.insert(*name, d);
        }
        if workers.contains(name) {
            cpu_total += c;
            disk_total += d;
        }
    }
    let open_loop = rate.map(|rate| OpenLoop {
        rate_per_s: rate,
        filings: tally.open.receipted,
        achieved_per_s: tally.open.filings_per_s(),
        latency_ms: report::latencies(&tally.open),
        disk_sync_ms: report::LatencySummary::of(&tally.open_syncs),
    });
    let mut errors = all.errors.clone();
    errors.truncate(5);
    ArmReport {
        counts: Counts::of(&all),
        duplicates: duplicates_now - tally.duplicates_before,
        hash_mismatches: mismatches_now - tally.mismatches_before,
        closed_loop: Throughput::of(&tally.closed, size),
        closed_loop_rounds: tally.closed_rounds,
        closed_loop_latency_ms: report::latencies(&tally.closed),
        open_loop,
        cpu_s_per_filing: cpu_total,
        cpu_s_per_filing_by_process: cpu,
        closed_loop_cpu_ms_per_filing,
        peak_rss_kib,
        disk_bytes_written_per_filing: disk_total,
        disk_bytes_written_per_filing_by_process: disk,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_arms_take_turns_after_the_baseline() {
        assert_eq!(turn_order(2, 1), [0, 1]);
        assert_eq!(turn_order(2, 2), [0, 1]);
        assert_eq!(turn_order(3, 1), [0, 1, 2]);
        assert_eq!(turn_order(3, 2), [0, 2, 1]);
        assert_eq!(turn_order(3, 3), [0, 1, 2]);
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1K").unwrap(), KIB);
        assert_eq!(parse_size("100KiB").unwrap(), 100 * KIB);
        assert_eq!(parse_size("10m").unwrap(), 10 * MIB);
        assert_eq!(parse_size("1G").unwrap(), GIB);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("x").is_err());
        assert_eq!(report::size_label(100 * KIB), "100 KiB");
        assert_eq!(report::size_label(GIB), "1 GiB");
    }
}
