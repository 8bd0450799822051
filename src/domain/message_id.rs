//! Message ids: `<milliseconds>-<sequence>`, the shape of a Redis stream id,
//! used by both backends so that ids stay comparable and survive a restart of
//! an embedded node.

use std::fmt;

/// The id of a stored message. Ids are unique per room or DM pair and grow in
/// the order of that history; clients treat them as opaque strings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    ms: u64,
    seq: u64,
}

/// A string that is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message ids look like \"1700000000000-0\"")]
pub struct MessageIdError;

impl MessageId {
    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The milliseconds part: when the message was stored.
    pub const fn ms(self) -> u64 {
        self.ms
    }

    /// The sequence part: its order within the millisecond.
    pub const fn seq(self) -> u64 {
        self.seq
    }

    /// Reads `<ms>-<seq>`.
    pub fn parse(s: &str) -> Result<Self, MessageIdError> {
        let (ms, seq) = s.split_once('-').ok_or(MessageIdError)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(MessageIdError);
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| MessageIdError)?,
            seq: seq.parse().map_err(|_| MessageIdError)?,
        })
    }

    /// The next id after `self` at wall-clock time `now_ms`: time when the
    /// clock moved on, otherwise the same millisecond with the next sequence,
    /// exactly as Redis assigns stream ids.
    pub fn next_after(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq.saturating_add(1),
            }
        }
    }

    /// The smallest id there is; every stored message is after it.
    pub const MIN: Self = Self { ms: 0, seq: 0 };

    /// The largest id there is; no message is after it.
    pub const MAX: Self = Self {
        ms: u64::MAX,
        seq: u64::MAX,
    };
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_orders() {
        let a = MessageId::parse("1700000000000-0").unwrap();
        let b = MessageId::parse("1700000000000-12").unwrap();
        let c = MessageId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
    }

    #[test]
    fn parse_refuses_garbage() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-b",
            "1-2-3",
            " 1-2",
            "99999999999999999999999-0",
            "+1-0",
        ] {
            assert_eq!(MessageId::parse(bad), Err(MessageIdError), "{bad:?}");
        }
    }

    #[test]
    fn next_after_is_strictly_increasing_even_if_the_clock_goes_back() {
        let a = MessageId::new(100, 5);
        assert_eq!(a.next_after(101), MessageId::new(101, 0));
        assert_eq!(a.next_after(100), MessageId::new(100, 6));
        assert_eq!(a.next_after(50), MessageId::new(100, 6));
    }
}
