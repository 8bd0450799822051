//! Malformed input against a running node, from the bytes of a WebSocket
//! frame up to the fields of a command and the REST calls: every case gets
//! exactly one precise answer (the contract's `error` code, with the `ref`
//! echoed whenever the frame carried a readable one, or the HTTP status and
//! `{"error":{"code","message"}}` body), and the node stays healthy for
//! everyone else while it happens. The tables below double as the reference
//! of how each kind of bad input is answered.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::support::cluster::on_both_backings;
use crate::support::node::Endpoint;
use crate::support::{
    Backing, Cluster, TIMEOUT, TestNode, WsClient, eventually, get_status, unique,
};

// ---------------------------------------------------------------------------
// A socket that sends any bytes and reads every frame, control frames too.

/// A raw WebSocket connection, past `welcome`.
struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Numbers the sync pings that delimit one case's answer.
    syncs: u64,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The server sent a close frame with this code.
    Close(u16),
    /// The TCP connection ended (or failed) without a close frame.
    Dropped,
}

impl Socket {
    async fn connect(node: &impl Endpoint, user: &str) -> Self {
        let (ws, _) = tokio::time::timeout(TIMEOUT, connect_async(node.ws_url(user)))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let mut socket = Self { ws, syncs: 0 };
        let welcome = socket.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        socket
    }

    async fn send(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    async fn send_text(&mut self, text: &str) {
        self.send(Message::Text(text.into())).await;
    }

    /// Sends one frame of a message exactly as given: fragments, and bytes a
    /// text message could not hold.
    async fn send_frame(&mut self, opcode: Data, payload: &[u8], fin: bool) {
        let frame = Frame::message(payload.to_vec(), OpCode::Data(opcode), fin);
        self.send(Message::Frame(frame)).await;
    }

    /// The next message of any kind, the server's keepalive pings included.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(TIMEOUT, self.ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a frame")
    }

    /// The next text frame as JSON; control frames are skipped.
    async fn next_json(&mut self) -> Value {
        loop {
            match self.next().await {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(close) => panic!("closed while waiting for a frame: {close:?}"),
                _ => {}
            }
        }
    }

