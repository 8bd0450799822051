//! Validated user and room names (parse, don't validate) and the node id.

use std::fmt;
use std::sync::Arc;

/// Why a name was refused; carries which kind of name it was so that the wire
/// can answer `invalid_user` or `invalid_room`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A user name that breaks the naming rule.
    #[error("user names are 1-{MAX_USER_LEN} characters of ASCII letters, digits, '_', '-' or '.'")]
    User,
    /// A room name that breaks the naming rule.
    #[error("room names are 1-{MAX_ROOM_LEN} characters of ASCII letters, digits, '_', '-' or '.'")]
    Room,
}

/// Longest user name, from the protocol contract.
pub const MAX_USER_LEN: usize = 32;
/// Longest room name, from the protocol contract.
pub const MAX_ROOM_LEN: usize = 64;

fn is_valid(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $err:expr) => {
        $(#[$doc])*
        ///
        /// Cloning is cheap: the text is shared behind an `Arc`.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Accepts `s` when it follows the naming rule.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                if is_valid(s, $max) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err($err)
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A user name: 1-32 ASCII letters, digits, `_`, `-`, `.`.
    UserName,
    MAX_USER_LEN,
    NameError::User
);
name_type!(
    /// A room name: 1-64 ASCII letters, digits, `_`, `-`, `.`.
    RoomName,
    MAX_ROOM_LEN,
    NameError::Room
);

/// The id of one chorus node, as reported in `welcome`, `/health` and `/api/stats`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Accepts any non-empty id of printable ASCII without spaces or `:`
    /// (the id becomes part of Redis keys).
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        ok.then(|| Self(Arc::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_the_rule() {
        for ok in ["a", "alice", "A_b-c.9", &"x".repeat(32)] {
            assert!(UserName::parse(ok).is_ok(), "{ok:?} should parse");
        }
        for bad in [
            "",
            " ",
            "al ice",
            "élise",
            "a/b",
            "a:b",
            &"x".repeat(33),
            "emoji😀",
        ] {
            assert_eq!(UserName::parse(bad), Err(NameError::User), "{bad:?}");
        }
    }

    #[test]
    fn room_names_allow_64_characters() {
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
        assert_eq!(RoomName::parse(&"r".repeat(65)), Err(NameError::Room));
        assert_eq!(RoomName::parse("a\nb"), Err(NameError::Room));
    }

    #[test]
    fn node_ids_refuse_separators() {
        assert!(NodeId::parse("node-1.example").is_some());
        assert!(NodeId::parse("").is_none());
        assert!(NodeId::parse("a:b").is_none());
        assert!(NodeId::parse("a b").is_none());
    }
}
