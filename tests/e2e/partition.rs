//! A network partition under steady load, with real processes on test hosts
//! made of network namespaces (`support::netns`): Redis on one host, the
//! node that is cut off on another, the test and a second node in the root
//! namespace. The link between the cut node and Redis is dropped silently
//! (no RST, no ICMP) for twice the presence TTL and then restored, while
//! clients on both nodes chat in one room and exchange DMs across the
//! nodes. Expected:
//! - while cut, the cut node answers sends with `unavailable` within its
//!   command timeout and `/ready` with 503; its clients' sockets stay open;
//! - the other node goes on accepting, reaps the cut node's users once their
//!   heartbeat has expired (not before a quarter of the TTL, within the
//!   TTL) and announces their `leave` to its clients;
//! - after the heal the cut node restores its users' presence (the others
//!   see `join` again, both nodes list them), delivers what its rooms and
//!   users missed, and every accepted message and DM reaches every member
//!   exactly once, in the order of its history; nothing refused is stored.
//!
//! The test skips (with one line) only where the sandbox refuses network
//! namespaces. It prints one `measured:` line with its figures, and checks
//! everything before failing, so one run names every broken expectation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::chatters::{
    BEAT, Chatter, Chatters, Fate, Kind, Record, Seen, Style, Tally, full_history, id_key, sum,
    tally,
};
use crate::support::netns::Hosts;
use crate::support::node::Endpoint;
use crate::support::{ProcessNode, RedisServer, TIMEOUT, get_json, get_status, unique, wait_ready};

/// Every fifth command is a DM to the client's partner on the other node.
const DM_EVERY: usize = 5;
/// Clients on each node; client `i` on one node and client `i` on the other
/// are DM partners.
const PER_NODE: usize = 3;
/// The presence TTL of both nodes: short, so the cut outlasts it quickly.
const TTL: Duration = Duration::from_secs(3);
const TTL_SECS: &str = "3";
/// How long the link stays cut: twice the TTL, so the other node reaps.
const CUT: Duration = Duration::from_secs(6);
/// The nodes' bound on one Redis command (`COMMAND_TIMEOUT` in
/// `cluster::redis`): a send on the cut node is answered within it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine, added to the bounds above.
const SLACK: Duration = Duration::from_millis(1500);
/// Far more than this test stores, so histories are never trimmed.
const HISTORY_LIMIT: &str = "1000000";
/// How long a phase of the test may take to reach its condition.
const PHASE: Duration = Duration::from_secs(15);
/// Echoes per client before the cut and after the heal.
const ROUNDS: usize = 15;

/// The partition's chatting clients: one command in flight at most, so a
/// send on the cut node waits for its answer and each answer's delay is its
/// own.
const STYLE: Style = Style {
    one_in_flight: true,
    dm_every: DM_EVERY,
    phase: PHASE,
};

/// `PER_NODE` clients on each node, all in `room`; client `i` is `m<i>` on
/// `other`, client `PER_NODE + i` is `n<i>` on `cut`. They do not reconnect.
async fn start_clients(other: &ProcessNode, cut: &ProcessNode, room: &str) -> Chatters {
    let chatters = (0..2 * PER_NODE)
        .map(|index| {
            let pair = index % PER_NODE;
            let (user, partner, node) = if index < PER_NODE {
                (format!("m{pair}"), format!("n{pair}"), other)
            } else {
                (format!("n{pair}"), format!("m{pair}"), cut)
            };
            Chatter {
                urls: vec![node.ws_url(&user)],
                user,
                room: room.to_owned(),
                home: 0,
                order: Vec::new(),
                partner: Some(partner),
                pair,
            }
        })
        .collect();
    Chatters::start(chatters, STYLE).await
}

/// Users listed in `room` and online, by `node`.
async fn listed(node: &ProcessNode, room: &str) -> (Vec<String>, Vec<String>) {
    let members: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
    let online: Vec<String> = get_json(&node.url("/api/users")).await;
    (members, online)
}

