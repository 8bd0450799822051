//! Cluster mode: several nodes sharing one real Redis, or a Redis Cluster,
//! behave as one chat server. Every scenario runs on both backings.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::cluster::on_both_backings;
use crate::support::node::Endpoint;
use crate::support::{Backing, Cluster, WsClient, eventually, get_json, ids, unique};

on_both_backings!(
    a_message_on_one_node_reaches_members_on_every_node,
    a_dm_reaches_every_connection_of_both_users_on_every_node,
    presence_events_and_views_are_the_same_from_every_node,
    a_rest_post_on_one_node_is_delivered_on_another,
    stats_list_every_live_node_and_created_rooms_are_shared,
    concurrent_senders_on_different_nodes_produce_one_order_everywhere_equal_to_history,
    a_node_subscribes_only_to_rooms_it_serves,
);

async fn a_message_on_one_node_reaches_members_on_every_node(backing: Backing) {
    let cluster = Cluster::start_on(backing, 3).await;
    let room = unique("room");
    let mut members = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut client = WsClient::connect(&node.ws_url(&format!("u{i}"))).await;
        client.join(&room).await;
        members.push(client);
    }

    let sent = members[0].say(&room, "across nodes").await;

    for member in &mut members[1..] {
        let got = member.recv_until(|f| f["type"] == "message").await;
        assert_eq!(got, sent, "the same frame on every node");
    }
    assert_eq!(
        members[2].welcome["node"].as_str(),
        Some(cluster.nodes[2].node_id.as_str())
    );
}

async fn a_dm_reaches_every_connection_of_both_users_on_every_node(backing: Backing) {
    let cluster = Cluster::start_on(backing, 3).await;
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut alice0 = WsClient::connect(&cluster.nodes[0].ws_url(&alice)).await;
    let mut alice2 = WsClient::connect(&cluster.nodes[2].ws_url(&alice)).await;
    let mut bob1 = WsClient::connect(&cluster.nodes[1].ws_url(&bob)).await;
    let mut bob2 = WsClient::connect(&cluster.nodes[2].ws_url(&bob)).await;

    let sent = alice0
        .request(json!({"type": "dm", "to": bob, "content": "hi"}))
        .await;

    assert_eq!(sent["type"], "dm");
    for other in [&mut alice2, &mut bob1, &mut bob2] {
        assert_eq!(other.recv_until(|f| f["type"] == "dm").await, sent);
    }
    let page = bob1
        .request(json!({"type": "history", "with": alice}))
        .await;
    assert_eq!(ids(&page["messages"]), [sent["id"].as_str().unwrap()]);
}

async fn presence_events_and_views_are_the_same_from_every_node(backing: Backing) {
    let cluster = Cluster::start_on(backing, 3).await;
    let room = unique("room");
    let mut watcher = WsClient::connect(&cluster.nodes[0].ws_url("watcher")).await;
    watcher.join(&room).await;

    // alice joins twice (nodes 1 and 2): one join event, one leave event.
    let mut alice1 = WsClient::connect(&cluster.nodes[1].ws_url("alice")).await;
    let mut alice2 = WsClient::connect(&cluster.nodes[2].ws_url("alice")).await;
    let joined = alice1.join(&room).await;
    assert_eq!(joined["members"], json!(["alice", "watcher"]));
    alice2.join(&room).await;
    let event = watcher.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(
        event,
        json!({"type": "presence", "room": room, "user": "alice", "event": "join"})
    );

    for node in &cluster.nodes {
        let users: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
        assert_eq!(users, ["alice", "watcher"]);
        let online: Vec<String> = get_json(&node.url("/api/users")).await;
        assert_eq!(online, ["alice", "watcher"]);
        let rooms: Value = get_json(&node.url("/api/rooms")).await;
        assert_eq!(rooms, json!([{"name": room, "members": 2}]));
    }

    alice1.close().await;
    // Still in the room through node 2: the watcher's next presence event is
    // the leave after the second connection goes, not before.
    let marker = alice2.say(&room, "still here").await;
    let (before, _) = watcher
        .collect_until(|f| f["type"] == "message" && f["id"] == marker["id"])
        .await;
    assert!(before.iter().all(|f| f["type"] != "presence"), "{before:?}");
    alice2.close().await;
    let event = watcher.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(event["event"], "leave");
    for node in &cluster.nodes {
        let online: Vec<String> = get_json(&node.url("/api/users")).await;
        assert_eq!(online, ["watcher"]);
    }
}

