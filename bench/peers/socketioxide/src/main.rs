//! The socketioxide peer of BENCHMARKS.md: the chat behaviour `chorus-bench
//! --protocol socketio` drives, on socketioxide with socketioxide-redis, so
//! two of these processes over one Redis compare with two chorus nodes.
//!
//! - A client connects to namespace `/` with `{"username": …}` as its auth.
//! - `join` `{"room": …}` adds it to the room and acks `{"ok": true}`.
//! - `message` `{"room": …, "content": …}` goes to every member of the room on
//!   every node, sender included, as `message` `{"room", "user", "content"}`.
//!
//! Settings come from the environment: `PORT` (default 3000), `REDIS_URL`
//! (default `redis://127.0.0.1:6379`). It listens on 127.0.0.1 only. `GET
//! /ready` answers 200 once the Redis adapter is up.

use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

/// What a client sends with its connect packet.
#[derive(Deserialize)]
struct Auth {
    username: String,
}

/// The `join` event's payload.
#[derive(Deserialize)]
struct Join {
    room: String,
}

/// The `message` event's payload.
#[derive(Deserialize)]
struct Outgoing {
    room: String,
    content: String,
}

/// A message as every member of its room receives it.
#[derive(Serialize)]
struct Delivered<'a> {
    room: &'a str,
    user: &'a str,
    content: &'a str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // The adapter's redis driver speaks RESP3 (its documentation's URLs ask
    // for it), so ask for it unless the URL already says.
    let redis_url = if redis_url.contains("protocol=") {
        redis_url
    } else if redis_url.contains('?') {
        format!("{redis_url}&protocol=resp3")
    } else {
        format!("{redis_url}?protocol=resp3")
    };
    let client = redis::Client::open(redis_url)?;
    let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<RedisAdapter<_>>(adapter)
        .build_layer();
    io.ns("/", connected.with(register)).await?;

    let app = axum::Router::new()
        .route("/ready", axum::routing::get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The connect handler proper: everything is in place already.
async fn connected() {}

/// Registers the event handlers. socketioxide sends the connect packet and
/// then spawns the connect handler, so handlers registered there race the
/// client's first event: under load a `join` sent right after the connect
/// packet found no handler and was dropped (no ack within 30 s, 1 000
/// clients on two nodes). A connect middleware runs before the connect
/// packet is sent, so nothing the client sends can come before its handlers.
async fn register<A: Adapter>(
    socket: SocketRef<A>,
    Data(auth): Data<Auth>,
) -> Result<(), std::convert::Infallible> {
    let user = auth.username;
    socket.on(
        "join",
        async |socket: SocketRef<A>, Data(join): Data<Join>, ack: AckSender<A>| {
            socket.join(join.room);
            // The client may be gone already; nothing waits for this ack then.
            let _ = ack.send(&serde_json::json!({"ok": true}));
        },
    );
    socket.on(
        "message",
        async move |io: SocketIo<A>, Data(message): Data<Outgoing>| {
            let delivered = Delivered {
                room: &message.room,
                user: &user,
                content: &message.content,
            };
            // A failed broadcast (Redis unreachable) shows as lost deliveries
            // in the load generator's counts.
            let _ = io
                .to(message.room.clone())
                .emit("message", &delivered)
                .await;
        },
    );
    Ok(())
}
