//! Property tests of the parsers every client byte meets first: the WebSocket
//! frame decoder (`ClientFrame::decode`) and the domain parsers (`UserName`,
//! `RoomName`, `MessageId`, `Content`).
//!
//! They prove that the decoder never panics, whatever the text, the JSON value
//! or the fields of an object with a known `type`, and that what it accepts is
//! a JSON object whose fields it read faithfully; that every valid command
//! round-trips field for field (any field order, escaped or not, unknown fields
//! ignored); that one bad field gives the contract's error code with the `ref`
//! echoed; that names follow exactly the contract's rule; and that the fuzz
//! corpus committed in `fuzz/corpus/decode/` replays without a panic.

#![expect(
    clippy::unwrap_used,
    reason = "a test should stop at the first unexpected error, wherever it is"
)]

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use chorus::domain::{
    Content, ContentError, MAX_CONTENT_BYTES, MAX_ROOM_LEN, MAX_USER_LEN, MessageId, NameError,
    RoomName, UserName,
};
use chorus::error_code::ErrorCode;
use chorus::protocol::{
    ClientFrame, Command, DEFAULT_HISTORY_LIMIT, DecodeError, HistoryTarget, MAX_HISTORY_LIMIT,
    MAX_REF_LEN,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::{option, sample};
use serde_json::{Map, Value};

/// The `type`s of client commands in the contract.
const KNOWN_TYPES: [&str; 8] = [
    "join", "leave", "switch", "message", "dm", "typing", "history", "ping",
];

/// Every field a client command can carry.
const KNOWN_FIELDS: [&str; 10] = [
    "type", "ref", "room", "since", "from", "to", "content", "before", "limit", "with",
];

/// JSON's insignificant whitespace, the only bytes allowed before a frame's `{`.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

// ---------------------------------------------------------------------------
// Reference predicates: the contract, written independently of `src/`.

/// PROTOCOL.md: "1–32 (user) / 1–64 (room) characters of ASCII letters,
/// digits, `_`, `-`, `.`".
fn contract_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.chars().count()) && s.chars().all(name_char)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `<ms>-<seq>`, each part 1–20 ASCII digits that fit in a u64.
fn id_parts(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    let part = |p: &str| {
        let digits = (1..=20).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| p.parse::<u64>().ok()).flatten()
    };
    Some((part(ms)?, part(seq)?))
}

/// The `type` of a decoded command.
fn kind_of(command: &Command) -> &'static str {
    match command {
        Command::Join { .. } => "join",
        Command::Leave { .. } => "leave",
        Command::Switch { .. } => "switch",
        Command::Message { .. } => "message",
        Command::Dm { .. } => "dm",
        Command::Typing { .. } => "typing",
        Command::History { .. } => "history",
        Command::Ping => "ping",
    }
}

/// The error codes decoding may give: never one that needs state or a backend.
fn is_decode_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::InvalidRoom
            | ErrorCode::InvalidUser
            | ErrorCode::TooLarge
    )
}

