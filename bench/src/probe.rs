//! Readings from the server side: CPU seconds and resident memory of the node
//! processes from /proc, and the nodes' own send-latency histogram from
//! `/metrics`; and of the machine around them: its load and the CPU every
//! process on it used, so a run can say how busy the machine was.

use anyhow::Context;
use procfs::process::Process;
use procfs::{Current, CurrentSI, KernelStats, LoadAverage};

/// The send-latency histogram the nodes export (accepted → published).
const SEND_LATENCY_BUCKET: &str = "chorus_send_latency_seconds_bucket{";

/// User plus system CPU seconds used so far by all of `pids`.
pub fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let ticks = procfs::ticks_per_second() as f64;
    let mut total = 0.0;
    for &pid in pids {
        let stat = process(pid)?.stat()?;
        total += (stat.utime + stat.stime) as f64 / ticks;
    }
    Ok(total)
}

/// Resident set size in bytes, summed over `pids`.
pub fn rss_bytes(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for &pid in pids {
        let status = process(pid)?.status()?;
        total += status.vmrss.context("no VmRSS in /proc status")? * 1024;
    }
    Ok(total)
}

/// User plus system CPU seconds this process (the load generator) used so
/// far.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    let stat = Process::myself()?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// CPU seconds every core of the machine spent busy so far (user, nice,
/// system, interrupts), whoever it was for. Time the hypervisor gave to other
/// guests (steal) is not busy time here.
pub fn machine_cpu_seconds() -> anyhow::Result<f64> {
    let total = KernelStats::current()?.total;
    let ticks = total.user
        + total.nice
        + total.system
        + total.irq.unwrap_or(0)
        + total.softirq.unwrap_or(0);
    Ok(ticks as f64 / procfs::ticks_per_second() as f64)
}

/// The load averages over 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn load_average() -> anyhow::Result<[f32; 3]> {
    let load = LoadAverage::current()?;
    Ok([load.one, load.five, load.fifteen])
}

fn process(pid: u32) -> anyhow::Result<Process> {
    let id = i32::try_from(pid).context("process ids fit in i32")?;
    Process::new(id).with_context(|| format!("no process {pid} on this machine"))
}

/// Cumulative histogram buckets: `(upper bound in seconds, count)`, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// Sums the send-latency buckets over every node's `/metrics`.
    pub async fn scrape(nodes: &[String]) -> anyhow::Result<Self> {
        let mut sum = Self::default();
        for node in nodes {
            let text = reqwest::get(format!("{node}/metrics"))
                .await?
                .error_for_status()?
                .text()
                .await?;
            sum = sum.plus(&Self::parse(&text));
        }
        Ok(sum)
    }

    /// The send-latency buckets of one Prometheus text page.
    pub fn parse(text: &str) -> Self {
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(SEND_LATENCY_BUCKET)?;
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let count = rest.rsplit(' ').next()?.parse().ok()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self(buckets)
    }

    fn plus(&self, other: &Self) -> Self {
        if self.0.is_empty() {
            return other.clone();
        }
        Self(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| (a.0, a.1 + b.1))
                .collect(),
        )
    }

    /// What was recorded between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        if earlier.0.is_empty() {
            return self.clone();
        }
        Self(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(now, then)| (now.0, now.1 - then.1))
                .collect(),
        )
    }

    /// Observations counted.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile in seconds, interpolated linearly inside its bucket
    /// as Prometheus' `histogram_quantile` does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.0 {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let within = count - lower.1;
                let fraction = if within > 0.0 {
                    (rank - lower.1) / within
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * fraction);
            }
            lower = (le, count);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE chorus_send_latency_seconds histogram
chorus_send_latency_seconds_bucket{le="0.001"} 90
chorus_send_latency_seconds_bucket{le="0.002"} 99
chorus_send_latency_seconds_bucket{le="0.005"} 100
chorus_send_latency_seconds_bucket{le="+Inf"} 100
chorus_send_latency_seconds_sum 0.1
chorus_send_latency_seconds_count 100
chorus_other_bucket{le="1"} 5
"#;

    #[test]
    fn parses_only_the_send_latency_buckets() {
        let buckets = Buckets::parse(PAGE);
        assert_eq!(buckets.0.len(), 4);
        assert_eq!(buckets.count(), 100.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let buckets = Buckets::parse(PAGE);
        let p99 = buckets.quantile(0.99).expect("observations");
        assert!((p99 - 0.002).abs() < 1e-9, "{p99}");
        let p50 = buckets.quantile(0.5).expect("observations");
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn differences_count_only_the_new_observations() {
        let before = Buckets::parse(PAGE);
        let after = Buckets(before.0.iter().map(|&(le, c)| (le, c * 2.0)).collect());
        assert_eq!(after.since(&before), before);
        assert_eq!(Buckets::default().quantile(0.99), None);
    }
}
