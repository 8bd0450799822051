//! The deployment's scripts, run for real: `deploy/local-cluster.sh` with one
//! Redis, with `--redis-cluster` and with `--archive` (this build's `chorus`,
//! real nginx, Prometheus, Redis and Postgres), and the create Job's script of
//! `k8s/overlays/redis-cluster` against Redis nodes started with the
//! StatefulSet's own arguments. Without the tools they fail, naming the
//! package; they are never skipped.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::support::local_cluster::{LocalCluster, NODES};
use crate::support::redis_pods::{PODS, RedisPods};
use crate::support::tools::require_tool;
use crate::support::{TIMEOUT, WsClient, eventually_within, get_json, unique};

/// How long Prometheus may take to scrape every node once (the script
/// scrapes every 5 s).
const SCRAPE_LIMIT: Duration = Duration::from_secs(30);

/// How long nodes that restarted on new addresses may take to find out that
/// they cannot reach one another (`cluster-node-timeout` is 5 s).
const CUT_OFF_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_runs_the_nodes_on_one_redis_and_stops_everything_in_order() {
    let mut cluster = LocalCluster::start(&[]).await;
    let redis = cluster.redis_port.expect("one Redis");

    for i in 0..NODES {
        let env = cluster.node_environment(i);
        assert!(
            env.contains(&format!("REDIS_URL=redis://127.0.0.1:{redis}/0")),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|e| e.starts_with("REDIS_CLUSTER_URLS=")),
            "{env:?}"
        );
        no_archive_setting_but(&env, None);
    }
    serves_one_chat(&cluster).await;

    let status = cluster.interrupt().await;

    stopped_in_order(&cluster, status, &[redis]);
}

/// Checks only what the script does (a private Postgres, up with the
/// database created and writable, and DATABASE_URL given to every node),
/// not what chorus does with it: it holds whether or not this build's
/// binary archives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_with_archive_gives_the_nodes_a_private_postgres_and_stops_it_last() {
    let mut cluster = LocalCluster::start(&["--archive"]).await;
    let redis = cluster.redis_port.expect("one Redis");
    let pg = cluster.pg_port.expect("a private Postgres");
    let url = format!("postgres://chorus@127.0.0.1:{pg}/chorus");
    assert!(
        cluster.stdout().contains(&format!("DATABASE_URL={url}")),
        "{}",
        cluster.report()
    );

    for i in 0..NODES {
        let env = cluster.node_environment(i);
        assert!(
            env.contains(&format!("REDIS_URL=redis://127.0.0.1:{redis}/0")),
            "{env:?}"
        );
        no_archive_setting_but(&env, Some(&url));
    }
    // What the archive's migrations need: the database exists and its user
    // may create tables in it.
    let table = unique("probe").replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let answer = psql(
        &url,
        &format!("CREATE TABLE {table} (id int); DROP TABLE {table}; SELECT current_database()"),
    )
    .await;
    assert_eq!(answer.trim(), "chorus", "{}", cluster.report());
    for i in 0..NODES {
        let ready = reqwest::get(format!("http://{}/ready", cluster.node(i)))
            .await
            .expect("the node answers");
        assert!(
            ready.status().is_success(),
            "node{} /ready: {}",
            i + 1,
            ready.status()
        );
    }
    serves_one_chat(&cluster).await;

    let status = cluster.interrupt().await;

    stopped_in_order(&cluster, status, &[redis, pg]);
    assert!(
        cluster
            .postgres_log()
            .contains("database system is shut down"),
        "Postgres shut down cleanly:\n{}",
        cluster.postgres_log()
    );
    assert!(
        !cluster.run_dir().join("postgres.pid").exists(),
        "Postgres was reaped"
    );
    assert!(
        !cluster.run_dir().join("postgres-data-dir").exists(),
        "a data directory outside RUN_DIR (as root) was removed"
    );
}

