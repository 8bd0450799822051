//! Redis Cluster faults under steady load, with real `chorus` processes on a
//! real Redis Cluster (`support::redis_cluster`: 3 primaries, 3 replicas):
//! - the primary that owns a busy room's slot is SIGKILLed and its replica
//!   takes over;
//! - the busy room's slot is migrated to another primary and back
//!   (`CLUSTER SETSLOT` and `MIGRATE`, as `redis-cli --cluster reshard`
//!   does): away as the fixture does it, in milliseconds, and back slowly,
//!   the slot held in each state of the migration (its keys on the source,
//!   then on the target) while the clients chat, as a slot with many keys
//!   is on a real cluster.
//!
//! Three nodes, two clients on each, all in one room, each DMing its partner
//! on another node. One DM pair's history and one of its users' inbox share
//! the room's slot, and so does the inbox of a user whose pair's history is
//! elsewhere, so the fault hits room messages, DMs and DM deliveries alike.
//! The clients send on a steady beat, one command in flight, and retry
//! nothing (no idempotency keys), before, through and after the fault.
//! Expected:
//! - every send is answered: by its echo, or by `unavailable` within the
//!   nodes' command timeout; nothing else is refused;
//! - nothing refused is stored or delivered;
//! - every accepted message reaches every member of the room exactly once,
//!   in the order of the room's history, and the history is exactly the
//!   accepted messages; every accepted DM reaches both users of its pair
//!   exactly once, in the order of the pair's history;
//! - no socket closes and nobody's presence changes.
//!
//! `unavailable` is how a node answers what Redis refuses for now: the
//! failover's dead primary and `CLUSTERDOWN`, a migrating slot's
//! `TRYAGAIN`. It is counted (per state of the slot for the migration), not
//! forbidden.
//!
//! Each test prints one `measured:` line with its figures (and the nodes'
//! warnings), and checks everything before failing, so one run names every
//! broken expectation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::support::chatters::{
    BEAT, Chatter, Chatters, Fate, Kind, Record, Style, Tally, full_history, id_key, sum, tally,
};
use crate::support::node::Endpoint;
use crate::support::{
    ProcessNode, RedisCluster, TIMEOUT, WsClient, eventually_within, metric, unique, wait_ready,
};

/// Nodes on the cluster.
const NODES: usize = 3;
/// Clients: client `i` is on node `i % NODES`, and clients `2p` and `2p + 1`
/// are DM pair `p` (on two different nodes).
const CLIENTS: usize = 6;
/// Every other command of a client is a DM to its partner: the fault's few
/// seconds hold a few sends per client, and DMs should be among them.
const DM_EVERY: usize = 2;
/// The nodes' DM rate per connection, above the clients' five a second
/// (the default is five).
const DM_RATE: &str = "20";
/// Far more than a test stores, so histories are never trimmed.
const HISTORY_LIMIT: &str = "1000000";
/// The nodes' bound on one Redis command (`COMMAND_TIMEOUT` in
/// `cluster::redis`): a send that Redis cannot take is answered within it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine, added to the bound above.
const SLACK: Duration = Duration::from_millis(1500);
/// How long joining, and each wait for echoes, may take.
const PHASE: Duration = Duration::from_secs(20);
/// Echoes per client before the fault, between faults and after them.
const ROUNDS: usize = 15;

/// How long the paced migration holds the slot in each state: longer than
/// a command timeout, so each client's sends meet it whatever their
/// answers wait for (a message stored by the slot's new owner is published
/// there, and reaches the nodes, still subscribed at the old owner, only
/// once the migration ends). The fault's length, like a partition's, not a
/// wait for something to happen.
const HOLD: Duration = Duration::from_millis(2500);
/// Keys moved per `MIGRATE`, as the fixture does.
const MIGRATE_BATCH: usize = 100;

/// One command in flight at most, so an answer's delay is its own and a
/// refused send is not followed by a burst of others.
const STYLE: Style = Style {
    one_in_flight: true,
    dm_every: DM_EVERY,
    phase: PHASE,
};