    /// The next pong; the server's own pings are skipped (tungstenite
    /// answers them).
    async fn next_pong(&mut self) -> Vec<u8> {
        loop {
            match self.next().await {
                Message::Pong(payload) => return payload.to_vec(),
                Message::Ping(_) => {}
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    }

    /// Sends `frames`, then a ping with a fresh ref, and returns the text
    /// frames that came before that ping's pong: everything the server said
    /// about `frames`.
    async fn answers(&mut self, frames: Vec<Message>) -> Vec<Value> {
        for frame in frames {
            self.send(frame).await;
        }
        self.syncs += 1;
        let sync = format!("sync-{}", self.syncs);
        self.send_text(&json!({"type": "ping", "ref": sync}).to_string())
            .await;
        let mut answers = Vec::new();
        loop {
            let frame = self.next_json().await;
            if frame["ref"] == sync.as_str() {
                assert_eq!(frame, json!({"type": "pong", "ref": sync}));
                return answers;
            }
            answers.push(frame);
        }
    }

    /// Like [`Self::answers`], for a case expected to get `expect`. A
    /// message or DM echo is fan-out, not a direct reply: the write delay may
    /// hold it behind the ping's pong, and then it is the frame after.
    async fn answers_to(&mut self, frames: Vec<Message>, expect: Expect) -> Vec<Value> {
        let mut answers = self.answers(frames).await;
        if answers.is_empty() && matches!(expect, Expect::Reply("message" | "dm", _)) {
            answers.push(self.next_json().await);
        }
        answers
    }

    /// Reads until the connection ends; how it ended.
    async fn ended(&mut self) -> Ended {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("the connection ends in time");
            match next {
                Some(Ok(Message::Close(Some(close)))) => {
                    return Ended::Close(u16::from(close.code));
                }
                Some(Ok(Message::Close(None))) => return Ended::Close(1005),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The cases: what is sent, and the one answer it must get.

/// The one frame a case must be answered with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An `error` with this code, echoing this ref (`None`: no `ref` key).
    Error(&'static str, Option<&'static str>),
    /// A reply of this type, echoing this ref.
    Reply(&'static str, Option<&'static str>),
}

struct Case {
    why: String,
    frames: Vec<Message>,
    expect: Expect,
}

/// A case sent as one text frame of exactly `text`.
fn text(why: impl Into<String>, text: impl Into<String>, expect: Expect) -> Case {
    let text: String = text.into();
    Case {
        why: why.into(),
        frames: vec![Message::Text(text.into())],
        expect,
    }
}

/// A case sent as one text frame holding `frame`.
fn json(why: impl Into<String>, frame: &Value, expect: Expect) -> Case {
    text(why, frame.to_string(), expect)
}

fn bad_request(reference: Option<&'static str>) -> Expect {
    Expect::Error("bad_request", reference)
}

/// Whether `answers` is exactly the one answer `expect` describes.
fn check(answers: &[Value], expect: Expect) -> Result<(), String> {
    let [answer] = answers else {
        return Err(format!("one answer expected, got {answers:?}"));
    };
    let fail = |what: &str| Err(format!("{what}: {answer}"));
    let (kind, reference) = match expect {
        Expect::Error(code, reference) => {
            if answer["code"] != code {
                return fail(&format!("expected the code {code}"));
            }
            if answer["message"].as_str().is_none_or(str::is_empty) {
                return fail("an error says what went wrong");
            }
            let keys = answer.as_object().map_or(0, serde_json::Map::len);
            if keys != 3 + usize::from(reference.is_some()) {
                return fail("type, code, message and ref, nothing else");
            }
            ("error", reference)
        }
        Expect::Reply(kind, reference) => (kind, reference),
    };
    if answer["type"] != kind {
        return fail(&format!("expected a {kind}"));
    }
    match reference {
        Some(reference) if answer["ref"] != reference => {
            fail(&format!("expected the ref {reference:?}"))
        }
        None if answer.get("ref").is_some() => fail("expected no ref"),
        _ => Ok(()),
    }
}

/// Not JSON, or JSON that is not an object with a known `type`.
fn not_a_command(home: &str) -> Vec<Case> {
    vec![
        text(
            "truncated",
            r#"{"type":"ping","ref":"a1""#,
            bad_request(None),
        ),
        text("truncated in a string", r#"{"type":"pi"#, bad_request(None)),
        text(
            "trailing garbage",
            r#"{"type":"ping","ref":"a2"} x"#,
            bad_request(None),
        ),
        text(
            "two objects in one frame",
            r#"{"type":"ping","ref":"a3"}{"type":"ping","ref":"a4"}"#,
            bad_request(None),
        ),
        text("single quotes", "{'type':'ping'}", bad_request(None)),
        text("unquoted keys", r#"{type:"ping"}"#, bad_request(None)),
        text("a trailing comma", r#"{"type":"ping",}"#, bad_request(None)),
        text("a comment", r#"{"type":"ping"/* hi */}"#, bad_request(None)),
        text("an empty frame", "", bad_request(None)),
        text("only whitespace", " \n\t\r ", bad_request(None)),
        text(
            "a byte order mark",
            "\u{feff}{\"type\":\"ping\"}",
            bad_request(None),
        ),
        text("NaN", "NaN", bad_request(None)),
        text(
            "NaN as a value",
            format!(r#"{{"type":"history","room":"{home}","limit":NaN,"ref":"a5"}}"#),
            bad_request(None),
        ),
        text(
            "Infinity as a value",
            format!(r#"{{"type":"history","room":"{home}","limit":Infinity}}"#),
            bad_request(None),
        ),
        text(
            "a raw control character in a string",
            format!("{{\"type\":\"message\",\"room\":\"{home}\",\"content\":\"a\u{1}b\"}}"),
            bad_request(None),
        ),
        text(
            "a lone surrogate escape in a known field",
            format!(r#"{{"type":"message","room":"{home}","content":"\ud800","ref":"a6"}}"#),
            bad_request(Some("a6")),
        ),
        text(
            "a bad escape",
            format!(r#"{{"type":"message","room":"{home}","content":"\q"}}"#),
            bad_request(None),
        ),
        text("an array", "[]", bad_request(None)),
        text(
            "an array of a command",
            r#"[{"type":"ping"}]"#,
            bad_request(None),
        ),
        text("a number", "5", bad_request(None)),
        text("a string", r#""ping""#, bad_request(None)),
        text("null", "null", bad_request(None)),
        text("true", "true", bad_request(None)),
        text("an empty object", "{}", bad_request(None)),
        json(
            "a numeric type",
            &json!({"type": 5, "ref": "a7"}),
            bad_request(Some("a7")),
        ),
        json(
            "a null type",
            &json!({"type": null, "ref": "a8"}),
            bad_request(Some("a8")),
        ),
        json(
            "an empty type",
            &json!({"type": "", "ref": "a9"}),
            bad_request(Some("a9")),
        ),
        json(
            "an upper-case type",
            &json!({"type": "PING", "ref": "b1"}),
            bad_request(Some("b1")),
        ),
        json(
            "a padded type",
            &json!({"type": " ping", "ref": "b2"}),
            bad_request(Some("b2")),
        ),
        json(
            "a type with a NUL",
            &json!({"type": "ping\u{0}", "ref": "b3"}),
            bad_request(Some("b3")),
        ),
        json(
            "a server frame's type",
            &json!({"type": "welcome", "user": "mallory", "ref": "b4"}),
            bad_request(Some("b4")),
        ),
        json(
            "a server reply's type",
            &json!({"type": "pong", "ref": "b5"}),
            bad_request(Some("b5")),
        ),
        text(
            "a duplicate type",
            r#"{"type":"ping","type":"join","ref":"b6"}"#,
            bad_request(Some("b6")),
        ),
        text(
            "a duplicate field",
            format!(r#"{{"type":"join","room":"{home}","room":"other","ref":"b7"}}"#),
            bad_request(Some("b7")),
        ),
    ]
}

/// Numbers out of every range `limit` could be read in.
fn numbers(home: &str) -> Vec<Case> {
    let history = |limit: &str, reference: &str| {
        format!(r#"{{"type":"history","room":"{home}","limit":{limit},"ref":"{reference}"}}"#)
    };
    vec![
        text(
            "limit 1e400",
            history("1e400", "n1"),
            bad_request(Some("n1")),
        ),
        text(
            "limit 2^64",
            history("18446744073709551616", "n2"),
            bad_request(Some("n2")),
        ),
        text(
            "limit 2^64 - 1 is clamped",
            history("18446744073709551615", "n3"),
            Expect::Reply("history", Some("n3")),
        ),
        text("limit -1", history("-1", "n4"), bad_request(Some("n4"))),
        text(
            "limit -0 is zero",
            history("-0", "n5"),
            bad_request(Some("n5")),
        ),
        text("limit 1.5", history("1.5", "n6"), bad_request(Some("n6"))),
        text("limit 10.0", history("10.0", "n7"), bad_request(Some("n7"))),
        text("limit 1e2", history("1e2", "n8"), bad_request(Some("n8"))),
        text(
            r#"limit "10""#,
            history(r#""10""#, "n9"),
            bad_request(Some("n9")),
        ),
        text("limit true", history("true", "m1"), bad_request(Some("m1"))),
        text(
            "limit null is the default",
            history("null", "m2"),
            Expect::Reply("history", Some("m2")),
        ),
        text(
            "a 10 000-digit number in an unknown field",
            format!(r#"{{"type":"ping","n":{},"ref":"m3"}}"#, "9".repeat(10_000)),
            Expect::Reply("pong", Some("m3")),
        ),
        text(
            "1e400 in an unknown field is skipped",
            r#"{"type":"ping","n":1e400,"ref":"m4"}"#,
            Expect::Reply("pong", Some("m4")),
        ),
    ]
}

/// Nesting far deeper than any parser should recurse.
fn nesting(home: &str) -> Vec<Case> {
    let depth = 30_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth / 5), "}".repeat(depth / 5));
    vec![
        // Just under the 64 KiB frame limit; 100 000 would be closed with 1009.
        text("65 000 [", "[".repeat(65_000), bad_request(None)),
        text(
            "deep arrays in an unknown field",
            format!(r#"{{"type":"ping","x":{arrays},"ref":"d1"}}"#),
            Expect::Reply("pong", Some("d1")),
        ),
        text(
            "deep objects in an unknown field",
            format!(r#"{{"type":"ping","x":{objects},"ref":"d2"}}"#),
            Expect::Reply("pong", Some("d2")),
        ),
        text(
            "deep arrays as the room",
            format!(r#"{{"type":"join","room":{arrays},"ref":"d3"}}"#),
            bad_request(Some("d3")),
        ),
        text(
            "deep objects as the content",
            format!(r#"{{"type":"message","room":"{home}","content":{objects},"ref":"d4"}}"#),
            bad_request(Some("d4")),
        ),
        text(
            "deep arrays never closed",
            format!(r#"{{"type":"ping","ref":"d5","x":{}"#, "[".repeat(depth)),
            bad_request(None),
        ),
    ]
}

/// Fields of the wrong JSON type, and refs the server cannot echo.
fn field_types(home: &str) -> Vec<Case> {
    vec![
        json(
            "room 5 in a message",
            &json!({"type": "message", "room": 5, "content": "x", "ref": "f1"}),
            bad_request(Some("f1")),
        ),
        json(
            "room as an array",
            &json!({"type": "leave", "room": [home], "ref": "f2"}),
            bad_request(Some("f2")),
        ),
        json(
            "room as an object",
            &json!({"type": "typing", "room": {"name": home}, "ref": "f3"}),
            bad_request(Some("f3")),
        ),
        json(
            "room null is missing",
            &json!({"type": "join", "room": null, "ref": "f4"}),
            bad_request(Some("f4")),
        ),
        json(
            "content {}",
            &json!({"type": "message", "room": home, "content": {}, "ref": "f5"}),
            bad_request(Some("f5")),
        ),
        json(
            "content []",
            &json!({"type": "message", "room": home, "content": [], "ref": "f6"}),
            bad_request(Some("f6")),
        ),
        json(
            "content true",
            &json!({"type": "message", "room": home, "content": true, "ref": "f7"}),
            bad_request(Some("f7")),
        ),
        json(
            "content null is missing",
            &json!({"type": "message", "room": home, "content": null, "ref": "f8"}),
            bad_request(Some("f8")),
        ),
        json(
            "to 5",
            &json!({"type": "dm", "to": 5, "content": "x", "ref": "f9"}),
            bad_request(Some("f9")),
        ),
        json(
            "with false",
            &json!({"type": "history", "with": false, "ref": "g1"}),
            bad_request(Some("g1")),
        ),
        json(
            "with null and no room",
            &json!({"type": "history", "with": null, "ref": "g2"}),
            bad_request(Some("g2")),
        ),
        json(
            "from 5",
            &json!({"type": "switch", "from": 5, "to": home, "ref": "g3"}),
            bad_request(Some("g3")),
        ),
        json(
            "since 5",
            &json!({"type": "join", "room": home, "since": 5, "ref": "g4"}),
            bad_request(Some("g4")),
        ),
        json(
            "before []",
            &json!({"type": "history", "room": home, "before": [], "ref": "g5"}),
            bad_request(Some("g5")),
        ),
        // A field of the protocol is typed on every command, and its value
        // checked only where the command uses it.
        json(
            "a numeric room on a ping",
            &json!({"type": "ping", "room": 5, "ref": "g6"}),
            bad_request(Some("g6")),
        ),
        json(
            "a bad room name on a ping",
            &json!({"type": "ping", "room": "a b", "ref": "g7"}),
            Expect::Reply("pong", Some("g7")),
        ),
        json(
            "a text limit on a join",
            &json!({"type": "join", "room": home, "limit": "x", "ref": "g8"}),
            bad_request(Some("g8")),
        ),
        json(
            "ref 7",
            &json!({"type": "ping", "ref": 7}),
            bad_request(None),
        ),
        json(
            "ref {}",
            &json!({"type": "ping", "ref": {}}),
            bad_request(None),
        ),
        json(
            "ref 7 on a bad command",
            &json!({"type": "join", "room": "a b", "ref": 7}),
            bad_request(None),
        ),
        json(
            "ref null is no ref",
            &json!({"type": "ping", "ref": null}),
            Expect::Reply("pong", None),
        ),
        json(
            "an empty ref is echoed",
            &json!({"type": "ping", "ref": ""}),
            Expect::Reply("pong", Some("")),
        ),
        json(
            "a 64-character ref is echoed",
            &json!({"type": "ping", "ref": "r".repeat(64)}),
            Expect::Reply("pong", Some(Box::leak("r".repeat(64).into_boxed_str()))),
        ),
        json(
            "64 two-byte characters are a valid ref",
            &json!({"type": "ping", "ref": "é".repeat(64)}),
            Expect::Reply("pong", Some(Box::leak("é".repeat(64).into_boxed_str()))),
        ),
        json(
            "65 two-byte characters are not",
            &json!({"type": "ping", "ref": "é".repeat(65)}),
            bad_request(None),
        ),
        json(
            "a ref over 64 characters on a bad command",
            &json!({"type": "join", "room": "a b", "ref": "r".repeat(65)}),
            bad_request(None),
        ),
    ]
}

/// Names that break the rule, in every field that holds a name.
fn names(home: &str) -> Vec<Case> {
    let bad = [
        ("a space", "a b".to_owned()),
        ("a leading space", " ab".to_owned()),
        ("only a space", " ".to_owned()),
        ("empty", String::new()),
        ("unicode", "élise".to_owned()),
        ("an emoji", "r😀".to_owned()),
        ("fullwidth letters", "ｒｏｏｍ".to_owned()),
        ("a zero-width space", "a\u{200b}b".to_owned()),
        ("a NUL", "a\u{0}b".to_owned()),
        ("a newline", "a\nb".to_owned()),
        ("a tab", "a\tb".to_owned()),
        ("an escape sequence", "a\u{1b}[31mb".to_owned()),
        ("a colon", "a:b".to_owned()),
        ("a glob star", "r*".to_owned()),
        ("a slash", "a/b".to_owned()),
        ("a percent escape", "a%20b".to_owned()),
    ];
    let mut cases = Vec::new();
    let long_room = "r".repeat(65);
    let long_user = "u".repeat(33);
    for (why, name) in bad
        .iter()
        .map(|(w, n)| (*w, n.as_str()))
        .chain([("65 characters", long_room.as_str())])
    {
        cases.push(json(
            format!("join room: {why}"),
            &json!({"type": "join", "room": name, "ref": "n"}),
            Expect::Error("invalid_room", Some("n")),
        ));
        cases.push(json(
            format!("switch from: {why}"),
            &json!({"type": "switch", "from": name, "to": home, "ref": "n"}),
            Expect::Error("invalid_room", Some("n")),
        ));
        cases.push(json(
            format!("switch to: {why}"),
            &json!({"type": "switch", "from": home, "to": name, "ref": "n"}),
            Expect::Error("invalid_room", Some("n")),
        ));
    }
    for (why, name) in bad
        .iter()
        .map(|(w, n)| (*w, n.as_str()))
        .chain([("33 characters", long_user.as_str())])
    {
        cases.push(json(
            format!("dm to: {why}"),
            &json!({"type": "dm", "to": name, "content": "x", "ref": "n"}),
            Expect::Error("invalid_user", Some("n")),
        ));
        cases.push(json(
            format!("history with: {why}"),
            &json!({"type": "history", "with": name, "ref": "n"}),
            Expect::Error("invalid_user", Some("n")),
        ));
    }
    // The edges of the rule are names.
    for (why, room) in [
        ("64 characters", "r".repeat(64)),
        ("33 characters", "r".repeat(33)),
        ("a dot", ".".to_owned()),
        ("two dots", "..".to_owned()),
    ] {
        cases.push(json(
            format!("join room: {why}"),
            &json!({"type": "join", "room": room, "ref": "ok"}),
            Expect::Reply("joined", Some("ok")),
        ));
    }
    cases.push(json(
        "dm to: 32 characters",
        &json!({"type": "dm", "to": "u".repeat(32), "content": "x", "ref": "ok"}),
        Expect::Reply("dm", Some("ok")),
    ));
    cases.push(json(
        "history with: 32 characters",
        &json!({"type": "history", "with": "u".repeat(32), "ref": "ok"}),
        Expect::Reply("history", Some("ok")),
    ));
    cases
}

/// Content that is missing, empty or over 4096 bytes however it is spelt.
fn contents(home: &str) -> Vec<Case> {
    let message = |content: &str, reference: &str| {
        format!(r#"{{"type":"message","room":"{home}","content":"{content}","ref":"{reference}"}}"#)
    };
    vec![
        text("empty content", message("", "c1"), bad_request(Some("c1"))),
        text(
            "4097 bytes of three-byte characters",
            message(&format!("{}xx", "€".repeat(1365)), "c2"),
            Expect::Error("too_large", Some("c2")),
        ),
        text(
            "4097 bytes of four-byte characters",
            message(&format!("{}x", "😀".repeat(1024)), "c3"),
            Expect::Error("too_large", Some("c3")),
        ),
        text(
            "4098 bytes spelt as \\u escapes",
            message(&r"\u20ac".repeat(1366), "c4"),
            Expect::Error("too_large", Some("c4")),
        ),
        text(
            "4097 bytes of escaped quotes",
            message(&r#"\""#.repeat(4097), "c5"),
            Expect::Error("too_large", Some("c5")),
        ),
        text(
            "too large in a DM",
            format!(
                r#"{{"type":"dm","to":"bob","content":"{}","ref":"c6"}}"#,
                "😀".repeat(1025)
            ),
            Expect::Error("too_large", Some("c6")),
        ),
        text(
            "a 64 KiB frame of content",
            padded(&message("", "c7"), r#""content":""#, 64 * 1024),
            Expect::Error("too_large", Some("c7")),
        ),
        text(
            "a 64 KiB frame of padding",
            padded(
                r#"{"type":"ping","ref":"c8","pad":""}"#,
                r#""pad":""#,
                64 * 1024,
            ),
            Expect::Reply("pong", Some("c8")),
        ),
    ]
}

/// `template` with `x`s inserted after `marker` until it is `total` bytes.
fn padded(template: &str, marker: &str, total: usize) -> String {
    let at = template.find(marker).expect("marker") + marker.len();
    let fill = total - template.len();
    let frame = format!("{}{}{}", &template[..at], "x".repeat(fill), &template[at..]);
    assert_eq!(frame.len(), total);
    frame
}

/// Frames below JSON: binary data and fragmented text.
fn frames(home: &str) -> Vec<Case> {
    let fragmented = |why: &str, message: &[u8], at: usize, expect| Case {
        why: why.to_owned(),
        frames: vec![
            Message::Frame(Frame::message(
                message[..at].to_vec(),
                OpCode::Data(Data::Text),
                false,
            )),
            Message::Frame(Frame::message(
                message[at..at + 3].to_vec(),
                OpCode::Data(Data::Continue),
                false,
            )),
            Message::Frame(Frame::message(
                message[at + 3..].to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )),
        ],
        expect,
    };
    let split_euro = format!(r#"{{"type":"message","room":"{home}","content":"a€b","ref":"e3"}}"#);
    let euro = split_euro.find('€').expect("€");
    vec![
        Case {
            why: "an empty binary frame".into(),
            frames: vec![Message::Binary(Vec::new().into())],
            expect: bad_request(None),
        },
        Case {
            why: "a binary frame of invalid UTF-8".into(),
            frames: vec![Message::Binary(vec![0xff, 0xfe, 0x00].into())],
            expect: bad_request(None),
        },
        Case {
            why: "a binary frame holding a command with a ref".into(),
            frames: vec![Message::Binary(
                br#"{"type":"ping","ref":"e1"}"#.to_vec().into(),
            )],
            expect: bad_request(None),
        },
        fragmented(
            "a command in three fragments",
            br#"{"type":"ping","ref":"e2"}"#,
            5,
            Expect::Reply("pong", Some("e2")),
        ),
        // The fragments split the three bytes of € 1 + 1 + 1.
        Case {
            why: "a character split across fragments".into(),
            frames: vec![
                Message::Frame(Frame::message(
                    split_euro.as_bytes()[..=euro].to_vec(),
                    OpCode::Data(Data::Text),
                    false,
                )),
                Message::Frame(Frame::message(
                    split_euro.as_bytes()[euro + 1..euro + 2].to_vec(),
                    OpCode::Data(Data::Continue),
                    false,
                )),
                Message::Frame(Frame::message(
                    split_euro.as_bytes()[euro + 2..].to_vec(),
                    OpCode::Data(Data::Continue),
                    true,
                )),
            ],
            expect: Expect::Reply("message", Some("e3")),
        },
        Case {
            why: "an empty final fragment".into(),
            frames: vec![
                Message::Frame(Frame::message(
                    br#"{"type":"ping","ref":"e4"}"#.to_vec(),
                    OpCode::Data(Data::Text),
                    false,
                )),
                Message::Frame(Frame::message(
                    Vec::new(),
                    OpCode::Data(Data::Continue),
                    true,
                )),
            ],
            expect: Expect::Reply("pong", Some("e4")),
        },
    ]
}

// ---------------------------------------------------------------------------
// The barrage

/// Sends `m0`, `m1`, … to `room` every 50 ms (the default rate) until
/// told to stop, then `end`; returns what it sent.
fn spawn_trickle(
    mut sender: WsClient,
    room: String,
    stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut stop = stop;
        let mut sent = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = pace.tick() => {
                    let content = format!("m{}", sent.len());
                    sender.say(&room, &content).await;
                    sent.push(content);
                }
            }
        }
        sender.say(&room, "end").await;
        sent
    })
}

/// Reads `room`'s messages until `end`; returns them in order, and counts
/// them on `progress` as they come.
fn spawn_reader(
    mut reader: WsClient,
    progress: watch::Sender<usize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let frame = reader.recv_until(|f| f["type"] == "message").await;
            let content = frame["content"].as_str().expect("content").to_owned();
            if content == "end" {
                return seen;
            }
            seen.push(content);
            progress.send_replace(seen.len());
        }
    })
}

/// Waits until the reader has seen more than `count` messages.
async fn seen_more_than(progress: &mut watch::Receiver<usize>, count: usize) -> usize {
    let seen = tokio::time::timeout(TIMEOUT, progress.wait_for(|&seen| seen > count))
        .await
        .expect("the trickle flows")
        .expect("the reader is alive");
    *seen
}

#[tokio::test]
async fn every_malformed_frame_gets_one_precise_answer_while_the_room_next_door_loses_nothing() {
    let node = TestNode::spawn().await;
    let (home, next_door) = (unique("home"), unique("next-door"));
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&next_door).await;
    let mut carol = WsClient::connect(&node.ws_url("carol")).await;
    carol.join(&next_door).await;
    let (progress, mut seen_so_far) = watch::channel(0);
    let reader = spawn_reader(bob, progress);
    let (stop, stopped) = oneshot::channel();
    let trickle = spawn_trickle(carol, next_door.clone(), stopped);
    seen_more_than(&mut seen_so_far, 0).await;
    let mut alice = Socket::connect(&node, "alice").await;
    let joined = alice
        .answers(vec![Message::Text(
            json!({"type": "join", "room": home}).to_string().into(),
        )])
        .await;
    assert_eq!(joined.len(), 1, "{joined:?}");

    let cases: Vec<Case> = [
        not_a_command(&home),
        numbers(&home),
        nesting(&home),
        field_types(&home),
        names(&home),
        contents(&home),
        frames(&home),
    ]
    .into_iter()
    .flatten()
    .collect();
    let count = cases.len();
    let mut wrong = Vec::new();
    for case in cases {
        let answers = alice.answers_to(case.frames, case.expect).await;
        if let Err(e) = check(&answers, case.expect) {
            wrong.push(format!("{}: {e}", case.why));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {count} cases:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Control frames: a ping's payload comes back, even between the
    // fragments of a message.
    let payload = b"are you there? \x00\xff".to_vec();
    alice.send(Message::Ping(payload.clone().into())).await;
    assert_eq!(alice.next_pong().await, payload);
    let longest = vec![7_u8; 125];
    alice.send(Message::Ping(longest.clone().into())).await;
    assert_eq!(
        alice.next_pong().await,
        longest,
        "125 bytes, the most a ping holds"
    );
    alice
        .send_frame(Data::Text, br#"{"type":"ping","#, false)
        .await;
    alice.send(Message::Ping(b"between".to_vec().into())).await;
    assert_eq!(alice.next_pong().await, b"between");
    let rest = alice
        .answers(vec![Message::Frame(Frame::message(
            br#""ref":"p1"}"#.to_vec(),
            OpCode::Data(Data::Continue),
            true,
        ))])
        .await;
    check(&rest, Expect::Reply("pong", Some("p1"))).expect("a message around a ping");

    // The same socket still works...
    let pong = alice
        .answers(vec![Message::Text(r#"{"type":"ping"}"#.into())])
        .await;
    assert_eq!(pong, [json!({"type": "pong"})]);
    // ...the room next door got every message, in order, during the
    // barrage and after it...
    let during = *seen_so_far.borrow();
    seen_more_than(&mut seen_so_far, during).await;
    let _ = stop.send(());
    let sent = tokio::time::timeout(TIMEOUT, trickle)
        .await
        .expect("the trickle stops in time")
        .expect("the trickle");
    let seen = tokio::time::timeout(TIMEOUT, reader)
        .await
        .expect("the reader ends in time")
        .expect("the reader");
    assert_eq!(seen, sent, "none missing, none reordered");
    // ...and the node reports healthy.
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
    assert_eq!(get_status(&node.url("/ready")).await, Some(200));
}

// ---------------------------------------------------------------------------
// Accepted oddities: what the node does with input that is odd but valid

#[tokio::test]
async fn unknown_fields_are_ignored_and_cannot_change_who_sent_a_message_its_id_or_its_time() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;

    let joined = alice
        .request(json!({"type": "join", "room": room, "content": "ignored", "to": "bad name"}))
        .await;
    let echo = alice
        .request(json!({
            "type": "message", "room": room, "content": "hi",
            "user": "mallory", "from": "mallory", "id": "1-0",
            "ts": "1999-01-01T00:00:00Z", "node": "elsewhere", "extra": {"deep": [1, 2]},
        }))
        .await;
    let dm = alice
        .request(
            json!({"type": "dm", "to": "bob", "content": "psst", "from": "mallory", "room": "x y"}),
        )
        .await;
    let seen = bob.recv_until(|f| f["type"] == "message").await;

    assert_eq!(
        joined["type"], "joined",
        "fields of other commands are ignored: {joined}"
    );
    assert_eq!(echo["type"], "message", "{echo}");
    assert_eq!(echo["user"], "alice", "the sender is the connection's user");
    assert_ne!(echo["id"], "1-0", "the id is the server's");
    assert_ne!(
        echo["ts"], "1999-01-01T00:00:00Z",
        "the time is the server's"
    );
    let keys: Vec<&str> = echo
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 7, "no unknown field is passed on: {echo}");
    assert_eq!(seen, echo, "what others get is the same frame");
    assert_eq!(
        (&dm["type"], &dm["from"]),
        (&json!("dm"), &json!("alice")),
        "{dm}"
    );
}

#[tokio::test]
async fn content_limits_count_the_utf8_bytes_after_unescaping_and_keep_content_exact() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = Socket::connect(&node, "alice").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    alice
        .answers(vec![Message::Text(
            json!({"type": "join", "room": room}).to_string().into(),
        )])
        .await;
    let accepted = [
        (
            "4096 bytes of three-byte characters",
            format!("{}x", "€".repeat(1365)),
            None,
        ),
        (
            "4096 bytes of four-byte characters",
            "😀".repeat(1024),
            None,
        ),
        (
            "4096 bytes spelt as \\u escapes, 8 KiB on the wire",
            format!("{}x", "€".repeat(1365)),
            Some(format!("{}x", r"\u20ac".repeat(1365))),
        ),
        (
            "surrogate pairs spelt as escapes",
            "😀".repeat(1024),
            Some(r"\ud83d\ude00".repeat(1024)),
        ),
        (
            "control characters, escaped",
            "\u{0}\u{1b}[31mred\u{7f}\r\n".to_owned(),
            None,
        ),
        ("only whitespace", " \t ".to_owned(), None),
        (
            "a JSON-looking string",
            r#"{"type":"ping"}"#.to_owned(),
            None,
        ),
    ];

    for (why, content, spelt) in accepted {
        let frame = match spelt {
            Some(spelt) => format!(r#"{{"type":"message","room":"{room}","content":"{spelt}"}}"#),
            None => json!({"type": "message", "room": room, "content": content}).to_string(),
        };
        let answers = alice
            .answers_to(
                vec![Message::Text(frame.into())],
                Expect::Reply("message", None),
            )
            .await;
        let [echo] = answers.as_slice() else {
            panic!("{why}: {answers:?}");
        };
        let seen = bob.recv_until(|f| f["type"] == "message").await;
        assert_eq!(echo["type"], "message", "{why}: {echo}");
        assert_eq!(echo["content"], content.as_str(), "{why}: kept exactly");
        assert_eq!(&seen, echo, "{why}");
    }
}

// ---------------------------------------------------------------------------
// Frames that end the connection

/// One frame of a message: opcode, payload, final.
type Fragment = (Data, &'static [u8], bool);

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_the_connection_with_1007() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    let cases: [(&str, Vec<Fragment>); 4] = [
        (
            "a bad byte",
            vec![(Data::Text, b"{\"type\":\"ping\"\xff}", true)],
        ),
        (
            "an overlong encoding",
            vec![(Data::Text, b"\xc0\xaf", true)],
        ),
        (
            "a surrogate encoded",
            vec![(Data::Text, b"\xed\xa0\x80", true)],
        ),
        (
            "a character cut short by the last fragment",
            vec![
                (Data::Text, b"{\"a\":\"\xe2\x82", false),
                (Data::Continue, b"", true),
            ],
        ),
    ];

    for (why, frames) in cases {
        let mut alice = Socket::connect(&node, "alice").await;
        alice
            .answers(vec![Message::Text(
                json!({"type": "join", "room": room}).to_string().into(),
            )])
            .await;
        bob.recv_until(|f| f["type"] == "presence" && f["event"] == "join")
            .await;
        for (opcode, payload, fin) in frames {
            alice.send_frame(opcode, payload, fin).await;
        }

        assert_eq!(alice.ended().await, Ended::Close(1007), "{why}");
        let left = bob.recv_until(|f| f["type"] == "presence").await;
        assert_eq!(left["event"], "leave", "{why}: {left}");
    }
    let pong = bob.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "other connections are untouched");
}

#[tokio::test]
async fn fragments_that_add_up_to_over_64_kib_close_with_1009() {
    let node = TestNode::spawn().await;
    let mut alice = Socket::connect(&node, "alice").await;
    let chunk = vec![b' '; 16 * 1024];

    alice
        .send_frame(Data::Text, b"{\"type\":\"ping\"}", false)
        .await;
    for _ in 0..4 {
        alice.send_frame(Data::Continue, &chunk, false).await;
    }

    assert_eq!(alice.ended().await, Ended::Close(1009));
    assert_eq!(get_status(&node.url("/ready")).await, Some(200));
}

#[tokio::test]
async fn a_websocket_protocol_violation_ends_only_that_connection() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    let violations: [(&str, Message); 4] = [
        (
            "a continuation with nothing to continue",
            Message::Frame(Frame::message(
                b"x".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )),
        ),
        (
            "a reserved data opcode",
            Message::Frame(Frame::message(
                b"x".to_vec(),
                OpCode::Data(Data::Reserved(3)),
                true,
            )),
        ),
        (
            "a ping over 125 bytes",
            Message::Ping(vec![0_u8; 126].into()),
        ),
        (
            "a new message inside a fragmented one",
            Message::Frame(Frame::message(
                b"{}".to_vec(),
                OpCode::Data(Data::Text),
                true,
            )),
        ),
    ];

    for (why, violation) in violations {
        let mut alice = Socket::connect(&node, "alice").await;
        alice
            .answers(vec![Message::Text(
                json!({"type": "join", "room": room}).to_string().into(),
            )])
            .await;
        bob.recv_until(|f| f["type"] == "presence" && f["event"] == "join")
            .await;
        if why == "a new message inside a fragmented one" {
            alice.send_frame(Data::Text, b"{", false).await;
        }
        alice.send(violation).await;

        // Today the node drops the TCP connection without a close frame
        // (1006 for the client); a 1002 close would be as good.
        let ended = alice.ended().await;
        assert!(
            matches!(ended, Ended::Close(1002) | Ended::Dropped),
            "{why}: {ended:?}"
        );
        let left = bob.recv_until(|f| f["type"] == "presence").await;
        assert_eq!(left["event"], "leave", "{why}: {left}");
    }
    let pong = bob.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "other connections are untouched");
}

// ---------------------------------------------------------------------------
// `since` and `before` on both backends

/// Strings that are not message ids.
const GARBAGE_IDS: [(&str, &str); 18] = [
    ("empty", ""),
    ("letters", "abc"),
    ("a negative number", "-1"),
    ("three parts", "1-2-3"),
    ("no sequence", "1"),
    ("an empty sequence", "1-"),
    ("a time over 2^64", "18446744073709551616-0"),
    ("a sequence over 2^64", "0-18446744073709551616"),
    ("21 digits", "000000000000000000001-0"),
    ("a plus sign", "+1-0"),
    ("hex", "0x1-0"),
    ("a decimal point", "1.5-0"),
    ("an exponent", "1e3-0"),
    ("a leading space", " 1-0"),
    ("a trailing newline", "1-0\n"),
    ("Arabic-Indic digits", "١-٠"),
    ("a non-breaking hyphen", "1\u{2011}0"),
    ("a NUL", "1-0\u{0}"),
];

async fn garbage_ids_are_bad_requests(node: &impl Endpoint) {
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let kept = alice.say(&room, "kept").await;
    alice
        .request(json!({"type": "dm", "to": "bob", "content": "dm"}))
        .await;
    let client = reqwest::Client::new();

    for (why, id) in GARBAGE_IDS {
        let commands = [
            json!({"type": "join", "room": room, "since": id}),
            json!({"type": "join", "room": unique("fresh"), "since": id}),
            json!({"type": "history", "room": room, "before": id}),
            json!({"type": "history", "with": "bob", "before": id}),
        ];
        for command in commands {
            let answer = alice.request(command.clone()).await;
            assert_eq!(
                (&answer["type"], &answer["code"]),
                (&json!("error"), &json!("bad_request")),
                "{why}: {command} → {answer}"
            );
        }
        let url = reqwest::Url::parse_with_params(
            &node.url(&format!("/api/rooms/{room}/messages")),
            &[("before", id)],
        )
        .expect("url");
        let response = client.get(url).send().await.expect("answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{why}: {body}");
    }

    let page = alice
        .request(json!({"type": "history", "room": room}))
        .await;
    assert_eq!(page["messages"], json!([kept]), "the history is untouched");
}

#[tokio::test]
async fn garbage_since_and_before_ids_are_bad_requests_on_the_memory_backend() {
    let node = TestNode::spawn().await;
    garbage_ids_are_bad_requests(&node).await;
}

on_both_backings!(
    garbage_since_and_before_ids_are_bad_requests,
    the_smallest_and_largest_ids_page_and_catch_up,
    a_join_the_backend_refuses_leaves_no_member_behind,
);

async fn garbage_since_and_before_ids_are_bad_requests(backing: Backing) {
    let cluster = Cluster::start_on(backing, 1).await;
    garbage_ids_are_bad_requests(&cluster.nodes[0]).await;
}

/// The largest id there is.
const MAX_ID: &str = "18446744073709551615-18446744073709551615";

/// The smallest and largest ids are valid and mean "everything" and
/// "nothing" at either end of a history.
async fn extreme_ids_page_and_catch_up(node: &impl Endpoint) {
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let first = alice.say(&room, "first").await;
    let last = alice.say(&room, "last").await;
    let both = json!([first, last]);
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;

    let from_zero = bob
        .request(json!({"type": "join", "room": room, "since": "0-0"}))
        .await;
    let from_max = bob
        .request(json!({"type": "join", "room": room, "since": MAX_ID}))
        .await;
    let before_zero = bob
        .request(json!({"type": "history", "room": room, "before": "0-0"}))
        .await;
    let before_max = bob
        .request(json!({"type": "history", "room": room, "before": MAX_ID}))
        .await;
    let padded = bob
        .request(json!({"type": "history", "room": room, "before": "00000000000000000000-0"}))
        .await;
    let http = |before: &str| node.url(&format!("/api/rooms/{room}/messages?before={before}"));
    let http_zero: Value = crate::support::get_json(&http("0-0")).await;
    let http_max: Value = crate::support::get_json(&http(MAX_ID)).await;

    assert_eq!(
        from_zero["history"], both,
        "since 0-0 is everything: {from_zero}"
    );
    assert!(from_zero.get("truncated").is_none(), "{from_zero}");
    assert_eq!(
        from_max["history"],
        json!([]),
        "nothing after the largest id: {from_max}"
    );
    assert_eq!(
        before_zero["messages"],
        json!([]),
        "nothing before 0-0: {before_zero}"
    );
    assert_eq!(before_max["messages"], both, "{before_max}");
    assert_eq!(
        padded["messages"],
        json!([]),
        "leading zeros are read: {padded}"
    );
    assert_eq!(http_zero, json!([]));
    assert_eq!(http_max, both);
}

#[tokio::test]
async fn the_smallest_and_largest_ids_page_and_catch_up_on_the_memory_backend() {
    let node = TestNode::spawn().await;
    extreme_ids_page_and_catch_up(&node).await;
}

async fn the_smallest_and_largest_ids_page_and_catch_up(backing: Backing) {
    let cluster = Cluster::start_on(backing, 1).await;
    extreme_ids_page_and_catch_up(&cluster.nodes[0]).await;
}

async fn a_join_the_backend_refuses_leaves_no_member_behind(backing: Backing) {
    let cluster = Cluster::start_on(backing, 1).await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    let alice = {
        let mut alice = WsClient::connect(&node.ws_url("alice")).await;
        // Refused by the backend today; either way it must not outlive alice.
        alice
            .request(json!({"type": "join", "room": room, "since": MAX_ID}))
            .await;
        alice
    };

    alice.close().await;

    let url = node.url(&format!("/api/rooms/{room}/users"));
    let url = &url;
    eventually("alice is no longer a member", || async move {
        let users: Vec<String> = crate::support::get_json(url).await;
        (users == ["bob"]).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// HTTP

/// One request, and the status and error code it must get (`None`: success,
/// with a JSON body).
struct HttpCase {
    why: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn http_case(
    why: &'static str,
    method: &str,
    path: impl Into<String>,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: Option<&'static str>,
) -> HttpCase {
    HttpCase {
        why,
        method: method.parse().expect("method"),
        path: path.into(),
        content_type,
        body: body.into(),
        status,
        code,
    }
}

async fn send(node: &impl Endpoint, case: &HttpCase) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .request(case.method.clone(), node.url(&case.path))
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    let response = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("answers in time")
        .expect("answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("body").to_vec();
    (status, content_type, body)
}

fn check_http(case: &HttpCase, status: u16, content_type: &str, body: &[u8]) {
    let why = case.why;
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, case.status, "{why}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{why}: a JSON body, not {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{why}: {e}: {text}"));
    if let Some(code) = case.code {
        assert_eq!(body["error"]["code"], code, "{why}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{why}: {body}"
        );
        assert_eq!(
            body.as_object().map(serde_json::Map::len),
            Some(1),
            "{why}: {body}"
        );
        assert_eq!(
            body["error"].as_object().map(serde_json::Map::len),
            Some(2),
            "{why}: {body}"
        );
    }
}

fn http_cases(room: &str) -> Vec<HttpCase> {
    const JSON: Option<&str> = Some("application/json");
    let rooms = "/api/rooms";
    let messages = format!("/api/rooms/{room}/messages");
    let long = "r".repeat(65);
    let deep = format!(r#"{{"name":{}"#, "[".repeat(60_000));
    let post = |why, body: &str, status, code| {
        http_case(why, "POST", rooms, JSON, body.as_bytes(), status, code)
    };
    let say = |why, body: String, status, code| {
        http_case(why, "POST", messages.clone(), JSON, body, status, code)
    };
    let page = |why, query: &str, status, code| {
        http_case(
            why,
            "GET",
            format!("{messages}?{query}"),
            None,
            "",
            status,
            code,
        )
    };
    let mut cases = vec![
        post("invalid JSON", r#"{"name":"#, 400, Some("bad_request")),
        post("an empty body", "", 400, Some("bad_request")),
        post(
            "a JSON array",
            r#"[{"name":"r"}]"#,
            400,
            Some("bad_request"),
        ),
        post(
            "a number for the name",
            r#"{"name":5}"#,
            400,
            Some("bad_request"),
        ),
        post("a null name", r#"{"name":null}"#, 400, Some("bad_request")),
        post("no name", "{}", 400, Some("bad_request")),
        post(
            "a duplicate name",
            r#"{"name":"a","name":"b"}"#,
            400,
            Some("bad_request"),
        ),
        post("deep nesting", &deep, 400, Some("bad_request")),
        post(
            "a name with a space",
            r#"{"name":"a b"}"#,
            400,
            Some("invalid_room"),
        ),
        post(
            "a unicode name",
            r#"{"name":"élise"}"#,
            400,
            Some("invalid_room"),
        ),
        post(
            "an escaped NUL in the name",
            r#"{"name":"a\u0000"}"#,
            400,
            Some("invalid_room"),
        ),
        post(
            "a 65-character name",
            &format!(r#"{{"name":"{long}"}}"#),
            400,
            Some("invalid_room"),
        ),
        http_case(
            "invalid UTF-8",
            "POST",
            rooms,
            JSON,
            b"{\"name\":\"\xff\"}".to_vec(),
            400,
            Some("bad_request"),
        ),
        http_case(
            "no content type",
            "POST",
            rooms,
            None,
            r#"{"name":"a"}"#,
            400,
            Some("bad_request"),
        ),
        http_case(
            "text/plain",
            "POST",
            rooms,
            Some("text/plain"),
            r#"{"name":"a"}"#,
            400,
            Some("bad_request"),
        ),
        http_case(
            "a form",
            "POST",
            rooms,
            Some("application/x-www-form-urlencoded"),
            "name=a",
            400,
            Some("bad_request"),
        ),
        http_case(
            "JSON with a charset and an unknown field is fine",
            "POST",
            rooms,
            Some("application/json; charset=utf-8"),
            r#"{"name":"made","x":1}"#,
            201,
            None,
        ),
        page("before garbage", "before=garbage", 400, Some("bad_request")),
        page("limit abc", "limit=abc", 400, Some("bad_request")),
        page("limit -1", "limit=-1", 400, Some("bad_request")),
        page("limit 0", "limit=0", 400, Some("bad_request")),
        page("limit empty", "limit=", 400, Some("bad_request")),
        page("limit 1.5", "limit=1.5", 400, Some("bad_request")),
        page(
            "limit 2^64",
            "limit=18446744073709551616",
            400,
            Some("bad_request"),
        ),
        page("limit twice", "limit=1&limit=2", 400, Some("bad_request")),
        page("limit 100000 is clamped to 100", "limit=100000", 200, None),
        page("an unknown parameter is ignored", "colour=red", 200, None),
        say(
            "content over 4096 bytes",
            json!({"user": "alice", "content": "€".repeat(1366)}).to_string(),
            413,
            Some("too_large"),
        ),
        say(
            "a body of 1 MiB of content",
            json!({"user": "alice", "content": "x".repeat(1 << 20)}).to_string(),
            413,
            Some("too_large"),
        ),
        say(
            "empty content",
            json!({"user": "alice", "content": ""}).to_string(),
            400,
            Some("bad_request"),
        ),
        say(
            "no content",
            json!({"user": "alice"}).to_string(),
            400,
            Some("bad_request"),
        ),
        say(
            "content 5",
            json!({"user": "alice", "content": 5}).to_string(),
            400,
            Some("bad_request"),
        ),
        say(
            "a user 5",
            json!({"user": 5, "content": "x"}).to_string(),
            400,
            Some("bad_request"),
        ),
        say(
            "a user with a space",
            json!({"user": "a b", "content": "x"}).to_string(),
            400,
            Some("invalid_user"),
        ),
        http_case(
            "an upgrade request without the upgrade",
            "GET",
            "/ws?username=alice",
            None,
            "",
            400,
            Some("bad_request"),
        ),
        http_case(
            "a username given twice",
            "GET",
            "/ws?username=a&username=b",
            None,
            "",
            400,
            Some("bad_request"),
        ),
    ];
    for (why, bad) in [
        ("a percent-encoded space", "a%20b"),
        ("percent-encoded unicode", "%C3%A9lise"),
        ("a raw unicode path", "élise"),
        ("a percent-encoded slash", "a%2Fb"),
        ("a percent-encoded NUL", "a%00"),
        ("65 characters", long.as_str()),
    ] {
        for tail in ["users", "messages"] {
            cases.push(http_case(
                why,
                "GET",
                format!("/api/rooms/{bad}/{tail}"),
                None,
                "",
                400,
                Some("invalid_room"),
            ));
        }
        cases.push(http_case(
            why,
            "POST",
            format!("/api/rooms/{bad}/messages"),
            JSON,
            json!({"user": "alice", "content": "x"}).to_string(),
            400,
            Some("invalid_room"),
        ));
    }
    for tail in ["users", "messages"] {
        cases.push(http_case(
            "percent-encoded invalid UTF-8",
            "GET",
            format!("/api/rooms/%FF/{tail}"),
            None,
            "",
            400,
            Some("bad_request"),
        ));
    }
    cases
}

#[tokio::test]
async fn every_malformed_http_request_gets_its_status_and_the_json_error_shape() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut watcher = WsClient::connect(&node.ws_url("watcher")).await;
    watcher.join(&room).await;

    for case in http_cases(&room) {
        let (status, content_type, body) = send(&node, &case).await;
        check_http(&case, status, &content_type, &body);
    }

    // Nothing refused was stored or delivered, and the node is healthy.
    let page: Value =
        crate::support::get_json(&node.url(&format!("/api/rooms/{room}/messages"))).await;
    assert_eq!(page, json!([]));
    let pong = watcher.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "the watcher's next frame is its pong");
    let rooms: Value = crate::support::get_json(&node.url("/api/rooms")).await;
    let names: Vec<&str> = rooms
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, {
        let mut expected = vec!["made", room.as_str()];
        expected.sort_unstable();
        expected
    });
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
    assert_eq!(get_status(&node.url("/ready")).await, Some(200));
}

#[tokio::test]
async fn a_method_not_allowed_answers_405_in_the_json_error_shape() {
    let node = TestNode::spawn().await;
    for (method, path) in [
        ("DELETE", "/api/rooms"),
        ("PUT", "/api/rooms/r/messages"),
        ("POST", "/api/users"),
        ("POST", "/health"),
        ("POST", "/ws?username=alice"),
        ("POST", "/"),
        ("DELETE", "/index.html"),
    ] {
        let case = http_case(
            "method",
            method,
            path,
            None,
            "",
            405,
            Some("method_not_allowed"),
        );
        let (status, content_type, body) = send(&node, &case).await;
        check_http(&case, status, &content_type, &body);
    }
}

#[tokio::test]
async fn a_request_body_over_the_limit_answers_413_too_large() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let huge = json!({"user": "alice", "content": "x".repeat(3 << 20)}).to_string();
    let cases = [
        http_case(
            "3 MiB of message",
            "POST",
            format!("/api/rooms/{room}/messages"),
            Some("application/json"),
            huge.clone(),
            413,
            Some("too_large"),
        ),
        http_case(
            "3 MiB of room",
            "POST",
            "/api/rooms",
            Some("application/json"),
            huge,
            413,
            Some("too_large"),
        ),
    ];
    for case in cases {
        let (status, content_type, body) = send(&node, &case).await;
        check_http(&case, status, &content_type, &body);
    }
}
