//! `ShardedSubscriber`, the sharded pub/sub of the Redis bus in cluster mode,
//! against a real Redis Cluster: every shard channel is subscribed at the
//! primary owning its slot and delivers in order; an unsubscribe is quiet;
//! a slot migration, a killed primary, a refused SSUBSCRIBE and a hung
//! primary each end the life with `Lost`, and a new life subscribes where
//! the slot now lives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use chorus::cluster::redis::{ShardEvent, ShardEvents, ShardedSubscriber};
use futures_util::FutureExt;
use redis::cluster_async::ClusterConnection;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::redis_cluster::NODE_TIMEOUT;
use crate::support::tools::free_port;
use crate::support::{RedisCluster, SharedRedisCluster, TIMEOUT, eventually, unique};

/// One cluster for the tests of this module that leave its primaries alive.
static CLUSTER: SharedRedisCluster = SharedRedisCluster::new();

/// The subscriber's own bound on every wait, as the bus would pass it.
const SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(2);

/// A new life of the subscriber on the cluster's seeds.
async fn new_life(cluster: &RedisCluster) -> (ShardedSubscriber, ShardEvents) {
    tokio::time::timeout(
        TIMEOUT,
        ShardedSubscriber::connect(&cluster.seed_urls(), SUBSCRIBER_TIMEOUT),
    )
    .await
    .expect("connect returns in time")
    .expect("the subscriber connects")
}

/// The next event, within [`TIMEOUT`].
async fn next_event(events: &mut ShardEvents) -> ShardEvent {
    tokio::time::timeout(TIMEOUT, events.next())
        .await
        .expect("an event in time")
        .expect("the events last until Lost")
}

async fn next_message(events: &mut ShardEvents) -> (String, Bytes) {
    match next_event(events).await {
        ShardEvent::Message { channel, payload } => (channel, payload),
        ShardEvent::Lost(why) => panic!("the life ended: {why}"),
    }
}

/// `SPUBLISH`: how many subscribers received it.
async fn spublish(redis: &mut ClusterConnection, channel: &str, payload: &str) -> usize {
    redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(redis)
        .await
        .unwrap()
}

/// `PUBSUB SHARDNUMSUB` on one node.
async fn shard_subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> usize {
    let (_, count): (String, usize) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut cluster.node_connection(port).await)
        .await
        .unwrap();
    count
}

/// What a life received until its `Lost`, and when the `Lost` came.
struct Ended {
    messages: Vec<(String, Bytes)>,
    why: String,
    at: Instant,
}

/// Reads a life's events on a task until `Lost`, stamping its arrival.
fn watch(mut events: ShardEvents) -> JoinHandle<Ended> {
    tokio::spawn(async move {
        let mut messages = Vec::new();
        loop {
            match events.next().await {
                Some(ShardEvent::Message { channel, payload }) => messages.push((channel, payload)),
                Some(ShardEvent::Lost(why)) => {
                    let at = Instant::now();
                    assert_eq!(events.next().await, None, "nothing after Lost");
                    return Ended { messages, why, at };
                }
                None => panic!("the events ended without Lost"),
            }
        }
    })
}

async fn ended(watcher: JoinHandle<Ended>) -> Ended {
    tokio::time::timeout(TIMEOUT, watcher)
        .await
        .expect("Lost in time")
        .unwrap()
}

/// A primary other than `than`.
async fn another_primary(cluster: &RedisCluster, than: u16) -> u16 {
    cluster
        .topology()
        .await
        .primaries()
        .into_iter()
        .find(|&p| p != than)
        .unwrap()
}

