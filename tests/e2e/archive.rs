//! The Postgres archive (`DATABASE_URL`), end to end on a real Postgres:
//! every accepted message is archived exactly once, reads reach past the hot
//! window without a gap, and the faults the issue names (Postgres stopped
//! under load, the archiving node killed mid-batch) lose and duplicate
//! nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus::config::Settings;
use serde_json::{Value, json};

use crate::support::cluster::{Deployment, on_both_backings};
use crate::support::node::Endpoint;
use crate::support::postgres::{PgDatabase, PgServer};
use crate::support::{Backing, Cluster, TestNode, WsClient, get_json, ids, unique};

/// How long the archive may take to catch up in these tests.
const CATCH_UP: Duration = Duration::from_secs(30);

on_both_backings!(and in_memory;
    every_message_is_archived_once_and_reads_reach_past_the_hot_window,
    an_admin_delete_removes_the_message_from_the_archive_too,
);

const ADMIN: &str = "an-admin-token-of-at-least-32-bytes!";

/// `DELETE /api/admin/rooms/{room}/messages/{id}` on `node`: its status.
async fn admin_delete(node: &TestNode, room: &str, id: &str) -> u16 {
    let auth = format!("Bearer {ADMIN}");
    crate::support::http::call(
        reqwest::Method::DELETE,
        &node.url(&format!("/api/admin/rooms/{room}/messages/{id}")),
        None,
        &[("Authorization", auth.as_str())],
    )
    .await
    .status
    .as_u16()
}

/// Settings of a node keeping three hot messages, archiving to `db`, with
/// the admin API.
fn archiving_with_admin(db: &PgDatabase) -> impl Fn(&mut Settings) + use<> {
    let url = db.url.clone();
    move |s| {
        s.history_limit = 3;
        s.rate_limit = 0;
        s.database_url = Some(url.clone());
        s.admin_token = Some(ADMIN.to_owned());
    }
}

