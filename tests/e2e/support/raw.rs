//! A raw WebSocket client, for peers that misbehave at the socket level: one
//! that does not read (a tiny TCP receive window), and reads to the close.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::TIMEOUT;
use super::node::Endpoint;

pub type Raw<S> = WebSocketStream<S>;

pub async fn raw_send<S>(ws: &mut Raw<S>, frame: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(TIMEOUT, ws.send(Message::Text(frame.to_string().into())))
        .await
        .expect("send in time")
        .expect("send");
}

pub async fn raw_recv<S>(ws: &mut Raw<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

/// Connects with a tiny TCP receive window, so that a client that does not
/// read fills the server's socket after a few frames instead of megabytes.
pub async fn connect_with_small_window(node: &impl Endpoint, user: &str) -> Raw<TcpStream> {
    connect_with_small_window_from(node, user, "").await
}

/// Like [`connect_with_small_window`], naming the client `address` in the
/// `X-Real-IP` header (for nodes that trust it); empty: no header.
pub async fn connect_with_small_window_from(
    node: &impl Endpoint,
    user: &str,
    address: &str,
) -> Raw<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(node.addr()))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut request = node.ws_url(user).into_client_request().expect("request");
    if !address.is_empty() {
        request
            .headers_mut()
            .insert("x-real-ip", address.parse().expect("address header"));
    }
    let (mut ws, _) =
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("handshake in time")
            .expect("handshake");
    let welcome = raw_recv(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

/// Reads everything until the server's close frame; returns the messages
/// read before it and the close code.
pub async fn read_until_close<S>(ws: &mut Raw<S>) -> (Vec<Value>, u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("frames then a close, in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                if frame["type"] == "message" {
                    messages.push(frame);
                }
            }
            Some(Ok(Message::Close(Some(close)))) => return (messages, u16::from(close.code)),
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!(
                "the connection failed after {} messages instead of closing: {e}",
                messages.len()
            ),
            None => panic!(
                "the connection ended after {} messages without a close frame",
                messages.len()
            ),
        }
    }
}
