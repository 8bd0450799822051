//! Micro-benchmarks of the per-message hot path of a node, in the order a
//! message meets them (see ARCHITECTURE.md, "A message's life"):
//!
//! - `decode`: [`ClientFrame::decode`], run once per inbound frame on every
//!   session. Measures a typical `message`, a `join` with `since` (the
//!   reconnect path) and a malformed frame, whose error path also re-reads the
//!   text to recover the `ref`. One element = one frame.
//! - `encode`: the accepting node encodes a room message once, as
//!   [`chat`](chorus::chat) does: [`protocol::message`] builds the
//!   [`Draft`](chorus::cluster::Draft) (JSON with a hole for the id), then the
//!   history splices the id in with `Draft::complete`. `message` measures both
//!   steps; `complete` only the splice, which the in-memory history runs while
//!   it holds the room's log lock. One element = one message.
//! - `fanout`: [`Hub`]'s [`Deliver::deliver`] of one publication to N local
//!   sessions of a room, each with its own bounded queue: one UTF-8 check, one
//!   shared `Arc`, then N `try_send`s. One element = one delivery into a
//!   queue, so the throughput is deliveries per second. Queues are drained
//!   outside the timed section, so they never fill (no session is flagged
//!   slow) and the drain's cost (the session side) is not counted. No metrics
//!   recorder is installed, so the hub's histograms cost next to nothing here.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::mpsc;

use chorus::cluster::{Deliver, Publication, Topic};
use chorus::domain::{Content, MessageId, RoomName, UserName};
use chorus::hub::{Hub, Recipient};
use chorus::protocol::{self, ClientFrame};

/// Capacity of each session queue in `fanout`; also the number of deliveries
/// timed between two drains.
const QUEUE: usize = 64;

fn room() -> RoomName {
    RoomName::parse("lobby").expect("a valid room name")
}

fn user() -> UserName {
    UserName::parse("alice").expect("a valid user name")
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    let frames = [
        (
            "message",
            r#"{"type":"message","room":"lobby","content":"hello there","ref":"c1"}"#,
        ),
        (
            "join_since",
            r#"{"type":"join","room":"lobby","since":"1700000000000-3","ref":"c2"}"#,
        ),
        (
            "malformed",
            r#"{"type":"message","room":"lobby","content":,"ref":"c3"}"#,
        ),
    ];
    for (name, text) in frames {
        group.bench_function(name, |b| {
            b.iter(|| ClientFrame::decode(black_box(text)));
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let (room, user) = (room(), user());
    let content = Content::parse("hello there").expect("valid content");
    let id = MessageId::new(1_700_000_000_000, 3);
    group.bench_function("message", |b| {
        b.iter(|| {
            let draft = protocol::message(
                black_box(&room),
                black_box(&user),
                black_box(&content),
                &[],
                Some("c1"),
            );
            draft.complete(black_box(id))
        });
    });
    let draft = protocol::message(&room, &user, &content, &[], Some("c1"));
    group.bench_function("complete", |b| {
        b.iter(|| black_box(&draft).complete(black_box(id)));
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let id = MessageId::new(1_700_000_000_000, 3);
    let content = Content::parse("hello there").expect("valid content");
    let publication = Publication {
        id: Some(id),
        except: None,
        control: None,
        payload: protocol::message(&room(), &user(), &content, &[], Some("c1")).complete(id),
    };
    let topic = Topic::Room(room());
    for n in [1_usize, 100, 1_000, 10_000] {
        let hub = Hub::new(None);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (queue, rx) = mpsc::channel(QUEUE);
            let recipient = Recipient {
                session: hub.next_session(),
                user: user(),
                queue,
                share: hub.share(std::net::Ipv4Addr::LOCALHOST.into()),
                signal: Default::default(),
            };
            hub.add(&topic, &recipient);
            receivers.push((recipient.signal, rx));
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(QUEUE as u64);
                    let started = Instant::now();
                    for _ in 0..batch {
                        hub.deliver(&topic, publication.clone());
                    }
                    timed += started.elapsed();
                    for (_, rx) in &mut receivers {
                        while rx.try_recv().is_ok() {}
                    }
                    left -= batch;
                }
                timed
            });
        });
        assert!(
            receivers.iter().all(|(signal, _)| !signal.is_slow()),
            "no recipient may fall behind, or the bench measures the slow path"
        );
    }
    group.finish();
}

criterion_group!(benches, decode, encode, fanout);
criterion_main!(benches);