/// Green only once chorus serves `REDIS_CLUSTER_URLS` (issue 15): until
/// then the nodes refuse to start and the script stops everything, which
/// this test reports with the nodes' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_with_redis_cluster_runs_the_nodes_on_a_redis_cluster_and_stops_everything_in_order()
 {
    let mut cluster = LocalCluster::start(&["--redis-cluster"]).await;
    let urls = cluster
        .printed_cluster_urls()
        .unwrap_or_else(|| panic!("no REDIS_CLUSTER_URLS printed\n{}", cluster.report()));
    let seeds: Vec<&str> = urls.split(',').collect();
    assert_eq!(seeds.len(), 6, "{urls}");
    let seed_ports: Vec<u16> = seeds
        .iter()
        .map(|seed| {
            seed.strip_prefix("redis://127.0.0.1:")
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("a local seed: {seed}"))
        })
        .collect();

    for i in 0..NODES {
        let env = cluster.node_environment(i);
        assert!(
            env.contains(&format!("REDIS_CLUSTER_URLS={urls}")),
            "{env:?}"
        );
        assert!(!env.iter().any(|e| e.starts_with("REDIS_URL=")), "{env:?}");
    }
    let client = redis::cluster::ClusterClient::new(seeds.clone()).unwrap();
    let mut redis = tokio::time::timeout(TIMEOUT, client.get_async_connection())
        .await
        .expect("the Redis Cluster answers in time")
        .expect("the seeds are a Redis Cluster");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    drop(redis);
    serves_one_chat(&cluster).await;

    let status = cluster.interrupt().await;

    stopped_in_order(&cluster, status, &seed_ports);
    let run_dir = cluster.run_dir();
    assert!(
        !run_dir.join("redis-cluster").exists(),
        "redis-cluster.sh stop removed the cluster's directory"
    );
    let kept = std::fs::read_dir(run_dir.join("redis-cluster-logs"))
        .expect("the cluster's logs were kept")
        .count();
    assert_eq!(kept, 6, "one log per Redis node");
}

#[tokio::test]
async fn the_k8s_create_job_forms_the_redis_cluster_once_and_then_leaves_it_alone() {
    let pods = RedisPods::start().await;

    let first = pods.run_create_job().await;

    assert!(first.success, "{}", first.output);
    assert!(
        first.output.contains("creating the cluster"),
        "{}",
        first.output
    );
    formed_with_a_replica_per_primary(&pods).await;
    let before = pods.view(0).await;

    let again = pods.run_create_job().await;

    assert!(again.success, "{}", again.output);
    assert!(again.output.contains("already formed"), "{}", again.output);
    assert_eq!(pods.view(0).await, before, "a second run changes nothing");
}

#[tokio::test]
async fn the_k8s_create_job_reintroduces_nodes_that_all_came_back_on_new_addresses() {
    let mut pods = RedisPods::start().await;
    let formed = pods.run_create_job().await;
    assert!(formed.success, "{}", formed.output);
    let key = unique("kept");
    let () = cluster_connection(&pods)
        .await
        .set(&key, "yes")
        .await
        .unwrap();
    let ids: BTreeSet<String> = pods.view(0).await.into_iter().map(|n| n.0).collect();
    pods.restart_all_elsewhere().await;
    eventually_within(
        "the nodes to find themselves cut off",
        CUT_OFF_LIMIT,
        || {
            let pods = &pods;
            async move { (pods.info_field(0, "cluster_state").await == "fail").then_some(()) }
        },
    )
    .await;

    let healed = pods.run_create_job().await;

    assert!(healed.success, "{}", healed.output);
    assert!(
        healed.output.contains("introducing them again"),
        "{}",
        healed.output
    );
    formed_with_a_replica_per_primary(&pods).await;
    let after: BTreeSet<String> = pods.view(0).await.into_iter().map(|n| n.0).collect();
    assert_eq!(after, ids, "the same nodes, not a new cluster");
    let value: String = cluster_connection(&pods).await.get(&key).await.unwrap();
    assert_eq!(value, "yes");
}

/// A node's environment holds no archive setting, or exactly
/// `DATABASE_URL=url` (never the DynamoDB table beside it: chorus refuses
/// both).
fn no_archive_setting_but(env: &[String], url: Option<&str>) {
    let archive: Vec<&String> = env
        .iter()
        .filter(|e| {
            e.starts_with("DATABASE_URL=") || e.starts_with("CHORUS_ARCHIVE_DYNAMODB_TABLE=")
        })
        .collect();
    let expected: Vec<String> = url
        .map(|u| format!("DATABASE_URL={u}"))
        .into_iter()
        .collect();
    assert_eq!(
        archive.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{env:?}"
    );
}

