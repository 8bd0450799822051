//! The deployment artifacts, run for real: the `chorus` binary as three
//! processes of one cluster, the real `nginx` with deploy/nginx/chorus.conf in
//! front of them, and the real `prometheus` scraping them with
//! deploy/prometheus/alerts.yml. Without nginx or prometheus these tests fail
//! (./scripts/test.sh installs both); they are never skipped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::node::Endpoint;
use crate::support::prometheus::{ALERT_RULES, JOB};
use crate::support::{
    Cluster, Nginx, ProcessNode, Prometheus, TIMEOUT, WsClient, eventually, eventually_within,
    get_json, get_status, unique,
};

/// Clients with fresh cookies connected until two nodes are seen. Each lands
/// on a node at random (the cookie's hash): all of them on one node has odds
/// of 3 × 3⁻⁴⁰.
const MAX_CLIENTS: usize = 40;

/// How long Prometheus may take to scrape every node (interval 1 s) and
/// evaluate the rules: its start-up, then a scrape or two.
const SCRAPE_LIMIT: Duration = Duration::from_secs(30);

/// A Redis and `n` real chorus processes sharing it, each ready.
async fn process_cluster(n: usize) -> (Cluster, Vec<ProcessNode>) {
    let cluster = Cluster::start(0).await;
    let nodes: Vec<ProcessNode> = (0..n)
        .map(|i| cluster.spawn_process(&cluster.node_id(&format!("p{i}")), &[]))
        .collect();
    for node in &nodes {
        let url = node.url("/ready");
        eventually("node ready", || {
            let url = url.clone();
            async move { (get_status(&url).await? == 200).then_some(()) }
        })
        .await;
    }
    (cluster, nodes)
}

fn addrs(nodes: &[ProcessNode]) -> Vec<SocketAddr> {
    nodes.iter().map(Endpoint::addr).collect()
}

fn node_of(client: &WsClient) -> String {
    client.welcome["node"]
        .as_str()
        .expect("welcome names the node")
        .to_owned()
}

/// An HTTP client whose every request is bounded by [`TIMEOUT`].
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client")
}

