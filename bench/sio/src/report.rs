//! The figures of one run and how they are printed: a markdown table row on stdout (the
//! run script stacks rows from several runs under one header) and the details on stderr.

use std::time::Duration;

/// Everything one run measured.
pub struct Figures {
    pub label: String,
    pub requested: usize,
    pub connected: usize,
    pub connect_time: Duration,
    pub rss_before: u64,
    pub rss_connected: u64,
    pub rss_after: u64,
    pub processes: usize,
    pub rounds: usize,
    /// Delivery latencies in nanoseconds (one per receiver per round).
    pub latencies: Vec<u64>,
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub echoes: u64,
    pub stray: u64,
    pub closed: u64,
    pub connect_failures: Vec<String>,
    /// CPU time from each push to its last delivery, summed over the rounds.
    pub cpu: RoundCpu,
}

/// CPU time run during broadcast rounds (the server's process tree, and this tool, which
/// shares the machine's cores with it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundCpu {
    pub server_ns: u64,
    pub tool_ns: u64,
}

impl Figures {
    pub fn connect_rate(&self) -> f64 {
        let secs = self.connect_time.as_secs_f64();
        if secs > 0.0 {
            self.connected as f64 / secs
        } else {
            0.0
        }
    }

    /// Memory the connections added, per connection.
    pub fn rss_per_connection(&self) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        self.rss_connected.saturating_sub(self.rss_before) as f64 / self.connected as f64
    }

    pub fn delivered_percent(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * self.delivered as f64 / self.expected as f64
    }

    /// Mean CPU time per round, server and tool, in nanoseconds.
    pub fn cpu_per_round(&self) -> (u64, u64) {
        let rounds = self.rounds.max(1) as u64;
        (self.cpu.server_ns / rounds, self.cpu.tool_ns / rounds)
    }

    /// `| server | N | connect rate | RSS/conn | p50 | p99 | max | delivered | CPU per
    /// round, server + tool |` — the header is printed by `bench/sio/run.sh`, which
    /// stacks rows of several runs.
    pub fn row(&self) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let n = if self.connected == self.requested {
            format!("{}", self.requested)
        } else {
            format!("{} ({} connected)", self.requested, self.connected)
        };
        format!(
            "| {} | {} | {:.0}/s | {:.1} KiB | {} | {} | {} | {:.2} % | {} + {} |",
            self.label,
            n,
            self.connect_rate(),
            self.rss_per_connection() / 1024.0,
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
            ms(sorted.last().copied()),
            self.delivered_percent(),
            ms(Some(self.cpu_per_round().0)),
            ms(Some(self.cpu_per_round().1)),
        )
    }

    pub fn details(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut out = format!(
            "{}: {}/{} connected in {:.2} s; RSS of {} process(es): {:.1} MiB before, {:.1} MiB connected, {:.1} MiB after {} rounds; \
             delivered {}/{} (duplicates {}, echoes to the sender {}, stray {}); sockets closed by the server {}",
            self.label,
            self.connected,
            self.requested,
            self.connect_time.as_secs_f64(),
            self.processes,
            mib(self.rss_before),
            mib(self.rss_connected),
            mib(self.rss_after),
            self.rounds,
            self.delivered,
            self.expected,
            self.duplicates,
            self.echoes,
            self.stray,
            self.closed,
        );
        if let Some(first) = self.connect_failures.first() {
            out.push_str(&format!(
                "\n{}: {} connect failures, first: {first}",
                self.label,
                self.connect_failures.len()
            ));
        }
        out
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn ms(nanos: Option<u64>) -> String {
    match nanos {
        Some(n) => format!("{:.1} ms", n as f64 / 1e6),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn memory_per_connection_counts_only_what_connecting_added() {
        let figures = Figures {
            label: "x".into(),
            requested: 10,
            connected: 10,
            connect_time: Duration::from_secs(2),
            rss_before: 1_000_000,
            rss_connected: 1_102_400,
            rss_after: 0,
            processes: 1,
            rounds: 1,
            latencies: vec![1_000_000, 3_000_000],
            expected: 9,
            delivered: 9,
            duplicates: 0,
            echoes: 0,
            stray: 0,
            closed: 0,
            connect_failures: Vec::new(),
            cpu: RoundCpu {
                server_ns: 4_000_000,
                tool_ns: 2_500_000,
            },
        };
        assert_eq!(figures.rss_per_connection(), 10_240.0);
        assert_eq!(figures.connect_rate(), 5.0);
        assert_eq!(figures.delivered_percent(), 100.0);
        assert_eq!(
            figures.row(),
            "| x | 10 | 5/s | 10.0 KiB | 1.0 ms | 3.0 ms | 3.0 ms | 100.00 % | 4.0 ms + 2.5 ms |"
        );
    }
}