async fn a_rest_post_on_one_node_is_delivered_on_another(backing: Backing) {
    let cluster = Cluster::start_on(backing, 2).await;
    let room = unique("room");
    let mut bob = WsClient::connect(&cluster.nodes[1].ws_url("bob")).await;
    bob.join(&room).await;

    let response = reqwest::Client::new()
        .post(cluster.nodes[0].url(&format!("/api/rooms/{room}/messages")))
        .json(&json!({"user": "alice", "content": "via REST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();

    assert_eq!(bob.recv_until(|f| f["type"] == "message").await, created);
    let page: Value = get_json(&cluster.nodes[1].url(&format!("/api/rooms/{room}/messages"))).await;
    assert_eq!(page, json!([created]));
}

async fn stats_list_every_live_node_and_created_rooms_are_shared(backing: Backing) {
    let cluster = Cluster::start_on(backing, 3).await;
    let expected: BTreeSet<String> = cluster.nodes.iter().map(|n| n.node_id.clone()).collect();
    for node in &cluster.nodes {
        let url = node.url("/api/stats");
        let stats: Value = eventually("every node listed", || {
            let url = url.clone();
            let expected = expected.clone();
            async move {
                let stats: Value = get_json(&url).await;
                let nodes: BTreeSet<String> = stats["nodes"]
                    .as_array()?
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect();
                (nodes == expected).then_some(stats)
            }
        })
        .await;
        assert_eq!(stats["node"], node.node_id.as_str());
    }

    let room = unique("made");
    let client = reqwest::Client::new();
    let created = client
        .post(cluster.nodes[0].url("/api/rooms"))
        .json(&json!({"name": room}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let again = client
        .post(cluster.nodes[2].url("/api/rooms"))
        .json(&json!({"name": room}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let rooms: Value = get_json(&cluster.nodes[1].url("/api/rooms")).await;
    assert_eq!(rooms, json!([{"name": room, "members": 0}]));
}

async fn concurrent_senders_on_different_nodes_produce_one_order_everywhere_equal_to_history(
    backing: Backing,
) {
    let cluster = Cluster::start_with_on(backing, 3, |s| s.rate_limit = 0).await;
    let room = unique("room");
    const PER_SENDER: usize = 40;
    let mut readers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut reader = WsClient::connect(&node.ws_url(&format!("reader{i}"))).await;
        reader.join(&room).await;
        readers.push(reader);
    }
    let mut senders = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut sender = WsClient::connect(&node.ws_url(&format!("sender{i}"))).await;
        sender.join(&room).await;
        senders.push(sender);
    }

    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut sender)| {
            let room = room.clone();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let content = format!("{i}:{n}");
                    sender
                        .send(json!({"type": "message", "room": room, "content": content}))
                        .await;
                }
                sender
            })
        })
        .collect();
    let total = PER_SENDER * tasks.len();
    let mut sequences = Vec::new();
    for reader in &mut readers {
        let mut seen = Vec::new();
        while seen.len() < total {
            let frame = reader.recv_until(|f| f["type"] == "message").await;
            seen.push(frame["id"].as_str().unwrap().to_owned());
        }
        sequences.push(seen);
    }
    for task in tasks {
        task.await.unwrap();
    }

    let page = readers[0]
        .request(json!({"type": "history", "room": room, "limit": 100}))
        .await;
    let newest = ids(&page["messages"]);
    let unique_ids: BTreeSet<&String> = sequences[0].iter().collect();
    assert_eq!(unique_ids.len(), total, "no duplicates");
    for seen in &sequences {
        assert_eq!(seen, &sequences[0], "every reader sees one order");
        assert_eq!(seen[total - 100..], newest[..], "the order of history");
    }
}

async fn a_node_subscribes_only_to_rooms_it_serves(backing: Backing) {
    let cluster = Cluster::start_on(backing, 2).await;
    let (served, elsewhere) = (unique("served"), unique("elsewhere"));
    let mut alice = WsClient::connect(&cluster.nodes[0].ws_url("alice")).await;
    alice.join(&served).await;
    let mut bob = WsClient::connect(&cluster.nodes[1].ws_url("bob")).await;
    bob.join(&elsewhere).await;

    let channels = cluster.subscribed_channels().await;

    assert!(channels.contains(&format!("{}{{r:{served}}}", cluster.prefix)));
    assert!(channels.contains(&format!("{}{{r:{elsewhere}}}", cluster.prefix)));
    // Each room channel has exactly one subscriber: the node serving it.
    for room in [&served, &elsewhere] {
        let count = cluster
            .subscribers(&format!("{}{{r:{room}}}", cluster.prefix))
            .await;
        assert_eq!(count, 1, "{room}");
    }
    bob.request(json!({"type": "leave", "room": elsewhere}))
        .await;
    let channel = format!("{}{{r:{elsewhere}}}", cluster.prefix);
    eventually("the last leave unsubscribes", || async {
        (cluster.subscribers(&channel).await == 0).then_some(())
    })
    .await;
}