/// Redis Cluster's hash slot of a hash tag (CRC16/XMODEM mod 16384), as
/// `CLUSTER KEYSLOT` computes it for a key carrying `{tag}`: computed here
/// to search names, checked once against the cluster.
fn slot(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16384
}

/// The test's names: the busy room, its slot, and each client's user name.
struct Names {
    room: String,
    /// The key of the room's stream; its channel shares the slot.
    room_key: String,
    slot: u16,
    /// By client index.
    users: Vec<String>,
}

impl Names {
    /// A fresh room, and users such that pair 0's DM history and its first
    /// user's inbox share the room's slot, and pair 1's first user's inbox
    /// does too while pair 1's history is on another primary: a fault of
    /// the room's slot hits room messages, pair 0's sends and deliveries,
    /// and deliveries of DMs stored elsewhere (pair 1). Pair 2 lands
    /// wherever its names hash.
    async fn pick(cluster: &RedisCluster, prefix: &str) -> Self {
        let room = unique("room");
        let room_key = format!("{prefix}{{r:{room}}}:h");
        let room_slot = slot(&format!("r:{room}"));
        let topology = cluster.topology().await;
        let owner = topology.primary_of_slot(room_slot);
        let inbox_here = |stem: &'static str| {
            (0..)
                .map(move |k| format!("{stem}{k}"))
                .find(|user| slot(&format!("u:{user}")) == room_slot)
                .expect("CRC16 reaches every slot")
        };
        // Each first user sorts before its partner: `{d:<first>:<second>}`
        // is the pair's tag.
        let (a, c) = (inbox_here("a"), inbox_here("c"));
        let b = (0..)
            .map(|k| format!("b{k}"))
            .find(|b| slot(&format!("d:{a}:{b}")) == room_slot)
            .expect("CRC16 reaches every slot");
        let d = (0..)
            .map(|k| format!("d{k}"))
            .find(|d| topology.primary_of_slot(slot(&format!("d:{c}:{d}"))) != owner)
            .expect("another primary");
        for key in [
            room_key.clone(),
            format!("{prefix}{{u:{a}}}:x"),
            format!("{prefix}{{d:{a}:{b}}}:h"),
            format!("{prefix}{{u:{c}}}:x"),
        ] {
            assert_eq!(cluster.slot_of(&key).await, room_slot, "the slot of {key}");
        }
        let users = vec![a, b, c, d, "u4".to_owned(), "u5".to_owned()];
        assert_eq!(users.len(), CLIENTS);
        Self {
            room,
            room_key,
            slot: room_slot,
            users,
        }
    }

    fn partner(&self, client: usize) -> &str {
        &self.users[client ^ 1]
    }
}

/// `NODES` real nodes on `cluster` under a fresh prefix, all ready.
///
/// Local to this file, and minimal, while `support::cluster` is being
/// reworked for Redis Cluster: it should move there.
async fn start_nodes(cluster: &RedisCluster, prefix: &str) -> Vec<ProcessNode> {
    let urls = cluster.urls();
    let nodes: Vec<ProcessNode> = (0..NODES)
        .map(|i| {
            let id = format!("{prefix}n{i}").replace(':', "-");
            ProcessNode::spawn(&[
                ("REDIS_CLUSTER_URLS", urls.as_str()),
                ("CHORUS_REDIS_PREFIX", prefix),
                ("CHORUS_NODE_ID", id.as_str()),
                ("CHORUS_HISTORY_LIMIT", HISTORY_LIMIT),
                ("CHORUS_RATE_LIMIT", "0"),
                ("CHORUS_DM_RATE", DM_RATE),
            ])
        })
        .collect();
    for node in &nodes {
        wait_ready(&node.url("/ready")).await;
    }
    nodes
}

/// The clients, all joined to the room and chatting. They do not reconnect:
/// a socket that dies ends its record.
async fn start_clients(nodes: &[ProcessNode], names: &Names) -> Chatters {
    let chatters = (0..CLIENTS)
        .map(|i| {
            let user = names.users[i].clone();
            Chatter {
                urls: vec![nodes[i % NODES].ws_url(&user)],
                room: names.room.clone(),
                home: 0,
                order: Vec::new(),
                partner: Some(names.partner(i).to_owned()),
                pair: i / 2,
                user,
            }
        })
        .collect();
    Chatters::start(chatters, STYLE).await
}

