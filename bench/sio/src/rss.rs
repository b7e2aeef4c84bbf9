//! Resident memory and CPU time of the system under test, read from `/proc`: the given
//! processes and all their descendants, so `btp up` (the gateway, with its API workers
//! as children) and a single Node process are measured the same way.

use std::collections::BTreeSet;

/// Sum of `VmRSS` over `roots` and their descendants, in bytes, and how many processes
/// that was. A process that vanished between listing and reading counts as zero.
pub fn tree_rss(roots: &[u32]) -> (u64, usize) {
    let tree = tree(roots);
    let total = tree.iter().filter_map(|&pid| vm_rss(pid)).sum();
    (total, tree.len())
}

/// CPU time the threads of `roots` and their descendants have run, in nanoseconds
/// (`/proc/PID/task/TID/schedstat`: nanosecond resolution, where `stat` counts 10 ms
/// ticks). Differences between two calls are what the tree ran in between, as long as
/// no thread exited (the runtimes' worker threads do not).
pub fn tree_cpu_ns(roots: &[u32]) -> u64 {
    tree(roots).iter().map(|&pid| cpu_ns(pid)).sum()
}

fn tree(roots: &[u32]) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children(pid));
        }
    }
    seen
}

fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| parse_schedstat(&line))
        .sum()
}

/// `run_ns wait_ns slices` → the time on CPU.
fn parse_schedstat(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:     1234 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Children of every thread of `pid` (a child belongs to the thread that forked it;
/// `btp up` forks its workers from a supervisor thread).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tbtp\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthread\n"), None);
    }

    #[test]
    fn schedstat_gives_the_time_on_cpu() {
        assert_eq!(parse_schedstat("123456789 5000 42\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn the_own_process_runs_up_cpu_time() {
        let before = tree_cpu_ns(&[std::process::id()]);
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(tree_cpu_ns(&[std::process::id()]) > before);
    }

    #[test]
    fn the_own_process_tree_has_a_resident_size() {
        let (bytes, processes) = tree_rss(&[std::process::id()]);
        assert!(bytes > 0);
        assert!(processes >= 1);
    }
}
