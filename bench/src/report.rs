//! The result of one run, as one JSON line, and the progress line printed
//! while it runs.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::redis::RedisProcess;

/// Everything one run measured; `None` where it could not be measured (no
/// node pids given, say).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The server kind loaded: `chorus`, or a peer (`socketioxide`,
    /// `socketio`).
    pub server: String,
    /// `fanout`, `rooms` or `idle`.
    pub scenario: String,
    /// The run's name in tables; re-runs with the same label replace it.
    pub label: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_at: u64,
    /// The scenario's inputs.
    pub params: serde_json::Value,
    /// Client connections held.
    pub connections: usize,
    /// Messages sent by publishers.
    pub sent: u64,
    /// Sends answered with an error frame (rate limited, unavailable …).
    pub rejected: u64,
    /// `sent - rejected`.
    pub accepted: u64,
    /// Deliveries owed: each accepted message times the members of its room.
    pub expected: u64,
    /// Distinct messages received, summed over receivers.
    pub delivered: u64,
    /// `expected - delivered`.
    pub lost: u64,
    /// Messages a receiver got more than once.
    pub duplicated: u64,
    /// Messages a receiver got after a later message of the same publisher
    /// (counted in `delivered` too).
    pub out_of_order: u64,
    /// Clients whose connection ended before the run did (closed by the
    /// server as too slow, say).
    pub disconnected: u64,
    /// Seconds the publishers were sending.
    pub send_window_s: f64,
    /// Deliveries per second of the send window.
    pub deliveries_per_sec: Option<f64>,
    /// Send-to-receipt latency over every delivery.
    pub latency_ms: Option<Latency>,
    /// CPU seconds of the node processes during the run.
    pub server_cpu_s: Option<f64>,
    /// Node CPU seconds spent connecting and joining every client (idle).
    pub connect_cpu_s: Option<f64>,
    /// Node CPU seconds per million deliveries.
    pub cpu_s_per_million_deliveries: Option<f64>,
    /// Deliveries per node CPU second.
    pub deliveries_per_cpu_s: Option<f64>,
    /// CPU seconds of Redis during the run (all its processes, with
    /// --redis-port).
    pub redis_cpu_s: Option<f64>,
    /// `one` (a lone Redis) or `cluster` (a Redis Cluster), with --redis-port.
    pub redis_topology: Option<String>,
    /// Every Redis process given by --redis-port: role, port, CPU and
    /// commands during the run, a primary's keys at its end.
    pub redis_processes: Option<Vec<RedisProcess>>,
    /// CPU seconds the load generator itself used during the run.
    pub bench_cpu_s: Option<f64>,
    /// Busy CPU seconds of the whole machine during the run (every process,
    /// ours and anyone else's).
    pub machine_cpu_s: Option<f64>,
    /// Load averages (1, 5, 15 minutes) before the clients connected.
    pub loadavg_at_start: Option<[f32; 3]>,
    /// Load averages when the run ended.
    pub loadavg_at_end: Option<[f32; 3]>,
    /// Resident memory of the nodes at the end of the run.
    pub server_rss_bytes: Option<u64>,
    /// Resident memory of the nodes before the clients connected.
    pub baseline_rss_bytes: Option<u64>,
    /// `(server - baseline) / connections`.
    pub rss_per_connection_bytes: Option<f64>,
    /// The nodes' own accepted → published p99, from their histograms.
    pub send_latency_p99_ms: Option<f64>,
    /// Observations behind `send_latency_p99_ms`.
    pub send_latency_samples: Option<u64>,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest seen.
    pub max: f64,
}

impl Latency {
    /// Quantiles of a histogram recorded in microseconds.
    pub fn from_micros(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

impl Report {
    /// Appends this report as one JSON line to `path`.
    pub fn append_to(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} [{} on {}]: {} connections",
            self.label, self.scenario, self.server, self.connections
        );
        if self.sent > 0 {
            out += &format!(
                "\n  sent {} accepted {} rejected {} | delivered {} of {} | lost {} duplicated {} out of order {} | disconnected {}",
                self.sent,
                self.accepted,
                self.rejected,
                self.delivered,
                self.expected,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.disconnected
            );
        }
        if let Some(rate) = self.deliveries_per_sec {
            out += &format!(
                "\n  {rate:.0} deliveries/s over {:.1} s",
                self.send_window_s
            );
        }
        if let Some(l) = self.latency_ms {
            out += &format!(
                "\n  latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
                l.p50, l.p99, l.p999, l.max
            );
        }
        if let (Some(cpu), Some(per_m)) = (self.server_cpu_s, self.cpu_s_per_million_deliveries) {
            out += &format!("\n  node CPU {cpu:.2} s = {per_m:.2} s per million deliveries");
        }
        if let Some(cpu) = self.connect_cpu_s {
            out += &format!("\n  node CPU to connect and join: {cpu:.2} s");
        }
        if let Some(redis) = self.redis_cpu_s {
            out += &format!("\n  redis CPU {redis:.2} s");
        }
        for p in self.redis_processes.iter().flatten() {
            out += &format!(
                "\n    {} {}{}: CPU {:.2} s, {} commands",
                p.role,
                p.port,
                p.slots
                    .as_ref()
                    .map(|s| format!(" (slots {s})"))
                    .unwrap_or_default(),
                p.cpu_s,
                p.commands
            );
            if let Some(k) = &p.keys {
                out += &format!(
                    ", {} keys (online {} rooms {} nodes {}), channels {} shard channels {}",
                    k.dbsize, k.online, k.rooms, k.nodes, k.channels, k.shard_channels
                );
            }
        }
        if let (Some(machine), Some(start)) = (self.machine_cpu_s, self.loadavg_at_start) {
            out += &format!(
                "\n  machine busy CPU {machine:.2} s (load generator {:.2} s); load at start {:.2} {:.2} {:.2}",
                self.bench_cpu_s.unwrap_or(f64::NAN),
                start[0],
                start[1],
                start[2]
            );
        }
        if let Some(p99) = self.send_latency_p99_ms {
            out += &format!("\n  send latency (accepted -> published) p99 {p99:.3} ms");
        }
        if let (Some(rss), Some(per)) = (self.server_rss_bytes, self.rss_per_connection_bytes) {
            out += &format!(
                "\n  node RSS {:.1} MiB, {:.2} KiB per connection",
                rss as f64 / 1_048_576.0,
                per / 1024.0
            );
        }
        out
    }
}

/// Prints `line()` to stderr every second until dropped.
pub struct Progress {
    stop: CancellationToken,
}

impl Progress {
    /// Starts printing; `line` gets the seconds since the start.
    pub fn start(line: impl Fn(f64) -> String + Send + Sync + 'static) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let line = Arc::new(line);
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    _ = tick.tick() => eprintln!("{}", line(started.elapsed().as_secs_f64())),
                }
            }
        });
        Self { stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