/// Every DM between `user` and `other` as `(id, content)`, oldest first,
/// paged back through `history` on a connection of `user`'s own.
async fn pair_history(node: &impl Endpoint, user: &str, other: &str) -> Vec<(String, String)> {
    let mut client = WsClient::connect(&node.ws_url(user)).await;
    let mut all: Vec<(String, String)> = Vec::new();
    loop {
        let mut frame = json!({"type": "history", "with": other, "limit": 100});
        if let Some((oldest, _)) = all.first() {
            frame["before"] = json!(oldest);
        }
        let page = client.request(frame).await;
        assert_eq!(page["type"], "history", "{page}");
        let messages = page["messages"].as_array().expect("messages");
        if messages.is_empty() {
            client.close().await;
            return all;
        }
        let older = messages.iter().map(|m| {
            (
                m["id"].as_str().expect("id").to_owned(),
                m["content"].as_str().expect("content").to_owned(),
            )
        });
        all.splice(0..0, older);
    }
}

/// The warnings and errors the nodes logged, `level message` → how many.
fn node_warnings(nodes: &[ProcessNode]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in nodes.iter().flat_map(|n| n.logs.try_iter()) {
        let level = line["level"].as_str().unwrap_or_default();
        if matches!(level, "WARN" | "ERROR") {
            let message = line["message"].as_str().unwrap_or_default();
            *seen.entry(format!("{level} {message}")).or_insert(0) += 1;
        }
    }
    seen
}

/// The errors the live Redis nodes answered, summed over them, by kind
/// (`INFO errorstats`: `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, …), and
/// the commands that were refused (before running: a redirection, say) or
/// failed (`INFO commandstats`): what the nodes' cluster clients ran into.
/// Plain `ERR`s are left out: every client connection of the redis crate
/// sends `CLIENT SETINFO`, which Redis 7.0 does not know, and the fixture
/// connects often.
async fn redis_errors(cluster: &RedisCluster) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for port in cluster.live_ports() {
        let mut redis = cluster.node_connection(port).await;
        let info: String = redis::cmd("INFO")
            .arg("errorstats")
            .arg("commandstats")
            .query_async(&mut redis)
            .await
            .expect("INFO errorstats commandstats");
        for line in info.lines() {
            if let Some((kind, count)) = line
                .strip_prefix("errorstat_")
                .and_then(|rest| rest.split_once(":count="))
                && kind != "ERR"
            {
                *errors.entry(kind.to_owned()).or_insert(0) += count.trim().parse().unwrap_or(0);
            }
            let Some((command, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            for stat in stats.split(',') {
                if let Some((what @ ("rejected_calls" | "failed_calls"), n)) = stat.split_once('=')
                    && let Ok(n @ 1..) = n.parse::<u64>()
                {
                    *errors.entry(format!("{command} {what}")).or_insert(0) += n;
                }
            }
        }
    }
    errors
}

/// What the nodes counted of their own recovery, summed over them.
async fn node_counters(nodes: &[ProcessNode]) -> BTreeMap<&'static str, f64> {
    let mut counters = BTreeMap::new();
    for name in [
        "chorus_pubsub_reconnects_total",
        "chorus_gap_fill_messages_total",
        "chorus_dm_deliveries_deferred_total",
        "chorus_redis_errors_total",
    ] {
        let mut total = 0.0;
        for node in nodes {
            total += metric(&node.url("/metrics"), name).await;
        }
        counters.insert(name.trim_start_matches("chorus_"), total);
    }
    counters
}

/// `CLUSTER SETSLOT <slot> <state> <node id>` on the node on `port`.
async fn setslot(cluster: &RedisCluster, port: u16, slot: u16, state: &str, id: &str) {
    let mut redis = cluster.node_connection(port).await;
    let () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(id)
        .query_async(&mut redis)
        .await
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state} {id} on {port}: {e}"));
}

