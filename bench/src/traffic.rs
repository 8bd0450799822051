//! Traffic scenarios: rooms of members, the first few of each room publishing
//! at a fixed rate, everyone counting what arrives.
//!
//! A published message's content is `b <publisher> <seq> <sent µs> <padding>`.
//! Each receiver keeps, per publisher, the newest sequence it saw and the
//! older ones still missing. A sequence below the newest that was missing is
//! delivered **out of order** (a later message of the same publisher came
//! first); one that was not missing is a **duplicate**; whatever is owed but
//! never arrived is **lost**. chorus promises the first never happens (the
//! room's history order); the counts are kept the same way for every
//! protocol.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::Target;
use crate::client::{self, Client, Inbound};
use crate::probe::{self, Buckets};
use crate::redis::{KeySpread, RedisServer, Usage};
use crate::report::{Latency, Progress, Report};

/// Latency samples a connection collects before merging them into a shared
/// histogram, so receivers rarely touch a lock.
const SAMPLE_BATCH: usize = 256;
/// Shared latency histograms; receivers pick one by index.
const SHARDS: usize = 16;
/// The most sequences one receiver keeps as missing per publisher, so memory
/// stays bounded whatever arrives; after a jump further ahead than this, the
/// oldest skipped ones are no longer tracked (arriving later, they would
/// count as duplicates). Runs here send a few thousand per publisher.
const MAX_MISSING: u64 = 1 << 20;
/// After the last send, how long deliveries may stall before the run ends
/// and whatever is missing counts as lost.
const SETTLE: Duration = Duration::from_secs(3);
/// The longest wait for stragglers after the last send.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// The shape and rate of a traffic run.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Rooms.
    pub rooms: usize,
    /// Members per room; every member receives every message of its room.
    pub members: usize,
    /// Members per room that also publish.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    /// How long the publishers send.
    pub duration: Duration,
    /// Extra content bytes per message.
    pub payload: usize,
}

impl Traffic {
    /// Client connections the run holds.
    pub fn connections(&self) -> usize {
        self.rooms * self.members
    }
}

/// Counters every connection adds to.
struct Shared {
    epoch: Instant,
    sent: AtomicU64,
    rejected: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    disconnected: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn new() -> anyhow::Result<Self> {
        let latency = (0..SHARDS)
            .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            latency,
        })
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn record(&self, shard: usize, samples: &mut Vec<u64>) {
        let mut histogram = self.latency[shard % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &us in samples.iter() {
            histogram.saturating_record(us.max(1));
        }
        samples.clear();
    }
}

/// What a publishing member sends and when.
struct Publishing {
    id: usize,
    room: String,
    start: tokio::time::Instant,
    interval: Duration,
    until: tokio::time::Instant,
    padding: String,
}