async fn an_admin_delete_removes_the_message_from_the_archive_too(on: Option<Backing>) {
    let db = PgDatabase::create().await;
    let deployment = Deployment::start(on, archiving_with_admin(&db)).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url(&unique("alice"))).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url(&unique("bob"))).await;
    alice.join(&room).await;
    bob.join(&room).await;
    let sent = alice.say_many(&room, 6).await;
    db.wait_for(CATCH_UP, |rows| rows.len() >= 6).await;

    // One only the archive holds (trimmed from the hot history), one both do.
    for id in [&sent[0], &sent[5]] {
        assert_eq!(admin_delete(deployment.b(), &room, id).await, 204, "{id}");
        let event = bob.recv_until(|f| f["type"] == "deleted").await;
        assert_eq!(event, json!({"type": "deleted", "room": room, "id": id}));
    }
    let rows = db.rows().await;
    let left: Vec<&str> = rows.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(left, sent[1..5], "gone from the archive");
    assert_eq!(admin_delete(deployment.a(), &room, &sent[0]).await, 404);
    let paged = page_back(&mut bob, json!({"room": room}), 2).await;
    assert_eq!(ids(&json!(paged)), sent[1..5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_deleted_while_it_waits_for_the_archive_never_reaches_it() {
    let server = PgServer::start();
    let db = PgDatabase::create_on(&server.url()).await;
    let node = TestNode::spawn_with(archiving_with_admin(&db)).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let mut sent = alice.say_many(&room, 2).await;
    db.wait_for(CATCH_UP, |rows| rows.len() >= 2).await;
    tokio::task::block_in_place(|| server.stop());
    for n in 0..3 {
        let echo = alice.say(&room, &format!("late {n}")).await;
        sent.push(echo["id"].as_str().expect("id").to_owned());
    }
    // Waiting: deleted from the hot history before the archive saw it.
    assert_eq!(admin_delete(&node, &room, &sent[3]).await, 204);
    tokio::task::block_in_place(|| server.restart());
    let rows = db.wait_for(CATCH_UP, |rows| rows.len() >= 4).await;
    let archived: Vec<&str> = rows.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(archived, [&sent[..3], &sent[4..]].concat());
}

/// Pages a log back with `history` through `before`, oldest first.
async fn page_back(client: &mut WsClient, target: Value, page: usize) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut frame = target.clone();
        frame["type"] = json!("history");
        frame["limit"] = json!(page);
        if let Some(before) = &before {
            frame["before"] = json!(before);
        }
        let answer = client.request(frame).await;
        let messages = answer["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        before = messages[0]["id"].as_str().map(str::to_owned);
        let mut older = messages;
        older.extend(all);
        all = older;
    }
    all
}

async fn every_message_is_archived_once_and_reads_reach_past_the_hot_window(on: Option<Backing>) {
    let db = PgDatabase::create().await;
    let deployment = Deployment::start(on, |s| {
        s.history_limit = 5;
        s.dm_rate = 0;
        s.rate_limit = 0;
        s.database_url = Some(db.url.clone());
    })
    .await;
    let room = unique("room");
    let (alice_name, bob_name) = (unique("alice"), unique("bob"));
    let mut alice = WsClient::connect(&deployment.a().ws_url(&alice_name)).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url(&bob_name)).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, 30).await;
    let mut dms = Vec::new();
    for i in 0..12 {
        let echo = alice
            .request(json!({"type": "dm", "to": bob_name, "content": format!("d{i}")}))
            .await;
        assert_eq!(echo["type"], "dm", "{echo}");
        dms.push(echo["id"].as_str().expect("id").to_owned());
    }

    let rows = db.wait_for(CATCH_UP, |rows| rows.len() >= 42).await;
    assert_eq!(rows.len(), 42, "every message archived, none twice");
    let room_log = format!("r:{room}");
    let archived: Vec<&str> = rows
        .iter()
        .filter(|(log, _, _)| *log == room_log)
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(archived, sent, "the room's messages, in order");
    for (i, (_, id, frame)) in rows
        .iter()
        .filter(|(log, _, _)| *log == room_log)
        .enumerate()
    {
        let frame: Value = serde_json::from_str(frame).expect("a JSON frame");
        assert_eq!(frame["id"], id.as_str());
        assert_eq!(frame["content"], format!("m{i}"));
        assert_eq!(frame["type"], "message");
    }
    let dm_rows: Vec<&str> = rows
        .iter()
        .filter(|(log, _, _)| log.starts_with("d:"))
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(dm_rows, dms, "the pair's DMs, in order, under one log");

    // Paging: five from the hot history, the rest from the archive.
    let paged = page_back(&mut bob, json!({"room": room}), 7).await;
    assert_eq!(ids(&json!(paged)), sent, "every message once, in order");
    let paged_dms = page_back(&mut bob, json!({"with": alice_name}), 4).await;
    assert_eq!(ids(&json!(paged_dms)), dms);
    let rest: Value = get_json(
        &deployment
            .b()
            .url(&format!("/api/rooms/{room}/messages?limit=100")),
    )
    .await;
    assert_eq!(ids(&rest), sent, "REST reads across the boundary too");
    let before: Value = get_json(&deployment.b().url(&format!(
        "/api/rooms/{room}/messages?before={}&limit=4",
        sent[20]
    )))
    .await;
    assert_eq!(ids(&before), sent[16..20]);

    // A join with `since` older than the hot window gets every message after it.
    let mut carol = WsClient::connect(&deployment.b().ws_url(&unique("carol"))).await;
    let joined = carol
        .request(json!({"type": "join", "room": room, "since": sent[2]}))
        .await;
    assert_eq!(ids(&joined["history"]), sent[3..]);
    assert!(joined.get("truncated").is_none(), "{joined}");
    let joined = carol
        .request(json!({"type": "join", "room": room, "since": "0-0"}))
        .await;
    assert_eq!(ids(&joined["history"]), sent);
    // Without `since`: the last fifty, which the hot window alone lacks.
    let mut dave = WsClient::connect(&deployment.a().ws_url(&unique("dave"))).await;
    let joined = dave.join(&room).await;
    assert_eq!(ids(&joined["history"]), sent);
}

/// What a load of senders saw.
#[derive(Default)]
struct Tally {
    sent: usize,
    accepted: Vec<String>,
    unavailable: usize,
    /// Sends whose connection ended before an answer (a killed node).
    cut: usize,
    other: Vec<Value>,
}

/// Senders on `urls` that each send to `room`, one command after the
/// other's answer, until `stop` or until their node dies. None is retried,
/// so each accepted id is one send.
async fn load(urls: Vec<String>, room: String, stop: Arc<AtomicBool>) -> Tally {
    let senders = urls.into_iter().enumerate().map(|(i, url)| {
        let (room, stop) = (room.clone(), stop.clone());
        tokio::spawn(async move {
            let mut client = WsClient::connect(&url).await;
            client.join(&room).await;
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                tally.sent += 1;
                let Some(answer) = client
                    .try_request(json!({
                        "type": "message",
                        "room": room,
                        "content": format!("s{i}-{}", tally.sent),
                    }))
                    .await
                else {
                    // The node was killed: this send's fate is unknown.
                    tally.cut += 1;
                    break;
                };
                match answer["type"].as_str() {
                    Some("message") => tally
                        .accepted
                        .push(answer["id"].as_str().expect("id").to_owned()),
                    Some("error") if answer["code"] == "unavailable" => tally.unavailable += 1,
                    _ => tally.other.push(answer),
                }
            }
            tally
        })
    });
    let mut total = Tally::default();
    for sender in futures_util::future::join_all(senders).await {
        let tally = sender.expect("sender");
        total.sent += tally.sent;
        total.accepted.extend(tally.accepted);
        total.unavailable += tally.unavailable;
        total.cut += tally.cut;
        total.other.extend(tally.other);
    }
    total
}