/// When the paced migration's slot was in each state.
struct Paced {
    /// `MIGRATING` on the source, `IMPORTING` on the target, its keys still
    /// on the source.
    keys_on_source: (Instant, Instant),
    /// The same, its keys moved to the target.
    keys_on_target: (Instant, Instant),
    /// From the start until every node agreed on the new owner.
    took: Duration,
}

/// Moves `slot` to the primary on `to` as `RedisCluster::migrate_slot`
/// (and `redis-cli --cluster reshard`) does, but holds the slot in each
/// state of the migration for [`HOLD`] while the clients chat: on a real
/// cluster a slot with many keys stays in these states for as long as its
/// keys take to move, and the load meets every state. The fixture moves the
/// few keys of a test's slot in milliseconds, which no send meets. Local to
/// this file, like [`start_nodes`].
async fn migrate_slot_paced(cluster: &RedisCluster, slot: u16, to: u16) -> Paced {
    let started = Instant::now();
    let before = cluster.topology().await;
    let from = before.primary_of_slot(slot);
    let id = |port: u16| {
        before
            .nodes
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.id.clone())
            .unwrap_or_else(|| panic!("no node on {port} in {before:?}"))
    };
    let (from_id, to_id) = (id(from), id(to));
    setslot(cluster, to, slot, "IMPORTING", &from_id).await;
    setslot(cluster, from, slot, "MIGRATING", &to_id).await;
    let held = Instant::now();
    tokio::time::sleep_until(held + HOLD).await;
    let keys_on_source = (held, Instant::now());
    let mut source = cluster.node_connection(from).await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(MIGRATE_BATCH)
            .query_async(&mut source)
            .await
            .expect("CLUSTER GETKEYSINSLOT");
        if keys.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot {slot} still has keys on {from} after {TIMEOUT:?}"
        );
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(TIMEOUT.as_millis() as u64)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .expect("MIGRATE");
    }
    let held = Instant::now();
    tokio::time::sleep_until(held + HOLD).await;
    let keys_on_target = (held, Instant::now());
    setslot(cluster, to, slot, "NODE", &to_id).await;
    setslot(cluster, from, slot, "NODE", &to_id).await;
    for other in before.primaries() {
        if other != from && other != to {
            setslot(cluster, other, slot, "NODE", &to_id).await;
        }
    }
    eventually_within(
        "every node to agree on the slot's owner",
        TIMEOUT,
        || async { (cluster.topology().await.primary_of_slot(slot) == to).then_some(()) },
    )
    .await;
    Paced {
        keys_on_source,
        keys_on_target,
        took: started.elapsed(),
    }
}

/// Everything a run produced, counted against its histories.
struct Outcome {
    records: Vec<Record>,
    /// The room's history read back over HTTP.
    history: Vec<(String, String)>,
    /// Each pair's DM history read back over WebSocket.
    pair_histories: Vec<Vec<(String, String)>>,
    /// Accepted room messages, in id order.
    expected_room: Vec<(String, String)>,
    /// Accepted DMs per pair, in id order.
    expected_dm: Vec<Vec<(String, String)>>,
    sent: usize,
    /// `unavailable` answers: client, when sent, how long the answer took.
    unavailable: Vec<(usize, Instant, Duration)>,
    other_refusals: Vec<String>,
    pending: usize,
    /// Clients that did not get every answer when the sending stopped.
    unquiet: usize,
    room_tallies: Vec<Tally>,
    dm_tallies: Vec<Tally>,
    refused_delivered: Vec<String>,
    refused_stored: Vec<String>,
    /// Accepted, but not in its history.
    accepted_unstored: Vec<String>,
    slowest_accepted: Duration,
    /// Presence events any client saw from `since` on: `observer user event`.
    presence: Vec<String>,
}

