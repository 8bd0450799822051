//! Test support: nodes (in process and as processes), a WebSocket client with
//! bounded waits, an HTTP helper, a real Redis and Redis Cluster, and the
//! deployment's real tools (nginx, Prometheus) and scripts (the local
//! cluster, the Kubernetes Redis Cluster's pods and create Job) as owned
//! child processes.

#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod chatters;
pub mod cluster;
pub mod http;
pub mod local_cluster;
pub mod moto;
pub mod netns;
pub mod nginx;
pub mod node;
pub mod postgres;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod redis_pods;
pub mod tools;
pub mod ws_client;

use std::sync::LazyLock;
use std::time::Duration;

pub use cluster::{Backing, Cluster};
pub use moto::MotoServer;
pub use nginx::Nginx;
pub use node::{ProcessNode, TestNode};
pub use prometheus::Prometheus;
pub use redis::RedisServer;
pub use redis_cluster::{RedisCluster, SharedRedisCluster};
pub use ws_client::WsClient;

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Logs from the nodes, shown only with `TEST_LOG=1`.
pub static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        chorus::telemetry::init("info,chorus=debug", chorus::config::LogFormat::Text);
    }
});

/// A unique-enough name for rooms and users, so tests sharing a node or a
/// Redis do not see each other.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The `id` of every message in a JSON array of messages.
pub fn ids(messages: &serde_json::Value) -> Vec<String> {
    messages
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Waits until `/ready` at `url` answers 200, as a load balancer would.
pub async fn wait_ready(url: &str) {
    eventually("the node to be ready", || async {
        reqwest::get(url)
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
}

/// GETs `url` and decodes its JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    let response = tokio::time::timeout(TIMEOUT, reqwest::get(url))
        .await
        .expect("answer in time")
        .expect("request");
    response.json().await.expect("JSON body")
}

/// Polls `check` until it returns `Some`, failing after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, TIMEOUT, check).await
}

/// Polls `check` until it returns `Some`, failing after `limit`: for
/// contract bounds tighter (or looser) than [`TIMEOUT`].
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The HTTP status of a GET on `url`; `None` when no answer came in time.
pub async fn get_status(url: &str) -> Option<u16> {
    let response = tokio::time::timeout(TIMEOUT, reqwest::get(url))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

/// The text of a `/metrics` scrape.
pub async fn scrape(metrics_url: &str) -> String {
    let response = tokio::time::timeout(TIMEOUT, reqwest::get(metrics_url))
        .await
        .expect("answer in time")
        .expect("request");
    assert!(response.status().is_success(), "scrape {metrics_url}");
    response.text().await.expect("text body")
}

/// The sum of every sample of `name` whose labels contain `label` (all of
/// them when `label` is empty) in a scrape's text.
pub fn sample(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().expect("a number"))
        })
        .sum()
}

/// The sum of every sample of `name` in a node's `/metrics` now.
pub async fn metric(metrics_url: &str, name: &str) -> f64 {
    sample(&scrape(metrics_url).await, name, "")
}

/// Everything the server sends on a raw TCP `stream` until it closes it;
/// fails if it is still open after [`TIMEOUT`]. A reset counts as closed.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open for {TIMEOUT:?}; it sent {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}
