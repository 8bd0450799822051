//! Which browser origins may use the node: one list drives both the Origin
//! check of WebSocket upgrades and `/api/*` (a browser sends cookies and
//! opens sockets to any site, so the server must refuse foreign pages) and
//! the CORS answers that let an allowed page read `/api/*` responses.
//!
//! A page served by the node's own host is always allowed; requests without
//! an `Origin` header do not come from a browser page and are not checked
//! (such a client can send any header it likes, so the check would prove
//! nothing).

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The browser origins allowed besides the node's own host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only pages served by the same host (the default).
    SameHost,
    /// Any origin (`*`).
    Any,
    /// The same host and these origins, lower-case `scheme://host[:port]`.
    List(Vec<HeaderValue>),
}

impl AllowedOrigins {
    /// Parses `CHORUS_ALLOWED_ORIGINS`: empty, `*`, or comma-separated
    /// `http(s)://host[:port]` origins.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        match entries.as_slice() {
            [] => return Ok(Self::SameHost),
            ["*"] => return Ok(Self::Any),
            _ => {}
        }
        entries
            .into_iter()
            .map(|entry| {
                origin(entry).ok_or_else(|| {
                    format!("expected `*` or comma-separated http(s)://host[:port] origins, got {entry:?}")
                })
            })
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    /// Whether a request carrying `origin` (absent: not from a browser page)
    /// and addressed to `host` may go on.
    pub fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            Self::Any => true,
            Self::SameHost => same_host(origin, host),
            Self::List(list) => {
                same_host(origin, host)
                    || list
                        .iter()
                        .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            }
        }
    }

    /// The CORS layer for `/api/*`; none when only the same host is allowed,
    /// since same-origin requests need no CORS answers.
    pub fn cors(&self) -> Option<CorsLayer> {
        let allow = match self {
            Self::SameHost => return None,
            Self::Any => AllowOrigin::any(),
            Self::List(list) => AllowOrigin::list(list.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::PUT])
                .allow_headers([AUTHORIZATION, CONTENT_TYPE])
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// A valid, normalised origin: scheme, host and optional port, nothing else.
fn origin(entry: &str) -> Option<HeaderValue> {
    let lower = entry.to_ascii_lowercase();
    let authority = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    let parsed: Authority = authority.parse().ok()?;
    // `Authority` reports an out-of-range port as no port at all.
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    let port_ok = !after_host.contains(':') || parsed.port_u16().is_some_and(|p| p > 0);
    let plain = !authority.contains('@') && !parsed.host().is_empty();
    (plain && port_ok)
        .then(|| HeaderValue::from_str(&lower).ok())
        .flatten()
}

/// Whether the Origin names the host the request was sent to.
fn same_host(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn parses_empty_star_and_lists() {
        assert_eq!(AllowedOrigins::parse(""), Ok(AllowedOrigins::SameHost));
        assert_eq!(AllowedOrigins::parse(" , "), Ok(AllowedOrigins::SameHost));
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert_eq!(
            AllowedOrigins::parse("https://Chat.Example.com, http://localhost:3000"),
            Ok(AllowedOrigins::List(vec![
                value("https://chat.example.com"),
                value("http://localhost:3000")
            ]))
        );
        assert_eq!(
            AllowedOrigins::parse("http://[::1]:8080"),
            Ok(AllowedOrigins::List(vec![value("http://[::1]:8080")]))
        );
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for bad in [
            "chat.example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://",
            "https://example.com:0",
            "https://example.com:99999",
            "https://exa mple.com",
            "*, https://example.com",
        ] {
            assert!(
                AllowedOrigins::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn same_host_allows_its_own_pages_and_non_browsers_only() {
        let policy = AllowedOrigins::SameHost;
        let host = value("chat.example.com:8080");
        assert!(policy.allows(None, Some(&host)));
        assert!(policy.allows(Some(&value("http://chat.example.com:8080")), Some(&host)));
        assert!(policy.allows(Some(&value("https://CHAT.example.com:8080")), Some(&host)));
        assert!(!policy.allows(Some(&value("http://chat.example.com")), Some(&host)));
        assert!(!policy.allows(Some(&value("https://evil.example")), Some(&host)));
        assert!(!policy.allows(Some(&value("null")), Some(&host)));
        assert!(!policy.allows(Some(&value("http://chat.example.com:8080")), None));
    }

    #[test]
    fn a_list_adds_to_the_same_host() {
        let policy = AllowedOrigins::parse("https://app.example.com").unwrap();
        let host = value("api.example.com");
        assert!(policy.allows(Some(&value("https://app.example.com")), Some(&host)));
        assert!(policy.allows(Some(&value("https://api.example.com")), Some(&host)));
        assert!(!policy.allows(Some(&value("https://app.example.com.evil")), Some(&host)));
        assert!(AllowedOrigins::Any.allows(Some(&value("https://anything")), Some(&host)));
    }
}