impl Outcome {
    /// Stops the chat, drains it, reads the histories back and counts.
    async fn gather(
        mut chatters: Chatters,
        nodes: &[ProcessNode],
        names: &Names,
        since: Instant,
    ) -> Self {
        let unquiet = chatters.stop().await;
        let newest = chatters.live.newest_room();
        let live = chatters.live.clone();
        let records = chatters.drain(newest, TIMEOUT).await;
        let history = full_history(&nodes[0], &names.room).await;
        let mut pair_histories = Vec::new();
        for pair in 0..CLIENTS / 2 {
            let (a, b) = (&names.users[2 * pair], &names.users[2 * pair + 1]);
            pair_histories.push(pair_history(&nodes[1], a, b).await);
        }
        let presence = live
            .presence()
            .into_iter()
            .filter(|s| s.at >= since)
            .map(|s| format!("{} {} {}", names.users[s.observer], s.user, s.event))
            .collect();

        let mut expected_room = Vec::new();
        let mut expected_dm = vec![Vec::new(); CLIENTS / 2];
        let mut unavailable = Vec::new();
        let mut other_refusals = Vec::new();
        let mut pending = 0;
        let mut slowest_accepted = Duration::ZERO;
        let mut fate_of: HashMap<&str, &Fate> = HashMap::new();
        for record in &records {
            for send in &record.sends {
                fate_of.insert(&send.content, &send.fate);
                let took = send
                    .answered
                    .map(|a| a.saturating_duration_since(send.at))
                    .unwrap_or_default();
                match &send.fate {
                    Fate::Accepted(id) => {
                        slowest_accepted = slowest_accepted.max(took);
                        let entry = (id.clone(), send.content.clone());
                        match send.kind {
                            Kind::Room => expected_room.push(entry),
                            Kind::Dm => expected_dm[record.pair].push(entry),
                        }
                    }
                    Fate::Refused(code) if code == "unavailable" => {
                        unavailable.push((record.index, send.at, took));
                    }
                    Fate::Refused(code) => other_refusals.push(format!("{}: {code}", send.content)),
                    // In doubt only after a reconnect, which these clients
                    // do not do.
                    Fate::Pending | Fate::InDoubt => pending += 1,
                }
            }
        }
        expected_room.sort_by_key(|(id, _)| id_key(id));
        for dms in &mut expected_dm {
            dms.sort_by_key(|(id, _)| id_key(id));
        }
        let sent = records.iter().map(|r| r.sends.len()).sum();
        let room_tallies = records
            .iter()
            .map(|r| tally(&r.got_room, &expected_room))
            .collect();
        let dm_tallies = records
            .iter()
            .map(|r| tally(&r.got_dm, &expected_dm[r.pair]))
            .collect();
        let refused = |content: &str| matches!(fate_of.get(content), Some(Fate::Refused(_)));
        let refused_delivered: HashSet<String> = records
            .iter()
            .flat_map(|r| r.got_room.iter().chain(&r.got_dm))
            .filter(|(_, content)| refused(content))
            .map(|(_, content)| content.clone())
            .collect();
        let refused_stored = history
            .iter()
            .chain(pair_histories.iter().flatten())
            .filter(|(_, content)| refused(content))
            .map(|(_, content)| content.clone())
            .collect();
        let stored: HashSet<&str> = history
            .iter()
            .chain(pair_histories.iter().flatten())
            .map(|(_, content)| content.as_str())
            .collect();
        let accepted_unstored = expected_room
            .iter()
            .chain(expected_dm.iter().flatten())
            .filter(|(_, content)| !stored.contains(content.as_str()))
            .map(|(id, content)| format!("{content} ({id})"))
            .collect();
        Self {
            records,
            history,
            pair_histories,
            expected_room,
            expected_dm,
            sent,
            unavailable,
            other_refusals,
            pending,
            unquiet,
            room_tallies,
            dm_tallies,
            refused_delivered: refused_delivered.into_iter().collect(),
            refused_stored,
            accepted_unstored,
            slowest_accepted,
            presence,
        }
    }

    fn accepted_dm(&self) -> usize {
        self.expected_dm.iter().map(Vec::len).sum()
    }

    fn slowest_unavailable(&self) -> Duration {
        self.unavailable
            .iter()
            .map(|u| u.2)
            .max()
            .unwrap_or_default()
    }