/// What holds for every input, whatever it is: no panic; a `ref` is echoed only
/// when it fits the contract; an accepted frame was a JSON object; a refusal
/// uses a decoding code and says why.
fn decode_checked(text: &str) -> Result<Result<ClientFrame, DecodeError>, TestCaseError> {
    let decoded = catch_unwind(|| ClientFrame::decode(text))
        .map_err(|_| TestCaseError::fail(format!("decode panicked on {text:?}")))?;
    let reference = match &decoded {
        Ok(frame) => frame.reference.as_deref(),
        Err(e) => e.reference.as_deref(),
    };
    if let Some(r) = reference {
        prop_assert!(r.chars().count() <= MAX_REF_LEN, "ref {r:?} echoed");
    }
    match &decoded {
        Ok(frame) => prop_assert!(
            text.trim_start_matches(JSON_WHITESPACE).starts_with('{'),
            "accepted a frame that is not a JSON object: {text:.200?} as {frame:?}"
        ),
        Err(e) => {
            prop_assert!(is_decode_code(e.code), "{e:?}");
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(decoded)
}

/// The decoded frame says exactly what the JSON object says.
fn agrees(object: &Map<String, Value>, frame: &ClientFrame) -> Result<(), TestCaseError> {
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let id = |key: &str| text(key).map(|s| MessageId::parse(s).unwrap());
    prop_assert_eq!(text("type"), Some(kind_of(&frame.command)));
    prop_assert_eq!(text("ref"), frame.reference.as_deref());
    match &frame.command {
        Command::Join { room, since } => {
            prop_assert_eq!(text("room"), Some(room.as_str()));
            prop_assert_eq!(id("since"), *since);
        }
        Command::Leave { room } | Command::Typing { room } => {
            prop_assert_eq!(text("room"), Some(room.as_str()));
        }
        Command::Switch { from, to } => {
            prop_assert_eq!(text("from"), Some(from.as_str()));
            prop_assert_eq!(text("to"), Some(to.as_str()));
        }
        Command::Message { room, content, .. } => {
            prop_assert_eq!(text("room"), Some(room.as_str()));
            prop_assert_eq!(text("content"), Some(content.as_str()));
        }
        Command::Dm { to, content, .. } => {
            prop_assert_eq!(text("to"), Some(to.as_str()));
            prop_assert_eq!(text("content"), Some(content.as_str()));
        }
        Command::History {
            target,
            before,
            limit,
        } => {
            match target {
                HistoryTarget::Room(room) => {
                    prop_assert_eq!(text("room"), Some(room.as_str()));
                    prop_assert!(object.get("with").is_none_or(Value::is_null));
                }
                HistoryTarget::With(user) => {
                    prop_assert_eq!(text("with"), Some(user.as_str()));
                    prop_assert!(object.get("room").is_none_or(Value::is_null));
                }
            }
            prop_assert_eq!(id("before"), *before);
            let asked = object.get("limit").and_then(Value::as_u64);
            prop_assert_eq!(*limit, expected_limit(asked));
        }
        Command::Ping => {}
    }
    Ok(())
}

/// The contract: default 50, max 100 (larger requests are clamped).
fn expected_limit(asked: Option<u64>) -> usize {
    asked.map_or(DEFAULT_HISTORY_LIMIT, |n| {
        usize::try_from(n.min(MAX_HISTORY_LIMIT as u64)).unwrap()
    })
}

// ---------------------------------------------------------------------------
// Strategies.

fn user_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,32}"
}

fn room_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

fn bad_name_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("outside the name alphabet", |c| !name_char(*c))
}

/// Breaks the name rule in one way: empty, one character too many or more,
/// or one character outside the alphabet.
fn invalid_name(max: usize) -> impl Strategy<Value = String> {
    let alphabet =
        |min: usize, max: usize| string_regex(&format!("[A-Za-z0-9_.-]{{{min},{max}}}")).unwrap();
    prop_oneof![
        Just(String::new()),
        alphabet(max + 1, max + 40),
        (alphabet(0, max), bad_name_char(), alphabet(0, 8))
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

fn message_id() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (any::<u64>(), any::<u64>()),
        (1_600_000_000_000..1_900_000_000_000u64, 0..10u64),
    ]
}

/// Strings shaped like ids, most of them not ids.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,22}-[0-9]{0,22}",
        "[0-9+ -]{0,12}",
        "1844674407370955161[5-9]-[0-9]",
        "[0-9]{1,3}-[0-9]{1,3}-[0-9]{1,3}",
        "\\PC{0,16}",
    ]
}

fn invalid_id() -> impl Strategy<Value = String> {
    id_like().prop_filter("not an id", |s| id_parts(s).is_none())
}

fn valid_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        vec(any::<char>(), 0..=MAX_REF_LEN).prop_map(String::from_iter),
    ]
}

fn valid_content() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{1,40}",
        1 => vec(any::<char>(), 1..=MAX_CONTENT_BYTES / 4).prop_map(String::from_iter),
    ]
}

/// Content just over the limit, in characters of 1 to 4 bytes.
fn too_large_content() -> impl Strategy<Value = String> {
    (sample::select(vec!['x', 'é', '€', '😀']), 0..64usize).prop_map(|(c, extra)| {
        let count = MAX_CONTENT_BYTES / c.len_utf8() + 1 + extra;
        c.to_string().repeat(count)
    })
}

/// One field's value: a string (written with or without `\u` escapes), or raw
/// JSON text.
#[derive(Debug, Clone)]
enum FieldValue {
    Str(String),
    Raw(String),
}

