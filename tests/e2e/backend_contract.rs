//! The backend contract: what every [`Backend`] must do, whatever keeps the
//! state. Each check is written once as a function of a factory and run by
//! [`contract_suite!`]; the memory backend runs it below. Another backend
//! (Redis) adds one module with its own factory and the same macro line.
//! The few checks where a lone node and a cluster differ by design (whether
//! a node that left is still listed, whether a new process must restore)
//! are named in each backend's module with `contract_suite!(@tests …)`.
//!
//! A factory must give a backend that shares nothing with the ones it made
//! before (for Redis: a fresh key prefix), because several checks assert the
//! whole directory (`rooms`, `online`, `nodes`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus::cluster::{
    Backend, Backlog, ClusterError, Control, Deliver, Departure, Draft, Idempotency, Log, Marked,
    Publication, Removal, RoomSummary, Stored, Topic, UploadRecord, UploadState, UserConnections,
};
use chorus::domain::{
    FileName, IdempotencyKey, MediaType, MessageId, NodeId, RoomName, UploadId, UserName,
};
use tokio::sync::mpsc;

use crate::support::{TIMEOUT, unique};

/// What a backend under test is built from.
pub(crate) struct Parts {
    /// The id of the node the backend serves.
    pub(crate) node: NodeId,
    /// Where the backend hands publications on subscribed topics.
    pub(crate) deliver: Arc<dyn Deliver>,
    /// Messages kept per log.
    pub(crate) history_limit: usize,
    /// How long a log lives after its last message.
    pub(crate) history_ttl: Option<Duration>,
    /// True when an archive follows the histories (they keep a backlog).
    pub(crate) archiving: bool,
}

/// History limit for checks that do not test trimming.
const ROOMY: usize = 1000;
/// Created-room bound for checks that do not test it.
const NO_BOUND: usize = usize::MAX;

/// Generates one `#[tokio::test]` per contract check, each calling the check
/// with `$make`, an `async fn(Parts) -> Backend` (or any `AsyncFn` path).
macro_rules! contract_suite {
    ($make:path) => {
        $crate::backend_contract::contract_suite!(@tests $make;
            bus_delivers_only_subscribed_topics,
            bus_subscriptions_are_counted,
            bus_carries_id_except_and_payload_through,
            bus_carries_admin_controls_on_a_user_topic,
            bus_ping_succeeds_while_the_backend_is_up,
            presence_connect_and_disconnect_report_first_and_last_connection,
            presence_join_and_leave_count_connections_per_room_and_user,
            presence_members_and_online_are_sorted,
            presence_connections_for_admin_count_each_user_and_name_its_nodes,
            presence_rooms_lists_member_counts_and_created_rooms_by_name,
            presence_create_room_conflicts_with_an_existing_room,
            presence_create_room_stops_at_the_bound_but_rooms_with_members_are_listed,
            liveness_nodes_lists_this_node_once_it_beats,
            liveness_heartbeat_asks_for_a_restore_at_most_once_while_nothing_is_lost,
            liveness_restore_of_a_node_without_connections_changes_nothing,
            liveness_restore_keeps_the_presence_the_node_has_written,
            liveness_reap_without_dead_nodes_returns_nothing_and_keeps_this_node,
            liveness_remove_node_clears_and_returns_this_nodes_users_but_keeps_created_rooms,
            history_append_assigns_strictly_increasing_ids,
            history_append_publishes_to_every_given_topic_in_history_order,
            history_concurrent_appends_are_delivered_in_history_order,
            history_since_returns_every_message_after_the_id,
            history_since_is_truncated_only_when_messages_after_the_id_were_trimmed,
            history_before_pages_backwards_oldest_first_with_a_limit,
            history_direct_log_is_the_same_for_both_orders,
            history_a_repeated_idempotency_key_replays_the_original_and_publishes_nothing,
            history_a_quiet_log_expires_after_its_ttl,
            history_delete_removes_one_message_and_tells_the_room,
            backlog_keeps_what_the_archive_lacks_and_trims_once_archived,
            backlog_a_log_waiting_for_the_archive_does_not_expire,
            backlog_is_absent_without_an_archive,
            backlog_a_message_deleted_while_it_waits_is_handed_to_the_archiver,
            uploads_a_record_settles_once_and_only_its_uploader_attaches_it,
            uploads_pending_records_stop_at_the_cap_and_expire_with_their_ttl,
            uploads_a_restored_record_reads_back_as_it_was,
        );
    };
    (@tests $make:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::backend_contract::$check($make).await;
            }
        )*
    };
}
pub(crate) use contract_suite;

/// The embedded backend.
mod memory {
    use super::Parts;
    use chorus::cluster::Backend;

    async fn memory(parts: Parts) -> Backend {
        Backend::memory(
            parts.node,
            parts.deliver,
            parts.history_limit,
            parts.history_ttl,
            parts.archiving,
        )
    }

    super::contract_suite!(memory);
    super::contract_suite!(@tests memory; liveness_a_lone_node_stays_listed_after_remove_node);
}

/// The cluster backend, on a real `redis-server` of its own.
mod redis {
    use super::Parts;
    use crate::support::{RedisServer, unique};
    use chorus::cluster::Backend;
    use chorus::cluster::redis::{RedisSettings, RedisTarget};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    async fn redis(parts: Parts) -> Backend {
        let server = RedisServer::start();
        let settings = RedisSettings {
            target: RedisTarget::Single(server.url()),
            prefix: format!("{}:", unique("contract")),
            node: parts.node,
            history_limit: parts.history_limit,
            history_ttl: parts.history_ttl,
            presence_ttl: Duration::from_secs(30),
            archiving: parts.archiving,
        };
        server.keep_for_this_test();
        let backend = Backend::redis(
            &settings,
            parts.deliver,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
        .expect("redis backend");
        // Subscriptions need the subscriber connection up.
        crate::support::eventually("the subscriber to connect", || async {
            backend.bus.ping().await.ok()
        })
        .await;
        backend
    }

    super::contract_suite!(redis);
    super::contract_suite!(@tests redis;
        liveness_remove_node_takes_this_node_out_of_the_live_nodes,
        liveness_a_fresh_process_asks_for_one_restore,
    );
}

/// The cluster backend on a real Redis Cluster (3 primaries, 3 replicas),
/// shared by the module's checks, each under a key prefix of its own.
mod redis_cluster {
    use super::Parts;
    use crate::support::redis_cluster::SharedRedisCluster;
    use crate::support::unique;
    use chorus::cluster::Backend;
    use chorus::cluster::redis::{RedisSettings, RedisTarget};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    static CLUSTER: SharedRedisCluster = SharedRedisCluster::new();

