//! What an upload is made of before any byte is stored: its id, the file's
//! name, its media type (on the allow list), and what follows from them
//! for serving it (`Content-Disposition`, whether it may show inline).

use std::fmt;

/// Longest file name, in bytes: the common file-system limit.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest media type, in bytes: registered types are far shorter, and the
/// type ends up in headers and records.
const MAX_MEDIA_TYPE_BYTES: usize = 100;
/// Most attachments on one message, from the contract.
pub const MAX_ATTACHMENTS: usize = 10;

/// Why an upload's id, name or type was refused; the text names the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Not 32 lowercase hex characters.
    #[error("invalid upload id")]
    Id,
    /// Empty, too long, or with controls or path separators.
    #[error(
        "name must be 1 to {MAX_FILE_NAME_BYTES} bytes without control characters, '/' or '\\'"
    )]
    Name,
    /// Not `type/subtype`.
    #[error("type must be a media type such as image/png")]
    Type,
    /// A well-formed type off the allow list.
    #[error(
        "type {0} is not allowed (images other than SVG, audio, video, application/pdf, text/plain, application/zip)"
    )]
    NotAllowed(String),
}

/// An upload's id: 32 lowercase hex characters (a v4 UUID's simple form,
/// 122 random bits). Unguessable, because in anonymous mode it is the only
/// thing guarding a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Accepts exactly 32 lowercase hex characters; anything else is refused
    /// before it reaches a key, a path or a backend.
    pub fn parse(s: &str) -> Result<Self, UploadError> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(s.to_owned())).ok_or(UploadError::Id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file's name as the uploader gave it. Shown to users and sent in
/// `Content-Disposition`, never used in a path or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    /// Accepts 1 to 255 bytes without control characters, `/` or `\`.
    pub fn parse(s: &str) -> Result<Self, UploadError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_FILE_NAME_BYTES
            && !s.chars().any(|c| c.is_control() || c == '/' || c == '\\');
        ok.then(|| Self(s.to_owned())).ok_or(UploadError::Name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `Content-Disposition` for this name: `inline` only when the file is
    /// shown inline, else `attachment`; `filename` is an ASCII fallback
    /// (quotes, `\`, controls and non-ASCII replaced) and `filename*` the
    /// name itself, percent-encoded (RFC 6266, RFC 8187).
    pub fn content_disposition(&self, inline: bool) -> String {
        let kind = if inline { "inline" } else { "attachment" };
        let fallback: String = self
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut encoded = String::with_capacity(self.0.len() * 3);
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
    }
}

/// A media type on the allow list, lowercased, without parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType(String);

impl MediaType {
    /// Accepts `type/subtype` (parameters dropped, case folded) when it is
    /// an image other than SVG, audio, video, `application/pdf`,
    /// `text/plain` or `application/zip`. SVG is refused because it is a
    /// document that runs script when opened directly, in the origin that
    /// serves it.
    pub fn parse(s: &str) -> Result<Self, UploadError> {
        let essence = s.split(';').next().unwrap_or_default().trim();
        let essence = essence.to_ascii_lowercase();
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let well_formed = essence.len() <= MAX_MEDIA_TYPE_BYTES
            && essence
                .split_once('/')
                .is_some_and(|(kind, sub)| token(kind) && token(sub));
        if !well_formed {
            return Err(UploadError::Type);
        }
        let allowed = match essence.split_once('/') {
            Some(("image", sub)) => sub != "svg+xml",
            Some(("audio" | "video", _)) => true,
            _ => matches!(
                essence.as_str(),
                "application/pdf" | "text/plain" | "application/zip"
            ),
        };
        if allowed {
            Ok(Self(essence))
        } else {
            Err(UploadError::NotAllowed(essence))
        }
    }

    /// The type, as stored and compared.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Content-Type` to serve it with: text gets a charset, so a
    /// browser never guesses one.
    pub fn content_type(&self) -> String {
        if self.0 == "text/plain" {
            "text/plain; charset=utf-8".to_owned()
        } else {
            self.0.clone()
        }
    }

    /// Whether a file of this type whose first bytes are `head` may be shown
    /// inline: only the raster formats browsers decode safely, and only
    /// when the bytes are that format (a "PNG" that is HTML goes out as an
    /// attachment).
    pub fn inline(&self, head: &[u8]) -> bool {
        match self.0.as_str() {
            "image/png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
            "image/jpeg" => head.starts_with(b"\xff\xd8\xff"),
            "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
            "image/webp" => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP",
            "image/avif" => head.len() >= 12 && &head[4..12] == b"ftypavif",
            _ => false,
        }
    }
}

/// Bytes of a file's start that [`MediaType::inline`] needs.
pub const MAGIC_BYTES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_takes_images_but_svg_audio_video_and_a_few_documents() {
        for ok in [
            "image/png",
            "IMAGE/PNG",
            "image/jpeg",
            "audio/ogg",
            "video/mp4",
            "application/pdf",
            "application/zip",
            "text/plain; charset=x",
        ] {
            assert!(MediaType::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(MediaType::parse("IMAGE/PNG").unwrap().as_str(), "image/png");
        assert_eq!(
            MediaType::parse("text/plain; charset=x").unwrap().as_str(),
            "text/plain"
        );
        for refused in [
            "image/svg+xml",
            "text/html",
            "application/xml",
            "application/x-sh",
        ] {
            assert!(
                matches!(MediaType::parse(refused), Err(UploadError::NotAllowed(_))),
                "{refused}"
            );
        }
        for malformed in [
            "",
            "image",
            "a/b/c",
            "image/",
            "/png",
            "image/p ng",
            &"a".repeat(101),
        ] {
            assert_eq!(
                MediaType::parse(malformed),
                Err(UploadError::Type),
                "{malformed}"
            );
        }
    }

    #[test]
    fn names_are_one_to_255_bytes_without_controls_or_separators() {
        assert!(FileName::parse("cat.png").is_ok());
        assert!(FileName::parse("résumé 2026.pdf").is_ok());
        assert!(FileName::parse(&"a".repeat(255)).is_ok());
        for bad in ["", "a/b", "a\\b", "a\nb", "a\u{7f}", &"a".repeat(256)] {
            assert_eq!(FileName::parse(bad), Err(UploadError::Name), "{bad:?}");
        }
    }

    #[test]
    fn content_disposition_escapes_what_a_header_cannot_carry() {
        let name = FileName::parse("a \"b\" c é;.png").unwrap();
        assert_eq!(
            name.content_disposition(true),
            "inline; filename=\"a _b_ c _;.png\"; filename*=UTF-8''a%20%22b%22%20c%20%C3%A9%3B.png"
        );
        let plain = FileName::parse("report.pdf").unwrap();
        assert_eq!(
            plain.content_disposition(false),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        // A CR or LF never reaches a header: the name is refused first.
        assert!(FileName::parse("a\r\nSet-Cookie: x").is_err());
    }

    #[test]
    fn ids_are_32_lowercase_hex_characters() {
        let id = UploadId::random();
        assert_eq!(UploadId::parse(id.as_str()), Ok(id));
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../../../etc/passwd0123456789",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert_eq!(UploadId::parse(bad), Err(UploadError::Id), "{bad}");
        }
    }

    #[test]
    fn only_raster_images_whose_bytes_match_show_inline() {
        let png = MediaType::parse("image/png").unwrap();
        assert!(png.inline(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(!png.inline(b"<html><script>"));
        let jpeg = MediaType::parse("image/jpeg").unwrap();
        assert!(jpeg.inline(b"\xff\xd8\xff\xe0"));
        assert!(!jpeg.inline(b"\x89PNG\r\n\x1a\n"));
        let webp = MediaType::parse("image/webp").unwrap();
        assert!(webp.inline(b"RIFF\0\0\0\0WEBPVP8 "));
        let pdf = MediaType::parse("application/pdf").unwrap();
        assert!(!pdf.inline(b"%PDF-1.7"));
        let bmp = MediaType::parse("image/bmp").unwrap();
        assert!(!bmp.inline(b"BM"), "not a format on the inline list");
    }
}