    /// The sends sent within `window`, as `room accepted/refused, dm
    /// accepted/refused`.
    fn sends_within(&self, (from, to): (Instant, Instant)) -> String {
        let mut counts = [0; 4];
        for send in self.records.iter().flat_map(|r| &r.sends) {
            if send.at < from || send.at > to {
                continue;
            }
            let kind = if send.kind == Kind::Room { 0 } else { 2 };
            match send.fate {
                Fate::Accepted(_) => counts[kind] += 1,
                Fate::Refused(_) => counts[kind + 1] += 1,
                Fate::Pending | Fate::InDoubt => {}
            }
        }
        format!(
            "room {}/{}, dm {}/{}",
            counts[0], counts[1], counts[2], counts[3]
        )
    }

    /// When the `unavailable` answers were sent, from `from`: first and last.
    fn unavailable_window(&self, from: Instant) -> Option<(Duration, Duration)> {
        let at = self
            .unavailable
            .iter()
            .map(|u| u.1.saturating_duration_since(from));
        Some((at.clone().min()?, at.max()?))
    }

    /// The counts of the `measured:` line, after the test's own figures.
    fn figures(&self) -> String {
        let (room, dm) = (sum(&self.room_tallies), sum(&self.dm_tallies));
        let mut out = format!(
            "{CLIENTS} clients on {NODES} nodes at {}/s (one in flight): sent {}, accepted {} \
             ({} room + {} dm), answered unavailable {} (slowest {:?}), other refusals {}, \
             unanswered {}; slowest accepted answer {:?}; room deliveries expected {}, \
             delivered {}, duplicates {}, lost {}, unexpected {}; dm deliveries expected {}, \
             delivered {}, duplicates {}, lost {}, unexpected {}; refused but delivered {}, \
             refused but stored {}, accepted but not stored {}; presence events {}; \
             per client (room delivered/dup/lost/unexpected, dm the same):",
            1000 / BEAT.as_millis(),
            self.sent,
            self.expected_room.len() + self.accepted_dm(),
            self.expected_room.len(),
            self.accepted_dm(),
            self.unavailable.len(),
            self.slowest_unavailable(),
            self.other_refusals.len(),
            self.pending,
            self.slowest_accepted,
            self.expected_room.len() * self.records.len(),
            room.delivered,
            room.duplicates,
            room.lost,
            room.unexpected,
            2 * self.accepted_dm(),
            dm.delivered,
            dm.duplicates,
            dm.lost,
            dm.unexpected,
            self.refused_delivered.len(),
            self.refused_stored.len(),
            self.accepted_unstored.len(),
            self.presence.len(),
        );
        for ((record, r), d) in self
            .records
            .iter()
            .zip(&self.room_tallies)
            .zip(&self.dm_tallies)
        {
            let _ = write!(
                out,
                " {} {}/{}/{}/{} {}/{}/{}/{};",
                record.user,
                r.delivered,
                r.duplicates,
                r.lost,
                r.unexpected,
                d.delivered,
                d.duplicates,
                d.lost,
                d.unexpected
            );
        }
        out
    }