#[tokio::test]
async fn channels_in_every_slot_deliver_each_publication_in_order() {
    let cluster = CLUSTER.get().await;
    let prefix = unique("t");
    let channels: Vec<String> = ('a'..='t')
        .map(|tag| format!("{prefix}:{{r:{tag}}}"))
        .collect();
    let mut owners = BTreeSet::new();
    for channel in &channels {
        owners.insert(cluster.primary_of(channel).await);
    }
    assert_eq!(owners.len(), 3, "the channels spread over every primary");
    let (subscriber, mut events) = new_life(cluster).await;
    let mut publisher = cluster.connection().await;
    const PER_CHANNEL: usize = 25;

    // All at once: each SSUBSCRIBE is one command for one slot.
    futures_util::future::try_join_all(channels.iter().map(|c| subscriber.subscribe(c)))
        .await
        .unwrap();
    for i in 0..PER_CHANNEL {
        for channel in &channels {
            let receivers = spublish(&mut publisher, channel, &i.to_string()).await;
            assert_eq!(receivers, 1, "{channel} has its one subscriber");
        }
    }

    let mut received: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for _ in 0..channels.len() * PER_CHANNEL {
        let (channel, payload) = next_message(&mut events).await;
        let n = std::str::from_utf8(&payload).unwrap().parse().unwrap();
        received.entry(channel).or_default().push(n);
    }
    let expected: Vec<usize> = (0..PER_CHANNEL).collect();
    assert_eq!(received.len(), channels.len());
    for channel in &channels {
        assert_eq!(received[channel], expected, "{channel} in order, once each");
    }
    subscriber.ping().await.unwrap();
}

#[tokio::test]
async fn an_unsubscribed_channel_stops_delivering_and_the_life_goes_on() {
    let cluster = CLUSTER.get().await;
    // One slot: both on one connection, so their order is the server's.
    let tag = unique("quiet");
    let (dropped, kept) = (format!("dropped:{{{tag}}}"), format!("kept:{{{tag}}}"));
    let (subscriber, mut events) = new_life(cluster).await;
    let mut publisher = cluster.connection().await;
    subscriber.subscribe(&dropped).await.unwrap();
    subscriber.subscribe(&kept).await.unwrap();
    assert_eq!(spublish(&mut publisher, &dropped, "before").await, 1);
    assert_eq!(
        next_message(&mut events).await,
        (dropped.clone(), Bytes::from("before"))
    );

    // With a PING in flight beside it on the same connection.
    let (unsubscribed, pinged) = tokio::join!(subscriber.unsubscribe(&dropped), subscriber.ping());

    unsubscribed.unwrap();
    pinged.unwrap();
    assert_eq!(spublish(&mut publisher, &dropped, "after").await, 0);
    assert_eq!(spublish(&mut publisher, &kept, "still").await, 1);
    // Published after "after" on the same shard: "after" would be first.
    assert_eq!(
        next_message(&mut events).await,
        (kept.clone(), Bytes::from("still"))
    );
    subscriber.ping().await.unwrap();
    subscriber.subscribe(&dropped).await.unwrap();
    assert_eq!(spublish(&mut publisher, &dropped, "again").await, 1);
    assert_eq!(
        next_message(&mut events).await,
        (dropped.clone(), Bytes::from("again"))
    );
}

