//! A WebSocket client that speaks JSON frames, every wait bounded by
//! [`TIMEOUT`].

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::TIMEOUT;

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `welcome` frame.
    pub welcome: Value,
    next_ref: u64,
}

/// How a connection attempt was refused: the HTTP status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl WsClient {
    /// Connects and reads `welcome`.
    pub async fn connect(url: &str) -> Self {
        match Self::try_connect(url).await {
            Ok(client) => client,
            Err(refused) => panic!("connection to {url} refused: {refused:?}"),
        }
    }

    /// Connects with extra request headers (a `Cookie`, say) and reads
    /// `welcome`.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Self {
        match Self::try_connect_with_headers(url, headers).await {
            Ok(client) => client,
            Err(refused) => panic!("connection to {url} refused: {refused:?}"),
        }
    }

    /// Connects with extra request headers (an `Origin`, say), or returns
    /// the HTTP refusal.
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, Refused> {
        let mut request = url.into_client_request().expect("a ws:// URL");
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        Self::try_connect_request(request, url).await
    }

    /// Connects, or returns the HTTP refusal.
    pub async fn try_connect(url: &str) -> Result<Self, Refused> {
        let request = url.into_client_request().expect("a ws:// URL");
        Self::try_connect_request(request, url).await
    }

    async fn try_connect_request(request: Request, url: &str) -> Result<Self, Refused> {
        let attempt = tokio::time::timeout(TIMEOUT, connect_async(request))
            .await
            .expect("connect in time");
        let stream = match attempt {
            Ok((stream, _)) => stream,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                return Err(Refused { status, body });
            }
            Err(e) => panic!("connect to {url}: {e}"),
        };
        let mut client = Self {
            stream,
            welcome: Value::Null,
            next_ref: 0,
        };
        let welcome = client.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is welcome: {welcome}"
        );
        client.welcome = welcome;
        Ok(client)
    }

    /// Sends one JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_raw(Message::Text(frame.to_string().into())).await;
    }

    /// Sends any WebSocket message.
    pub async fn send_raw(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.stream.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next text frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("stream open")
                .expect("frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next text frame if one comes within `wait`; `None` on silence.
    pub async fn recv_within(&mut self, wait: std::time::Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.stream.next()).await.ok()?;
            match message.expect("stream open").expect("frame") {
                Message::Text(text) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"));
                }
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Frames until one matches `pred`; returns it. Others are skipped.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return frame;
            }
        }
    }

    /// Frames until one matches `pred`, returning the skipped ones too.
    pub async fn collect_until(&mut self, pred: impl Fn(&Value) -> bool) -> (Vec<Value>, Value) {
        let mut skipped = Vec::new();
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return (skipped, frame);
            }
            skipped.push(frame);
        }
    }

    /// Sends `frame` with a fresh `ref` and returns the frame that echoes it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        frame["ref"] = json!(reference);
        self.send(frame).await;
        self.recv_until(|f| f["ref"] == reference.as_str()).await
    }

    /// Like [`WsClient::request`], but `None` when the connection ends (or
    /// stays silent past [`TIMEOUT`]) before the answer: for load against a
    /// node that a test kills. The `ref` names this connection's session,
    /// so a room's other senders' frames (which carry their own refs) never
    /// pass for the answer.
    pub async fn try_request(&mut self, mut frame: Value) -> Option<Value> {
        self.next_ref += 1;
        let session = self.welcome["session"].as_str().unwrap_or_default();
        let reference = format!("{session}/{}", self.next_ref);
        frame["ref"] = json!(reference);
        let text = Message::Text(frame.to_string().into());
        tokio::time::timeout(TIMEOUT, self.stream.send(text))
            .await
            .ok()?
            .ok()?;
        loop {
            match tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .ok()??
                .ok()?
            {
                Message::Text(text) => {
                    let answer: Value = serde_json::from_str(&text).ok()?;
                    if answer["ref"] == reference.as_str() {
                        return Some(answer);
                    }
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Joins `room` and returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        let joined = self.request(json!({"type": "join", "room": room})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }

    /// Sends a message to `room` and waits for its own echo.
    pub async fn say(&mut self, room: &str, content: &str) -> Value {
        let echo = self
            .request(json!({"type": "message", "room": room, "content": content}))
            .await;
        assert_eq!(echo["type"], "message", "{echo}");
        echo
    }

    /// Sends `m0`, `m1`, … to `room`, each after the previous echo; returns
    /// their ids.
    pub async fn say_many(&mut self, room: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let echo = self.say(room, &format!("m{i}")).await;
            ids.push(echo["id"].as_str().expect("id").to_owned());
        }
        ids
    }

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .expect("close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
