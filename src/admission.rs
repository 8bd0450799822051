//! Who a connection comes from, and how many connections each client
//! address holds: the per-address limit stops one host from taking a node's
//! whole connection budget. Shared by the accept loop, the WebSocket upgrade
//! and the REST `POST` limit, so that all three see one client the same way.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// What the per-address limits count by: an IPv4 address (an IPv4-mapped
/// IPv6 one included) whole, an IPv6 address by its /64. One host is handed
/// a whole /64 (SLAAC, privacy addresses), so counting IPv6 addresses one by
/// one would let it open practically unlimited connections.
pub(crate) fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(
                v6.to_bits() & (u128::MAX << IPV6_HOST_BITS),
            )),
        },
    }
}

/// The host part of an IPv6 address that one client may pick freely: the
/// low 64 bits (RFC 4291 interface identifiers).
const IPV6_HOST_BITS: u32 = 64;

/// Open connections per client address group ([`address_group`]) on this
/// node: TCP connections counted at accept time when there is no trusted
/// proxy (a WebSocket keeps its connection's permit, so both kinds together
/// stay within the limit), else WebSockets by the address the proxy names.
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

    /// A permit for one more connection from `ip`, unless its group is at
    /// the limit.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let ip = address_group(ip);
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

/// The permit a TCP connection took at accept time, offered to each of its
/// requests: a WebSocket upgrade takes it along into its session, so the
/// socket is counted once for as long as it stays open.
#[derive(Debug, Clone)]
pub(crate) struct HeldPermit(Arc<Mutex<Option<IpPermit>>>);

impl HeldPermit {
    /// Holds `permit` for the connection.
    pub(crate) fn new(permit: IpPermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    /// True while nobody took the permit.
    pub(crate) fn is_held(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The permit, moved out: its new owner gives it back on drop.
    pub(crate) fn take(&self) -> Option<IpPermit> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
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
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        for (address, group) in [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
            ("::1", "::"),
        ] {
            assert_eq!(address_group(ip(address)), ip(group), "{address}");
        }

        let per_ip = PerIp::new(2);
        let _a = per_ip.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = per_ip.try_acquire(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            per_ip.try_acquire(ip("2001:db8:1:2::77")).is_none(),
            "a third address of the same /64 is over the limit"
        );
        assert!(
            per_ip.try_acquire(ip("2001:db8:1:3::1")).is_some(),
            "the next /64 is someone else"
        );

        let _v4 = per_ip.try_acquire(ip("198.51.100.4")).unwrap();
        let _mapped = per_ip.try_acquire(ip("::ffff:198.51.100.4")).unwrap();
        assert!(
            per_ip.try_acquire(ip("198.51.100.4")).is_none(),
            "an IPv4-mapped address is the IPv4 address"
        );
    }

    #[test]
    fn a_held_permit_is_taken_once_and_counts_until_its_owner_drops_it() {
        let per_ip = PerIp::new(1);
        let a = ip("192.0.2.5");
        let held = HeldPermit::new(per_ip.try_acquire(a).unwrap());
        let seen_by_a_request = held.clone();
        assert!(seen_by_a_request.is_held());
        let session = seen_by_a_request.take().unwrap();
        assert!(!held.is_held() && held.take().is_none());
        drop(held);
        drop(seen_by_a_request);
        assert!(per_ip.try_acquire(a).is_none(), "the session still counts");
        drop(session);
        assert!(per_ip.try_acquire(a).is_some());
    }

    #[test]
    fn an_address_with_no_connections_leaves_no_entry() {
        let per_ip = PerIp::new(1);
        drop(per_ip.try_acquire(ip("192.0.2.9")).unwrap());
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