fn affinity_cookie() -> String {
    format!("chorus_affinity={}", unique("client"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_nginx_are_spread_over_nodes_and_chat_across_them() {
    let (cluster, nodes) = process_cluster(3).await;
    let lb = Nginx::start(&addrs(&nodes));
    let node_ids: BTreeSet<String> = (0..3).map(|i| cluster.node_id(&format!("p{i}"))).collect();
    let room = unique("room");

    let mut clients: Vec<(String, WsClient)> = Vec::new();
    let mut seen = BTreeSet::new();
    while seen.len() < 2 && clients.len() < MAX_CLIENTS {
        let cookie = affinity_cookie();
        let user = format!("u{}", clients.len());
        let mut client =
            WsClient::connect_with_headers(&lb.ws_url(&user), &[("Cookie", &cookie)]).await;
        client.join(&room).await;
        seen.insert(node_of(&client));
        clients.push((cookie, client));
    }

    assert!(
        seen.len() >= 2,
        "{} clients with different cookies all landed on {seen:?}",
        clients.len()
    );
    assert!(seen.is_subset(&node_ids), "{seen:?} not in {node_ids:?}");
    // Sticky: the same cookie reaches the same node again.
    for (cookie, client) in &clients {
        let again =
            WsClient::connect_with_headers(&lb.ws_url("again"), &[("Cookie", cookie)]).await;
        assert_eq!(node_of(&again), node_of(client), "cookie {cookie}");
        again.close().await;
    }
    // A message through one node reaches the members on the others.
    let (_, sender) = &mut clients[0];
    let sender_node = node_of(sender);
    let sent = sender.say(&room, "through nginx").await;
    for (_, member) in &mut clients[1..] {
        let got = member.recv_until(|f| f["type"] == "message").await;
        assert_eq!(got, sent);
    }
    assert!(
        clients.iter().any(|(_, c)| node_of(c) != sender_node),
        "a member on another node received it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_affinity_cookie_gets_one_that_keeps_its_node() {
    let (_cluster, nodes) = process_cluster(3).await;
    let lb = Nginx::start(&addrs(&nodes));

    let http = http_client();
    let response = http.get(lb.url("/health")).send().await.expect("health");
    assert_eq!(response.status(), 200);
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a Set-Cookie for a client without one")
        .to_owned();
    let health: Value = response.json().await.expect("JSON");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    assert!(cookie.starts_with("chorus_affinity="), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");

    // The cookie is the key that first request was hashed on: the WebSocket
    // that follows it reaches the node that answered.
    let first = WsClient::connect_with_headers(&lb.ws_url("alice"), &[("Cookie", &cookie)]).await;
    let second = WsClient::connect_with_headers(&lb.ws_url("alice"), &[("Cookie", &cookie)]).await;
    assert_eq!(health["node"].as_str(), Some(node_of(&first).as_str()));
    assert_eq!(node_of(&first), node_of(&second));

    let again = http
        .get(lb.url("/health"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("health");
    assert!(
        again.headers().get("set-cookie").is_none(),
        "a client with the cookie keeps it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_dies_a_client_reconnects_through_nginx_to_another() {
    let (cluster, mut nodes) = process_cluster(3).await;
    let lb = Nginx::start(&addrs(&nodes));
    let doomed = cluster.node_id("p0");
    let mut found = None;
    for _ in 0..MAX_CLIENTS {
        let cookie = affinity_cookie();
        let client =
            WsClient::connect_with_headers(&lb.ws_url("alice"), &[("Cookie", &cookie)]).await;
        if node_of(&client) == doomed {
            found = Some((cookie, client));
            break;
        }
        client.close().await;
    }
    let (cookie, _client) = found.expect("a cookie that leads to the first node");

    nodes[0].sigkill();

    // nginx finds the node refusing connections and tries another one.
    let again = WsClient::connect_with_headers(&lb.ws_url("alice"), &[("Cookie", &cookie)]).await;
    assert_ne!(node_of(&again), doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_the_api_and_health_but_never_metrics() {
    let (cluster, nodes) = process_cluster(3).await;
    let lb = Nginx::start(&addrs(&nodes));

    for path in [
        "/metrics",
        "/metrics?format=text",
        "//metrics",
        "/%6detrics",
        "/./metrics",
        "/metrics/",
    ] {
        assert_eq!(
            get_status(&lb.url(path)).await,
            Some(404),
            "{path} via nginx"
        );
    }
    // The nodes themselves still serve it, for Prometheus on the inside.
    let direct = http_client()
        .get(nodes[0].url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(direct.status(), 200);
    assert!(
        direct
            .text()
            .await
            .expect("text")
            .contains("chorus_build_info")
    );

    let health: Value = get_json(&lb.url("/health")).await;
    assert_eq!(health["status"], "ok");
    let stats: Value = get_json(&lb.url("/api/stats")).await;
    let live: BTreeSet<&str> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for i in 0..3 {
        assert!(
            live.contains(cluster.node_id(&format!("p{i}")).as_str()),
            "{stats}"
        );
    }
    assert_eq!(get_status(&lb.url("/")).await, Some(200), "the web client");
    assert!(lb.config().contains("proxy_read_timeout 1h"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_access_log_has_the_paths_but_never_a_token_from_a_query() {
    let (_cluster, nodes) = process_cluster(1).await;
    let lb = Nginx::start(&addrs(&nodes));
    let token = unique("tokenvalue");
    // Anonymous nodes ignore `token`: what matters is what nginx writes down.
    let ws =
        WsClient::connect(&lb.ws_url_query(&format!("username={}&token={token}", unique("u"))))
            .await;
    ws.close().await;
    let stats = format!("/api/stats?token={token}");
    assert_eq!(get_status(&lb.url(&stats)).await, Some(200));

    // nginx writes a line when a request ends: the WebSocket's at its close.
    let log = eventually("both requests in the access log", || async {
        let log = lb.access_log();
        (log.contains("GET /ws") && log.contains("GET /api/stats")).then_some(log)
    })
    .await;
    assert!(!log.contains(&token), "the token leaked:\n{log}");
    assert!(!log.contains("token="), "a query was logged:\n{log}");
    assert!(
        log.contains("GET /ws HTTP/1.1") && log.contains("GET /api/stats HTTP/1.1"),
        "the paths are logged:\n{log}"
    );
}

/// The alert names declared in deploy/prometheus/alerts.yml.
fn declared_alerts() -> BTreeSet<String> {
    std::fs::read_to_string(ALERT_RULES)
        .expect("alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_loads_the_alert_rules() {
    let (_cluster, nodes) = process_cluster(3).await;
    // One connection per node, so each has a chorus_connections gauge.
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(WsClient::connect(&node.ws_url(&unique("u"))).await);
    }
    let prometheus = Prometheus::start(&addrs(&nodes));
    let instances: BTreeSet<String> = nodes.iter().map(|n| n.addr.to_string()).collect();

    let series = eventually_within("chorus_connections of every node", SCRAPE_LIMIT, || {
        let prometheus = &prometheus;
        let instances = &instances;
        async move {
            let series = prometheus.query("chorus_connections").await?;
            let seen: BTreeSet<String> = series
                .iter()
                .filter_map(|(labels, _)| Some(labels["instance"].as_str()?.to_owned()))
                .collect();
            (&seen == instances).then_some(series)
        }
    })
    .await;
    assert_eq!(series.len(), 3, "{series:?}");
    for (labels, value) in &series {
        assert_eq!(labels["job"], JOB);
        assert!((value - 1.0).abs() < f64::EPSILON, "{labels}: {value}");
    }
    let up = prometheus
        .query(&format!("up{{job=\"{JOB}\"}} == 1"))
        .await
        .expect("up");
    assert_eq!(up.len(), 3, "every target up: {up:?}");

    let declared = declared_alerts();
    assert!(
        declared.len() >= 5,
        "alerts.yml declares its alerts: {declared:?}"
    );
    eventually_within("the alert rules loaded and evaluated", SCRAPE_LIMIT, || {
        let prometheus = &prometheus;
        let declared = &declared;
        async move {
            let data = prometheus.api("/api/v1/rules", &[]).await?;
            let rules: Vec<&Value> = data["groups"]
                .as_array()?
                .iter()
                .filter_map(|g| g["rules"].as_array())
                .flatten()
                .collect();
            let loaded: BTreeSet<String> = rules
                .iter()
                .filter_map(|r| Some(r["name"].as_str()?.to_owned()))
                .collect();
            let evaluated = rules.iter().all(|r| r["health"] == "ok");
            (&loaded == declared && evaluated).then_some(())
        }
    })
    .await;
    drop(clients);
}
