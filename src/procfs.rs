//! A process's CPU time, memory, threads and file descriptors, read from
//! Linux's `/proc`: the one reader behind the relay's `process_*` metrics,
//! the load generator's cost report and the lab's server CPU and memory.
//!
//! A leaf, std only. The parsers take text, so they are tested without
//! `/proc`; the readers return `None` where `/proc` or the process is
//! missing, and never fail otherwise.

use std::path::PathBuf;

/// Clock ticks per second of the CPU times in `/proc/[pid]/stat`. Linux
/// reports them in USER_HZ, which is 100 on x86_64 and arm64 (the kernel
/// ABI fixes it there); asking `sysconf(_SC_CLK_TCK)` would need libc and
/// `unsafe`, which this crate forbids.
pub const CLK_TCK: f64 = 100.0;

/// Which process: this one (`/proc/self`) or another by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The calling process.
    Current,
    /// Another process.
    Id(u32),
}

impl Pid {
    fn path(self, file: &str) -> PathBuf {
        match self {
            Pid::Current => PathBuf::from(format!("/proc/self/{file}")),
            Pid::Id(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
        }
    }

    fn read(self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.path(file)).ok()
    }
}

/// What the process collector reports: one reading of a process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads this process's stats; `None` where `/proc` is missing.
    pub fn read() -> Option<Self> {
        Self::read_pid(Pid::Current)
    }

    /// Reads a process's stats; `None` where `/proc` or the process is missing.
    pub fn read_pid(pid: Pid) -> Option<Self> {
        let (ticks, threads, start_ticks) = parse_proc_stat(&pid.read("stat")?)?;
        let status = pid.read("status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t));
        Some(ProcessStats {
            cpu_seconds: ticks as f64 / CLK_TCK,
            resident_bytes: parse_status_bytes(&status, "VmRSS"),
            virtual_bytes: parse_status_bytes(&status, "VmSize"),
            threads: Some(threads),
            start_time_seconds: boot.map(|b| b as f64 + start_ticks as f64 / CLK_TCK),
            open_fds: open_fds(pid),
            max_fds: pid.read("limits").and_then(|t| parse_max_fds(&t)),
        })
    }
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    let (ticks, _, _) = parse_proc_stat(&pid.read("stat")?)?;
    Some(ticks as f64 / CLK_TCK)
}

/// Resident memory of a process, bytes.
pub fn resident_bytes(pid: Pid) -> Option<u64> {
    parse_status_bytes(&pid.read("status")?, "VmRSS")
}

/// Open file descriptors of a process.
pub fn open_fds(pid: Pid) -> Option<u64> {
    std::fs::read_dir(pid.path("fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// Fields of `/proc/[pid]/stat`: `(utime + stime in ticks, threads,
/// start time in ticks after boot)`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((num(14)? + num(15)?, num(20)?, num(22)?))
}

/// A `Key:   1234 kB` line of `/proc/[pid]/status`, in bytes.
pub fn parse_status_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The soft `Max open files` limit from `/proc/[pid]/limits` (`None` when
/// unlimited).
pub fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (we (ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 300 25 0 0 20 0 9 0 123456 1000000 200 18446744073709551615";
        assert_eq!(parse_proc_stat(stat), Some((325, 9, 123456)));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\ttickrelay\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_bytes(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSize"), Some(20480 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSwap"), None);
        // A key is matched whole: `VmRSS` is not `VmRSSx`.
        assert_eq!(parse_status_bytes("VmRSSx:\t1 kB\n", "VmRSS"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764300000\nprocesses 9\n"),
            Some(1_764_300_000)
        );
    }

    #[test]
    fn this_process_reads_from_proc() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let me = ProcessStats::read().expect("/proc/self is readable");
        assert!(me.resident_bytes.unwrap_or(0) > 0);
        assert!(me.open_fds.unwrap_or(0) > 0);
        assert!(me.threads.unwrap_or(0) >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start = me.start_time_seconds.unwrap_or(0.0);
        // A wrong clock-tick rate would put the start far from now.
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start}");
        let pid = Pid::Id(std::process::id());
        assert!(cpu_seconds(pid).is_some());
        assert!(resident_bytes(pid).unwrap_or(0) > 0);
        assert!(open_fds(pid).unwrap_or(0) > 0);
        assert_eq!(cpu_seconds(Pid::Id(u32::MAX)), None);
        assert_eq!(resident_bytes(Pid::Id(u32::MAX)), None);
    }
}