type Fields = Vec<(&'static str, FieldValue)>;

fn str_field(key: &'static str, value: &str) -> (&'static str, FieldValue) {
    (key, FieldValue::Str(value.to_owned()))
}

/// A JSON string literal; `escaped` writes every UTF-16 unit as `\uXXXX`.
fn json_string(s: &str, escaped: bool) -> String {
    if !escaped {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        write!(out, "\\u{unit:04x}").unwrap();
    }
    out.push('"');
    out
}

/// Writes the fields as one JSON object, in their order.
fn frame_text(fields: &[(&str, FieldValue)], escaped: bool) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(key, escaped));
        out.push(':');
        match value {
            FieldValue::Str(s) => out.push_str(&json_string(s, escaped)),
            FieldValue::Raw(raw) => out.push_str(raw),
        }
    }
    out.push('}');
    out
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn content(s: &str) -> Content {
    Content::parse(s).unwrap()
}

/// A valid command of any type, as the fields a client would send and the
/// command the decoder must make of them.
fn valid_command() -> impl Strategy<Value = (Fields, Command)> {
    let history_target = prop_oneof![
        room_name().prop_map(|r| ("room", r)),
        user_name().prop_map(|u| ("with", u)),
    ];
    prop_oneof![
        (room_name(), option::of(message_id())).prop_map(|(r, since)| {
            let mut fields = vec![str_field("type", "join"), str_field("room", &r)];
            if let Some((ms, seq)) = since {
                fields.push(str_field("since", &format!("{ms}-{seq}")));
            }
            let since = since.map(|(ms, seq)| MessageId::new(ms, seq));
            (
                fields,
                Command::Join {
                    room: room(&r),
                    since,
                },
            )
        }),
        room_name().prop_map(|r| {
            let fields = vec![str_field("type", "leave"), str_field("room", &r)];
            (fields, Command::Leave { room: room(&r) })
        }),
        (room_name(), room_name()).prop_map(|(from, to)| {
            let fields = vec![
                str_field("type", "switch"),
                str_field("from", &from),
                str_field("to", &to),
            ];
            let command = Command::Switch {
                from: room(&from),
                to: room(&to),
            };
            (fields, command)
        }),
        (room_name(), valid_content()).prop_map(|(r, text)| {
            let fields = vec![
                str_field("type", "message"),
                str_field("room", &r),
                str_field("content", &text),
            ];
            let command = Command::Message {
                room: room(&r),
                content: content(&text),
                key: None,
                attachments: Vec::new(),
            };
            (fields, command)
        }),
        (user_name(), valid_content()).prop_map(|(to, text)| {
            let fields = vec![
                str_field("type", "dm"),
                str_field("to", &to),
                str_field("content", &text),
            ];
            let command = Command::Dm {
                to: user(&to),
                content: content(&text),
                key: None,
                attachments: Vec::new(),
            };
            (fields, command)
        }),
        room_name().prop_map(|r| {
            let fields = vec![str_field("type", "typing"), str_field("room", &r)];
            (fields, Command::Typing { room: room(&r) })
        }),
        (
            history_target,
            option::of(message_id()),
            option::of(prop_oneof![1..=200u64, any::<u64>().prop_map(|n| n.max(1))]),
        )
            .prop_map(|((key, name), before, limit)| {
                let mut fields = vec![str_field("type", "history"), str_field(key, &name)];
                if let Some((ms, seq)) = before {
                    fields.push(str_field("before", &format!("{ms}-{seq}")));
                }
                if let Some(n) = limit {
                    fields.push(("limit", FieldValue::Raw(n.to_string())));
                }
                let target = if key == "room" {
                    HistoryTarget::Room(room(&name))
                } else {
                    HistoryTarget::With(user(&name))
                };
                let command = Command::History {
                    target,
                    before: before.map(|(ms, seq)| MessageId::new(ms, seq)),
                    limit: expected_limit(limit),
                };
                (fields, command)
            }),
        Just((vec![str_field("type", "ping")], Command::Ping)),
    ]
}

/// Strings that matter to the decoder: types, names, ids, anything.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        sample::select(KNOWN_TYPES.to_vec()).prop_map(str::to_owned),
        room_name(),
        id_like(),
        "\\PC{0,24}",
        vec(any::<char>(), 0..80).prop_map(String::from_iter),
    ]
}