/// Counts the archive against what was accepted: lost and duplicated.
fn count(
    rows: &[(String, String, String)],
    log: &str,
    accepted: &[String],
) -> (usize, usize, Vec<String>) {
    let archived: Vec<String> = rows
        .iter()
        .filter(|(l, _, _)| l == log)
        .map(|(_, id, _)| id.clone())
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &archived {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let lost = accepted
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    (lost, duplicated, archived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_loses_and_duplicates_nothing() {
    let server = PgServer::start();
    let db = PgDatabase::create_on(&server.url()).await;
    let cluster = Cluster::start_with(2, |s| {
        s.history_limit = 20;
        s.rate_limit = 0;
        s.database_url = Some(db.url.clone());
    })
    .await;
    let room = unique("room");
    let stop = Arc::new(AtomicBool::new(false));
    let urls = (0..4)
        .map(|i| cluster.nodes[i % 2].ws_url(&format!("s{i}")))
        .collect();
    let senders = tokio::spawn(load(urls, room.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| server.stop());
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| server.restart());
    let outage = outage.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = senders.await.expect("load");

    let accepted = tally.accepted.len();
    let rows = db
        .wait_for(CATCH_UP, |rows| {
            count(rows, &format!("r:{room}"), &tally.accepted).0 == 0
        })
        .await;
    let (lost, duplicated, archived) = count(&rows, &format!("r:{room}"), &tally.accepted);
    let mut in_order = archived.clone();
    in_order.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').expect("id");
        (
            ms.parse::<u64>().expect("ms"),
            seq.parse::<u64>().expect("seq"),
        )
    });
    eprintln!(
        "postgres stopped for {outage:?} under load: sent {}, accepted {accepted}, \
         unavailable {}, archived {}, lost {lost}, duplicated {duplicated}",
        tally.sent,
        tally.unavailable,
        archived.len()
    );
    assert!(
        tally.other.is_empty(),
        "only messages or unavailable: {:?}",
        tally.other
    );
    assert_eq!(tally.unavailable, 0, "sends do not wait for the archive");
    assert!(
        accepted > 100,
        "the load ran through the outage: {accepted}"
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(
        archived.len(),
        accepted,
        "nothing archived that was not accepted"
    );
    assert_eq!(archived, in_order, "in id order");

    // Paging across the hot/archive boundary returns every message once.
    let mut reader = WsClient::connect(&cluster.nodes[1].ws_url("reader")).await;
    let paged = page_back(&mut reader, json!({"room": room}), 100).await;
    let paged = ids(&json!(paged));
    assert_eq!(
        paged, in_order,
        "every message once, in order, across the boundary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_archiving_leaves_nothing_lost_or_twice() {
    let db = PgDatabase::create().await;
    let cluster = Cluster::start_with(1, |s| {
        s.history_limit = 10;
        s.database_url = Some(db.url.clone());
    })
    .await;
    let mut victim = cluster.spawn_process(
        &cluster.node_id("victim"),
        &[
            ("DATABASE_URL", &db.url),
            ("CHORUS_HISTORY_LIMIT", "10"),
            ("CHORUS_RATE_LIMIT", "0"),
        ],
    );
    crate::support::wait_ready(&victim.url("/ready")).await;
    // Rooms only the victim serves: only its archiver knows of them until the
    // survivor's sweep finds them.
    let rooms: Vec<String> = (0..4).map(|_| unique("room")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = rooms
        .iter()
        .map(|room| {
            tokio::spawn(load(
                vec![victim.ws_url(&unique("s")), victim.ws_url(&unique("s"))],
                room.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // The kill lands while the victim's archiver drains a steady stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    victim.sigkill();
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for load in loads {
        tallies.push(load.await.expect("load"));
    }

    // The survivor sweeps at start and every minute; a fresh node sweeps now.
    let survivor = cluster
        .spawn_node(&cluster.node_id("late"), |s| {
            s.history_limit = 10;
            s.database_url = Some(db.url.clone());
        })
        .await;
    crate::support::wait_ready(&survivor.url("/ready")).await;
    let rows = db
        .wait_for(CATCH_UP, |rows| {
            rooms
                .iter()
                .zip(&tallies)
                .all(|(room, tally)| count(rows, &format!("r:{room}"), &tally.accepted).0 == 0)
        })
        .await;
    let mut totals = (0, 0, 0, 0, 0);
    for (room, tally) in rooms.iter().zip(&tallies) {
        let (lost, duplicated, archived) = count(&rows, &format!("r:{room}"), &tally.accepted);
        // A send cut by the kill may have been stored without its echo: the
        // archive may hold it too, but only once, and at the log's end.
        let extra: BTreeSet<&String> = archived
            .iter()
            .filter(|id| !tally.accepted.contains(id))
            .collect();
        assert!(
            extra.len() <= tally.cut,
            "only cut sends may be stored unanswered: {extra:?}"
        );
        totals.0 += tally.sent;
        totals.1 += tally.accepted.len();
        totals.2 += archived.len();
        totals.3 += lost;
        totals.4 += duplicated;
        // Every message of the room, hot or archived, reads back once.
        let mut reader = WsClient::connect(&survivor.ws_url(&unique("reader"))).await;
        let paged = page_back(&mut reader, json!({"room": room}), 100).await;
        assert_eq!(ids(&json!(paged)), archived, "reads match the archive");
    }
    eprintln!(
        "archiving node killed: sent {}, accepted {}, archived {}, lost {}, duplicated {}",
        totals.0, totals.1, totals.2, totals.3, totals.4
    );
    assert!(totals.1 > 100, "the load ran: {}", totals.1);
    assert_eq!((totals.3, totals.4), (0, 0), "lost, duplicated");
    drop(survivor);
}

/// An embedded node archiving to `db`, keeping `hot` messages, and `n`
/// messages alice sent to a fresh room.
async fn one_node_with_messages(
    db: &PgDatabase,
    hot: u64,
    n: usize,
) -> (TestNode, String, WsClient, Vec<String>) {
    let node = TestNode::spawn_with(|s| {
        s.history_limit = hot;
        s.rate_limit = 0;
        s.database_url = Some(db.url.clone());
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, n).await;
    (node, room, alice, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_archive_down_a_join_still_succeeds_and_paging_past_the_hot_window_answers_unavailable()
 {
    let server = PgServer::start();
    let db = PgDatabase::create_on(&server.url()).await;
    let (node, room, mut alice, sent) = one_node_with_messages(&db, 3, 6).await;
    db.wait_for(CATCH_UP, |rows| rows.len() >= 6).await;
    tokio::task::block_in_place(|| server.stop());

    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    let joined = bob.join(&room).await;
    assert_eq!(ids(&joined["history"]), sent[3..], "the hot part");
    assert_eq!(joined["truncated"], true, "{joined}");
    let joined = bob
        .request(json!({"type": "join", "room": room, "since": sent[0]}))
        .await;
    assert_eq!(ids(&joined["history"]), sent[3..]);
    assert_eq!(joined["truncated"], true, "{joined}");
    let page = bob
        .request(json!({"type": "history", "room": room, "before": sent[3]}))
        .await;
    assert_eq!(page["code"], "unavailable", "{page}");
    // Sends do not wait for the archive.
    let later = alice.say(&room, "still here").await;
    assert_eq!(later["type"], "message");

    tokio::task::block_in_place(|| server.restart());
    let page = bob
        .request(json!({"type": "history", "room": room, "before": sent[3]}))
        .await;
    assert_eq!(ids(&page["messages"]), sent[..3], "{page}");
    db.wait_for(CATCH_UP, |rows| rows.len() >= 7).await;
    assert_eq!(db.rows().await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_far_behind_gets_the_newest_thousand_marked_truncated() {
    let db = PgDatabase::create().await;
    let (node, room, _alice, sent) = one_node_with_messages(&db, 5, 1100).await;
    db.wait_for(CATCH_UP, |rows| rows.len() >= 1100).await;

    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    let joined = bob
        .request(json!({"type": "join", "room": room, "since": sent[0]}))
        .await;
    assert_eq!(ids(&joined["history"]), sent[100..], "the newest thousand");
    assert_eq!(joined["truncated"], true);
    // Within a thousand, from the archive and the hot window, nothing missing.
    for since in [99, 100, 1090, 1094, 1095, 1099] {
        let joined = bob
            .request(json!({"type": "join", "room": room, "since": sent[since]}))
            .await;
        assert_eq!(ids(&joined["history"]), sent[since + 1..], "since #{since}");
        assert!(
            joined.get("truncated").is_none(),
            "since #{since}: {joined}"
        );
    }
}
