//! What a process's threads used between two readings: CPU time and how often they were
//! preempted, from Linux's per-thread `/proc/PID/task/TID/schedstat` and `status`.
//!
//! `schedstat`'s first field is the scheduler's own count of a thread's time on a CPU, in
//! nanoseconds (what `perf stat`'s `task-clock` reads; brought up to date when the thread
//! leaves a CPU or at a tick, so a reading is behind by at most a tick per running thread). `/proc/PID/stat`'s user and system
//! ticks (1/100 s) are a sample taken at each tick: they undercount a thread that runs in
//! short bursts and sleeps in between — the gateway's HTTP workers under the bench's client,
//! by about 40 % (8.7 against 14.7 µs per answer; `perf stat` agreed with `schedstat`).

use std::collections::HashMap;

/// One thread's counters: nanoseconds on a CPU, involuntary context switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ThreadCounters {
    cpu_nanos: u64,
    preempted: u64,
}

/// The counters of every thread of a process (and of its children's, when asked), by thread
/// id, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reading(HashMap<u32, ThreadCounters>);

/// What the threads used between two [`Reading`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// CPU time, seconds.
    pub(crate) cpu_seconds: f64,
    /// Involuntary context switches: times a thread was taken off a CPU while it could run.
    pub(crate) preempted: u64,
}

impl Reading {
    /// Reads the threads of process `pid`, and of its child processes (nginx's workers) when
    /// `children`. `None` when `pid` cannot be read (not Linux, or gone).
    pub(crate) fn of(pid: u32, children: bool) -> Option<Self> {
        let mut threads = HashMap::new();
        read_threads(pid, &mut threads)?;
        if children {
            for child in child_processes(pid) {
                // A child that ends meanwhile is skipped, not an error.
                let _ = read_threads(child, &mut threads);
            }
        }
        Some(Self(threads))
    }

    /// What was used from `before` to this reading. A thread started in between counts from
    /// zero; a thread that ended in between is missing from both sides (its time since
    /// `before` is lost: the servers' threads live as long as the bench drives them).
    pub(crate) fn since(&self, before: &Reading) -> Usage {
        let mut usage = Usage {
            cpu_seconds: 0.0,
            preempted: 0,
        };
        for (thread, now) in &self.0 {
            let then = before.0.get(thread).copied().unwrap_or_default();
            usage.cpu_seconds += now.cpu_nanos.saturating_sub(then.cpu_nanos) as f64 / 1e9;
            usage.preempted += now.preempted.saturating_sub(then.preempted);
        }
        usage
    }
}

/// Adds the counters of every thread of `pid` to `threads`.
fn read_threads(pid: u32, threads: &mut HashMap<u32, ThreadCounters>) -> Option<()> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Some(thread) = entry.file_name().to_str().and_then(|id| id.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let (Ok(schedstat), Ok(status)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        if let Some(counters) = parse(&schedstat, &status) {
            threads.insert(thread, counters);
        }
    }
    Some(())
}

/// A thread's counters from its `schedstat` (`NANOS WAITING SLICES`) and `status`
/// (`nonvoluntary_ctxt_switches:\tN`).
fn parse(schedstat: &str, status: &str) -> Option<ThreadCounters> {
    let cpu_nanos = schedstat.split_whitespace().next()?.parse().ok()?;
    let preempted = status
        .lines()
        .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()?;
    Some(ThreadCounters {
        cpu_nanos,
        preempted,
    })
}

/// The ids of the processes whose parent is `pid`.
pub(crate) fn child_processes(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After `(command)`: state, then the parent's id.
            let parent: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_s_counters_are_read_from_schedstat_and_status() {
        let status = "Name:\tactix-server_wo\nvoluntary_ctxt_switches:\t27046\n\
                      nonvoluntary_ctxt_switches:\t1544\n";
        assert_eq!(
            parse("712928078 512401142 8045\n", status),
            Some(ThreadCounters {
                cpu_nanos: 712_928_078,
                preempted: 1544
            })
        );
        assert_eq!(parse("", status), None);
        assert_eq!(parse("1 2 3", "Name:\tx\n"), None);
    }

    #[test]
    fn usage_counts_new_threads_from_zero_and_never_goes_negative() {
        let counters = |cpu_nanos, preempted| ThreadCounters {
            cpu_nanos,
            preempted,
        };
        let before = Reading(HashMap::from([
            (1, counters(1_000_000_000, 10)),
            (2, counters(5, 5)),
        ]));
        let after = Reading(HashMap::from([
            (1, counters(1_500_000_000, 12)),
            // Thread 2 ended; thread 3 started.
            (3, counters(250_000_000, 1)),
        ]));
        assert_eq!(
            after.since(&before),
            Usage {
                cpu_seconds: 0.75,
                preempted: 3
            }
        );
        // A thread id reused with smaller counters: nothing rather than a negative figure.
        let reused = Reading(HashMap::from([(1, counters(7, 0))]));
        assert_eq!(
            reused.since(&before),
            Usage {
                cpu_seconds: 0.0,
                preempted: 0
            }
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let before = Reading::of(std::process::id(), false).expect("this process");
        // Some work on this thread, so that its CPU time moves.
        let mut sum = 0u64;
        for i in 0..2_000_000u64 {
            sum = sum.wrapping_add(std::hint::black_box(i * i));
        }
        std::hint::black_box(sum);
        // A thread's count moves when it leaves a CPU (or at a tick), not while it runs.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = Reading::of(std::process::id(), false).expect("this process");
        assert!(after.since(&before).cpu_seconds > 0.0);
    }
}