/// Runs `traffic` and reports it as scenario `name`.
pub async fn run(
    target: &Target,
    name: &str,
    traffic: &Traffic,
    label: &str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        traffic.rooms > 0 && traffic.members > 0 && traffic.publishers <= traffic.members,
        "need at least one room and member, and no more publishers than members"
    );
    anyhow::ensure!(traffic.rate > 0.0, "the rate must be positive");
    let started_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let run_id = started_at % 1_000_000;
    let room = |i: usize| format!("bench-{run_id}-{}", i / traffic.members);
    let count = traffic.connections();
    let loadavg_at_start = probe::load_average().ok();

    eprintln!(
        "{label}: connecting {count} clients to {} node(s)",
        target.nodes.len()
    );
    let clients = client::connect_all(target, count, room).await?;
    let mut redis = Vec::with_capacity(target.redis_ports.len());
    for &port in &target.redis_ports {
        redis.push(RedisServer::discover(port).await?);
    }

    let shared = Arc::new(Shared::new()?);
    let machine_before = probe::machine_cpu_seconds().ok();
    let bench_before = probe::own_cpu_seconds().ok();
    let redis_usage_before = usage(&redis).await?;
    let cpu_before = cpu(&target.pids);
    let redis_before = target.redis_pid.map(|pid| cpu(&[pid]));
    let buckets_before = Buckets::scrape(&target.nodes).await.ok();

    let total_publishers = (traffic.rooms * traffic.publishers).max(1);
    let interval = Duration::from_secs_f64(1.0 / traffic.rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let until = start + traffic.duration;
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(count);
    for (i, client) in clients.into_iter().enumerate() {
        let (room_index, position) = (i / traffic.members, i % traffic.members);
        let publishing = (position < traffic.publishers).then(|| {
            // Spread the sends over the interval, and a room's publishers
            // evenly within it, as people in a room do not all type at once.
            let rank = position * traffic.rooms + room_index;
            let offset = interval.mul_f64(rank as f64 / total_publishers as f64);
            Publishing {
                id: i,
                room: room(i),
                start: start + offset,
                interval,
                until,
                padding: "x".repeat(traffic.payload),
            }
        });
        tasks.push(tokio::spawn(member(
            client,
            i,
            traffic.members as u64,
            publishing,
            shared.clone(),
            stop.clone(),
        )));
    }

    let progress = {
        let shared = shared.clone();
        let label = label.to_owned();
        Progress::start(move |t| {
            format!(
                "{label}: {t:5.1}s sent {} delivered {} of {} rejected {} duplicated {} out of order {} disconnected {}",
                shared.sent.load(Relaxed),
                shared.delivered.load(Relaxed),
                shared.expected.load(Relaxed),
                shared.rejected.load(Relaxed),
                shared.duplicated.load(Relaxed),
                shared.out_of_order.load(Relaxed),
                shared.disconnected.load(Relaxed),
            )
        })
    };
    tokio::time::sleep_until(until).await;
    settle(&shared).await;
    // While every client is still connected, so the tallies count them.
    let mut spreads: Vec<Option<KeySpread>> = Vec::with_capacity(redis.len());
    for server in &redis {
        spreads.push(server.key_spread().await?);
    }
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    drop(progress);

    let server_cpu_s = cpu_before.and_then(|before| Some(cpu(&target.pids)? - before));
    let redis_usage_after = usage(&redis).await?;
    let redis_processes: Vec<_> = redis
        .iter()
        .zip(redis_usage_before.into_iter().zip(redis_usage_after))
        .zip(spreads)
        .map(|((server, (before, after)), keys)| server.report(&before, &after, keys))
        .collect();
    let bench_cpu_s = bench_before.and_then(|before| Some(probe::own_cpu_seconds().ok()? - before));
    let machine_cpu_s =
        machine_before.and_then(|before| Some(probe::machine_cpu_seconds().ok()? - before));
    let redis_cpu_s = match target.redis_pid {
        Some(pid) => cpu(&[pid])
            .zip(redis_before.flatten())
            .map(|(after, before)| after - before),
        None => {
            (!redis_processes.is_empty()).then(|| redis_processes.iter().map(|p| p.cpu_s).sum())
        }
    };
    let send_latency = match (buckets_before, Buckets::scrape(&target.nodes).await.ok()) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for shard in &shared.latency {
        latency.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))?;
    }

    let sent = shared.sent.load(Relaxed);
    let rejected = shared.rejected.load(Relaxed);
    let expected = shared.expected.load(Relaxed);
    let delivered = shared.delivered.load(Relaxed);
    let window = traffic.duration.as_secs_f64();
    let per_million = server_cpu_s
        .filter(|_| delivered > 0)
        .map(|cpu| cpu / (delivered as f64 / 1e6));
    Ok(Report {
        scenario: name.to_owned(),
        label: label.to_owned(),
        started_at,
        params: serde_json::json!({
            "rooms": traffic.rooms,
            "members": traffic.members,
            "publishers": traffic.publishers,
            "rate": traffic.rate,
            "duration_s": window,
            "payload": traffic.payload,
            "nodes": target.nodes.len(),
            "connections": count,
        }),
        connections: count,
        sent,
        rejected,
        accepted: sent - rejected,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated: shared.duplicated.load(Relaxed),
        out_of_order: shared.out_of_order.load(Relaxed),
        disconnected: shared.disconnected.load(Relaxed),
        send_window_s: window,
        deliveries_per_sec: Some(delivered as f64 / window),
        latency_ms: Latency::from_micros(&latency),
        server_cpu_s,
        cpu_s_per_million_deliveries: per_million,
        deliveries_per_cpu_s: per_million.filter(|c| *c > 0.0).map(|c| 1e6 / c),
        redis_cpu_s,
        redis_topology: redis.first().map(|server| {
            if server.is_cluster() {
                "cluster"
            } else {
                "one"
            }
            .to_owned()
        }),
        redis_processes: (!redis_processes.is_empty()).then_some(redis_processes),
        bench_cpu_s,
        machine_cpu_s,
        loadavg_at_start,
        loadavg_at_end: probe::load_average().ok(),
        server_rss_bytes: probe::rss_bytes(&target.pids)
            .ok()
            .filter(|_| !target.pids.is_empty()),
        send_latency_p99_ms: send_latency
            .as_ref()
            .and_then(|b| b.quantile(0.99))
            .map(|s| s * 1000.0),
        send_latency_samples: send_latency.map(|b| b.count() as u64),
        ..Report::default()
    })
}

