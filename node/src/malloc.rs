//! glibc's allocator, tuned for a node (and the benchmark's baseline) before it starts.
//!
//! A node moves documents in records of up to 512 KiB: each is encoded,
//! sealed and copied into librdkafka (whose copy is C's `malloc`), and freed
//! once Kafka has it. glibc serves such a block from an `mmap` of its own, or
//! returns the top of a heap to the kernel once more than twice that much is
//! free there, so every record wrote into pages the kernel had just zeroed:
//! page faults and `clear_page` were 9% of the origin's CPU at 10 MiB (perf,
//! README item 38). Blocks below 4 MiB served from the heaps, and heaps
//! trimmed only above 8 MiB free, reuse those pages instead.
//!
//! glibc reads its tunables from the environment when a process starts, so
//! `ecointegra node run` sets them and executes itself again, once (the
//! process keeps its id). An operator who sets `GLIBC_TUNABLES` keeps it as
//! given, and a build for another C library is left alone.

use std::ffi::OsString;

/// The variable glibc reads at start.
const VARIABLE: &str = "GLIBC_TUNABLES";

/// Blocks below 4 MiB from the heaps; a heap trimmed above 8 MiB free.
pub const TUNABLES: &str =
    "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=8388608";

/// Executes this program again with [`TUNABLES`] set, unless the
/// environment already says how glibc's allocator runs. Returns only if it
/// does not execute (nothing to do, or the execution failed: the node then
/// runs untuned, which is slower, not wrong), with the reason.
pub fn tune() -> Option<String> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    if std::env::var_os(VARIABLE).is_some() {
        return None;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("ecointegra"));
    Some(exec_again(arg0, args.collect()))
}

#[cfg(unix)]
fn exec_again(arg0: OsString, args: Vec<OsString>) -> String {
    use std::os::unix::process::CommandExt;
    // The running program itself, even if its file was replaced since.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VARIABLE, TUNABLES)
        .exec();
    format!("cannot set {VARIABLE} (running with glibc's defaults): {error}")
}

#[cfg(not(unix))]
fn exec_again(_arg0: OsString, _args: Vec<OsString>) -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's loader, asked which values it took from [`TUNABLES`]: both
    /// thresholds, as they are written.
    #[test]
    fn glibc_takes_both_thresholds() {
        let loader = "/lib64/ld-linux-x86-64.so.2";
        if !cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
            return;
        }
        let out = std::process::Command::new(loader)
            .arg("--list-tunables")
            .env(VARIABLE, TUNABLES)
            .output()
            .unwrap_or_else(|e| panic!("{loader} runs: {e}"));
        let listed = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            listed
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        assert_eq!(
            value("glibc.malloc.mmap_threshold").as_deref(),
            Some("0x400000"),
            "{listed}"
        );
        assert_eq!(
            value("glibc.malloc.trim_threshold").as_deref(),
            Some("0x800000"),
            "{listed}"
        );
    }
}