    async fn redis_cluster(parts: Parts) -> Backend {
        let cluster = CLUSTER.get().await;
        let settings = RedisSettings {
            target: RedisTarget::Cluster(cluster.seed_urls()),
            prefix: format!("{}:", unique("contract")),
            node: parts.node,
            history_limit: parts.history_limit,
            history_ttl: parts.history_ttl,
            presence_ttl: Duration::from_secs(30),
            archiving: parts.archiving,
        };
        let backend = Backend::redis(
            &settings,
            parts.deliver,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
        .expect("redis cluster backend");
        crate::support::eventually("the sharded subscriber to connect", || async {
            backend.bus.ping().await.ok()
        })
        .await;
        backend
    }

    super::contract_suite!(redis_cluster);
    super::contract_suite!(@tests redis_cluster;
        liveness_remove_node_takes_this_node_out_of_the_live_nodes,
        liveness_a_fresh_process_asks_for_one_restore,
    );
}

// ---------------------------------------------------------------------------
// Harness: a recording `Deliver` and a backend built around it.

/// Records every publication, in the order the backend delivered them.
struct Recorder(mpsc::UnboundedSender<(Topic, Publication)>);

impl Deliver for Recorder {
    fn deliver(&self, topic: &Topic, publication: Publication) {
        // The receiver lives as long as the check; after it, nobody listens.
        let _ = self.0.send((topic.clone(), publication));
    }
}

/// A backend under test and what it delivered.
struct Subject {
    backend: Backend,
    node: NodeId,
    received: mpsc::UnboundedReceiver<(Topic, Publication)>,
}

impl Subject {
    async fn build(make: &impl AsyncFn(Parts) -> Backend, history_limit: usize) -> Self {
        Self::build_with_ttl(make, history_limit, None).await
    }

    async fn build_with_ttl(
        make: &impl AsyncFn(Parts) -> Backend,
        history_limit: usize,
        history_ttl: Option<Duration>,
    ) -> Self {
        Self::build_full(make, history_limit, history_ttl, false).await
    }

    async fn build_full(
        make: &impl AsyncFn(Parts) -> Backend,
        history_limit: usize,
        history_ttl: Option<Duration>,
        archiving: bool,
    ) -> Self {
        let (tx, received) = mpsc::unbounded_channel();
        let node = NodeId::parse(&unique("node")).expect("node id");
        let backend = make(Parts {
            node: node.clone(),
            deliver: Arc::new(Recorder(tx)),
            history_limit,
            history_ttl,
            archiving,
        })
        .await;
        Self {
            backend,
            node,
            received,
        }
    }

    /// The next delivered publication.
    async fn next(&mut self) -> (Topic, Publication) {
        tokio::time::timeout(TIMEOUT, self.received.recv())
            .await
            .expect("a publication in time")
            .expect("the recorder is alive")
    }

    /// The next delivered publication, as `(topic, payload text)`.
    async fn next_text(&mut self) -> (Topic, String) {
        let (topic, publication) = self.next().await;
        (topic, text(&publication.payload))
    }

    /// Publishes `marker` on `topic` (which must be subscribed) and asserts
    /// that it is the next delivery: nothing else arrived before it.
    async fn assert_next_is_marker(&mut self, topic: &Topic, why: &str) {
        let marker = unique("marker");
        self.backend
            .bus
            .publish(topic, publication(&marker))
            .await
            .expect("publish");
        assert_eq!(self.next_text().await, (topic.clone(), marker), "{why}");
    }

    /// Publishes `publication` on `topic` through the backend's bus.
    async fn publish(&self, topic: &Topic, publication: Publication) {
        self.backend
            .bus
            .publish(topic, publication)
            .await
            .expect("publish");
    }

    /// Subscribes the backend to `topic`.
    async fn subscribe(&self, topic: &Topic) {
        self.backend.bus.subscribe(topic).await.expect("subscribe");
    }

    /// The backend's backlog (built with an archive).
    fn backlog(&self) -> Arc<dyn Backlog> {
        self.backend
            .backlog
            .clone()
            .expect("a backlog with an archive")
    }

    async fn append(&self, log: &Log, n: usize, topics: &[Topic]) -> Stored {
        self.backend
            .history
            .append(log, draft(n), topics, None)
            .await
            .expect("append")
            .stored
    }

    async fn append_many(&self, log: &Log, count: usize) -> Vec<MessageId> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            ids.push(self.append(log, n, &[]).await.id);
        }
        ids
    }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("room name")
}

fn user(name: &str) -> UserName {
    UserName::parse(name).expect("user name")
}

fn text(payload: &Bytes) -> String {
    String::from_utf8(payload.to_vec()).expect("UTF-8 payload")
}

fn publication(payload: &str) -> Publication {
    Publication {
        id: None,
        except: None,
        control: None,
        payload: Bytes::from(payload.to_owned()),
    }
}

/// A stored message numbered `n`: `{"n":N,"id":"<id>"}` once stored.
fn draft(n: usize) -> Draft {
    Draft {
        prefix: Bytes::from(format!("{{\"n\":{n},\"id\":\"")),
        suffix: Bytes::from_static(b"\"}"),
    }
}

fn ids(stored: &[Stored]) -> Vec<MessageId> {
    stored.iter().map(|s| s.id).collect()
}

fn summary(name: &RoomName, members: usize) -> RoomSummary {
    RoomSummary {
        name: name.clone(),
        members,
    }
}

// ---------------------------------------------------------------------------
// Bus

pub(crate) async fn bus_delivers_only_subscribed_topics(make: impl AsyncFn(Parts) -> Backend) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let (subscribed, other) = (
        Topic::Room(room(&format!("{tag}-in"))),
        Topic::Room(room(&format!("{tag}-out"))),
    );
    let (bob, carol) = (
        Topic::User(user(&format!("{tag}-bob"))),
        Topic::User(user(&format!("{tag}-carol"))),
    );
    subject.subscribe(&subscribed).await;
    subject.subscribe(&bob).await;

    let bus = &subject.backend.bus;
    bus.publish(&other, publication("not for us"))
        .await
        .expect("publish");
    bus.publish(&subscribed, publication("room"))
        .await
        .expect("publish");
    bus.publish(&carol, publication("not for us either"))
        .await
        .expect("publish");
    bus.publish(&bob, publication("user"))
        .await
        .expect("publish");

    assert_eq!(
        subject.next_text().await,
        (subscribed.clone(), "room".to_owned())
    );
    assert_eq!(subject.next_text().await, (bob, "user".to_owned()));
    subject
        .assert_next_is_marker(&subscribed, "nothing from unsubscribed topics")
        .await;
}