    /// Every expectation of the module documentation that does not hold.
    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        for record in &self.records {
            check(
                record.died.is_none(),
                format!(
                    "{}'s socket stayed open: {:?}",
                    record.user,
                    record.died.as_ref().map(|(_, why)| why)
                ),
            );
        }
        check(
            self.unquiet == 0 && self.pending == 0,
            format!(
                "every send answered ({} clients, {} sends were not)",
                self.unquiet, self.pending
            ),
        );
        check(
            self.other_refusals.is_empty(),
            format!("only unavailable refusals: {:?}", self.other_refusals),
        );
        check(
            self.slowest_unavailable() <= COMMAND_TIMEOUT + SLACK,
            format!(
                "unavailable within the command timeout: the slowest took {:?}",
                self.slowest_unavailable()
            ),
        );
        check(
            self.refused_delivered.is_empty() && self.refused_stored.is_empty(),
            format!(
                "a refused send is neither stored nor delivered: delivered {:?}, stored {:?}",
                self.refused_delivered, self.refused_stored
            ),
        );
        check(
            self.accepted_unstored.is_empty(),
            format!(
                "every accepted message is stored: not {:?}",
                self.accepted_unstored
            ),
        );
        check(
            self.history
                .iter()
                .map(|(id, _)| id)
                .eq(self.expected_room.iter().map(|(id, _)| id)),
            format!(
                "the room's history is exactly the accepted messages ({} stored, {} accepted)",
                self.history.len(),
                self.expected_room.len()
            ),
        );
        for (pair, (stored, accepted)) in self
            .pair_histories
            .iter()
            .zip(&self.expected_dm)
            .enumerate()
        {
            check(
                stored
                    .iter()
                    .map(|(id, _)| id)
                    .eq(accepted.iter().map(|(id, _)| id)),
                format!(
                    "pair {pair}'s history is exactly its accepted dms ({} stored, {} accepted)",
                    stored.len(),
                    accepted.len()
                ),
            );
        }
        check(
            self.presence.is_empty(),
            format!("nobody's presence changed: {:?}", self.presence),
        );
        for ((record, room), dm) in self
            .records
            .iter()
            .zip(&self.room_tallies)
            .zip(&self.dm_tallies)
        {
            check(
                record.drained,
                format!(
                    "{} saw the newest message and dm: {room:?} {dm:?}",
                    record.user
                ),
            );
            check(
                (room.duplicates, room.lost, room.unexpected) == (0, 0, 0),
                format!(
                    "{}: every accepted room message exactly once: {room:?}",
                    record.user
                ),
            );
            check(
                record.got_room == self.history,
                format!("{}: room messages in the order of the history", record.user),
            );
            check(
                (dm.duplicates, dm.lost, dm.unexpected) == (0, 0, 0),
                format!(
                    "{}: every accepted dm of its pair exactly once: {dm:?}",
                    record.user
                ),
            );
            check(
                record.got_dm == self.pair_histories[record.pair],
                format!("{}: dms in the order of the pair's history", record.user),
            );
        }
        failures
    }
}