#[tokio::test]
async fn migrating_a_subscribed_slot_ends_the_life_and_a_new_life_receives_at_the_new_owner() {
    let cluster = CLUSTER.get().await;
    let channel = format!("{{{}}}", cluster.unused_tag("moving").await);
    let slot = cluster.slot_of(&channel).await;
    let from = cluster.primary_of(&channel).await;
    let to = another_primary(cluster, from).await;
    // A channel on the third primary, which the migration leaves alone.
    let mut bystander = unique("bystander");
    while [from, to].contains(&cluster.primary_of(&bystander).await) {
        bystander = unique("bystander");
    }
    let bystander_owner = cluster.primary_of(&bystander).await;
    let (subscriber, events) = new_life(cluster).await;
    subscriber.subscribe(&channel).await.unwrap();
    subscriber.subscribe(&bystander).await.unwrap();
    let watcher = watch(events);

    let started = Instant::now();
    cluster.migrate_slot(slot, to).await;
    let migrated = Instant::now();

    let ended = ended(watcher).await;
    assert!(ended.messages.is_empty(), "{:?}", ended.messages);
    assert!(
        ended.why.contains("unsubscribed") && ended.why.contains(&channel),
        "{}",
        ended.why
    );
    assert!(subscriber.subscribe(&bystander).await.is_err());
    assert!(subscriber.ping().await.is_err());
    // Its connections closed: the bystander's subscription went with them.
    eventually("the old life's connections to close", || async {
        (shard_subscribers(cluster, bystander_owner, &bystander).await == 0).then_some(())
    })
    .await;

    let (subscriber, mut events) = new_life(cluster).await;
    subscriber.subscribe(&channel).await.unwrap();

    assert_eq!(shard_subscribers(cluster, to, &channel).await, 1);
    let mut publisher = cluster.connection().await;
    assert_eq!(spublish(&mut publisher, &channel, "moved").await, 1);
    assert_eq!(
        next_message(&mut events).await,
        (channel.clone(), Bytes::from("moved"))
    );
    eprintln!(
        "slot {slot} {from} -> {to}: Lost {:?} after the migration started \
         (the migration took {:?}); reason: {}",
        ended.at - started,
        migrated - started,
        ended.why
    );
}

/// An unsubscribe whose caller stops waiting (its SUNSUBSCRIBE may never be
/// sent) must not make the server's later `sunsubscribe` of the channel,
/// subscribed again, pass for its confirmation.
#[tokio::test]
async fn an_unsubscribe_given_up_midway_does_not_hide_a_later_loss() {
    let cluster = CLUSTER.get().await;
    let channel = format!("{{{}}}", cluster.unused_tag("fickle").await);
    let slot = cluster.slot_of(&channel).await;
    let to = another_primary(cluster, cluster.primary_of(&channel).await).await;
    let (subscriber, events) = new_life(cluster).await;
    subscriber.subscribe(&channel).await.unwrap();
    // Polled once, then dropped.
    let gave_up = subscriber.unsubscribe(&channel).now_or_never();
    assert!(
        gave_up.is_none(),
        "the unsubscribe was still waiting: {gave_up:?}"
    );
    subscriber.ping().await.unwrap();
    subscriber.subscribe(&channel).await.unwrap();
    let watcher = watch(events);

    cluster.migrate_slot(slot, to).await;

    let ended = ended(watcher).await;
    assert!(
        ended.why.contains("unsubscribed") && ended.why.contains(&channel),
        "{}",
        ended.why
    );
}

#[tokio::test]
async fn a_subscribe_refused_with_moved_is_an_error_and_ends_the_life() {
    let cluster = CLUSTER.get().await;
    let channel = format!("{{{}}}", cluster.unused_tag("elsewhere").await);
    let slot = cluster.slot_of(&channel).await;
    let to = another_primary(cluster, cluster.primary_of(&channel).await).await;
    // This life knows the slot's old owner.
    let (subscriber, events) = new_life(cluster).await;
    let watcher = watch(events);
    cluster.migrate_slot(slot, to).await;
    subscriber.ping().await.unwrap();

    let error = subscriber.subscribe(&channel).await.unwrap_err();

    assert_eq!(
        error.redirect_node(),
        Some((format!("127.0.0.1:{to}").as_str(), slot)),
        "{error}"
    );
    let ended = ended(watcher).await;
    assert!(
        ended.why.contains("SSUBSCRIBE") && ended.why.contains(&format!("127.0.0.1:{to}")),
        "{}",
        ended.why
    );
    assert!(subscriber.ping().await.is_err());
}

