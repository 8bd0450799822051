//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and the
//! name of every metric (declared once here; labels stay low-cardinality).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Open WebSocket connections on this node (gauge).
pub const CONNECTIONS: &str = "chorus_connections";
/// Connections accepted (counter).
pub const CONNECTIONS_OPENED: &str = "chorus_connections_opened_total";
/// Connections ended, by close `code`: 1001, 1008, 1009, 1013 when the
/// server closed; 1000 when the client did; 1006 when the peer vanished or
/// stopped answering pings (counter).
pub const CONNECTIONS_CLOSED: &str = "chorus_connections_closed_total";
/// Upgrades refused, by `reason`: `name`, `auth`, `origin`, `per_ip` (also
/// TCP connections refused at accept over the per-address limit), `limit`,
/// `overloaded`, `draining` (counter).
pub const CONNECTIONS_REFUSED: &str = "chorus_connections_refused_total";
/// Room messages and DMs accepted and stored, by `kind` (counter).
pub const MESSAGES_ACCEPTED: &str = "chorus_messages_accepted_total";
/// Sends answered with the message an earlier send under the same
/// idempotency key stored, by `kind` (counter).
pub const IDEMPOTENT_REPLAYS: &str = "chorus_idempotent_replays_total";
/// Frames written to sockets from fan-out, messages and events alike (counter).
pub const FRAMES_DELIVERED: &str = "chorus_frames_delivered_total";
/// Error frames and HTTP errors sent, by `code` (counter).
pub const ERRORS: &str = "chorus_errors_total";
/// Presence events announced, by `event` (join, leave) (counter).
pub const PRESENCE_EVENTS: &str = "chorus_presence_events_total";
/// Time from accepting a message or DM to its being stored and published
/// (histogram).
pub const SEND_LATENCY: &str = "chorus_send_latency_seconds";
/// Time to hand one publication to every local recipient's queue (histogram).
pub const FANOUT_LATENCY: &str = "chorus_fanout_seconds";
/// Local recipients per publication (histogram).
pub const FANOUT_RECIPIENTS: &str = "chorus_fanout_recipients";
/// Redis command round trips, by `op` (histogram).
pub const REDIS_COMMAND_LATENCY: &str = "chorus_redis_command_seconds";
/// Redis commands that failed or timed out, by `op` (counter).
pub const REDIS_ERRORS: &str = "chorus_redis_errors_total";
/// Commands refused by a rate limit, by `kind`: `message` (room messages,
/// DMs and typing), `join`, `dm`, `history` (WebSocket history pages),
/// `rest` (REST `POST`s), `admin` (admin API calls) (counter).
pub const RATE_LIMITED: &str = "chorus_rate_limited_total";
/// Connections closed because their outbound queue filled (counter).
pub const SLOW_CONSUMER_DISCONNECTS: &str = "chorus_slow_consumer_disconnects_total";
/// Joins refused because the connection is in CHORUS_MAX_ROOMS_PER_CONNECTION
/// rooms already (counter).
pub const ROOM_LIMIT_REFUSALS: &str = "chorus_room_limit_refusals_total";
/// Connections dropped after CHORUS_IDLE_TIMEOUT_SECS without a frame or
/// pong (counter).
pub const IDLE_DISCONNECTS: &str = "chorus_idle_disconnects_total";
/// TCP connections closed because they sent no complete request head within
/// CHORUS_HANDSHAKE_TIMEOUT_SECS, or no complete request body within as long
/// again after it (counter).
pub const HANDSHAKE_TIMEOUTS: &str = "chorus_handshake_timeouts_total";
/// Bytes of fan-out frames waiting in this node's outbound queues (gauge,
/// read at scrape time).
pub const OUTBOUND_BUFFERED_BYTES: &str = "chorus_outbound_buffered_bytes";
/// Uploads by what happened to them: `created` (announced), `finished`
/// (bytes stored as announced), `rejected` (bytes not as announced),
/// `swept` (files deleted from the local folder past their lifetime)
/// (counter).
pub const UPLOADS: &str = "chorus_uploads_total";
/// Bytes of finished uploads (counter).
pub const UPLOAD_BYTES: &str = "chorus_upload_bytes_total";
/// Times the Redis subscriber connection was re-established (counter).
pub const PUBSUB_RECONNECTS: &str = "chorus_pubsub_reconnects_total";
/// Room messages and DMs read back from their streams by a gap fill after a
/// subscriber reconnect (counter).
pub const GAP_FILL_MESSAGES: &str = "chorus_gap_fill_messages_total";
/// DMs stored whose delivery to a user's inbox failed at first and was
/// retried in the background (counter).
pub const DM_DELIVERIES_DEFERRED: &str = "chorus_dm_deliveries_deferred_total";
/// Redis channels this node is subscribed to (gauge).
pub const SUBSCRIBED_CHANNELS: &str = "chorus_subscribed_channels";
/// Users of dead nodes removed from rooms by this node's reaper (counter).
pub const PRESENCE_REAPED: &str = "chorus_presence_reaped_total";
/// Messages this node wrote to the archive (counter); a message written
/// again after a crash counts again, the archive keeps it once.
pub const ARCHIVE_STORED: &str = "chorus_archive_stored_total";
/// Archive writes, reads and sweeps that failed (counter).
pub const ARCHIVE_ERRORS: &str = "chorus_archive_errors_total";
/// Age of the oldest message this node found waiting for the archive at its
/// last drain; 0 when none waited (gauge, seconds).
pub const ARCHIVE_LAG: &str = "chorus_archive_lag_seconds";
/// 1 while the node drains (gauge).
pub const DRAINING: &str = "chorus_draining";
/// Always 1, labelled with `version` and `node` (gauge).
pub const BUILD_INFO: &str = "chorus_build_info";

