//! The results: JSON-serialisable structures and the terminal table.

use super::calibrate::Calibration;
use super::load::Phase;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub mode: &'static str,
    pub started_at_unix_ms: i64,
    pub machine: Machine,
    pub kafka_bootstrap: String,
    /// Partitions the broker held before the run (other runs' and tests').
    pub broker_partitions: usize,
    pub topic_prefix: String,
    pub chunk_size: u64,
    pub rounds: u32,
    pub phase_secs: f64,
    pub calibration: Calibration,
    pub sizes: Vec<SizeReport>,
    /// Every count matched and nothing was duplicated or corrupted.
    pub correct: bool,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SizeReport {
    pub label: String,
    pub size_bytes: u64,
    /// Filings in flight in the closed loop, for both arms.
    pub concurrency: usize,
    /// Open-loop arrival rate: half the system's closed-loop maximum.
    pub open_loop_rate_per_s: Option<f64>,
    pub baseline: ArmReport,
    pub system: ArmReport,
    pub ratio_system_over_baseline: Ratio,
    /// Another build's two nodes (`--candidate`), alternated with the other
    /// arms in every round, and how it compares with the system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<ArmReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_candidate_over_system: Option<Ratio>,
    /// The least a filing of this size costs with every guarantee kept.
    pub floor: Option<super::calibrate::Floor>,
}

impl SizeReport {
    /// Every arm measured, by name: the baseline, the system, the candidate.
    pub fn arms(&self) -> Vec<(&'static str, &ArmReport)> {
        let mut arms = vec![("baseline", &self.baseline), ("system", &self.system)];
        arms.extend(self.candidate.as_ref().map(|c| ("candidate", c)));
        arms
    }
}

#[derive(Debug, Serialize)]
pub struct ArmReport {
    /// Sent, accepted, delivered and receipted (baseline: replied) filings,
    /// over every phase of this size.
    pub counts: Counts,
    pub duplicates: u64,
    pub hash_mismatches: u64,
    pub closed_loop: Throughput,
    pub closed_loop_rounds: Vec<Throughput>,
    pub closed_loop_latency_ms: BTreeMap<&'static str, LatencySummary>,
    pub open_loop: Option<OpenLoop>,
    /// CPU seconds per filing of the processes doing this arm's work.
    pub cpu_s_per_filing: f64,
    pub cpu_s_per_filing_by_process: BTreeMap<&'static str, f64>,
    /// The closed loops' CPU per filing in milliseconds, by process: the
    /// arm's own, the `broker`'s (when it runs on this machine) and the
    /// whole `machine`'s, which all of them share.
    pub closed_loop_cpu_ms_per_filing: BTreeMap<&'static str, f64>,
    /// Peak resident memory while this size ran, in KiB.
    pub peak_rss_kib: BTreeMap<&'static str, u64>,
    pub disk_bytes_written_per_filing: f64,
    pub disk_bytes_written_per_filing_by_process: BTreeMap<&'static str, f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub receipted: u64,
}

impl Counts {
    pub fn of(phase: &Phase) -> Counts {
        Counts {
            sent: phase.sent,
            accepted: phase.accepted,
            delivered: phase.delivered,
            receipted: phase.receipted,
        }
    }