pub(crate) async fn bus_subscriptions_are_counted(make: impl AsyncFn(Parts) -> Backend) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let (topic, marker, never) = (
        Topic::Room(room(&format!("{tag}-counted"))),
        Topic::Room(room(&format!("{tag}-marker"))),
        Topic::Room(room(&format!("{tag}-never"))),
    );
    let bus = subject.backend.bus.clone();
    bus.subscribe(&topic).await.expect("subscribe");
    bus.subscribe(&topic).await.expect("subscribe");
    bus.subscribe(&marker).await.expect("subscribe");

    bus.unsubscribe(&topic).await;
    bus.publish(&topic, publication("still subscribed"))
        .await
        .expect("publish");
    assert_eq!(
        subject.next_text().await,
        (topic.clone(), "still subscribed".to_owned()),
        "one of two subscriptions left keeps delivery on"
    );

    bus.unsubscribe(&topic).await;
    bus.publish(&topic, publication("gone"))
        .await
        .expect("publish");
    subject
        .assert_next_is_marker(&marker, "the last unsubscribe stops delivery")
        .await;

    // Unsubscribing a topic never subscribed is harmless and leaves no debt.
    bus.unsubscribe(&never).await;
    bus.subscribe(&never).await.expect("subscribe");
    bus.publish(&never, publication("fresh"))
        .await
        .expect("publish");
    assert_eq!(subject.next_text().await, (never, "fresh".to_owned()));
}

pub(crate) async fn bus_carries_id_except_and_payload_through(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let topic = Topic::Room(room(&tag));
    let alice = user(&format!("{tag}-alice"));
    subject.subscribe(&topic).await;
    let id = MessageId::new(1_700_000_000_000, 7);

    subject
        .backend
        .bus
        .publish(
            &topic,
            Publication {
                id: Some(id),
                except: Some(alice.clone()),
                control: None,
                payload: Bytes::from_static(b"{\"type\":\"typing\"}"),
            },
        )
        .await
        .expect("publish");
    subject.publish(&topic, publication("plain")).await;

    let (got_topic, first) = subject.next().await;
    assert_eq!(got_topic, topic);
    assert_eq!(first.id, Some(id));
    assert_eq!(first.except, Some(alice));
    assert_eq!(&first.payload[..], b"{\"type\":\"typing\"}");
    let (_, second) = subject.next().await;
    assert_eq!((second.id, second.except), (None, None));
    assert_eq!(&second.payload[..], b"plain");
}

pub(crate) async fn bus_carries_admin_controls_on_a_user_topic(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let topic = Topic::User(user(&format!("{tag}-alice")));
    subject.subscribe(&topic).await;
    let controls = [Control::Disconnect, Control::Leave(room(&tag))];
    for control in &controls {
        let publication = Publication {
            id: None,
            except: None,
            control: Some(control.clone()),
            payload: Bytes::new(),
        };
        subject.publish(&topic, publication).await;
    }
    subject.publish(&topic, publication("plain")).await;
    for control in controls {
        let (got_topic, got) = subject.next().await;
        assert_eq!(got_topic, topic);
        assert_eq!(
            (got.control, got.id, got.except),
            (Some(control), None, None)
        );
    }
    let (_, plain) = subject.next().await;
    assert_eq!((plain.control, &plain.payload[..]), (None, &b"plain"[..]));
}

pub(crate) async fn bus_ping_succeeds_while_the_backend_is_up(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    subject.backend.bus.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------
// Presence

pub(crate) async fn presence_connect_and_disconnect_report_first_and_last_connection(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (alice, bob) = (user(&format!("{tag}-alice")), user(&format!("{tag}-bob")));

    assert!(
        presence.connect(&alice).await.expect("connect"),
        "first connection"
    );
    assert!(
        !presence.connect(&alice).await.expect("connect"),
        "second connection"
    );
    assert!(
        presence.connect(&bob).await.expect("connect"),
        "bob's first"
    );
    assert_eq!(
        presence.online().await.expect("online"),
        [alice.clone(), bob.clone()]
    );

    assert!(
        !presence.disconnect(&alice).await.expect("disconnect"),
        "one left open"
    );
    assert_eq!(
        presence.online().await.expect("online"),
        [alice.clone(), bob.clone()],
        "online while any connection is open"
    );
    assert!(
        presence.disconnect(&alice).await.expect("disconnect"),
        "the last one"
    );
    assert_eq!(
        presence.online().await.expect("online"),
        std::slice::from_ref(&bob)
    );
    assert!(
        presence.connect(&alice).await.expect("connect"),
        "back online is a first connection again"
    );
}

pub(crate) async fn presence_join_and_leave_count_connections_per_room_and_user(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (lobby, other) = (room(&format!("{tag}-lobby")), room(&format!("{tag}-other")));
    let (alice, bob) = (user(&format!("{tag}-alice")), user(&format!("{tag}-bob")));

    assert!(
        presence.join(&lobby, &alice).await.expect("join"),
        "alice's first"
    );
    assert!(
        !presence.join(&lobby, &alice).await.expect("join"),
        "second tab"
    );
    assert!(
        presence.join(&lobby, &bob).await.expect("join"),
        "bob's first"
    );
    assert!(
        presence.join(&other, &alice).await.expect("join"),
        "another room is counted apart"
    );
    assert_eq!(
        presence.members(&lobby).await.expect("members"),
        [alice.clone(), bob.clone()]
    );

    assert!(
        !presence.leave(&lobby, &alice).await.expect("leave"),
        "one tab left"
    );
    assert_eq!(
        presence.members(&lobby).await.expect("members"),
        [alice.clone(), bob.clone()]
    );
    assert!(
        presence.leave(&lobby, &alice).await.expect("leave"),
        "last tab"
    );
    assert_eq!(
        presence.members(&lobby).await.expect("members"),
        std::slice::from_ref(&bob)
    );
    assert!(presence.leave(&lobby, &bob).await.expect("leave"));
    assert_eq!(presence.members(&lobby).await.expect("members"), []);
    assert_eq!(
        presence.members(&other).await.expect("members"),
        [alice],
        "leaving one room keeps the others"
    );
}

pub(crate) async fn presence_members_and_online_are_sorted(make: impl AsyncFn(Parts) -> Backend) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let lobby = room(&tag);
    let names: Vec<UserName> = ["carol", "Alice", "bob", "alice", "_z", "0"]
        .iter()
        .map(|n| user(&format!("{tag}-{n}")))
        .collect();

    for name in &names {
        presence.connect(name).await.expect("connect");
        presence.join(&lobby, name).await.expect("join");
    }

    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(presence.members(&lobby).await.expect("members"), sorted);
    assert_eq!(presence.online().await.expect("online"), sorted);
    let texts: Vec<&str> = sorted.iter().map(UserName::as_str).collect();
    let mut by_bytes = texts.clone();
    by_bytes.sort_unstable();
    assert_eq!(texts, by_bytes, "sorted by name, byte-wise");
}

