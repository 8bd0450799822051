//! Idempotency keys: a client's name for one send, so that a retry after
//! `unavailable` or a dropped connection is never stored twice.

use std::time::Duration;

/// The longest key accepted, in characters, from the contract.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 64;

/// How long a key is remembered, from the contract: a repeat within this
/// window answers the original message.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);

/// A key that is empty, too long, or holds control characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters without control characters"
)]
pub struct IdempotencyKeyError;

/// A validated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accepts 1 to 64 characters, none of them control characters (keys
    /// end up in log lines and Redis key names).
    pub fn parse(key: &str) -> Result<Self, IdempotencyKeyError> {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS || key.chars().any(char::is_control) {
            return Err(IdempotencyKeyError);
        }
        Ok(Self(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_sixty_four_printable_characters() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"é".repeat(64)).is_ok());
        assert!(IdempotencyKey::parse(&"é".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a\nb").is_err());
    }
}