/// A primary that stops answering without closing its sockets (SIGSTOP) is
/// found by `ping`. Owns its cluster: a stopped primary stalls every client
/// of its shard.
#[tokio::test]
async fn a_primary_that_does_not_answer_a_ping_ends_the_life() {
    let cluster = RedisCluster::start().await;
    let channel = unique("hung");
    let owner = cluster.primary_of(&channel).await;
    let pid = process_id(&cluster, owner).await;
    // A short timeout: the primary stays stopped for that long only, well
    // below the cluster's node timeout, so nobody fails it over.
    let timeout = NODE_TIMEOUT / 4;
    let (subscriber, events) = ShardedSubscriber::connect(&cluster.seed_urls(), timeout)
        .await
        .unwrap();
    subscriber.subscribe(&channel).await.unwrap();
    let watcher = watch(events);

    let stopped = Stopped::new(pid);
    let started = Instant::now();
    let pinged = subscriber.ping().await;
    let took = started.elapsed();
    drop(stopped);

    let error = pinged.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(
        took >= timeout && took < timeout * 2,
        "the ping took {took:?}"
    );
    let ended = ended(watcher).await;
    assert!(ended.why.contains("PING"), "{}", ended.why);
}

/// Owns its cluster: a failover stops the whole cluster for seconds.
#[tokio::test]
async fn killing_the_primary_of_a_subscribed_channel_ends_the_life_and_a_new_life_receives_after_failover()
 {
    let cluster = RedisCluster::start().await;
    let channel = unique("survivor");
    let (subscriber, mut events) = new_life(&cluster).await;
    subscriber.subscribe(&channel).await.unwrap();
    let mut publisher = cluster.connection().await;
    assert_eq!(spublish(&mut publisher, &channel, "before").await, 1);
    assert_eq!(
        next_message(&mut events).await,
        (channel.clone(), Bytes::from("before"))
    );
    let watcher = watch(events);

    let started = Instant::now();
    let failover = cluster.kill_primary_of(&channel).await;

    let ended = ended(watcher).await;
    let lost_after = ended.at - started;
    assert!(
        ended.why.contains(&format!("{} closed", failover.killed)),
        "{}",
        ended.why
    );
    // The socket closes with the process: the life ends long before the
    // cluster itself notices.
    assert!(lost_after < NODE_TIMEOUT, "Lost after {lost_after:?}");
    assert!(subscriber.subscribe(&channel).await.is_err());

    let (subscriber, mut events) = new_life(&cluster).await;
    subscriber.subscribe(&channel).await.unwrap();

    assert_eq!(
        shard_subscribers(&cluster, failover.promoted, &channel).await,
        1
    );
    let mut publisher = cluster.connection().await;
    assert_eq!(spublish(&mut publisher, &channel, "after").await, 1);
    assert_eq!(
        next_message(&mut events).await,
        (channel.clone(), Bytes::from("after"))
    );
    subscriber.ping().await.unwrap();
    eprintln!(
        "primary {} killed: Lost after {lost_after:?}; failover to {} took {:?}",
        failover.killed, failover.promoted, failover.took
    );
}

#[tokio::test]
async fn connecting_without_a_live_seed_fails_within_the_timeout() {
    // Nothing listens on the first; the second accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seeds = [
        format!("redis://127.0.0.1:{}", free_port()),
        format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port()),
    ];
    let timeout = Duration::from_millis(500);

    let started = Instant::now();
    let connected = ShardedSubscriber::connect(&seeds, timeout).await;

    let took = started.elapsed();
    let Err(error) = connected else {
        panic!("connected to nothing")
    };
    assert!(took < timeout + Duration::from_millis(250), "took {took:?}");
    assert!(error.is_timeout(), "{error}");
    assert!(
        ShardedSubscriber::connect(&["nonsense".to_owned()], timeout)
            .await
            .is_err()
    );
    assert!(ShardedSubscriber::connect(&[], timeout).await.is_err());
}

/// The pid of the node on `port` (`INFO server`).
async fn process_id(cluster: &RedisCluster, port: u16) -> i32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut cluster.node_connection(port).await)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A SIGSTOPped process, SIGCONTinued on drop (a failing test included).
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn new(pid: i32) -> Self {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::SIGCONT);
    }
}