pub(crate) async fn presence_connections_for_admin_count_each_user_and_name_its_nodes(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let alice = user(&format!("{tag}-alice"));
    let bob = user(&format!("{tag}-bob"));
    for name in [&bob, &alice, &alice] {
        presence.connect(name).await.expect("connect");
    }
    presence.disconnect(&bob).await.expect("disconnect");
    presence.connect(&bob).await.expect("connect");
    let nodes = [subject.node.clone()];
    let mine: Vec<UserConnections> = presence
        .connections(&nodes)
        .await
        .expect("connections")
        .into_iter()
        .filter(|u| u.user == alice || u.user == bob)
        .collect();
    let entry = |user: &UserName, connections| UserConnections {
        user: user.clone(),
        connections,
        nodes: nodes.to_vec(),
    };
    assert_eq!(mine, vec![entry(&alice, 2), entry(&bob, 1)]);
}

pub(crate) async fn presence_rooms_lists_member_counts_and_created_rooms_by_name(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (a, b, c, d) = (
        room(&format!("{tag}-a")),
        room(&format!("{tag}-b")),
        room(&format!("{tag}-c")),
        room(&format!("{tag}-d")),
    );
    let (alice, bob, carol) = (
        user(&format!("{tag}-alice")),
        user(&format!("{tag}-bob")),
        user(&format!("{tag}-carol")),
    );

    presence
        .create_room(&d, NO_BOUND)
        .await
        .expect("create_room");
    presence
        .create_room(&c, NO_BOUND)
        .await
        .expect("create_room");
    presence.join(&b, &carol).await.expect("join");
    presence.join(&a, &alice).await.expect("join");
    presence.join(&a, &alice).await.expect("join");
    presence.join(&a, &bob).await.expect("join");
    presence.join(&d, &bob).await.expect("join");

    assert_eq!(
        presence.rooms().await.expect("rooms"),
        [
            summary(&a, 2),
            summary(&b, 1),
            summary(&c, 0),
            summary(&d, 1)
        ],
        "distinct users per room, every room by name"
    );

    presence.leave(&b, &carol).await.expect("leave");
    presence.leave(&d, &bob).await.expect("leave");
    assert_eq!(
        presence.rooms().await.expect("rooms"),
        [summary(&a, 2), summary(&c, 0), summary(&d, 0)],
        "an emptied room is listed only if it was created"
    );
}

pub(crate) async fn presence_create_room_conflicts_with_an_existing_room(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (created, occupied) = (room(&format!("{tag}-new")), room(&format!("{tag}-busy")));
    presence
        .join(&occupied, &user(&format!("{tag}-alice")))
        .await
        .expect("join");

    presence
        .create_room(&created, NO_BOUND)
        .await
        .expect("first create");
    let again = presence.create_room(&created, NO_BOUND).await;
    let busy = presence.create_room(&occupied, NO_BOUND).await;

    assert!(matches!(again, Err(ClusterError::Conflict)), "{again:?}");
    assert!(
        matches!(busy, Err(ClusterError::Conflict)),
        "a room with members exists: {busy:?}"
    );
    assert_eq!(
        presence.rooms().await.expect("rooms"),
        [summary(&occupied, 1), summary(&created, 0)]
    );
}

pub(crate) async fn presence_create_room_stops_at_the_bound_but_rooms_with_members_are_listed(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (a, b, c, busy) = (
        room(&format!("{tag}-a")),
        room(&format!("{tag}-b")),
        room(&format!("{tag}-c")),
        room(&format!("{tag}-busy")),
    );

    presence.create_room(&a, 2).await.expect("first");
    presence.create_room(&b, 2).await.expect("second");
    let over = presence.create_room(&c, 2).await;
    let again = presence.create_room(&a, 2).await;
    presence
        .join(&busy, &user(&format!("{tag}-alice")))
        .await
        .expect("a room with members needs no place in the bound");

    assert!(matches!(over, Err(ClusterError::Full)), "{over:?}");
    assert!(
        matches!(again, Err(ClusterError::Conflict)),
        "an existing room is a conflict even at the bound: {again:?}"
    );
    assert_eq!(
        presence.rooms().await.expect("rooms"),
        [summary(&a, 0), summary(&b, 0), summary(&busy, 1)]
    );
}

// ---------------------------------------------------------------------------
// Liveness

/// Connects `user` and joins it to `room` on the subject's node.
async fn seat(subject: &Subject, room: &RoomName, user: &UserName) {
    let presence = &subject.backend.presence;
    presence.connect(user).await.expect("connect");
    presence.join(room, user).await.expect("join");
}

/// Beats once, and restores if the beat asks for it, as the upkeep does.
async fn beat(subject: &Subject) {
    let liveness = &subject.backend.liveness;
    if liveness.heartbeat(b"{}").await.expect("heartbeat") {
        liveness.restore().await.expect("restore");
    }
}

pub(crate) async fn liveness_nodes_lists_this_node_once_it_beats(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    subject
        .backend
        .liveness
        .heartbeat(b"{}")
        .await
        .expect("heartbeat");

    let nodes = subject.backend.liveness.nodes().await.expect("nodes");

    assert!(nodes.contains(&subject.node), "{nodes:?}");
    assert!(nodes.is_sorted(), "{nodes:?}");
}

pub(crate) async fn liveness_heartbeat_asks_for_a_restore_at_most_once_while_nothing_is_lost(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let liveness = &subject.backend.liveness;
    let tag = unique("t");
    seat(
        &subject,
        &room(&format!("{tag}-lobby")),
        &user(&format!("{tag}-alice")),
    )
    .await;

    beat(&subject).await;

    assert!(
        !liveness.heartbeat(b"{}").await.expect("heartbeat"),
        "nothing was lost since the restore"
    );
    assert!(
        !liveness.heartbeat(b"{}").await.expect("heartbeat"),
        "nor since the last beat"
    );
}

pub(crate) async fn liveness_restore_of_a_node_without_connections_changes_nothing(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let liveness = &subject.backend.liveness;
    liveness.heartbeat(b"{}").await.expect("heartbeat");

    let changes = liveness.restore().await.expect("restore");

    assert_eq!(changes, []);
    assert_eq!(subject.backend.presence.online().await.expect("online"), []);
    assert_eq!(subject.backend.presence.rooms().await.expect("rooms"), []);
}