    pub fn all_equal(&self) -> bool {
        self.sent == self.accepted && self.sent == self.delivered && self.sent == self.receipted
    }
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct Throughput {
    pub filings: u64,
    pub secs: f64,
    pub filings_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn of(phase: &Phase, size: u64) -> Throughput {
        let rate = phase.filings_per_s();
        Throughput {
            filings: phase.receipted,
            secs: phase.elapsed.as_secs_f64(),
            filings_per_s: rate,
            mb_per_s: rate * size as f64 / 1e6,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct OpenLoop {
    pub rate_per_s: f64,
    pub filings: u64,
    pub achieved_per_s: f64,
    /// From each filing's intended start (corrected for coordinated omission).
    pub latency_ms: BTreeMap<&'static str, LatencySummary>,
    /// A 4 KiB write and fsync beside the nodes' data, timed every 20 ms
    /// during the phase: what a durable commit waited for on the disk.
    pub disk_sync_ms: LatencySummary,
}

/// A histogram of latencies in microseconds, from 1 µs to an hour. Its range
/// is fixed on purpose: `saturating_record` clamps to the range a histogram
/// has *before* it would grow, so one made with `Histogram::new` (which starts
/// at about 2 ms) reported every longer stall as 2 ms.
pub fn micros() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Latencies of a phase under the names each arm gives its milestones.
pub fn latencies(phase: &Phase) -> BTreeMap<&'static str, LatencySummary> {
    BTreeMap::from([
        ("accepted", LatencySummary::of(&phase.latency.accepted)),
        ("delivered", LatencySummary::of(&phase.latency.delivered)),
        ("receipted", LatencySummary::of(&phase.latency.receipted)),
    ])
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub filings_per_s: f64,
    pub mb_per_s: f64,
    /// System p99 submit-to-receipt over baseline p99 round trip, open loop.
    pub p99_receipted: Option<f64>,
    /// Node CPU per filing over the other arm's (none against the baseline,
    /// whose CPU is the bench process's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_per_filing: Option<f64>,
}

impl Ratio {
    /// `arm` over `other`; with `cpu`, their CPU per filing too.
    pub fn of(arm: &ArmReport, other: &ArmReport, cpu: bool) -> Ratio {
        let p99 = |r: &ArmReport| {
            r.open_loop
                .as_ref()
                .and_then(|o| o.latency_ms.get("receipted"))
                .map(|l| l.p99)
        };
        Ratio {
            filings_per_s: quotient(
                arm.closed_loop.filings_per_s,
                other.closed_loop.filings_per_s,
            ),
            mb_per_s: quotient(arm.closed_loop.mb_per_s, other.closed_loop.mb_per_s),
            p99_receipted: p99(arm).zip(p99(other)).map(|(a, b)| quotient(a, b)),
            cpu_per_filing: cpu.then(|| quotient(arm.cpu_s_per_filing, other.cpu_s_per_filing)),
        }
    }
}

/// `a / b`, or 0 when there is no `b` to compare with.
fn quotient(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A byte count as "1 KiB", "10 MiB", "1 GiB".
pub fn size_label(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} B")
}

pub fn print_header() {
    println!(
        "{:<8} {:<9} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>10} {:>11} {:>18}",
        "size",
        "arm",
        "filings/s",
        "MB/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "CPU ms/f",
        "disk KiB/f",
        "peak RSS MiB"
    );
}

pub fn print_size(size: &SizeReport) {
    for (arm, report) in size.arms() {
        // Each node arm's MB/s over the baseline's.
        let ratio = (arm != "baseline").then(|| {
            quotient(
                report.closed_loop.mb_per_s,
                size.baseline.closed_loop.mb_per_s,
            )
        });
        let latency = report
            .open_loop
            .as_ref()
            .and_then(|o| o.latency_ms.get("receipted").copied())
            .unwrap_or_default();
        // origin/destination for the system, the one process for the baseline.
        let mut processes: Vec<(&str, u64)> =
            report.peak_rss_kib.iter().map(|(k, v)| (*k, *v)).collect();
        processes.sort_by_key(|(name, _)| match *name {
            "origin" => 0,
            "destination" => 1,
            _ => 2,
        });
        let rss = processes
            .iter()
            .map(|(_, k)| format!("{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join("/");
        let opt = |v: f64, n: u64| {
            if n == 0 {
                "-".to_owned()
            } else {
                format!("{v:.1}")
            }
        };
        println!(
            "{:<8} {:<9} {:>10.1} {:>9.1} {:>7} {:>9} {:>9} {:>9} {:>10.2} {:>11.1} {:>18}",
            size.label,
            arm,
            report.closed_loop.filings_per_s,
            report.closed_loop.mb_per_s,
            ratio.map_or("".to_owned(), |r| format!("{r:.2}")),
            opt(latency.p50, latency.count),
            opt(latency.p99, latency.count),
            opt(latency.p99_9, latency.count),
            report.cpu_s_per_filing * 1000.0,
            report.disk_bytes_written_per_filing / 1024.0,
            rss
        );
    }
}

/// What a filing costs the whole machine in each arm's closed loop, by
/// process, and the most filings per second `cpus` could move at that cost.
pub fn print_budget(size: &SizeReport, cpus: usize) {
    for (arm, report) in size.arms() {
        let cpu = &report.closed_loop_cpu_ms_per_filing;
        let Some(&machine) = cpu.get("machine").filter(|m| **m > 0.0) else {
            continue;
        };
        let processes: Vec<(&&str, &f64)> =
            cpu.iter().filter(|(name, _)| **name != "machine").collect();
        let named: f64 = processes.iter().map(|(_, ms)| **ms).sum();
        let parts: Vec<String> = processes
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.3}"))
            .chain(std::iter::once(format!(
                "other {:.3}",
                (machine - named).max(0.0)
            )))
            .collect();
        println!(
            "[{}] {arm:<8} machine CPU per filing, closed loop: {machine:.3} ms ({}); at that cost {cpus} CPUs move at most {:.1} filings/s",
            size.label,
            parts.join(", "),
            cpus as f64 * 1000.0 / machine,
        );
    }
}

/// The candidate against the system, if one ran: what two builds compare.
pub fn print_candidate(size: &SizeReport) {
    let Some(r) = &size.ratio_candidate_over_system else {
        return;
    };
    println!(
        "{:<8} candidate / system: filings/s {:.3}, node CPU per filing {}, p99 {}",
        size.label,
        r.filings_per_s,
        r.cpu_per_filing
            .map_or("-".to_owned(), |c| format!("{c:.3}")),
        r.p99_receipted
            .map_or("-".to_owned(), |p| format!("{p:.3}")),
    );
}

/// Where the system stands against the floor of each size.
pub fn print_floors(sizes: &[SizeReport]) {
    println!(
        "{:<8} {:>14} {:>12} {:>14} {:>16} {:>14}",
        "size", "floor CPU ms", "of which", "floor disk KiB", "floor filings/s", "system/floor"
    );
    for size in sizes {
        let Some(floor) = size.floor else { continue };
        let system = &size.system;
        println!(
            "{:<8} {:>14.2} {:>12} {:>14.1} {:>16.1} {:>14}",
            size.label,
            floor.cpu_ms,
            format!("{:.1} Argon2id", floor.argon2id_ms),
            floor.disk_kib,
            floor.max_filings_per_s,
            format!(
                "CPU {:.1}×, disk {:.1}×",
                system.cpu_s_per_filing * 1000.0 / floor.cpu_ms,
                system.disk_bytes_written_per_filing / 1024.0 / floor.disk_kib
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_of_a_quarter_second_reads_as_one() {
        let mut h = micros();
        for _ in 0..99 {
            h.saturating_record(400);
        }
        h.saturating_record(250_000);
        let summary = LatencySummary::of(&h);
        assert_eq!(summary.count, 100);
        assert!((249.0..=251.0).contains(&summary.max), "{summary:?}");
        assert!(summary.p50 < 0.5, "{summary:?}");
    }
}
