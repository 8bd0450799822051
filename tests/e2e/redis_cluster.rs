//! The Redis Cluster the cluster tests run on: it forms, routes keys and
//! shard channels to the primaries that own them, fails over when a primary
//! is SIGKILLed, and moves a slot under load, with the `redis` crate's
//! cluster client following along. `scripts/redis-cluster.sh` is checked
//! here too.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::{AsyncCommands, PushKind, Value};

use crate::support::redis_cluster::{SLOTS, hash_slot};
use crate::support::tools::ScratchDir;
use crate::support::{RedisCluster, SharedRedisCluster, TIMEOUT, unique};

/// One cluster for the tests of this module that leave its shape alone.
static CLUSTER: SharedRedisCluster = SharedRedisCluster::new();

#[tokio::test]
async fn the_cluster_forms_with_three_primaries_each_with_a_synced_replica() {
    let cluster = CLUSTER.get().await;

    let topology = cluster.topology().await;

    let primaries = topology.primaries();
    assert_eq!(primaries.len(), 3, "{topology:?}");
    for &primary in &primaries {
        assert_eq!(topology.replicas_of(primary).len(), 1, "{topology:?}");
    }
    let served: usize = topology
        .nodes
        .iter()
        .flat_map(|n| n.slots.iter())
        .map(|range| range.clone().count())
        .sum();
    assert_eq!(served, usize::from(SLOTS));
    assert_eq!(cluster.seed_urls().len(), 6);
    assert!(
        cluster
            .urls()
            .split(',')
            .all(|url| url.starts_with("redis://127.0.0.1:")),
        "{}",
        cluster.urls()
    );
    let mut redis = cluster.connection().await;
    let key = unique("formed");
    let () = redis.set(&key, "yes").await.unwrap();
    let value: String = redis.get(&key).await.unwrap();
    assert_eq!(value, "yes");
}

#[tokio::test]
async fn keys_in_different_slots_land_on_different_primaries() {
    let cluster = CLUSTER.get().await;
    let primaries = cluster.topology().await.primaries();
    // One key per primary: a key's slot is a hash, so try names until each
    // primary got one (about 6 tries; 200 would be absurdly unlucky).
    let mut key_of = std::collections::BTreeMap::new();
    for i in 0..200 {
        let key = unique(&format!("spread{i}"));
        key_of.entry(cluster.primary_of(&key).await).or_insert(key);
        if key_of.len() == primaries.len() {
            break;
        }
    }
    assert_eq!(key_of.len(), primaries.len(), "a key for every primary");
    let mut redis = cluster.connection().await;

    for (primary, key) in &key_of {
        let () = redis.set(key, primary).await.unwrap();
    }

    for (&primary, key) in &key_of {
        assert_eq!(hash_slot(key), cluster.slot_of(key).await, "{key}");
        let mut owner = cluster.node_connection(primary).await;
        let stored: u16 = owner.get(key).await.unwrap();
        assert_eq!(stored, primary, "{key} is stored on its primary");
        for &other in primaries.iter().filter(|&&p| p != primary) {
            let mut other = cluster.node_connection(other).await;
            let error = other.get::<_, String>(key).await.unwrap_err();
            let (address, slot) = error.redirect_node().expect("a MOVED redirection");
            assert_eq!(address, format!("127.0.0.1:{primary}"), "{error}");
            assert_eq!(slot, cluster.slot_of(key).await);
        }
    }
}

#[tokio::test]
async fn a_shard_channel_publication_reaches_its_subscriber_through_the_owning_shard() {
    let cluster = CLUSTER.get().await;
    let channel = unique("room");
    let owner = cluster.primary_of(&channel).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = cluster
        .client_builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
        .unwrap();
    let mut subscriber = subscriber.get_async_connection().await.unwrap();
    subscriber.ssubscribe(&channel).await.unwrap();
    let mut publisher = cluster.connection().await;

    let receivers: usize = redis::cmd("SPUBLISH")
        .arg(&channel)
        .arg("hello")
        .query_async(&mut publisher)
        .await
        .unwrap();

    assert_eq!(receivers, 1, "SPUBLISH counts the one subscriber");
    let message = tokio::time::timeout(TIMEOUT, async {
        loop {
            let push = rx.recv().await.expect("the push channel stays open");
            if push.kind == PushKind::SMessage {
                return push.data;
            }
        }
    })
    .await
    .expect("the message arrives in time");
    assert_eq!(
        message,
        [
            Value::BulkString(channel.clone().into_bytes()),
            Value::BulkString(b"hello".to_vec())
        ]
    );
    // The subscription lives on the shard that owns the channel's slot only.
    for primary in cluster.topology().await.primaries() {
        let (_, count): (String, usize) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query_async(&mut cluster.node_connection(primary).await)
            .await
            .unwrap();
        assert_eq!(count, usize::from(primary == owner), "on {primary}");
    }
}

/// Owns its cluster: a failover stops the whole cluster for seconds.
#[tokio::test]
async fn killing_a_primary_promotes_its_replica_and_the_key_is_readable_again() {
    let cluster = RedisCluster::start().await;
    let key = unique("survivor");
    let mut redis = cluster.connection().await;
    let () = redis.set(&key, "still here").await.unwrap();
    cluster.wait_replicated().await;
    let before = cluster.topology().await;
    let primary = cluster.primary_of(&key).await;

    let failover = cluster.kill_primary_of(&key).await;

    assert_eq!(failover.killed, primary);
    assert_eq!(failover.promoted, before.replicas_of(primary)[0]);
    assert_eq!(cluster.primary_of(&key).await, failover.promoted);
    assert!(
        failover.took < Duration::from_secs(15),
        "the failover took {:?}",
        failover.took
    );
    // The same client connection follows the new topology (its first
    // attempts may fail while it learns it).
    let value = crate::support::eventually("the key to be readable", || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { redis.get::<_, String>(&key).await.ok() }
    })
    .await;
    assert_eq!(value, "still here");

    cluster.restart(failover.killed).await;

    let after = cluster.topology().await;
    assert_eq!(after.replicas_of(failover.promoted), [failover.killed]);
    eprintln!("failover took {:?}", failover.took);
}

