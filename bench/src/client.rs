//! One benchmark client: connect with small buffers and Nagle off, wait for
//! `welcome`, join a room; and connecting thousands of them at once.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Target;

/// A connected client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake, a `welcome` or a `joined` may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Handshakes in flight at once: enough to connect 10 000 clients in seconds
/// without tripping the accept backlog.
const CONNECT_CONCURRENCY: usize = 128;

/// Connects as `user` to `url` and waits for the `welcome` frame.
pub async fn connect(url: &str) -> anyhow::Result<Socket> {
    // The client side holds thousands of sockets too; chat frames are small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .context("handshake timed out")?
    .with_context(|| format!("connect {url}"))?;
    expect_frame(&mut socket, "\"type\":\"welcome\"").await?;
    Ok(socket)
}

/// Joins `room` and waits for `joined`.
pub async fn join(socket: &mut Socket, room: &str) -> anyhow::Result<()> {
    let frame = serde_json::json!({"type": "join", "room": room}).to_string();
    socket.send(Message::text(frame)).await?;
    expect_frame(socket, "\"type\":\"joined\"").await
}

/// Reads until a text frame containing `marker`, skipping others (presence
/// events of earlier joiners, for instance).
async fn expect_frame(socket: &mut Socket, marker: &str) -> anyhow::Result<()> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            if let Message::Text(text) = message? {
                if text.contains(marker) {
                    return Ok(());
                }
                if text.contains("\"type\":\"error\"") {
                    bail!("server error while waiting for {marker}: {text}");
                }
            }
        }
        bail!("the server closed the connection while waiting for {marker}")
    })
    .await
    .with_context(|| format!("no {marker} within {STEP_TIMEOUT:?}"))?
}

/// Connects `count` clients, client `i` as user `b<i>` to node `i mod nodes`,
/// joined to `room(i)`; returns them in index order.
pub async fn connect_all(
    target: &Target,
    count: usize,
    room: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Socket>> {
    let mut joined: Vec<(usize, Socket)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let url = target.ws_url(i, &format!("b{i}"));
            let room = room(i);
            async move {
                let mut socket = connect(&url).await?;
                join(&mut socket, &room).await?;
                anyhow::Ok((i, socket))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    joined.sort_by_key(|(i, _)| *i);
    Ok(joined.into_iter().map(|(_, socket)| socket).collect())
}
