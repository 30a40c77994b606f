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

    /// The CPU time the whole machine spent busy (every process, the
    /// kernel's interrupts included; `/proc/stat`), as `cpu_s`.
    pub fn machine() -> Sample {
        Sample {
            cpu_s: machine_busy_seconds(),
            ..Sample::default()
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

/// Busy time of all CPUs: the first line of `/proc/stat` without its idle
/// and iowait columns.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    busy_ticks(&stat) as f64 / clock_ticks_per_second()
}

fn busy_ticks(stat: &str) -> u64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user)
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// The process on this machine that listens on TCP `port` (the broker of a
/// bootstrap address on loopback), found through `/proc/net/tcp*` and the
/// processes' open sockets. `None` if no process here listens there or it
/// is not ours to look at.
pub fn listening_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
                .then_some(pid)
        })
}

/// The socket inodes of a `/proc/net/tcp` table listening on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening =
                u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == LISTEN;
            listening.then(|| fields.get(9).map(|i| (*i).to_owned()))?
        })
        .collect()
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

    #[test]
    fn the_machine_is_busy_without_its_idle_and_iowait_columns() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 7 0\ncpu0 50 2 25 4500 20 1 1 0 3 0\n";
        assert_eq!(busy_ticks(stat), 100 + 5 + 50 + 3 + 2 + 1);
        assert_eq!(busy_ticks("intr 1 2 3\n"), 0);
    }

    #[test]
    fn a_listener_is_found_by_its_port_in_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5501 1 0 100 0 0 10 0
   1: 0100007F:2384 0100007F:D0F2 01 00000000:00000000 00:00000000 00000000     0        0 5502 1 0 20 4 30 10 -1
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5503 1 0 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 9092), vec!["5501".to_owned()]);
        assert_eq!(listening_inodes(table, 8080), vec!["5503".to_owned()]);
        assert!(listening_inodes(table, 9093).is_empty());
    }

    #[test]
    fn this_process_is_found_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if std::path::Path::new("/proc/net/tcp").exists() {
            assert_eq!(listening_pid(port), Some(std::process::id()));
        }
        drop(listener);
    }
}
