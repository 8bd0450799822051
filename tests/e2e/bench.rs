//! The shipped load generator runs a tiny scenario end to end against real
//! node processes sharing a real Redis: nothing lost or duplicated, and the
//! server-side readings (CPU, memory, send latency) present. Speed is not
//! asserted here; BENCHMARKS.md has the figures.

use std::time::Duration;

use chorus_bench::{Scenario, Target, Traffic};

use crate::support::node::Endpoint;
use crate::support::{ProcessNode, RedisServer, unique, wait_ready};

fn cluster_nodes(redis: &RedisServer, n: usize) -> Vec<ProcessNode> {
    let prefix = format!("{}:", unique("bench"));
    let url = redis.url();
    (0..n)
        .map(|_| {
            ProcessNode::spawn(&[
                ("REDIS_URL", url.as_str()),
                ("CHORUS_REDIS_PREFIX", prefix.as_str()),
                ("CHORUS_RATE_LIMIT", "0"),
            ])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_counts_every_message_and_reads_the_nodes() {
    let redis = RedisServer::start();
    let nodes = cluster_nodes(&redis, 2);
    for node in &nodes {
        wait_ready(&node.url("/ready")).await;
    }
    let target = Target::new(
        nodes.iter().map(|n| n.url("")).collect(),
        nodes.iter().map(|n| n.pid().unsigned_abs()).collect(),
        None,
    )
    .expect("loopback target");

    let fanout = Scenario::Traffic {
        name: "fanout",
        traffic: Traffic {
            rooms: 2,
            members: 12,
            publishers: 2,
            rate: 20.0,
            duration: Duration::from_secs(1),
            payload: 16,
        },
    };
    let report = chorus_bench::run(&target, &fanout, "tiny-fanout")
        .await
        .expect("fanout runs");
    assert!(report.accepted > 0, "{report:?}");
    assert_eq!(report.rejected, 0, "{report:?}");
    assert_eq!(report.expected, report.accepted * 12, "{report:?}");
    assert_eq!(
        (report.delivered, report.lost, report.duplicated),
        (report.expected, 0, 0)
    );
    assert_eq!(report.disconnected, 0);
    assert!(report.latency_ms.is_some());
    assert!(
        report.server_cpu_s.is_some_and(|cpu| cpu > 0.0),
        "{report:?}"
    );
    assert!(
        report
            .send_latency_samples
            .is_some_and(|n| n >= report.accepted),
        "{report:?}"
    );

    let idle = Scenario::Idle {
        connections: 40,
        room_size: 10,
        hold: Duration::from_millis(200),
    };
    let report = chorus_bench::run(&target, &idle, "tiny-idle")
        .await
        .expect("idle runs");
    assert_eq!(report.connections, 40);
    assert!(report.rss_per_connection_bytes.is_some(), "{report:?}");

    let out = std::env::temp_dir().join(format!("{}.jsonl", unique("bench")));
    report.append_to(&out).expect("written");
    let line = std::fs::read_to_string(&out).expect("readable");
    let _ = std::fs::remove_file(&out);
    let parsed: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(parsed["scenario"], "idle");
}

#[test]
fn only_loopback_nodes_may_be_loaded() {
    assert!(Target::new(vec!["http://10.0.0.1:8080".into()], vec![], None).is_err());
    assert!(Target::new(vec!["http://example.com".into()], vec![], None).is_err());
    assert!(Target::new(vec!["http://localhost:8080/".into()], vec![], None).is_ok());
    assert!(Target::new(vec![], vec![], None).is_err());
}