/// Fails with every broken expectation, if any.
fn assert_none_failed(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} expectations failed:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_of_a_busy_room_killed_under_load_loses_no_accepted_message_and_answers_every_send()
 {
    // Arrange: a cluster of its own (the failover stops the whole cluster
    // for a moment), three nodes, six clients chatting.
    let cluster = RedisCluster::start().await;
    let prefix = format!("{}:", unique("faults"));
    let nodes = start_nodes(&cluster, &prefix).await;
    let names = Names::pick(&cluster, &prefix).await;
    let chatters = start_clients(&nodes, &names).await;
    let everyone: Vec<usize> = (0..CLIENTS).collect();
    let started = Instant::now();
    chatters
        .wait_accepted(
            "steady chat before the kill",
            &everyone,
            &[0; CLIENTS],
            ROUNDS,
        )
        .await;

    // Act: SIGKILL the primary of the room's slot and wait for its replica
    // to take over, chatting all along; chat on after it.
    let killed_at = Instant::now();
    let failover = cluster.kill_primary_of(&names.room_key).await;
    let at_failover = chatters.live.accepted();
    chatters
        .wait_accepted(
            "steady chat after the failover",
            &everyone,
            &at_failover,
            ROUNDS,
        )
        .await;
    let recovered = killed_at.elapsed();
    let sending_time = started.elapsed();
    let outcome = Outcome::gather(chatters, &nodes, &names, killed_at).await;

    // Assert: count everything, print it, then check it all.
    let window = outcome.unavailable_window(killed_at);
    eprintln!(
        "measured: primary of a busy room's slot ({}) SIGKILLed under load, replica {} took \
         over after {:?}, chat for {sending_time:?}, {ROUNDS} echoes each after the failover \
         by {recovered:?} from the kill; unavailable sent from..to {window:?} after the kill; {}",
        failover.killed,
        failover.promoted,
        failover.took,
        outcome.figures()
    );
    eprintln!(
        "measured: redis errors answered {:?}; node counters {:?}; node warnings {:?}",
        redis_errors(&cluster).await,
        node_counters(&nodes).await,
        node_warnings(&nodes)
    );
    let mut failures = outcome.failures();
    // Only the failover may refuse: nothing sent a command timeout after
    // the cluster was whole again.
    let whole_again = failover.took + COMMAND_TIMEOUT + SLACK;
    if let Some((_, last)) = window
        && last > whole_again
    {
        failures.push(format!(
            "no unavailable answer to a send {whole_again:?} after the kill or later: \
             the last was sent {last:?} after it"
        ));
    }
    assert_none_failed(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_slot_migrated_away_and_back_under_load_loses_no_accepted_message() {
    // Arrange: a cluster of its own, three nodes, six clients chatting.
    let cluster = RedisCluster::start().await;
    let prefix = format!("{}:", unique("faults"));
    let nodes = start_nodes(&cluster, &prefix).await;
    let names = Names::pick(&cluster, &prefix).await;
    let chatters = start_clients(&nodes, &names).await;
    let everyone: Vec<usize> = (0..CLIENTS).collect();
    let home = cluster.primary_of(&names.room_key).await;
    let away = cluster
        .topology()
        .await
        .primaries()
        .into_iter()
        .find(|&p| p != home)
        .expect("another primary");
    let started = Instant::now();
    chatters
        .wait_accepted(
            "steady chat before the migration",
            &everyone,
            &[0; CLIENTS],
            ROUNDS,
        )
        .await;

    // Act: migrate the room's slot (with pair 0's DMs and inbox) to another
    // primary as the fixture does, in milliseconds; chat; migrate it back
    // slowly, holding each state of the slot while the clients chat; chat.
    let moved_at = Instant::now();
    cluster.migrate_slot(names.slot, away).await;
    let away_took = moved_at.elapsed();
    let at_away = chatters.live.accepted();
    chatters
        .wait_accepted(
            "steady chat after the migration",
            &everyone,
            &at_away,
            ROUNDS,
        )
        .await;
    let paced = migrate_slot_paced(&cluster, names.slot, home).await;
    let at_back = chatters.live.accepted();
    chatters
        .wait_accepted(
            "steady chat after the migration back",
            &everyone,
            &at_back,
            ROUNDS,
        )
        .await;
    let sending_time = started.elapsed();
    let outcome = Outcome::gather(chatters, &nodes, &names, moved_at).await;

    // Assert: count everything, print it, then check it all. The nodes
    // follow ASK and MOVED, but while a slot migrates Redis answers
    // TRYAGAIN to a script that names a key the node does not hold beside
    // one it does (the source), or any key it does not hold (the target,
    // after ASK): `append.lua` names the trimmed marker, which a history
    // that was never trimmed lacks. So `unavailable` is allowed: it is
    // counted, per state of the slot, and bounded like any refusal.
    let since = |t: Instant| t.saturating_duration_since(moved_at);
    eprintln!(
        "measured: a busy room's slot {} migrated {home} -> {away} in {away_took:?}, and back \
         paced in {:?} (keys on the source held {:?}..{:?}, on the target {:?}..{:?} after the \
         first migration began) under load, chat for {sending_time:?}; unavailable sent from..to \
         {:?} after the first migration began; sent (accepted/refused) while the keys were on \
         the source: {}, on the target: {}; {}",
        names.slot,
        paced.took,
        since(paced.keys_on_source.0),
        since(paced.keys_on_source.1),
        since(paced.keys_on_target.0),
        since(paced.keys_on_target.1),
        outcome.unavailable_window(moved_at),
        outcome.sends_within(paced.keys_on_source),
        outcome.sends_within(paced.keys_on_target),
        outcome.figures()
    );
    eprintln!(
        "measured: redis errors answered {:?}; node counters {:?}; node warnings {:?}",
        redis_errors(&cluster).await,
        node_counters(&nodes).await,
        node_warnings(&nodes)
    );
    assert_none_failed(&outcome.failures());
}
