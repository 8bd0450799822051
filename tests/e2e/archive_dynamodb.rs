//! The DynamoDB archive against a real DynamoDB-compatible server (moto):
//! the `Archive` contract called directly, then a node whose history pages
//! past its hot window into the table.

use std::time::Duration;

use bytes::Bytes;
use chorus::archive::dynamodb::DynamoArchive;
use chorus::archive::{Archive, Entry};
use chorus::cluster::{Log, Stored};
use chorus::domain::{MessageId, RoomName, UserName};
use serde_json::json;

use crate::support::moto::{MotoServer, unique_table};
use crate::support::node::Endpoint;
use crate::support::{TestNode, WsClient, eventually_within, ids, unique};

/// A prepared archive in a table of its own on `moto`.
async fn archive(moto: &MotoServer) -> DynamoArchive {
    let archive = DynamoArchive::new(&unique_table(), Some(moto.url())).await;
    archive.prepare().await.expect("the table is created");
    archive
}

fn room(name: &str) -> Log {
    Log::Room(RoomName::parse(name).expect("room name"))
}

/// `n` messages of `log` with ids `(1000 + i, i % 3)` and frames naming
/// their position.
fn messages(log: &Log, n: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            log: log.clone(),
            message: Stored {
                id: MessageId::new(1000 + i, i % 3),
                payload: Bytes::from(format!("{{\"n\":{i}}}")),
            },
        })
        .collect()
}

fn stored_ids(stored: &[Stored]) -> Vec<MessageId> {
    stored.iter().map(|s| s.id).collect()
}

fn entry_ids(entries: &[Entry]) -> Vec<MessageId> {
    entries.iter().map(|e| e.message.id).collect()
}

#[tokio::test]
async fn dynamo_archive_stores_a_batch_once_however_often_it_is_stored() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let log = room(&unique("room"));
    let batch = messages(&log, 60);

    archive.store(&batch).await.expect("store");
    archive.store(&batch).await.expect("store again");
    archive
        .store(&batch[10..40])
        .await
        .expect("store a part again");
    // One batch naming a message twice is one message too.
    let twice = [batch[5].clone(), batch[5].clone()];
    archive.store(&twice).await.expect("store a repeat");
    archive.store(&[]).await.expect("store nothing");

    let all = archive.before(&log, None, 1000).await.expect("before");
    assert_eq!(
        stored_ids(&all),
        entry_ids(&batch),
        "every message once, oldest first"
    );
    for (read, sent) in all.iter().zip(&batch) {
        assert_eq!(read.payload, sent.message.payload, "the frame as stored");
    }
    // A second prepare finds the table and leaves it as it is.
    archive.prepare().await.expect("prepare again");
    assert_eq!(
        archive
            .before(&log, None, 1000)
            .await
            .expect("before")
            .len(),
        60
    );
}

#[tokio::test]
async fn dynamo_archive_pages_back_and_forth_with_limits() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let log = room(&unique("room"));
    let batch = messages(&log, 60);
    let sent = entry_ids(&batch);
    archive.store(&batch).await.expect("store");

    // Backwards in pages of 7, as a client pages history.
    let mut back = Vec::new();
    let mut before = None;
    loop {
        let page = archive.before(&log, before, 7).await.expect("before");
        assert!(page.len() <= 7);
        let Some(first) = page.first() else { break };
        before = Some(first.id);
        let mut older = stored_ids(&page);
        older.extend(back);
        back = older;
    }
    assert_eq!(back, sent, "paging back reaches every message once");

    // Forwards in pages of 26: more than one write chunk.
    let mut forth = Vec::new();
    let mut after = MessageId::MIN;
    loop {
        let page = archive.after(&log, after, 26).await.expect("after");
        let Some(last) = page.last() else { break };
        after = last.id;
        forth.extend(stored_ids(&page));
    }
    assert_eq!(forth, sent, "paging forth reaches every message once");

    assert_eq!(
        stored_ids(
            &archive
                .before(&log, Some(sent[30]), 5)
                .await
                .expect("before")
        ),
        sent[25..30],
        "the newest five before an id, oldest first"
    );
    assert_eq!(
        stored_ids(&archive.after(&log, sent[30], 5).await.expect("after")),
        sent[31..36]
    );
    assert!(
        archive
            .before(&log, Some(sent[0]), 5)
            .await
            .expect("before")
            .is_empty()
    );
    assert!(
        archive
            .after(&log, sent[59], 5)
            .await
            .expect("after")
            .is_empty()
    );
    assert!(
        archive
            .before(&log, None, 0)
            .await
            .expect("limit 0")
            .is_empty()
    );
}