/// Latency buckets, 50 µs to 5 s: chat latencies live between a local
/// hand-off (microseconds) and a struggling Redis (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
/// Recipient-count buckets, from a DM to a large room.
const RECIPIENT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
];

/// Starts logging once per process; later calls do nothing.
pub fn init(filter: &str, format: LogFormat) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        // A subscriber may already be set (tests embedding several nodes).
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    });
}

/// Registers every unlabelled counter and gauge at zero, so that dashboards
/// and `rate()` see them from the first scrape rather than from their first
/// event.
pub fn register_at_zero() {
    for counter in [
        CONNECTIONS_OPENED,
        FRAMES_DELIVERED,
        SLOW_CONSUMER_DISCONNECTS,
        IDLE_DISCONNECTS,
        HANDSHAKE_TIMEOUTS,
        ROOM_LIMIT_REFUSALS,
        PUBSUB_RECONNECTS,
        GAP_FILL_MESSAGES,
        DM_DELIVERIES_DEFERRED,
        PRESENCE_REAPED,
        ARCHIVE_STORED,
        ARCHIVE_ERRORS,
        UPLOAD_BYTES,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for (counter, label, values) in [
        (MESSAGES_ACCEPTED, "kind", &["message", "dm"][..]),
        (IDEMPOTENT_REPLAYS, "kind", &["message", "dm"][..]),
        (PRESENCE_EVENTS, "event", &["join", "leave"][..]),
        (
            UPLOADS,
            "event",
            &["created", "finished", "rejected", "swept"][..],
        ),
        (
            RATE_LIMITED,
            "kind",
            &["message", "join", "dm", "history", "rest", "admin"][..],
        ),
    ] {
        for value in values {
            metrics::counter!(counter, label => *value).increment(0);
        }
    }
    for gauge in [
        CONNECTIONS,
        DRAINING,
        SUBSCRIBED_CHANNELS,
        OUTBOUND_BUFFERED_BYTES,
        ARCHIVE_LAG,
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

/// How often histogram samples are folded into their buckets without a scrape.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Folds recorded histogram samples into their buckets every second until
/// `stop`. The recorder keeps every sample until a scrape or an upkeep folds
/// it in, so a node that nobody scrapes would otherwise grow by every
/// message's samples.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => prometheus().run_upkeep(),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use. Several
/// nodes embedded in one process (tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(FANOUT_RECIPIENTS.into()), RECIPIENT_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours stays
        // unused and /metrics shows an empty page rather than stopping the node.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