pub(crate) async fn liveness_restore_keeps_the_presence_the_node_has_written(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let (presence, liveness) = (&subject.backend.presence, &subject.backend.liveness);
    let tag = unique("t");
    let lobby = room(&format!("{tag}-lobby"));
    let alice = user(&format!("{tag}-alice"));
    seat(&subject, &lobby, &alice).await;
    liveness.heartbeat(b"{}").await.expect("heartbeat");

    let changes = liveness.restore().await.expect("restore");

    assert_eq!(changes, [], "every entry was written already");
    let alone = std::slice::from_ref(&alice);
    assert_eq!(presence.members(&lobby).await.expect("members"), alone);
    assert_eq!(presence.online().await.expect("online"), alone);
    assert_eq!(presence.rooms().await.expect("rooms"), [summary(&lobby, 1)]);
}

pub(crate) async fn liveness_reap_without_dead_nodes_returns_nothing_and_keeps_this_node(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let (presence, liveness) = (&subject.backend.presence, &subject.backend.liveness);
    let tag = unique("t");
    let lobby = room(&format!("{tag}-lobby"));
    let alice = user(&format!("{tag}-alice"));
    seat(&subject, &lobby, &alice).await;
    beat(&subject).await;

    let departures = liveness.reap().await.expect("reap");

    assert_eq!(departures, []);
    assert!(
        liveness
            .nodes()
            .await
            .expect("nodes")
            .contains(&subject.node)
    );
    assert_eq!(presence.members(&lobby).await.expect("members"), [alice]);
}

pub(crate) async fn liveness_remove_node_clears_and_returns_this_nodes_users_but_keeps_created_rooms(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let presence = &subject.backend.presence;
    let tag = unique("t");
    let (lobby, created) = (room(&format!("{tag}-lobby")), room(&format!("{tag}-made")));
    let alice = user(&format!("{tag}-alice"));
    seat(&subject, &lobby, &alice).await;
    presence
        .create_room(&created, NO_BOUND)
        .await
        .expect("create_room");

    let departures = subject
        .backend
        .liveness
        .remove_node()
        .await
        .expect("remove");

    // Returned, so that the rooms hear them leave.
    assert_eq!(
        departures,
        [Departure {
            room: lobby.clone(),
            user: alice
        }]
    );
    assert_eq!(presence.online().await.expect("online"), []);
    assert_eq!(presence.members(&lobby).await.expect("members"), []);
    assert_eq!(
        presence.rooms().await.expect("rooms"),
        [summary(&created, 0)]
    );
}

/// Cluster backends: a node that left is no longer among the live ones.
pub(crate) async fn liveness_remove_node_takes_this_node_out_of_the_live_nodes(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let liveness = &subject.backend.liveness;
    beat(&subject).await;
    assert!(
        liveness
            .nodes()
            .await
            .expect("nodes")
            .contains(&subject.node)
    );

    liveness.remove_node().await.expect("remove");

    let nodes = liveness.nodes().await.expect("nodes");
    assert!(!nodes.contains(&subject.node), "{nodes:?}");
}

/// Cluster backends: a process is new under its node id, so its first beat
/// asks for a restore, which takes over whatever an earlier process left.
pub(crate) async fn liveness_a_fresh_process_asks_for_one_restore(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let liveness = &subject.backend.liveness;

    assert!(
        liveness.heartbeat(b"{}").await.expect("heartbeat"),
        "first beat"
    );
    assert_eq!(liveness.restore().await.expect("restore"), []);
    assert!(
        !liveness.heartbeat(b"{}").await.expect("heartbeat"),
        "restored"
    );
}

/// The embedded backend: the lone node is the cluster, alive as long as its
/// process, so it stays listed after its users are removed.
pub(crate) async fn liveness_a_lone_node_stays_listed_after_remove_node(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let liveness = &subject.backend.liveness;

    liveness.remove_node().await.expect("remove");

    assert_eq!(liveness.nodes().await.expect("nodes"), [subject.node]);
}

// ---------------------------------------------------------------------------
// History

pub(crate) async fn history_append_assigns_strictly_increasing_ids(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let log = Log::Room(room(&unique("r")));

    let mut stored = Vec::new();
    for n in 0..50 {
        stored.push(subject.append(&log, n, &[]).await);
    }

    for pair in stored.windows(2) {
        assert!(pair[0].id < pair[1].id, "{:?} then {:?}", pair[0], pair[1]);
    }
    for (n, message) in stored.iter().enumerate() {
        assert_eq!(
            text(&message.payload),
            format!("{{\"n\":{n},\"id\":\"{}\"}}", message.id),
            "the payload is the draft completed with its id"
        );
        assert_eq!(
            MessageId::parse(&message.id.to_string()),
            Ok(message.id),
            "ids survive their text form"
        );
    }
}

pub(crate) async fn history_append_publishes_to_every_given_topic_in_history_order(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let (alice, bob) = (user(&format!("{tag}-alice")), user(&format!("{tag}-bob")));
    let (to_alice, to_bob) = (Topic::User(alice.clone()), Topic::User(bob.clone()));
    let bystander = Topic::Room(room(&tag));
    for topic in [&to_alice, &to_bob, &bystander] {
        subject.subscribe(topic).await;
    }
    let log = Log::direct(alice, bob);

    let mut stored = Vec::new();
    for n in 0..5 {
        stored.push(
            subject
                .append(&log, n, &[to_bob.clone(), to_alice.clone()])
                .await,
        );
    }

    let mut per_topic: Vec<(Topic, Publication)> = Vec::new();
    for _ in 0..10 {
        per_topic.push(subject.next().await);
    }
    for topic in [&to_alice, &to_bob] {
        let got: Vec<&Publication> = per_topic
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            got.iter().map(|p| p.id).collect::<Vec<_>>(),
            stored.iter().map(|s| Some(s.id)).collect::<Vec<_>>(),
            "{topic:?} gets every message once, in history order"
        );
        for (publication, message) in got.iter().zip(&stored) {
            assert_eq!(publication.payload, message.payload, "the stored bytes");
            assert_eq!(publication.except, None);
        }
    }
    subject
        .assert_next_is_marker(&bystander, "a topic not given gets nothing")
        .await;
}