#[tokio::test]
async fn migrating_a_slot_under_load_moves_its_keys_to_the_new_owner() {
    let cluster = CLUSTER.get().await;
    let tag = cluster.unused_tag("busy").await;
    // One hash tag: every key of the load lives in the same slot.
    let counter = format!("{{{tag}}}:counter");
    let slot = cluster.slot_of(&counter).await;
    let from = cluster.primary_of(&counter).await;
    let to = *cluster
        .topology()
        .await
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .unwrap();
    let mut redis = cluster.connection().await;
    for i in 0..50 {
        let () = redis.set(format!("{{{tag}}}:before{i}"), i).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let mut redis = cluster.connection().await;
        let (counter, tag) = (counter.clone(), tag.clone());
        let (stop, progress) = (stop.clone(), progress.clone());
        async move {
            let (mut acknowledged, mut errors) = (0_u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let result: redis::RedisResult<u64> = redis.incr(&counter, 1).await;
                match result {
                    Ok(_) => acknowledged += 1,
                    Err(e) => errors.push(e.to_string()),
                }
                progress.store(acknowledged, Ordering::Relaxed);
                let during = format!("{{{tag}}}:during{acknowledged}");
                if let Err(e) = redis.set::<_, _, ()>(&during, 1).await {
                    errors.push(e.to_string());
                }
            }
            (acknowledged, errors)
        }
    });
    // Some load before the move, so the slot is busy when it starts.
    crate::support::eventually("the load to start", || {
        let mut redis = redis.clone();
        let counter = counter.clone();
        async move { (redis.get::<_, u64>(&counter).await.ok()? > 20).then_some(()) }
    })
    .await;

    let (started, before) = (Instant::now(), progress.load(Ordering::Relaxed));
    cluster.migrate_slot(slot, to).await;
    let (took, during) = (started.elapsed(), progress.load(Ordering::Relaxed) - before);

    // And some after, so the clients are seen to follow the new owner.
    let moved_at: u64 = redis.get(&counter).await.unwrap();
    crate::support::eventually("the load to go on after the move", || {
        let mut redis = redis.clone();
        let counter = counter.clone();
        async move { (redis.get::<_, u64>(&counter).await.ok()? > moved_at + 20).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, errors) = load.await.unwrap();
    assert!(errors.is_empty(), "errors under the migration: {errors:?}");
    assert!(during > 0, "the slot was busy while it moved");
    assert_eq!(cluster.primary_of(&counter).await, to);
    let total: u64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, acknowledged, "every acknowledged INCR counted once");
    for i in 0..50 {
        let value: u64 = redis.get(format!("{{{tag}}}:before{i}")).await.unwrap();
        assert_eq!(value, i);
    }
    let mut target = cluster.node_connection(to).await;
    let exists: bool = target.exists(&counter).await.unwrap();
    assert!(exists, "the key is on its new primary");
    let error = cluster
        .node_connection(from)
        .await
        .get::<_, u64>(&counter)
        .await
        .unwrap_err();
    assert_eq!(
        error.redirect_node(),
        Some((format!("127.0.0.1:{to}").as_str(), slot))
    );
    eprintln!("slot {slot} moved from {from} to {to} in {took:?}, {during} INCRs meanwhile");
}

/// `scripts/redis-cluster.sh start DIR` / `stop DIR`, as people and the
/// deployment scripts use it.
#[tokio::test]
async fn the_script_starts_a_cluster_that_serves_keys_and_stops_it() {
    let dir = ScratchDir::create("redis-cluster-script");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-cluster.sh");
    let _stop = StopScriptCluster(script.clone(), dir.path().to_owned());

    let output = run_script(&script, "start", dir.path()).await;

    let urls = String::from_utf8(output.stdout).unwrap();
    let seeds: Vec<&str> = urls.trim().split(',').collect();
    assert_eq!(seeds.len(), 6, "six seeds: {urls}");
    let ports: Vec<u16> = seeds
        .iter()
        .map(|seed| {
            seed.strip_prefix("redis://127.0.0.1:")
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("a seed URL: {seed}"))
        })
        .collect();
    let client = redis::cluster::ClusterClient::new(seeds.clone()).unwrap();
    let mut redis = client.get_async_connection().await.unwrap();
    let key = unique("scripted");
    let () = redis.set(&key, "ok").await.unwrap();
    let value: String = redis.get(&key).await.unwrap();
    assert_eq!(value, "ok");

    run_script(&script, "stop", dir.path()).await;

    for port in ports {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "nothing listens on {port} any more"
        );
    }
    assert!(!dir.path().exists(), "stop removes the directory");
}

/// Runs `script command dir` off the runtime's thread; fails on a non-zero exit.
async fn run_script(script: &Path, command: &str, dir: &Path) -> std::process::Output {
    let mut process = Command::new(script);
    process.arg(command).arg(dir);
    let output = tokio::task::spawn_blocking(move || process.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "redis-cluster.sh {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stops the script's cluster if the test fails before it does.
struct StopScriptCluster(std::path::PathBuf, std::path::PathBuf);

impl Drop for StopScriptCluster {
    fn drop(&mut self) {
        if self.1.join(".chorus-redis-cluster").exists() {
            let _ = Command::new(&self.0).arg("stop").arg(&self.1).output();
        }
    }
}
