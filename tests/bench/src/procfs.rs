//! What Linux says about a process: CPU time, peak resident memory and bytes
//! written to storage, read from `/proc/<pid>/{stat,status,io}`.
//!
//! Everything here degrades to zeros where `/proc` is missing or unreadable:
//! the benchmark reports what it could measure instead of failing.

use std::sync::OnceLock;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU time, in seconds, since the process started.
    pub cpu_s: f64,
    /// Bytes the process caused to be sent to storage (`write_bytes`).
    pub write_bytes: u64,
    /// Peak resident set size (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
}

impl Sample {
    /// Reads the counters of `pid`, or of this process when `None`.
    pub fn read(pid: Option<u32>) -> Sample {
        let dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => "/proc/self".to_owned(),
        };
        Sample {
            cpu_s: cpu_seconds(&dir),
            write_bytes: field(&format!("{dir}/io"), "write_bytes:"),
            peak_rss_kib: field(&format!("{dir}/status"), "VmHWM:"),
        }
    }

    /// The CPU time and bytes written since `earlier`.
    pub fn since(&self, earlier: &Sample) -> Delta {
        Delta {
            cpu_s: (self.cpu_s - earlier.cpu_s).max(0.0),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
        }
    }
}

/// CPU time and bytes written over an interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    pub cpu_s: f64,
    pub write_bytes: u64,
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, other: Delta) {
        self.cpu_s += other.cpu_s;
        self.write_bytes += other.write_bytes;
    }
}

/// Resets the peak resident set size of `pid` to its current size (writing 5
/// to `clear_refs`, Linux 4.0 and later), so the next `VmHWM` is the peak of
/// what follows. Returns whether the kernel accepted it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn cpu_seconds(dir: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("{dir}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

fn field(path: &str, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `sysconf(_SC_CLK_TCK)` without `unsafe`: asked of `getconf` once; 100 (the
/// value on every common Linux) if that fails.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let sample = Sample::read(None);
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(sample.peak_rss_kib > 0);
        }
        let later = Sample::read(None);
        assert!(later.since(&sample).cpu_s >= 0.0);
    }
}
