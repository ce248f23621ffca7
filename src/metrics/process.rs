//! The `process_*` families every Prometheus client ships (CPU, memory, file descriptors,
//! start time), read from `/proc/self` at each scrape and rendered as text after the
//! recorder's output.
//!
//! Not through the `metrics` recorder: its counters are integers, and CPU seconds cut to
//! whole seconds make `rate(process_cpu_seconds_total[1m])` a staircase. metrics-process
//! (procfs underneath) has that flaw too (or renders the counter as a gauge), and pulls
//! procfs for five numbers. The parsers here are pure and tested on sample text; the reads
//! are in [`read`] only. On other systems, or when `/proc` cannot be read, the families that
//! could not be read are left out, never rendered as 0.
//!
//! Imports nothing of ours.

use std::fmt::Write as _;

/// The fields of `/proc/self/stat` we use, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after) = text.rsplit_once(')')?;
    // after[0] is field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time in Unix seconds, the `btime` line of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The soft limit on open files from `/proc/self/limits`: `Some(None)` when unlimited.
pub fn parse_max_open_files(text: &str) -> Option<Option<u64>> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

/// One reading, each value absent where it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// `None` when unreadable; an unlimited soft limit is left out too.
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Combines what was read: `ticks_per_second` and `page_size` from the kernel,
    /// `boot_time` from `/proc/stat`.
    pub fn from_parts(
        stat: Option<Stat>,
        ticks_per_second: u64,
        page_size: u64,
        boot_time: Option<u64>,
        open_fds: Option<u64>,
        max_fds: Option<Option<u64>>,
    ) -> Sample {
        let ticks = (ticks_per_second > 0).then_some(ticks_per_second as f64);
        Sample {
            cpu_seconds: stat.zip(ticks).map(|(s, t)| s.cpu_ticks as f64 / t),
            resident_bytes: stat.and_then(|s| s.resident_pages.checked_mul(page_size)),
            virtual_bytes: stat.map(|s| s.virtual_bytes),
            open_fds,
            max_fds: max_fds.flatten(),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot_time)
                .map(|((s, t), boot)| boot as f64 + s.start_ticks as f64 / t),
        }
    }

    /// Appends the families in Prometheus text format, each with its HELP and TYPE.
    pub fn render(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        };
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v as f64),
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v as f64),
        );
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v as f64),
        );
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (the soft limit).",
            self.max_fds.map(|v| v as f64),
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
    }
}

/// Reads `/proc/self` now. Everything that fails to read is left out of the sample.
#[cfg(target_os = "linux")]
pub fn read() -> Sample {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let stat = text("/proc/self/stat").as_deref().and_then(parse_stat);
    let boot_time = text("/proc/stat").as_deref().and_then(parse_boot_time);
    let max_fds = text("/proc/self/limits")
        .as_deref()
        .and_then(parse_max_open_files);
    // Counts the directory's own descriptor too, as the Go and Python clients do.
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64);
    Sample::from_parts(
        stat,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
        boot_time,
        open_fds,
        max_fds,
    )
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> Sample {
    Sample::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name holding a space and a parenthesis.
    const STAT: &str = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 2391 0 0 0 \
        150 37 0 0 20 0 9 0 123456 1048576000 5120 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17608 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 187,
                start_ticks: 123456,
                virtual_bytes: 1048576000,
                resident_pages: 5120
            }
        );
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("4242 (sluice) S 1 2 3"), None);
        assert_eq!(parse_stat(&STAT.replace(" 150 ", " x ")), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5\nctxt 99\nbtime 1765000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(text), Some(1765000000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn max_open_files_is_the_soft_limit() {
        assert_eq!(parse_max_open_files(LIMITS), Some(Some(1024)));
        let unlimited = LIMITS.replace("1024                 524288", "unlimited unlimited");
        assert_eq!(parse_max_open_files(&unlimited), Some(None));
        assert_eq!(parse_max_open_files("Limit Soft Hard\n"), None);
    }

    #[test]
    fn a_sample_converts_ticks_and_pages() {
        let sample = Sample::from_parts(
            parse_stat(STAT),
            100,
            4096,
            Some(1765000000),
            Some(12),
            Some(Some(1024)),
        );
        assert_eq!(sample.cpu_seconds, Some(1.87));
        assert_eq!(sample.resident_bytes, Some(5120 * 4096));
        assert_eq!(sample.virtual_bytes, Some(1048576000));
        assert_eq!(sample.start_time_seconds, Some(1765000000.0 + 1234.56));
        assert_eq!(sample.open_fds, Some(12));
        assert_eq!(sample.max_fds, Some(1024));
    }

    #[test]
    fn what_was_not_read_is_not_rendered() {
        let mut out = String::new();
        Sample {
            cpu_seconds: Some(1.5),
            ..Sample::default()
        }
        .render(&mut out);
        assert_eq!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
        );
    }
}