fn field_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => sample::select(KNOWN_FIELDS.to_vec()).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(field_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fields no command has, with any value: the decoder ignores them.
fn unknown_fields() -> impl Strategy<Value = Fields> {
    let key = sample::select(vec![
        "x", "id", "user", "ts", "members", "Type", "REF", "room ",
    ]);
    vec(
        (key, json_value()).prop_map(|(k, v)| (k, FieldValue::Raw(v.to_string()))),
        0..3,
    )
    .prop_map(|mut fields| {
        // Keys in one object are distinct; a repeated key is another test.
        fields.sort_by_key(|(k, _)| *k);
        fields.dedup_by_key(|(k, _)| *k);
        fields
    })
}

/// A valid frame (any command, an optional `ref`, unknown fields, any order,
/// maybe fully `\u`-escaped) and what it must decode to.
fn valid_frame() -> impl Strategy<Value = (String, ClientFrame)> {
    (
        valid_command(),
        option::of(valid_ref()),
        unknown_fields(),
        any::<bool>(),
    )
        .prop_flat_map(|((mut fields, command), reference, extra, escaped)| {
            if let Some(r) = &reference {
                fields.push(str_field("ref", r));
            }
            fields.extend(extra);
            let expected = ClientFrame { reference, command };
            (Just(fields).prop_shuffle(), Just(expected), Just(escaped))
        })
        .prop_map(|(fields, expected, escaped)| (frame_text(&fields, escaped), expected))
}

/// A JSON value of the wrong type for a string field (`null` reads as absent).
fn not_a_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::from(f).to_string()),
        sample::select(vec![
            "true",
            "false",
            "[]",
            "{}",
            "[\"r\"]",
            "{\"room\":\"r\"}"
        ])
        .prop_map(str::to_owned),
    ]
}

/// How one field can be broken: a new raw value (`None` removes the field),
/// and the code the client must get.
fn breakage(kind: &'static str, key: &'static str) -> BoxedStrategy<(Option<String>, ErrorCode)> {
    let raw = |s: String| Some(serde_json::to_string(&s).unwrap());
    let wrong_type = not_a_string().prop_map(|v| (Some(v), ErrorCode::BadRequest));
    let removed = Just((None, ErrorCode::BadRequest));
    match (kind, key) {
        (_, "type") => prop_oneof![
            "\\PC{0,12}"
                .prop_filter("unknown", |t| !KNOWN_TYPES.contains(&t.as_str()))
                .prop_map(move |t| (raw(t), ErrorCode::BadRequest)),
            wrong_type,
            removed,
        ]
        .boxed(),
        (_, "room" | "from") | ("switch", "to") => prop_oneof![
            invalid_name(MAX_ROOM_LEN).prop_map(move |r| (raw(r), ErrorCode::InvalidRoom)),
            wrong_type,
            removed,
        ]
        .boxed(),
        (_, "to" | "with") => prop_oneof![
            invalid_name(MAX_USER_LEN).prop_map(move |u| (raw(u), ErrorCode::InvalidUser)),
            wrong_type,
            removed,
        ]
        .boxed(),
        (_, "content") => prop_oneof![
            too_large_content().prop_map(move |c| (raw(c), ErrorCode::TooLarge)),
            Just((raw(String::new()), ErrorCode::BadRequest)),
            wrong_type,
            removed,
        ]
        .boxed(),
        (_, "since" | "before") => prop_oneof![
            invalid_id().prop_map(move |id| (raw(id), ErrorCode::BadRequest)),
            wrong_type,
        ]
        .boxed(),
        (_, "limit") => prop_oneof![
            sample::select(vec![
                "0",
                "-0",
                "-1",
                "1.5",
                "50.0",
                "1e2",
                "1e400",
                "18446744073709551616",
                "\"10\"",
                "true",
                "[10]",
                "{}",
            ])
            .prop_map(|v| (Some(v.to_owned()), ErrorCode::BadRequest)),
            (i64::MIN..0).prop_map(|n| (Some(n.to_string()), ErrorCode::BadRequest)),
        ]
        .boxed(),
        (kind, key) => unreachable!("no breakage for {key} of {kind}"),
    }
}

/// A frame with a valid `ref` and exactly one field broken, the code it must
/// be refused with, and the `ref`.
fn frame_with_one_bad_field() -> impl Strategy<Value = (String, ErrorCode, Option<String>)> {
    (valid_command(), option::of(valid_ref()))
        .prop_flat_map(|((fields, command), reference)| {
            let n = fields.len();
            (Just(fields), Just(kind_of(&command)), Just(reference), 0..n)
        })
        .prop_flat_map(|(fields, kind, reference, i)| {
            let key = fields[i].0;
            (Just(fields), Just(reference), Just(i), breakage(kind, key))
        })
        .prop_map(|(mut fields, reference, i, (value, code))| {
            match value {
                Some(raw) => fields[i].1 = FieldValue::Raw(raw),
                None => {
                    fields.remove(i);
                }
            }
            if let Some(r) = &reference {
                fields.push(str_field("ref", r));
            }
            (frame_text(&fields, false), code, reference)
        })
}

