//! Fuzz target `decode`: any bytes, as a WebSocket text frame would bring them,
//! through every parser of client input. A panic is a crash, and so is a broken
//! invariant: an accepted frame that was not a JSON object, a `ref` echoed
//! over the contract's 64 characters, an error code decoding cannot give, or a
//! name or id that does not read back as what was parsed.

#![no_main]

use chorus::domain::{Content, MessageId, RoomName, UserName};
use chorus::error_code::ErrorCode;
use chorus::protocol::{ClientFrame, MAX_REF_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // The socket refuses a text frame that is not UTF-8 before decoding.
        return;
    };

    let decoded = ClientFrame::decode(text);
    let reference = match &decoded {
        Ok(frame) => frame.reference.as_deref(),
        Err(e) => e.reference.as_deref(),
    };
    if let Some(r) = reference {
        assert!(
            r.chars().count() <= MAX_REF_LEN,
            "ref echoed over the limit"
        );
    }
    match &decoded {
        Ok(_) => assert!(
            text.trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{'),
            "accepted a frame that is not a JSON object"
        ),
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::BadRequest
                    | ErrorCode::InvalidRoom
                    | ErrorCode::InvalidUser
                    | ErrorCode::TooLarge
            ),
            "decoding gave {:?}",
            e.code
        ),
    }

    if let Ok(name) = UserName::parse(text) {
        assert_eq!(name.as_str(), text);
    }
    if let Ok(name) = RoomName::parse(text) {
        assert_eq!(name.as_str(), text);
    }
    if let Ok(id) = MessageId::parse(text) {
        assert_eq!(MessageId::parse(&id.to_string()), Ok(id));
    }
    if let Ok(content) = Content::parse(text) {
        assert_eq!(content.as_str(), text);
    }
});