/// `psql URL -c SQL`, its output (unaligned, tuples only); fails the test on
/// an error.
async fn psql(url: &str, sql: &str) -> String {
    let psql = require_tool("psql", "postgresql-client");
    let (url, sql) = (url.to_owned(), sql.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .arg(&url)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", &sql])
            .output()
            .expect("psql runs")
    })
    .await
    .expect("the psql task");
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Two users on two nodes talk; nginx and Prometheus see all the nodes.
async fn serves_one_chat(cluster: &LocalCluster) {
    let room = unique("room");
    let ws = |i: u16, user: &str| format!("ws://{}/ws?username={user}", cluster.node(i));
    let mut alice = WsClient::connect(&ws(0, "alice")).await;
    let mut bob = WsClient::connect(&ws(1, "bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    let sent = alice.say(&room, "across nodes").await;

    let got = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(got, sent);
    let stats: Value = get_json(&format!("http://127.0.0.1:{}/api/stats", cluster.lb_port)).await;
    let nodes: BTreeSet<&str> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<String> = (1..=NODES).map(|i| format!("node{i}")).collect();
    assert_eq!(
        nodes,
        expected.iter().map(String::as_str).collect(),
        "through nginx: {stats}"
    );
    let query = format!(
        "http://127.0.0.1:{}/api/v1/query?query=up%3D%3D1",
        cluster.prom_port
    );
    eventually_within("Prometheus to scrape every node", SCRAPE_LIMIT, || {
        let query = query.clone();
        async move {
            let body: Value = reqwest::get(&query).await.ok()?.json().await.ok()?;
            (body["data"]["result"].as_array()?.len() == usize::from(NODES)).then_some(())
        }
    })
    .await;
}

/// The script ended on its Ctrl-C trap and left nothing running: nginx,
/// Prometheus, the nodes and Redis (`redis_ports`) are gone, and every node
/// drained while Redis still answered (it removed its own presence).
fn stopped_in_order(cluster: &LocalCluster, status: std::process::ExitStatus, redis_ports: &[u16]) {
    assert_eq!(status.code(), Some(130), "{}", cluster.report());
    assert!(
        cluster.stdout().contains("stopped; logs in"),
        "{}",
        cluster.report()
    );
    let mut ports = vec![cluster.lb_port, cluster.prom_port];
    ports.extend((0..NODES).map(|i| cluster.node(i).port()));
    ports.extend(redis_ports);
    for port in ports {
        assert!(
            !LocalCluster::listening(([127, 0, 0, 1], port).into()),
            "something still listens on {port}"
        );
    }
    for i in 0..NODES {
        let log = cluster.node_log(i);
        assert!(log.contains("drained"), "node{} log:\n{log}", i + 1);
        assert!(
            !log.contains("could not remove this node's presence"),
            "node{} drained after Redis was gone:\n{log}",
            i + 1
        );
        assert!(
            !cluster
                .run_dir()
                .join(format!("node{}.pid", i + 1))
                .exists(),
            "node{} was reaped",
            i + 1
        );
    }
}

/// Every node healthy and knowing all six; three primaries serve all slots,
/// each with one replica.
async fn formed_with_a_replica_per_primary(pods: &RedisPods) {
    for i in 0..PODS {
        assert_eq!(pods.info_field(i, "cluster_state").await, "ok", "node {i}");
        assert_eq!(
            pods.info_field(i, "cluster_known_nodes").await,
            PODS.to_string(),
            "node {i}"
        );
    }
    let view = pods.view(0).await;
    let primaries: Vec<&String> = view
        .iter()
        .filter(|(_, role, _, slots)| role == "master" && !slots.is_empty())
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(primaries.len(), 3, "{view:?}");
    for primary in primaries {
        let replicas = view
            .iter()
            .filter(|(_, role, of, _)| role == "slave" && of == primary)
            .count();
        assert_eq!(replicas, 1, "replicas of {primary}: {view:?}");
    }
}

async fn cluster_connection(pods: &RedisPods) -> redis::cluster_async::ClusterConnection {
    let client = redis::cluster::ClusterClientBuilder::new(pods.seed_urls())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .expect("cluster client");
    tokio::time::timeout(TIMEOUT, client.get_async_connection())
        .await
        .expect("the cluster connects in time")
        .expect("the cluster connects")
}