#[tokio::test]
async fn dynamo_archive_reads_past_one_query_page() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let log = room(&unique("room"));
    // More than one Query asks for (500), so a read follows LastEvaluatedKey.
    let batch = messages(&log, 1200);
    let sent = entry_ids(&batch);
    archive.store(&batch).await.expect("store");

    let newest = archive.before(&log, None, 1100).await.expect("before");
    assert_eq!(stored_ids(&newest), sent[100..]);
    let oldest = archive
        .after(&log, MessageId::MIN, 1100)
        .await
        .expect("after");
    assert_eq!(stored_ids(&oldest), sent[..1100]);
    let all = archive.before(&log, None, 5000).await.expect("before");
    assert_eq!(stored_ids(&all), sent, "a limit past the end returns all");
}

#[tokio::test]
async fn dynamo_archive_orders_ids_by_value_whatever_their_digit_count() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let log = room(&unique("room"));
    let ordered = [
        MessageId::new(9, 10),
        MessageId::new(10, 9),
        MessageId::new(999, 9),
        MessageId::new(999, 10),
        MessageId::new(999, 100),
        MessageId::new(1000, 0),
        MessageId::new(1_700_000_000_000, 2),
        MessageId::new(10_000_000_000_000, 0),
    ];
    // Stored in an order neither numeric nor lexical.
    let shuffled = [5, 0, 7, 3, 1, 6, 2, 4].map(|i| Entry {
        log: log.clone(),
        message: Stored {
            id: ordered[i],
            payload: Bytes::from(ordered[i].to_string()),
        },
    });
    archive.store(&shuffled).await.expect("store");

    let all = archive.before(&log, None, 100).await.expect("before");
    assert_eq!(stored_ids(&all), ordered);
    for stored in &all {
        assert_eq!(stored.payload, stored.id.to_string().as_bytes());
    }
    assert_eq!(
        stored_ids(
            &archive
                .before(&log, Some(MessageId::new(1000, 0)), 2)
                .await
                .expect("before")
        ),
        [MessageId::new(999, 10), MessageId::new(999, 100)]
    );
    assert_eq!(
        stored_ids(
            &archive
                .after(&log, MessageId::new(999, 9), 2)
                .await
                .expect("after")
        ),
        [MessageId::new(999, 10), MessageId::new(999, 100)]
    );
}

#[tokio::test]
async fn dynamo_archive_keeps_dm_and_room_logs_apart() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let (a, b) = (unique("a"), unique("b"));
    let user = |n: &str| UserName::parse(n).expect("user name");
    let dm = Log::direct(user(&a), user(&b));
    let other_dm = Log::direct(user(&a), user(&unique("c")));
    // A room named like one of the users: its name in the table differs.
    let room = room(&a);
    let mut batch = messages(&dm, 10);
    batch.extend(messages(&other_dm, 4));
    batch.extend(messages(&room, 7));
    archive.store(&batch).await.expect("store");

    let both_ways = Log::direct(user(&b), user(&a));
    assert_eq!(
        stored_ids(&archive.before(&both_ways, None, 100).await.expect("dm")),
        entry_ids(&batch[..10]),
        "the pair's log, whichever of them asks"
    );
    assert_eq!(
        stored_ids(
            &archive
                .after(&other_dm, MessageId::MIN, 100)
                .await
                .expect("other dm")
        ),
        entry_ids(&batch[10..14])
    );
    assert_eq!(
        stored_ids(&archive.before(&room, None, 100).await.expect("room")),
        entry_ids(&batch[14..])
    );
}