pub(crate) async fn history_concurrent_appends_are_delivered_in_history_order(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let lobby = room(&unique("r"));
    let topic = Topic::Room(lobby.clone());
    let log = Log::Room(lobby);
    subject.subscribe(&topic).await;

    let mut writers = Vec::new();
    for w in 0..4 {
        let (history, log, topic) = (subject.backend.history.clone(), log.clone(), topic.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..25 {
                history
                    .append(&log, draft(w * 100 + n), std::slice::from_ref(&topic), None)
                    .await
                    .expect("append");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let mut delivered = Vec::new();
    for _ in 0..100 {
        let (_, publication) = subject.next().await;
        delivered.push(publication.id.expect("stored messages carry their id"));
    }
    let kept = subject
        .backend
        .history
        .before(&log, None, 100)
        .await
        .expect("before");
    assert_eq!(delivered, ids(&kept), "delivery order is history order");
}

pub(crate) async fn history_since_returns_every_message_after_the_id(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let log = Log::Room(room(&unique("r")));
    let sent = subject.append_many(&log, 5).await;
    let history = &subject.backend.history;

    let after_second = history.since(&log, sent[1], ROOMY).await.expect("since");
    let after_last = history.since(&log, sent[4], ROOMY).await.expect("since");
    let from_start = history
        .since(&log, MessageId::MIN, ROOMY)
        .await
        .expect("since");
    let unknown = history
        .since(&Log::Room(room(&unique("empty"))), sent[0], ROOMY)
        .await
        .expect("since");

    assert_eq!(ids(&after_second.messages), sent[2..]);
    assert!(!after_second.truncated);
    assert_eq!(after_last.messages, []);
    assert!(!after_last.truncated);
    assert_eq!(ids(&from_start.messages), sent, "nothing was trimmed yet");
    assert!(!from_start.truncated);
    assert_eq!(unknown.messages, []);
    assert!(!unknown.truncated, "an empty log has lost nothing");
}

pub(crate) async fn history_since_is_truncated_only_when_messages_after_the_id_were_trimmed(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, 3).await;
    let log = Log::Room(room(&unique("r")));
    let sent = subject.append_many(&log, 6).await;
    let history = &subject.backend.history;

    let kept = history.before(&log, None, 100).await.expect("before");
    assert_eq!(ids(&kept), sent[3..], "the limit keeps the newest");

    for (since, truncated, expected) in [
        (MessageId::MIN, true, &sent[3..]),
        (sent[0], true, &sent[3..]),
        (sent[1], true, &sent[3..]),
        (sent[2], false, &sent[3..]),
        (sent[3], false, &sent[4..]),
        (sent[5], false, &sent[6..]),
    ] {
        let got = history.since(&log, since, ROOMY).await.expect("since");
        assert_eq!(ids(&got.messages), expected, "since {since}");
        assert_eq!(got.truncated, truncated, "since {since}");
        // Complete: the history still holds the id or an older message.
        assert_eq!(got.complete, since >= sent[3], "since {since}");
    }
    // At most `limit`, the newest, and truncated when there were more.
    let capped = history.since(&log, sent[2], 2).await.expect("since");
    assert_eq!(ids(&capped.messages), sent[4..]);
    assert!(capped.truncated && !capped.complete);
    let capped = history.since(&log, sent[3], 2).await.expect("since");
    assert_eq!(ids(&capped.messages), sent[4..]);
    assert!(!capped.truncated && capped.complete);
    let capped = history.since(&log, sent[3], 1).await.expect("since");
    assert_eq!(ids(&capped.messages), sent[5..]);
    assert!(capped.truncated && capped.complete);
}

pub(crate) async fn history_before_pages_backwards_oldest_first_with_a_limit(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let log = Log::Room(room(&unique("r")));
    let sent = subject.append_many(&log, 7).await;
    let history = &subject.backend.history;

    for (before, limit, expected) in [
        (None, 3, &sent[4..]),
        (Some(sent[4]), 3, &sent[1..4]),
        (Some(sent[1]), 3, &sent[..1]),
        (Some(sent[0]), 3, &sent[..0]),
        (None, 100, &sent[..]),
        (Some(MessageId::new(u64::MAX, 0)), 2, &sent[5..]),
    ] {
        let page = history.before(&log, before, limit).await.expect("before");
        assert_eq!(ids(&page), expected, "before {before:?}, limit {limit}");
    }
    let empty = history
        .before(&Log::Room(room(&unique("empty"))), None, 10)
        .await
        .expect("before");
    assert_eq!(empty, []);
}

pub(crate) async fn history_direct_log_is_the_same_for_both_orders(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let tag = unique("t");
    let (alice, bob, carol) = (
        user(&format!("{tag}-alice")),
        user(&format!("{tag}-bob")),
        user(&format!("{tag}-carol")),
    );
    let (ab, ba) = (
        Log::direct(alice.clone(), bob.clone()),
        Log::direct(bob.clone(), alice.clone()),
    );
    assert_eq!(ab, ba);

    let first = subject.append(&ab, 0, &[]).await;
    let second = subject.append(&ba, 1, &[]).await;

    let history = &subject.backend.history;
    for log in [&ab, &ba] {
        let page = history.before(log, None, 10).await.expect("before");
        assert_eq!(page, [first.clone(), second.clone()], "{log:?}");
    }
    let other = history
        .before(&Log::direct(alice, carol), None, 10)
        .await
        .expect("before");
    assert_eq!(other, [], "another pair has its own log");
}

pub(crate) async fn history_a_repeated_idempotency_key_replays_the_original_and_publishes_nothing(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let room = Topic::Room(RoomName::parse(&unique("room")).expect("room"));
    let Topic::Room(name) = &room else {
        unreachable!()
    };
    let log = Log::Room(name.clone());
    subject.subscribe(&room).await;
    let (alice, bob) = (
        UserName::parse("alice").expect("user"),
        UserName::parse("bob").expect("user"),
    );
    let key = IdempotencyKey::parse("k-1").expect("key");
    let once = |user| Some(Idempotency { user, key: &key });
    let history = subject.backend.history.clone();

    let first = history
        .append(&log, draft(1), std::slice::from_ref(&room), once(&alice))
        .await
        .expect("append");
    assert!(!first.replayed);
    assert_eq!(subject.next().await.1.id, Some(first.stored.id));

    let again = history
        .append(&log, draft(2), std::slice::from_ref(&room), once(&alice))
        .await
        .expect("append again");
    assert!(again.replayed, "the repeat is a replay");
    assert_eq!(again.stored, first.stored, "the original, id and bytes");
    subject
        .assert_next_is_marker(&room, "a replay publishes nothing")
        .await;

    let other_user = history
        .append(&log, draft(3), std::slice::from_ref(&room), once(&bob))
        .await
        .expect("another user's key");
    assert!(!other_user.replayed, "keys are per user");
    let other_log = Log::Room(RoomName::parse(&unique("room")).expect("room"));
    let elsewhere = history
        .append(&other_log, draft(4), &[], once(&alice))
        .await
        .expect("another log");
    assert!(!elsewhere.replayed, "keys are per log");
    assert_eq!(
        ids(&history.before(&log, None, 10).await.expect("read")),
        [first.stored.id, other_user.stored.id],
        "stored once"
    );
}

pub(crate) async fn history_a_quiet_log_expires_after_its_ttl(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build_with_ttl(&make, ROOMY, Some(Duration::from_millis(800))).await;
    let log = Log::Room(RoomName::parse(&unique("room")).expect("room"));
    let first = subject.append(&log, 1, &[]).await;
    let history = subject.backend.history.clone();
    assert_eq!(
        ids(&history.before(&log, None, 10).await.expect("read")),
        [first.id]
    );

    until_expired(&history, &log).await;
    let since = history
        .since(&log, MessageId::MIN, ROOMY)
        .await
        .expect("since");
    assert!(since.messages.is_empty());

    let later = subject.append(&log, 2, &[]).await;
    assert!(later.id > first.id, "ids still grow after an expiry");
    assert_eq!(
        ids(&history.before(&log, None, 10).await.expect("read")),
        [later.id]
    );
}

pub(crate) async fn backlog_keeps_what_the_archive_lacks_and_trims_once_archived(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build_full(&make, 3, None, true).await;
    let backlog = subject.backlog();
    let history = &subject.backend.history;
    let log = Log::Room(room(&unique("r")));
    let sent = subject.append_many(&log, 6).await;

    let kept = history.before(&log, None, 100).await.expect("before");
    assert_eq!(ids(&kept), sent, "nothing the archive lacks is trimmed");
    let waiting = backlog.unarchived(&log, 100).await.expect("unarchived");
    assert_eq!(ids(&waiting), sent, "every message waits");
    assert_eq!(
        ids(&backlog.unarchived(&log, 2).await.expect("unarchived")),
        sent[..2]
    );
    assert!(backlog.waiting().await.expect("waiting").contains(&log));

    assert!(
        !backlog
            .archived(&log, sent[1])
            .await
            .expect("archived")
            .done,
        "some still wait"
    );
    assert_eq!(
        ids(&backlog.unarchived(&log, 100).await.expect("unarchived")),
        sent[2..]
    );
    let kept = history.before(&log, None, 100).await.expect("before");
    assert_eq!(
        ids(&kept),
        sent[2..],
        "the archived part over the cap is trimmed"
    );
    let since = history
        .since(&log, MessageId::MIN, ROOMY)
        .await
        .expect("since");
    assert!(since.truncated, "trimming is reported as before");

    assert!(
        backlog
            .archived(&log, sent[5])
            .await
            .expect("archived")
            .done,
        "none waits"
    );
    assert_none_waits(backlog.as_ref(), &log).await;
    let kept = history.before(&log, None, 100).await.expect("before");
    assert_eq!(ids(&kept), sent[3..], "the cap holds once all is archived");
    assert!(
        backlog
            .archived(&log, sent[5])
            .await
            .expect("archived again")
            .done,
        "idempotent"
    );

    let later = subject.append(&log, 7, &[]).await;
    assert_eq!(
        ids(&backlog.unarchived(&log, 100).await.expect("unarchived")),
        [later.id]
    );
    let kept = history.before(&log, None, 100).await.expect("before");
    assert_eq!(ids(&kept), [sent[4], sent[5], later.id]);
    assert!(backlog.waiting().await.expect("waiting").contains(&log));
}

pub(crate) async fn backlog_a_log_waiting_for_the_archive_does_not_expire(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let ttl = Duration::from_millis(600);
    let subject = Subject::build_full(&make, ROOMY, Some(ttl), true).await;
    let backlog = subject.backlog();
    let history = subject.backend.history.clone();
    let log = Log::Room(room(&unique("r")));
    let first = subject.append(&log, 1, &[]).await;

    tokio::time::sleep(ttl * 2).await;
    let kept = history.before(&log, None, 10).await.expect("before");
    assert_eq!(
        ids(&kept),
        [first.id],
        "kept past its lifetime while it waits"
    );

    assert!(
        backlog
            .archived(&log, first.id)
            .await
            .expect("archived")
            .done
    );
    until_expired(&history, &log).await;
}

pub(crate) async fn backlog_is_absent_without_an_archive(make: impl AsyncFn(Parts) -> Backend) {
    let subject = Subject::build(&make, 3).await;
    assert!(subject.backend.backlog.is_none());
}

/// Waits until `log` reads empty: it expired.
async fn until_expired(history: &Arc<dyn chorus::cluster::History>, log: &Log) {
    crate::support::eventually("the log expires", || {
        let (history, log) = (history.clone(), log.clone());
        async move {
            history
                .before(&log, None, 10)
                .await
                .expect("read")
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Upload records.

fn pending_upload(uploader: &UserName) -> UploadRecord {
    UploadRecord {
        id: UploadId::random(),
        uploader: uploader.clone(),
        name: FileName::parse("cat.png").expect("name"),
        media_type: MediaType::parse("image/png").expect("type"),
        size: 73,
        state: UploadState::Pending,
        secret: Some("s3cr3t".to_owned()),
        logs: Vec::new(),
    }
}

const AN_HOUR: Duration = Duration::from_secs(3600);

pub(crate) async fn uploads_a_record_settles_once_and_only_its_uploader_attaches_it(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let records = subject.backend.uploads.clone();
    let alice = UserName::parse(&unique("alice")).expect("user");
    let mallory = UserName::parse(&unique("mallory")).expect("user");
    let record = pending_upload(&alice);
    records.create(&record, AN_HOUR, 20).await.expect("create");
    assert_eq!(
        records.get(&record.id).await.expect("get"),
        Some(record.clone())
    );
    let room = Log::Room(RoomName::parse(&unique("room")).expect("room"));
    assert_eq!(
        records
            .attach(&record.id, &alice, &room, AN_HOUR)
            .await
            .expect("attach"),
        None,
        "a pending upload cannot be attached"
    );

    let finished = UploadState::Finished { inline: true };
    assert!(
        records
            .settle(&record, finished, AN_HOUR)
            .await
            .expect("settle")
    );
    assert!(
        !records
            .settle(&record, UploadState::Rejected, AN_HOUR)
            .await
            .expect("settle"),
        "settled once"
    );
    assert_eq!(
        records
            .attach(&record.id, &mallory, &room, AN_HOUR)
            .await
            .expect("attach"),
        None,
        "only its uploader attaches it"
    );
    let attached = records
        .attach(&record.id, &alice, &room, AN_HOUR)
        .await
        .expect("attach")
        .expect("the uploader's finished upload");
    assert_eq!(attached.state, finished);
    assert_eq!(attached.logs, std::slice::from_ref(&room));
    let pair = Log::direct(alice.clone(), mallory.clone());
    let twice = records
        .attach(&record.id, &alice, &pair, AN_HOUR)
        .await
        .expect("attach")
        .expect("attached");
    let mut logs = twice.logs.clone();
    logs.sort_by_key(Log::tag);
    let mut expected = vec![room, pair];
    expected.sort_by_key(Log::tag);
    assert_eq!(logs, expected);
    assert_eq!(records.get(&UploadId::random()).await.expect("get"), None);
}

pub(crate) async fn uploads_pending_records_stop_at_the_cap_and_expire_with_their_ttl(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let records = subject.backend.uploads.clone();
    let bob = UserName::parse(&unique("bob")).expect("user");
    let short = Duration::from_millis(600);
    let first = pending_upload(&bob);
    records.create(&first, short, 2).await.expect("create");
    records
        .create(&pending_upload(&bob), short, 2)
        .await
        .expect("create");
    assert!(matches!(
        records.create(&pending_upload(&bob), short, 2).await,
        Err(ClusterError::Full)
    ));
    let carol = UserName::parse(&unique("carol")).expect("user");
    records
        .create(&pending_upload(&carol), short, 2)
        .await
        .expect("the cap is per user");

    crate::support::eventually("the pending records expire", || {
        let (records, id) = (records.clone(), first.id.clone());
        async move { records.get(&id).await.expect("get").is_none().then_some(()) }
    })
    .await;
    records
        .create(&pending_upload(&bob), short, 2)
        .await
        .expect("expired records no longer count");
}

pub(crate) async fn uploads_a_restored_record_reads_back_as_it_was(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build(&make, ROOMY).await;
    let records = subject.backend.uploads.clone();
    let alice = UserName::parse(&unique("alice")).expect("user");
    let room = Log::Room(RoomName::parse(&unique("room")).expect("room"));
    let record = UploadRecord {
        state: UploadState::Finished { inline: false },
        secret: None,
        logs: vec![room],
        ..pending_upload(&alice)
    };
    records.restore(&record, AN_HOUR).await.expect("restore");
    assert_eq!(records.get(&record.id).await.expect("get"), Some(record));
}

/// A delete that found the message, archived (or without an archive).
const REMOVED: Removal = Removal {
    removed: true,
    waiting: false,
};

/// A delete that found the message still waiting for the archive.
const REMOVED_WAITING: Removal = Removal {
    removed: true,
    waiting: true,
};

pub(crate) async fn history_delete_removes_one_message_and_tells_the_room(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let mut subject = Subject::build(&make, ROOMY).await;
    let name = room(&unique("r"));
    let topic = Topic::Room(name.clone());
    subject.subscribe(&topic).await;
    let log = Log::Room(name);
    let sent = subject.append_many(&log, 3).await;
    let history = subject.backend.history.clone();
    let event = bytes::Bytes::from_static(b"{\"type\":\"deleted\"}");

    let removal = history
        .delete(&log, sent[1], std::slice::from_ref(&topic), event.clone())
        .await
        .expect("delete");
    assert_eq!(removal, REMOVED);
    let (got, publication) = subject.next().await;
    assert_eq!((got, publication.payload), (topic.clone(), event.clone()));
    let kept = history.before(&log, None, 10).await.expect("before");
    assert_eq!(ids(&kept), [sent[0], sent[2]]);
    let since = history.since(&log, sent[0], ROOMY).await.expect("since");
    assert_eq!(ids(&since.messages), [sent[2]]);

    let again = history
        .delete(&log, sent[1], std::slice::from_ref(&topic), event)
        .await
        .expect("delete again");
    assert_eq!(again, Removal::default(), "gone already");
    subject
        .assert_next_is_marker(&topic, "nothing is published for what was not there")
        .await;
}

pub(crate) async fn backlog_a_message_deleted_while_it_waits_is_handed_to_the_archiver(
    make: impl AsyncFn(Parts) -> Backend,
) {
    let subject = Subject::build_full(&make, ROOMY, None, true).await;
    let backlog = subject.backlog();
    let history = subject.backend.history.clone();
    let log = Log::Room(room(&unique("r")));
    let sent = subject.append_many(&log, 3).await;
    let event = bytes::Bytes::from_static(b"{}");

    // An archiver read them; one is deleted before it records its progress.
    let read = backlog.unarchived(&log, 100).await.expect("unarchived");
    assert_eq!(ids(&read), sent);
    let removal = history
        .delete(&log, sent[1], &[], event.clone())
        .await
        .expect("delete");
    assert_eq!(removal, REMOVED_WAITING);
    let marked = backlog.archived(&log, sent[0]).await.expect("archived");
    assert!(marked.deleted.is_empty(), "not reached yet: {marked:?}");
    let marked = backlog.archived(&log, sent[2]).await.expect("archived");
    assert_eq!(
        marked,
        Marked {
            done: true,
            deleted: vec![sent[1]]
        }
    );
    // Handed out until forgotten, so a failed removal is tried again.
    let marked = backlog.archived(&log, sent[2]).await.expect("archived");
    assert_eq!(marked.deleted, [sent[1]]);
    backlog
        .forget_deleted(&log, &[sent[1]])
        .await
        .expect("forget");
    let marked = backlog.archived(&log, sent[2]).await.expect("archived");
    assert!(marked.deleted.is_empty());

    // The only one waiting is deleted: none waits any more.
    let last = subject.append(&log, 9, &[]).await;
    assert!(backlog.waiting().await.expect("waiting").contains(&log));
    let removal = history
        .delete(&log, last.id, &[], event.clone())
        .await
        .expect("delete");
    assert!(removal.waiting);
    assert_none_waits(backlog.as_ref(), &log).await;
    // An archived one is not the backlog's: deleting it hands nothing on.
    let removal = history
        .delete(&log, sent[0], &[], event)
        .await
        .expect("delete");
    assert_eq!(removal, REMOVED);
}

/// Asserts that no message of `log` waits for the archive.
async fn assert_none_waits(backlog: &dyn Backlog, log: &Log) {
    assert!(
        backlog
            .unarchived(log, 100)
            .await
            .expect("unarchived")
            .is_empty()
    );
    assert!(!backlog.waiting().await.expect("waiting").contains(log));
}