// ---------------------------------------------------------------------------
// Properties of the decoder.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics_on_any_text(text in prop_oneof![
        any::<String>(),
        vec(any::<char>(), 0..200).prop_map(String::from_iter),
    ]) {
        let _ = decode_checked(&text)?;
    }

    #[test]
    fn decode_never_panics_on_json_shaped_text(tokens in vec(sample::select(vec![
        "{", "}", "[", "]", ":", ",", " ", "\"type\"", "\"ref\"", "\"room\"", "\"since\"",
        "\"limit\"", "\"content\"", "\"with\"", "\"join\"", "\"history\"", "\"ping\"", "\"r\"",
        "\"1-0\"", "\"", "\\", "\\u", "d800", "0", "-1", "1e400", "18446744073709551616",
        "null", "true", "\u{0}", "é", "😀",
    ]), 0..40)) {
        let _ = decode_checked(&tokens.concat())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_accepts_only_objects_with_a_known_type_and_reads_them_faithfully(
        value in json_value()
    ) {
        let text = value.to_string();
        match decode_checked(&text)? {
            Ok(frame) => {
                let object = value.as_object();
                prop_assert!(object.is_some(), "accepted {text}");
                agrees(object.unwrap(), &frame)?;
            }
            Err(e) if !value.is_object() => {
                prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", text);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn decode_never_panics_on_objects_of_a_known_type_with_random_fields(
        kind in sample::select(KNOWN_TYPES.to_vec()),
        fields in btree_map(field_key(), prop_oneof![
            3 => interesting_string().prop_map(Value::from),
            1 => json_value(),
        ], 0..6),
    ) {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("type".to_owned(), Value::from(kind));
        let text = Value::Object(object.clone()).to_string();
        if let Ok(frame) = decode_checked(&text)? {
            agrees(&object, &frame)?;
        }
    }

    #[test]
    fn every_valid_command_round_trips_field_for_field((text, expected) in valid_frame()) {
        prop_assert_eq!(ClientFrame::decode(&text), Ok(expected), "{}", text);
    }

    #[test]
    fn one_bad_field_gives_its_error_code_and_echoes_the_ref(
        (text, code, reference) in frame_with_one_bad_field()
    ) {
        let e = ClientFrame::decode(&text).unwrap_err();
        prop_assert_eq!(e.code, code, "{}: {}", text, e.message);
        prop_assert_eq!(e.reference, reference, "{}", text);
    }

    #[test]
    fn a_ref_over_64_characters_or_not_a_string_is_refused_and_not_echoed(
        (fields, _) in valid_command(),
        bad_ref in prop_oneof![
            vec(any::<char>(), MAX_REF_LEN + 1..MAX_REF_LEN + 40)
                .prop_map(|c| serde_json::to_string(&String::from_iter(c)).unwrap()),
            not_a_string(),
        ],
    ) {
        let mut fields = fields;
        fields.push(("ref", FieldValue::Raw(bad_ref)));
        let text = frame_text(&fields, false);
        let e = ClientFrame::decode(&text).unwrap_err();
        prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", text);
        prop_assert_eq!(e.reference, None, "{}", text);
    }

    #[test]
    fn a_frame_that_is_not_one_json_object_is_a_bad_request(
        value in json_value().prop_filter("not an object", |v| !v.is_object()),
        reference in valid_ref(),
    ) {
        // Even an array that lists a valid command's fields in order.
        for text in [
            value.to_string(),
            serde_json::json!(["ping", reference]).to_string(),
            serde_json::json!(["join", reference, "r"]).to_string(),
        ] {
            let e = ClientFrame::decode(&text).unwrap_err();
            prop_assert_eq!(e.code, ErrorCode::BadRequest, "{}", text);
        }
    }
}

// ---------------------------------------------------------------------------
// Properties of the domain parsers.

/// Arbitrary unicode, control characters included.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Strings drawn mostly from the name alphabet, so that both sides of every
/// boundary (length, alphabet) are hit often.
fn mostly_name_text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        20 => sample::select(
            "abcxyzABCXYZ0189_-.".chars().collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ];
    vec(c, 0..100).prop_map(String::from_iter)
}

fn check_names(s: &str) -> Result<(), TestCaseError> {
    let as_user = UserName::parse(s);
    prop_assert_eq!(
        as_user.is_ok(),
        contract_name(s, MAX_USER_LEN),
        "user {:?}",
        s
    );
    match as_user {
        Ok(name) => {
            prop_assert_eq!(name.as_str(), s);
            prop_assert_eq!(name.to_string(), s);
        }
        Err(e) => prop_assert_eq!(e, NameError::User),
    }
    let as_room = RoomName::parse(s);
    prop_assert_eq!(
        as_room.is_ok(),
        contract_name(s, MAX_ROOM_LEN),
        "room {:?}",
        s
    );
    match as_room {
        Ok(name) => {
            prop_assert_eq!(name.as_str(), s);
            prop_assert_eq!(name.to_string(), s);
        }
        Err(e) => prop_assert_eq!(e, NameError::Room),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_follow_the_contract_rule_on_any_unicode(s in any_text(100)) {
        check_names(&s)?;
    }

    #[test]
    fn names_follow_the_contract_rule_near_its_boundaries(s in mostly_name_text()) {
        check_names(&s)?;
    }

    #[test]
    fn message_id_parse_never_panics_and_agrees_with_the_id_shape(
        s in prop_oneof![id_like(), any_text(50)]
    ) {
        let parsed = catch_unwind(|| MessageId::parse(&s))
            .map_err(|_| TestCaseError::fail(format!("parse panicked on {s:?}")))?;
        prop_assert_eq!(parsed.is_ok(), id_parts(&s).is_some(), "{:?}", s);
        if let Ok(id) = parsed {
            let (ms, seq) = id_parts(&s).unwrap();
            prop_assert_eq!(id, MessageId::new(ms, seq));
            prop_assert_eq!(MessageId::parse(&id.to_string()), Ok(id));
        }
    }

    #[test]
    fn a_message_id_displays_as_text_that_parses_back_to_it(
        (ms, seq) in message_id(),
        (ms2, seq2) in message_id(),
    ) {
        let id = MessageId::new(ms, seq);
        prop_assert_eq!(id.to_string(), format!("{ms}-{seq}"));
        prop_assert_eq!(MessageId::parse(&id.to_string()), Ok(id));
        // Ids order as (milliseconds, sequence), the order of a history.
        prop_assert_eq!(id.cmp(&MessageId::new(ms2, seq2)), (ms, seq).cmp(&(ms2, seq2)));
    }

    #[test]
    fn content_is_accepted_from_1_to_4096_bytes_whatever_the_characters(
        s in prop_oneof![
            any_text(1200),
            // Just under, at and over the limit, ending in a wide character.
            (MAX_CONTENT_BYTES - 8..=MAX_CONTENT_BYTES + 4, sample::select(vec!['é', '€', '😀']))
                .prop_map(|(n, wide)| {
                    let mut s = "x".repeat(n.saturating_sub(wide.len_utf8()));
                    s.push(wide);
                    s
                }),
        ]
    ) {
        let len = s.len();
        match Content::parse(s.as_str()) {
            Ok(c) => {
                prop_assert!((1..=MAX_CONTENT_BYTES).contains(&len), "{len} bytes accepted");
                prop_assert_eq!(c.as_str(), s.as_str());
            }
            Err(ContentError::Empty) => prop_assert_eq!(len, 0),
            Err(ContentError::TooLarge(n)) => {
                prop_assert_eq!(n, len);
                prop_assert!(len > MAX_CONTENT_BYTES);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The fuzz corpus, replayed on every test run.

#[test]
fn every_input_of_the_fuzz_corpus_decodes_to_a_frame_or_an_error_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the fuzz corpus {} is missing: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let decoded = decode_checked(&text);
            let _ = UserName::parse(&text);
            let _ = RoomName::parse(&text);
            let _ = MessageId::parse(&text);
            let _ = Content::parse(&*text);
            decoded
        }));
        match outcome {
            Err(_) => panic!("{} panicked", path.display()),
            Ok(Err(why)) => panic!("{}: {why}", path.display()),
            Ok(Ok(_)) => {}
        }
        replayed += 1;
    }
    assert!(replayed > 0, "the fuzz corpus {} is empty", dir.display());
}
