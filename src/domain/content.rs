//! Message content: non-empty text of at most [`MAX_CONTENT_BYTES`].

/// Largest content accepted, in bytes of UTF-8, from the protocol contract.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// Why content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// Nothing to send.
    #[error("content must not be empty")]
    Empty,
    /// Over [`MAX_CONTENT_BYTES`].
    #[error("content is {0} bytes; the limit is {MAX_CONTENT_BYTES}")]
    TooLarge(usize),
}

/// The text of a message or DM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    /// Accepts non-empty text of at most [`MAX_CONTENT_BYTES`].
    pub fn parse(text: impl Into<String>) -> Result<Self, ContentError> {
        let text = text.into();
        match text.len() {
            0 => Err(ContentError::Empty),
            n if n > MAX_CONTENT_BYTES => Err(ContentError::TooLarge(n)),
            _ => Ok(Self(text)),
        }
    }

    /// As [`Content::parse`], but empty text is accepted when the message
    /// has attachments: then they are its point.
    pub fn parse_with(
        text: impl Into<String>,
        has_attachments: bool,
    ) -> Result<Self, ContentError> {
        let text = text.into();
        if has_attachments && text.is_empty() {
            return Ok(Self(text));
        }
        Self::parse(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_limits_are_in_bytes() {
        assert!(Content::parse("x".repeat(MAX_CONTENT_BYTES)).is_ok());
        assert_eq!(
            Content::parse("x".repeat(MAX_CONTENT_BYTES + 1)),
            Err(ContentError::TooLarge(MAX_CONTENT_BYTES + 1))
        );
        // 1366 three-byte characters are 4098 bytes.
        assert!(matches!(
            Content::parse("€".repeat(1366)),
            Err(ContentError::TooLarge(4098))
        ));
        assert_eq!(Content::parse(""), Err(ContentError::Empty));
        assert!(Content::parse_with("", true).is_ok());
        assert_eq!(Content::parse_with("", false), Err(ContentError::Empty));
        assert!(Content::parse_with("x".repeat(MAX_CONTENT_BYTES + 1), true).is_err());
    }
}