#[tokio::test]
async fn dynamo_archive_unreachable_fails_as_unavailable_in_bounded_time() {
    // A port with nothing behind it: refused at once, never a hang.
    let port = crate::support::tools::free_port();
    let archive =
        DynamoArchive::new(&unique_table(), Some(&format!("http://127.0.0.1:{port}"))).await;
    let started = std::time::Instant::now();
    let error = archive.prepare().await.expect_err("nothing answers");
    assert!(
        matches!(error, chorus::archive::ArchiveError::Unavailable(_)),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dynamo_history_pages_past_the_hot_window_into_the_archive() {
    let moto = MotoServer::shared_or_start();
    let table = unique_table();
    let node = TestNode::spawn_with(|s| {
        s.history_limit = 5;
        s.rate_limit = 0;
        s.archive_dynamodb_table = Some(table.clone());
        s.archive_dynamodb_endpoint = Some(moto.url().to_owned());
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let mut sent = alice.say_many(&room, 30).await;

    // The archive has them all once the archiver has drained (the node
    // creates the table first).
    let reader = DynamoArchive::new(&table, Some(moto.url())).await;
    let log = self::room(&room);
    let holds = |n: usize| {
        let (reader, log) = (&reader, &log);
        async move {
            let held = reader.before(log, None, 100).await.ok()?;
            (held.len() == n).then_some(())
        }
    };
    eventually_within(
        "the archive to hold all 30",
        Duration::from_secs(30),
        || holds(30),
    )
    .await;
    // One drain at a time: once the next message is archived, the drain
    // that stored the first 30 has marked them, and the hot history has
    // trimmed them down to its 5.
    let last = alice.say(&room, "m30").await;
    sent.push(last["id"].as_str().expect("id").to_owned());
    eventually_within("the archive to hold 31", Duration::from_secs(30), || {
        holds(31)
    })
    .await;
    // A message only the archive holds, older than every other: history
    // shows it only if it reads the archive.
    let only_archived = MessageId::new(1, 0);
    reader
        .store(&[Entry {
            log: log.clone(),
            message: Stored {
                id: only_archived,
                payload: Bytes::from(format!(
                    r#"{{"type":"message","id":"{only_archived}","room":"{room}","user":"zed","content":"old","ts":"1970-01-01T00:00:00.001Z"}}"#
                )),
            },
        }])
        .await
        .expect("store");
    sent.insert(0, only_archived.to_string());

    // Five hot, the rest from the archive: every id once, in order.
    let mut paged: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..sent.len() {
        let mut request = json!({"type": "history", "room": room, "limit": 4});
        if let Some(id) = &before {
            request["before"] = json!(id);
        }
        let page = alice.request(request).await;
        assert_eq!(page["type"], "history", "{page}");
        let page = ids(&page["messages"]);
        let Some(first) = page.first() else { break };
        before = Some(first.clone());
        paged.splice(0..0, page);
    }
    assert_eq!(
        paged, sent,
        "every message once, in order, across the boundary"
    );

    let all = alice
        .request(json!({"type": "history", "room": room, "before": sent[29], "limit": 100}))
        .await;
    assert_eq!(
        ids(&all["messages"]),
        sent[..29],
        "one page across the boundary too"
    );
    node.stop().await;
}

#[tokio::test]
async fn dynamo_archive_prepared_by_several_nodes_at_once_is_one_table() {
    let moto = MotoServer::shared_or_start();
    let table = unique_table();
    let nodes = [
        DynamoArchive::new(&table, Some(moto.url())).await,
        DynamoArchive::new(&table, Some(moto.url())).await,
        DynamoArchive::new(&table, Some(moto.url())).await,
    ];
    let prepared = futures_util::future::join_all(nodes.iter().map(|n| n.prepare())).await;
    for result in prepared {
        result.expect("each node finds the table ready");
    }
    let log = room(&unique("room"));
    let batch = messages(&log, 3);
    nodes[0].store(&batch).await.expect("store");
    assert_eq!(
        stored_ids(&nodes[2].before(&log, None, 10).await.expect("before")),
        entry_ids(&batch),
        "one table for all"
    );
}

#[tokio::test]
async fn dynamo_archive_deletes_one_message_and_says_whether_it_was_there() {
    let moto = MotoServer::shared_or_start();
    let archive = archive(&moto).await;
    let log = room(&unique("room"));
    let batch = messages(&log, 5);
    archive.store(&batch).await.expect("store");

    let doomed = batch[2].message.id;
    assert!(archive.delete(&log, doomed).await.expect("delete"));
    assert!(!archive.delete(&log, doomed).await.expect("delete again"));
    let other = room(&unique("other"));
    assert!(
        !archive
            .delete(&other, batch[1].message.id)
            .await
            .expect("delete elsewhere")
    );
    let left = archive.before(&log, None, 100).await.expect("before");
    let mut expected = entry_ids(&batch);
    expected.remove(2);
    assert_eq!(stored_ids(&left), expected);
}
