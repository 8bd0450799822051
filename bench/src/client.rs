//! One benchmark client: connect with small buffers and Nagle off, join a
//! room, publish and receive; and connecting thousands of them at once.
//!
//! A client speaks one [`Protocol`]: chorus's own JSON frames, or Socket.IO
//! (engine.io v4 over a plain WebSocket) for the peers of BENCHMARKS.md. Both
//! carry the same message content, so the traffic scenarios count every
//! server alike.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Target;

/// A connected client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake, a `welcome` or a `joined` may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Handshakes in flight at once: enough to connect 10 000 clients in seconds
/// without tripping the accept backlog.
const CONNECT_CONCURRENCY: usize = 128;

/// The wire a client speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// chorus's JSON frames on `/ws?username=…`.
    #[default]
    Chorus,
    /// Socket.IO v5 over engine.io v4, WebSocket transport only, namespace
    /// `/`: connect with `{"username"}` as auth, `join` `{"room"}` with an
    /// ack, `message` `{"room","content"}` out and `{"room","user","content"}`
    /// in (`bench/peers/` serves exactly this).
    SocketIo,
}

impl Protocol {
    /// The name used in results for a server of this protocol when none is
    /// given: `chorus` or `socketio`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chorus => "chorus",
            Self::SocketIo => "socketio",
        }
    }

    /// The WebSocket path and query a client of user `user` opens.
    pub(crate) fn ws_path(self, user: &str) -> String {
        match self {
            Self::Chorus => format!("/ws?username={user}"),
            // The user name goes in the connect packet's auth instead.
            Self::SocketIo => "/socket.io/?EIO=4&transport=websocket".to_owned(),
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "chorus" => Ok(Self::Chorus),
            "socketio" => Ok(Self::SocketIo),
            other => Err(format!("{other}: expected chorus or socketio")),
        }
    }
}

/// What [`Client::recv`] hands to the caller.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame for the application (a message, an error, a presence
    /// event); the protocol's own keep-alive frames are answered, not shown.
    Text(Utf8Bytes),
    /// The connection ended or failed.
    Closed,
}

/// A connected client that has said hello in its protocol.
pub struct Client {
    socket: Socket,
    protocol: Protocol,
    /// A Socket.IO ping was read and its pong is not sent yet; kept across
    /// calls so that a `recv` cancelled mid-send still answers it.
    pong_owed: bool,
}

impl Client {
    /// Connects as `user` to `url` and waits for the server's hello (chorus's
    /// `welcome`; engine.io's open packet, then the namespace connect).
    pub async fn connect(url: &str, protocol: Protocol, user: &str) -> anyhow::Result<Self> {
        // The client side holds thousands of sockets too; chat frames are small.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0);
        let (socket, _) = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(url, Some(config), true),
        )
        .await
        .context("handshake timed out")?
        .with_context(|| format!("connect {url}"))?;
        let mut client = Self {
            socket,
            protocol,
            pong_owed: false,
        };
        match protocol {
            Protocol::Chorus => client.expect_frame("\"type\":\"welcome\"").await?,
            Protocol::SocketIo => {
                client.expect_frame("0{").await?;
                let auth = serde_json::json!({ "username": user });
                client.send_text(format!("40{auth}")).await?;
                client.expect_frame("40{").await?;
            }
        }
        Ok(client)
    }

    /// Joins `room` and waits for the server to confirm it.
    pub async fn join(&mut self, room: &str) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::Chorus => {
                let frame = serde_json::json!({"type": "join", "room": room});
                self.send_text(frame.to_string()).await?;
                self.expect_frame("\"type\":\"joined\"").await
            }
            Protocol::SocketIo => {
                // Event with ack id 1: the only ack this client ever asks for.
                let payload = serde_json::json!(["join", {"room": room}]);
                self.send_text(format!("421{payload}")).await?;
                self.expect_frame("431[").await
            }
        }
    }

    /// Publishes `content` to `room`. `room` and `content` are sent as they
    /// are, inside JSON strings: the load generator's own, with nothing to
    /// escape.
    pub async fn publish(&mut self, room: &str, content: &str) -> anyhow::Result<()> {
        let frame = match self.protocol {
            Protocol::Chorus => {
                format!(r#"{{"type":"message","room":"{room}","content":"{content}"}}"#)
            }
            Protocol::SocketIo => {
                format!(r#"42["message",{{"room":"{room}","content":"{content}"}}]"#)
            }
        };
        self.send_text(frame).await
    }

    /// The next application frame, answering keep-alive pings on the way.
    /// Cancel-safe: a frame is either returned or still unread.
    pub async fn recv(&mut self) -> Inbound {
        loop {
            if self.pong_owed {
                if self.send_text("3".to_owned()).await.is_err() {
                    return Inbound::Closed;
                }
                self.pong_owed = false;
            }
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    if self.protocol == Protocol::SocketIo && text.as_str() == "2" {
                        self.pong_owed = true;
                        continue;
                    }
                    return Inbound::Text(text);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Inbound::Closed,
            }
        }
    }

    /// Whether `text` is the server refusing something this client sent.
    pub fn is_error(&self, text: &str) -> bool {
        match self.protocol {
            Protocol::Chorus => text.contains("\"type\":\"error\""),
            // Namespace connect errors; the peers answer nothing else with an
            // error.
            Protocol::SocketIo => text.starts_with("44"),
        }
    }

    /// Closes the connection, politely if the server still listens.
    pub async fn close(mut self) {
        // The server may be gone already; there is nothing left to tell it.
        let _ = self.socket.close(None).await;
    }

    async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// Reads until a text frame containing `marker` (Socket.IO: starting
    /// with it), skipping others (presence events of earlier joiners, for
    /// instance).
    async fn expect_frame(&mut self, marker: &str) -> anyhow::Result<()> {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                let Inbound::Text(text) = self.recv().await else {
                    bail!("the server closed the connection while waiting for {marker}")
                };
                let found = match self.protocol {
                    Protocol::Chorus => text.contains(marker),
                    Protocol::SocketIo => text.starts_with(marker),
                };
                if found {
                    return Ok(());
                }
                if self.is_error(&text) {
                    bail!("server error while waiting for {marker}: {text}");
                }
            }
        })
        .await
        .with_context(|| format!("no {marker} within {STEP_TIMEOUT:?}"))?
    }
}

/// Connects `count` clients, client `i` as user `b<i>` to node `i mod nodes`,
/// joined to `room(i)`; returns them in index order.
pub async fn connect_all(
    target: &Target,
    count: usize,
    room: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Client>> {
    let mut joined: Vec<(usize, Client)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let user = format!("b{i}");
            let url = target.ws_url(i, &user);
            let room = room(i);
            async move {
                let mut client = Client::connect(&url, target.protocol, &user).await?;
                client.join(&room).await?;
                anyhow::Ok((i, client))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    joined.sort_by_key(|(i, _)| *i);
    Ok(joined.into_iter().map(|(_, client)| client).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_opens_its_own_path() {
        assert_eq!(Protocol::Chorus.ws_path("b1"), "/ws?username=b1");
        assert_eq!(
            Protocol::SocketIo.ws_path("b1"),
            "/socket.io/?EIO=4&transport=websocket"
        );
    }
}
