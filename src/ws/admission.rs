//! Who a connection comes from, and how many connections each client
//! address holds: the per-address limit stops one host from taking a node's
//! whole connection budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderName};

/// The client's address: from the trusted proxy's header when one is
/// configured and present, else the TCP peer. For `X-Forwarded-For` the last
/// entry counts, the one the proxy itself appended: earlier entries come
/// from the client and can say anything.
pub(crate) fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: Option<&HeaderName>) -> IpAddr {
    trusted
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// Open WebSocket connections per client address on this node.
#[derive(Debug)]
pub(crate) struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's count, given back on drop.
#[derive(Debug)]
pub(crate) struct IpPermit {
    ip: IpAddr,
    owner: Arc<PerIp>,
}

impl PerIp {
    /// At most `limit` connections per address.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::default(),
        })
    }

    /// A permit for one more connection from `ip`, unless it is at the limit.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpPermit {
            ip,
            owner: self.clone(),
        })
    }

    /// The most connections one address may hold.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peer_counts_unless_a_trusted_header_names_the_client() {
        let peer = ip("10.0.0.1");
        let xff = HeaderName::from_static("x-forwarded-for");
        let mut headers = HeaderMap::new();
        headers.insert(&xff, HeaderValue::from_static("1.2.3.4, 203.0.113.7"));
        assert_eq!(
            client_ip(&headers, peer, None),
            peer,
            "header ignored unless trusted"
        );
        assert_eq!(client_ip(&headers, peer, Some(&xff)), ip("203.0.113.7"));

        let real = HeaderName::from_static("x-real-ip");
        headers.insert(&real, HeaderValue::from_static(" 2001:db8::1 "));
        assert_eq!(client_ip(&headers, peer, Some(&real)), ip("2001:db8::1"));

        headers.insert(&real, HeaderValue::from_static("not an address"));
        assert_eq!(client_ip(&headers, peer, Some(&real)), peer);
        assert_eq!(client_ip(&HeaderMap::new(), peer, Some(&real)), peer);
    }

    #[test]
    fn permits_stop_at_the_limit_and_come_back_on_drop() {
        let per_ip = PerIp::new(2);
        let a = ip("192.0.2.1");
        let first = per_ip.try_acquire(a).unwrap();
        let _second = per_ip.try_acquire(a).unwrap();
        assert!(per_ip.try_acquire(a).is_none());
        assert!(
            per_ip.try_acquire(ip("192.0.2.2")).is_some(),
            "other addresses unaffected"
        );
        drop(first);
        assert!(per_ip.try_acquire(a).is_some());
    }

    #[test]
    fn an_address_with_no_connections_leaves_no_entry() {
        let per_ip = PerIp::new(1);
        drop(per_ip.try_acquire(ip("192.0.2.9")).unwrap());
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
