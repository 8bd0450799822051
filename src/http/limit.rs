//! The rate limit on every `POST` under `/api`: one token bucket per user
//! (the token's `sub`) with auth on, per client address without it, at
//! `CHORUS_RATE_LIMIT`/`CHORUS_RATE_BURST`, per node like the WebSocket
//! limits. In anonymous mode the body's `user` is the client's claim, so it
//! cannot be the key: a client would get a fresh bucket per name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::admission::{address_group, client_ip};
use crate::api_error::ApiError;
use crate::auth::Identity;
use crate::rate::RateKey;
use crate::state::AppState;
use crate::telemetry;

/// The key for a request: its identity when auth is on, else its address.
fn rate_key(identity: Option<&Identity>, ip: IpAddr) -> RateKey {
    match identity {
        Some(identity) => RateKey::User(identity.user.clone()),
        None => RateKey::Address(address_group(ip)),
    }
}

/// Takes a token for every `POST` before its handler runs; other methods
/// pass untouched. Mounted as a route layer on the whole API, inside the
/// token check (it needs the identity), so every future `POST` route is
/// limited without opting in.
pub(super) async fn limit_posts(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    // The accept loop always sets the peer; a router served some other way
    // (no peer known) shares one bucket rather than going unlimited.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = client_ip(request.headers(), peer, state.proxy_header.as_ref());
    let key = rate_key(request.extensions().get::<Identity>(), ip);
    if let Err(wait) = state.posts.try_take(key.clone(), Instant::now()) {
        metrics::counter!(telemetry::RATE_LIMITED, "kind" => "rest").increment(1);
        return Err(ApiError::RateLimited(wait));
    }
    // For a handler with a limit of its own on the same key (a DM's).
    request.extensions_mut().insert(key);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserName;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_identity_is_the_key_whatever_the_address() {
        let alice = Identity {
            user: UserName::parse("alice").unwrap(),
            expires: None,
        };
        assert_eq!(
            rate_key(Some(&alice), ip("192.0.2.1")),
            rate_key(Some(&alice), ip("192.0.2.2"))
        );
        assert_eq!(
            rate_key(None, ip("192.0.2.1")),
            RateKey::Address(ip("192.0.2.1"))
        );
        assert_eq!(
            rate_key(None, ip("2001:db8::1")),
            rate_key(None, ip("2001:db8::ffff:2")),
            "one /64 is one client"
        );
    }
}