/// Polls `check` every 50 ms until it holds or `limit` passes; the time it
/// took, or `None`. For expectations the test reports instead of stopping
/// at.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first time `observer` saw `event` for `user` after `after`.
fn first_seen(
    seen: &[Seen],
    observer: usize,
    user: &str,
    event: &str,
    after: Instant,
) -> Option<Instant> {
    seen.iter()
        .find(|s| s.observer == observer && s.user == user && s.event == event && s.at >= after)
        .map(|s| s.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_for_twice_the_ttl_under_load_recovers_presence_and_loses_nothing()
 {
    // Arrange: Redis on host R, node "cut" on host N, node "other" and the
    // clients in the root namespace; three clients on each node in one
    // room, each DMing its partner on the other node.
    let hosts = match Hosts::build() {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("skipped: this sandbox refuses network namespaces ({why})");
            return;
        }
    };
    let redis = tokio::task::block_in_place(|| RedisServer::start_in(&hosts));
    let url = redis.url();
    let prefix = format!("{}:", unique("partition"));
    let (other_id, cut_id) = (
        format!("{prefix}other").replace(':', "-"),
        format!("{prefix}cut").replace(':', "-"),
    );
    let node_ip = hosts.node_ip.to_string();
    let common = [
        ("REDIS_URL", url.as_str()),
        ("CHORUS_REDIS_PREFIX", prefix.as_str()),
        ("CHORUS_PRESENCE_TTL_SECS", TTL_SECS),
        ("CHORUS_HISTORY_LIMIT", HISTORY_LIMIT),
        ("CHORUS_RATE_LIMIT", "0"),
    ];
    let other =
        ProcessNode::spawn(&[&common[..], &[("CHORUS_NODE_ID", other_id.as_str())]].concat());
    let cut = ProcessNode::spawn_in(
        &hosts,
        &hosts.node_ns,
        &[
            &common[..],
            &[
                ("CHORUS_NODE_ID", cut_id.as_str()),
                ("HOST", node_ip.as_str()),
            ],
        ]
        .concat(),
    );
    wait_ready(&other.url("/ready")).await;
    wait_ready(&cut.url("/ready")).await;
    let room = unique("room");
    let mut clients = start_clients(&other, &cut, &room).await;
    let live = clients.live.clone();
    let on_other: Vec<usize> = (0..PER_NODE).collect();
    let on_cut: Vec<usize> = (PER_NODE..2 * PER_NODE).collect();
    let everyone: Vec<usize> = (0..2 * PER_NODE).collect();
    let mut all_users: Vec<String> = (0..PER_NODE)
        .flat_map(|i| [format!("m{i}"), format!("n{i}")])
        .collect();
    all_users.sort();
    let started = Instant::now();
    clients
        .wait_accepted(
            "steady chat before the cut",
            &everyone,
            &[0; 2 * PER_NODE],
            ROUNDS,
        )
        .await;
    let (members, _) = listed(&other, &room).await;
    assert_eq!(members, all_users, "everyone is listed before the cut");

    // Act: cut the link for twice the TTL, watching /ready of the cut node,
    // then heal it and let the chat go on.
    let cut_at = Instant::now();
    hosts.cut();
    let ready_url = cut.url("/ready");
    let not_ready = tokio::spawn(async move {
        within(CUT, || {
            let url = ready_url.clone();
            async move { get_status(&url).await == Some(503) }
        })
        .await
    });
    tokio::time::sleep_until(cut_at + CUT).await;
    let (members_cut, online_cut) = listed(&other, &room).await;
    let accepted_at_heal = live.accepted();
    let heal_at = Instant::now();
    hosts.heal();
    let not_ready = not_ready.await.expect("the /ready watch");
    let ready_url = cut.url("/ready");
    let ready_again = within(PHASE, || {
        let url = ready_url.clone();
        async move { get_status(&url).await == Some(200) }
    })
    .await;
    clients
        .wait_accepted(
            "the cut node's clients accepted again",
            &on_cut,
            &accepted_at_heal,
            3,
        )
        .await;
    let listed_again = within(TTL + SLACK, || async {
        listed(&other, &room).await == (all_users.clone(), all_users.clone())
            && listed(&cut, &room).await == (all_users.clone(), all_users.clone())
    })
    .await
    .map(|_| heal_at.elapsed());
    let joins_again = within(TTL + PHASE / 3, || async {
        let seen = live.presence();
        on_other.iter().all(|&o| {
            (0..PER_NODE).all(|i| first_seen(&seen, o, &format!("n{i}"), "join", heal_at).is_some())
        })
    })
    .await
    .map(|_| heal_at.elapsed());
    let (other_after, cut_after) = (listed(&other, &room).await, listed(&cut, &room).await);
    clients
        .wait_accepted(
            "steady chat after the heal",
            &everyone,
            &accepted_at_heal,
            ROUNDS,
        )
        .await;
    let unquiet = clients.stop().await;
    let sending_time = started.elapsed();
    let newest = clients.live.newest_room();
    let records = clients.drain(newest, TIMEOUT).await;
    let history = full_history(&other, &room).await;
    let presence = live.presence();

    // Assert: count everything, print it, then check it all.
    let sends = || {
        records
            .iter()
            .flat_map(|r| r.sends.iter().map(move |s| (r, s)))
    };
    let fate_of: HashMap<&str, &Fate> = sends()
        .map(|(_, s)| (s.content.as_str(), &s.fate))
        .collect();
    let mut expected_room: Vec<(String, String)> = Vec::new();
    let mut expected_dm: HashMap<usize, Vec<(String, String)>> = HashMap::new();
    let (mut unavailable, mut other_refusals, mut pending) = (Vec::new(), Vec::new(), 0);
    for (record, send) in sends() {
        match &send.fate {
            Fate::Accepted(id) => match send.kind {
                Kind::Room => expected_room.push((id.clone(), send.content.clone())),
                Kind::Dm => expected_dm
                    .entry(record.pair)
                    .or_default()
                    .push((id.clone(), send.content.clone())),
            },
            Fate::Refused(code) if code == "unavailable" => unavailable.push((record.index, send)),
            Fate::Refused(code) => other_refusals.push(format!("{}: {code}", send.content)),
            // In doubt only after a reconnect, which these clients do not do.
            Fate::Pending | Fate::InDoubt => pending += 1,
        }
    }
    expected_room.sort_by_key(|(id, _)| id_key(id));
    for dms in expected_dm.values_mut() {
        dms.sort_by_key(|(id, _)| id_key(id));
    }
    let sent = sends().count();
    let accepted_dm: usize = expected_dm.values().map(Vec::len).sum();
    let room_tallies: Vec<Tally> = records
        .iter()
        .map(|r| tally(&r.got_room, &expected_room))
        .collect();
    let dm_tallies: Vec<Tally> = records
        .iter()
        .map(|r| {
            tally(
                &r.got_dm,
                expected_dm.get(&r.pair).map_or(&[][..], Vec::as_slice),
            )
        })
        .collect();
    let (room_total, dm_total) = (sum(&room_tallies), sum(&dm_tallies));
    let refused_delivered: HashSet<&str> = records
        .iter()
        .flat_map(|r| r.got_room.iter().chain(&r.got_dm))
        .map(|(_, content)| content.as_str())
        .filter(|c| matches!(fate_of.get(c), Some(Fate::Refused(_))))
        .collect();
    let refused_stored: Vec<&str> = history
        .iter()
        .map(|(_, c)| c.as_str())
        .filter(|c| matches!(fate_of.get(c), Some(Fate::Refused(_))))
        .collect();
    let slowest_refusal = unavailable
        .iter()
        .filter_map(|(_, s)| Some(s.answered?.saturating_duration_since(s.at)))
        .max()
        .unwrap_or_default();
    // What the other node's clients got accepted while the link was cut,
    // and how much of it each client of the cut node received.
    let missed_room: HashSet<&str> = records[..PER_NODE]
        .iter()
        .flat_map(|r| &r.sends)
        .filter(|s| s.kind == Kind::Room && s.answered.is_some_and(|a| a >= cut_at && a <= heal_at))
        .filter_map(|s| match &s.fate {
            Fate::Accepted(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // DM ids are unique per pair only: keyed by pair.
    let missed_dm: HashSet<(usize, &str)> = records[..PER_NODE]
        .iter()
        .flat_map(|r| r.sends.iter().map(move |s| (r.pair, s)))
        .filter(|(_, s)| {
            s.kind == Kind::Dm && s.answered.is_some_and(|a| a >= cut_at && a <= heal_at)
        })
        .filter_map(|(pair, s)| match &s.fate {
            Fate::Accepted(id) => Some((pair, id.as_str())),
            _ => None,
        })
        .collect();
    let caught_up: Vec<(usize, usize)> = records[PER_NODE..]
        .iter()
        .map(|r| {
            (
                r.got_room
                    .iter()
                    .filter(|(id, _)| missed_room.contains(id.as_str()))
                    .count(),
                r.got_dm
                    .iter()
                    .filter(|(id, _)| missed_dm.contains(&(r.pair, id.as_str())))
                    .count(),
            )
        })
        .collect();
    let leaves: Vec<(usize, String, Option<Duration>)> = on_other
        .iter()
        .flat_map(|&o| (0..PER_NODE).map(move |i| (o, format!("n{i}"))))
        .map(|(o, user)| {
            let at = first_seen(&presence, o, &user, "leave", cut_at)
                .map(|t| t.saturating_duration_since(cut_at));
            (o, user, at)
        })
        .collect();
    let first_leave = leaves.iter().filter_map(|l| l.2).min();
    let last_leave = leaves.iter().filter_map(|l| l.2).max();
    // From the cut on (the joins of the start may still arrive while the
    // chat starts), the only presence events due are the cut node's users
    // leaving (seen on the other node, once each) and joining again after
    // the heal (seen anywhere, once each).
    let stray_presence: Vec<&Seen> = presence
        .iter()
        .filter(|s| s.at >= cut_at)
        .filter(|s| {
            let expected = s.user.starts_with('n')
                && match s.event.as_str() {
                    "leave" => s.observer < PER_NODE && s.at >= cut_at,
                    "join" => s.at >= heal_at,
                    _ => false,
                };
            !expected
        })
        .collect();
    let repeated_presence: Vec<(usize, &str, &str, usize)> = everyone
        .iter()
        .flat_map(|&o| all_users.iter().map(move |u| (o, u.as_str())))
        .flat_map(|(o, u)| ["join", "leave"].map(|e| (o, u, e)))
        .map(|(o, u, e)| {
            let n = presence
                .iter()
                .filter(|s| s.at >= cut_at && s.observer == o && s.user == u && s.event == e)
                .count();
            (o, u, e, n)
        })
        .filter(|&(.., n)| n > 1)
        .collect();
    // Each accepted DM a client never got: its content and when it was
    // accepted, in ms from the cut (the heal is at +CUT).
    let lost_dms = |record: &Record| -> Vec<(String, i128)> {
        let got: HashSet<&str> = record.got_dm.iter().map(|(id, _)| id.as_str()).collect();
        records
            .iter()
            .filter(|r| r.pair == record.pair)
            .flat_map(|r| &r.sends)
            .filter(|s| s.kind == Kind::Dm)
            .filter(|s| matches!(&s.fate, Fate::Accepted(id) if !got.contains(id.as_str())))
            .map(|s| {
                let at = s.answered.expect("answered");
                let ms = |d: Duration| i128::try_from(d.as_millis()).expect("ms");
                let offset = if at >= cut_at {
                    ms(at - cut_at)
                } else {
                    -ms(cut_at - at)
                };
                (s.content.clone(), offset)
            })
            .collect()
    };
    eprintln!(
        "measured: partition of one node from redis for {CUT:?} (ttl {TTL:?}) under load, {} clients \
         at {}/s for {sending_time:?}: sent {sent}, accepted {} ({} room + {accepted_dm} dm), \
         answered unavailable {} (slowest {slowest_refusal:?}), other refusals {}, unanswered {pending}; \
         room deliveries expected {}, delivered {}, duplicates {}, lost {}, unexpected {}; \
         dm deliveries expected {}, delivered {}, duplicates {}, lost {}, unexpected {}; \
         refused but delivered {}, refused but stored {}; \
         the cut node's clients got of the {} room messages and {} dms accepted on the other node \
         during the cut: {caught_up:?}; /ready 503 after {not_ready:?}, 200 after {ready_again:?} \
         from the heal; leave seen {first_leave:?}..{last_leave:?} after the cut; join again after \
         {joins_again:?} from the heal; listed again after {listed_again:?} from the heal",
        2 * PER_NODE,
        1000 / BEAT.as_millis(),
        expected_room.len() + accepted_dm,
        expected_room.len(),
        unavailable.len(),
        other_refusals.len(),
        expected_room.len() * records.len(),
        room_total.delivered,
        room_total.duplicates,
        room_total.lost,
        room_total.unexpected,
        2 * accepted_dm,
        dm_total.delivered,
        dm_total.duplicates,
        dm_total.lost,
        dm_total.unexpected,
        refused_delivered.len(),
        refused_stored.len(),
        missed_room.len(),
        missed_dm.len(),
    );

    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    // Sockets and answers.
    for record in &records {
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
        unquiet == 0 && pending == 0,
        format!("every send answered ({unquiet} clients, {pending} sends were not)"),
    );
    check(
        other_refusals.is_empty(),
        format!("only unavailable refusals: {other_refusals:?}"),
    );
    // While cut.
    for &c in &on_cut {
        let refused = unavailable.iter().filter(|(i, _)| *i == c).count();
        check(
            refused > 0,
            format!(
                "n{}'s sends were answered unavailable while cut",
                c - PER_NODE
            ),
        );
    }
    for &c in &on_other {
        let refused = unavailable.iter().filter(|(i, _)| *i == c).count();
        check(
            refused == 0,
            format!("m{c}'s sends were all accepted ({refused} unavailable)"),
        );
    }
    check(
        slowest_refusal <= COMMAND_TIMEOUT + SLACK,
        format!("unavailable within the command timeout: the slowest took {slowest_refusal:?}"),
    );
    check(
        not_ready.is_some(),
        "/ready of the cut node answered 503 during the cut".to_owned(),
    );
    for (observer, user, at) in &leaves {
        check(
            at.is_some_and(|at| at >= TTL / 4 && at <= TTL + SLACK),
            format!(
                "m{observer} saw {user} leave once its heartbeat expired, between {:?} and {:?} \
                 after the cut: {at:?}",
                TTL / 4,
                TTL + SLACK
            ),
        );
    }
    let m_users: Vec<String> = (0..PER_NODE).map(|i| format!("m{i}")).collect();
    check(
        members_cut == m_users && online_cut == m_users,
        format!(
            "the other node lists only its own users at the end of the cut: {members_cut:?} {online_cut:?}"
        ),
    );
    check(
        stray_presence.is_empty(),
        format!("no other presence events: {stray_presence:?}"),
    );
    check(
        repeated_presence.is_empty(),
        format!("no presence event twice (observer, user, event, times): {repeated_presence:?}"),
    );
    // After the heal.
    check(
        ready_again.is_some(),
        "/ready of the cut node answers 200 after the heal".to_owned(),
    );
    check(
        joins_again.is_some(),
        format!(
            "the other node's clients saw every user of the cut node join again: seen {:?}",
            presence
                .iter()
                .filter(|s| s.event == "join" && s.at >= heal_at)
                .collect::<Vec<_>>()
        ),
    );
    check(
        listed_again.is_some(),
        format!("both nodes list everyone again: other {other_after:?}, cut {cut_after:?}"),
    );
    for (n, &(room_got, dm_got)) in caught_up.iter().enumerate() {
        check(
            room_got == missed_room.len(),
            format!(
                "n{n} got the {} room messages accepted during the cut: {room_got}",
                missed_room.len()
            ),
        );
        let dm_missed = records[..PER_NODE][n]
            .sends
            .iter()
            .filter(|s| s.kind == Kind::Dm)
            .filter(
                |s| matches!(&s.fate, Fate::Accepted(id) if missed_dm.contains(&(n, id.as_str()))),
            )
            .count();
        check(
            dm_got == dm_missed,
            format!("n{n} got the {dm_missed} dms m{n} sent during the cut: {dm_got}"),
        );
    }
    // Every accepted message, exactly once, in history order.
    check(
        refused_delivered.is_empty() && refused_stored.is_empty(),
        format!(
            "a refused send is neither stored nor delivered: delivered {refused_delivered:?}, stored {refused_stored:?}"
        ),
    );
    check(
        history
            .iter()
            .map(|(id, _)| id)
            .eq(expected_room.iter().map(|(id, _)| id))
            || !refused_stored.is_empty(),
        "the room's history is exactly the accepted messages".to_owned(),
    );
    for ((record, room), dm) in records.iter().zip(&room_tallies).zip(&dm_tallies) {
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
            record.got_room == history,
            format!("{}: room messages in the order of the history", record.user),
        );
        let pair = expected_dm.get(&record.pair).map_or(&[][..], Vec::as_slice);
        check(
            (dm.duplicates, dm.lost, dm.unexpected) == (0, 0, 0),
            format!(
                "{}: every accepted dm of its pair exactly once: {dm:?}; lost (content, ms after \
                 the cut it was accepted; the heal was at {}): {:?}",
                record.user,
                CUT.as_millis(),
                lost_dms(record)
            ),
        );
        // A DM pair's history is in id order.
        check(
            record.got_dm.is_sorted_by_key(|(id, _)| id_key(id)),
            format!("{}: dms in the order of the pair's history", record.user),
        );
        check(
            dm.lost > 0 || record.got_dm == pair,
            format!("{}: exactly the pair's dms", record.user),
        );
    }
    assert!(
        failures.is_empty(),
        "{} expectations failed:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}