/// What each of `servers` used so far.
async fn usage(servers: &[RedisServer]) -> anyhow::Result<Vec<Usage>> {
    let mut usage = Vec::with_capacity(servers.len());
    for server in servers {
        usage.push(server.usage().await?);
    }
    Ok(usage)
}

/// CPU seconds of `pids`, or `None` when there are none to read.
fn cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    probe::cpu_seconds(pids)
        .inspect_err(|e| eprintln!("cannot read node CPU: {e:#}"))
        .ok()
}

/// Waits until every owed delivery arrived, or nothing arrived for
/// [`SETTLE`], or [`SETTLE_MAX`] passed.
async fn settle(shared: &Shared) {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = shared.delivered.load(Relaxed);
    let mut last_change = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline {
        tick.tick().await;
        let delivered = shared.delivered.load(Relaxed);
        if delivered >= shared.expected.load(Relaxed) {
            return;
        }
        if delivered != last {
            last = delivered;
            last_change = Instant::now();
        } else if last_change.elapsed() > SETTLE {
            return;
        }
    }
}

/// One member: reads and counts until `stop`, publishing on its schedule.
async fn member(
    mut client: Client,
    index: usize,
    room_members: u64,
    publishing: Option<Publishing>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut ticker = publishing.as_ref().map(|p| {
        let mut ticker = tokio::time::interval_at(p.start, p.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticker
    });
    let mut seq = 0u64;
    // What was seen per publisher; a room has few publishers.
    let mut seen: Vec<(usize, Sequences)> = Vec::new();
    let mut samples = Vec::with_capacity(SAMPLE_BATCH);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            inbound = client.recv() => match inbound {
                Inbound::Text(text) => {
                    if let Some((publisher, n, sent_us)) = parse_content(&text) {
                        let sequences = match seen.iter_mut().find(|(p, _)| *p == publisher) {
                            Some((_, sequences)) => sequences,
                            None => {
                                seen.push((publisher, Sequences::default()));
                                &mut seen.last_mut().expect("just pushed").1
                            }
                        };
                        match sequences.observe(n) {
                            Arrival::Duplicate => {
                                shared.duplicated.fetch_add(1, Relaxed);
                                continue;
                            }
                            Arrival::OutOfOrder => {
                                shared.out_of_order.fetch_add(1, Relaxed);
                            }
                            Arrival::InOrder => {}
                        }
                        shared.delivered.fetch_add(1, Relaxed);
                        samples.push(shared.micros().saturating_sub(sent_us));
                        if samples.len() == SAMPLE_BATCH {
                            shared.record(index, &mut samples);
                        }
                    } else if publishing.is_some() && client.is_error(&text) {
                        shared.rejected.fetch_add(1, Relaxed);
                        shared.expected.fetch_sub(room_members, Relaxed);
                    }
                }
                Inbound::Closed => {
                    shared.disconnected.fetch_add(1, Relaxed);
                    break;
                }
            },
            now = tick(&mut ticker) => {
                let Some(p) = &publishing else { continue };
                if now >= p.until {
                    ticker = None;
                    continue;
                }
                seq += 1;
                let content = format!("b {} {seq} {} {}", p.id, shared.micros(), p.padding);
                shared.sent.fetch_add(1, Relaxed);
                shared.expected.fetch_add(room_members, Relaxed);
                if client.publish(&p.room, &content).await.is_err() {
                    shared.disconnected.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
    }
    shared.record(index, &mut samples);
    client.close().await;
}

/// How one receiver saw one publisher's sequence so far.
#[derive(Debug, Default)]
struct Sequences {
    /// The highest sequence seen (sequences start at 1).
    newest: u64,
    /// Sequences below `newest` not seen yet.
    missing: HashSet<u64>,
}

/// How a sequence arrived, against what was seen before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Newer than everything seen.
    InOrder,
    /// Older than one seen already, and not seen before.
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

impl Sequences {
    fn observe(&mut self, n: u64) -> Arrival {
        if n > self.newest {
            let first_missing = (self.newest + 1).max(n.saturating_sub(MAX_MISSING));
            self.missing.extend(first_missing..n);
            self.newest = n;
            Arrival::InOrder
        } else if self.missing.remove(&n) {
            Arrival::OutOfOrder
        } else {
            Arrival::Duplicate
        }
    }
}

/// The next tick of an optional ticker; never, without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) -> tokio::time::Instant {
    match ticker {
        Some(ticker) => ticker.tick().await,
        None => std::future::pending().await,
    }
}

/// `(publisher, seq, sent µs)` from a bench message frame, found without
/// decoding the whole frame.
fn parse_content(text: &str) -> Option<(usize, u64, u64)> {
    let start = text.find("\"content\":\"b ")? + "\"content\":\"b ".len();
    let content = text[start..].split('"').next()?;
    let mut fields = content.split(' ');
    let publisher = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sent = fields.next()?.parse().ok()?;
    Some((publisher, seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_fields_are_read_from_the_raw_frame() {
        let frame = r#"{"type":"message","id":"1-0","room":"r","user":"b3","content":"b 3 17 123456 xx","ts":"t"}"#;
        assert_eq!(parse_content(frame), Some((3, 17, 123_456)));
        let bare = r#"{"type":"message","content":"b 3 17 99"}"#;
        assert_eq!(parse_content(bare), Some((3, 17, 99)));
        assert_eq!(parse_content(r#"{"type":"presence"}"#), None);
        assert_eq!(parse_content(r#"{"content":"hello"}"#), None);
        let socket_io = r#"42["message",{"room":"r","user":"b3","content":"b 3 17 99"}]"#;
        assert_eq!(parse_content(socket_io), Some((3, 17, 99)));
    }

    #[test]
    fn late_sequences_count_once_as_out_of_order_and_repeats_as_duplicates() {
        let mut seen = Sequences::default();
        let arrivals: Vec<Arrival> = [1, 3, 4, 2, 2, 4, 5].map(|n| seen.observe(n)).to_vec();
        use Arrival::*;
        assert_eq!(
            arrivals,
            [
                InOrder, InOrder, InOrder, OutOfOrder, Duplicate, Duplicate, InOrder
            ]
        );
        assert!(seen.missing.is_empty());
    }
}
