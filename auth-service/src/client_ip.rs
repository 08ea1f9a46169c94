//! The client's IP address: the TCP peer, or — when the peer is a trusted proxy — the address
//! found by walking `X-Forwarded-For` from the right past trusted proxies. Entries left of the
//! first untrusted one are client-supplied and could be forged, so they are never believed.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4
//! peer) are that IPv4 address everywhere: in `TRUSTED_PROXIES` matching and in the limits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
#[derive(Clone, Default, Debug)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

impl TrustedProxies {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Walks the forwarded hops from the right (the entry the nearest proxy wrote) while they
    /// are trusted proxies. The client is the first untrusted address. An entry that is not an
    /// address stops the walk: what is left of it cannot be attributed to any hop we trust, so
    /// the client is the hop just right of it, the one that wrote it. Skipping it instead would
    /// let a client put any address in front of a garbage entry and be believed.
    ///
    /// The headers are read as bytes and split into entries first: a proxy appends its entry to
    /// the line the client sent, so a byte the client put in its own part (one outside visible
    /// ASCII, say) must spoil that entry only, never the trusted entries right of it.
    pub fn client_ip(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = impl AsRef<[u8]>>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let headers: Vec<_> = forwarded_for.collect();
        let entries: Vec<&[u8]> = headers
            .iter()
            .flat_map(|header| header.as_ref().split(|byte| *byte == b','))
            .collect();
        for entry in entries.into_iter().rev() {
            let Some(hop) = std::str::from_utf8(entry).ok().and_then(parse_hop) else {
                break;
            };
            client = hop;
            if !self.contains(hop) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`203.0.113.9:4711`,
/// `[2001:db8::1]:4711`, as some load balancers write it).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    TrustedProxies: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        let forwarded = parts.headers.get_all("x-forwarded-for").iter();
        Ok(ClientIp(
            TrustedProxies::from_ref(state).client_ip(peer, forwarded),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(Arc::new(nets.iter().map(|n| n.parse().unwrap()).collect()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), ["1.2.3.4"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // A forged left-most entry does not win.
        let got = trusted.client_ip(
            ip("10.0.0.5"),
            ["6.6.6.6, 198.51.100.7, 10.1.1.1"].into_iter(),
        );
        assert_eq!(got, ip("198.51.100.7"));
        // Several headers are one list.
        let got = trusted.client_ip(ip("10.0.0.5"), ["6.6.6.6", "198.51.100.8"].into_iter());
        assert_eq!(got, ip("198.51.100.8"));
        // Ports, as some load balancers write them.
        let got = trusted.client_ip(ip("10.0.0.5"), ["198.51.100.9:4711"].into_iter());
        assert_eq!(got, ip("198.51.100.9"));
        let got = trusted.client_ip(ip("10.0.0.5"), ["[2001:db8::9]:4711"].into_iter());
        assert_eq!(got, ip("2001:db8::9"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_stops_the_walk() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // Garbage written by the client in front of a forged address: the hop right of the
        // garbage (the proxy that received it) is the client, never the forged address.
        let got = trusted.client_ip(ip("10.0.0.5"), ["6.6.6.6, not-an-ip, 10.1.1.1"].into_iter());
        assert_eq!(got, ip("10.1.1.1"));
        // Garbage right at the end: the peer itself.
        let got = trusted.client_ip(ip("10.0.0.5"), ["6.6.6.6, unknown"].into_iter());
        assert_eq!(got, ip("10.0.0.5"));
        let got = trusted.client_ip(ip("10.0.0.5"), ["6.6.6.6,"].into_iter());
        assert_eq!(got, ip("10.0.0.5"));
    }

    #[test]
    fn a_byte_outside_ascii_spoils_its_own_entry_only() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // What a proxy makes of a client's header with a stray byte: the client's part, then
        // the address the proxy saw. The proxy's entry still names the client.
        let line = axum::http::HeaderValue::from_bytes(b"6.6.6.\xff6, 198.51.100.7").unwrap();
        assert!(line.to_str().is_err(), "not a visible-ASCII header");
        assert_eq!(
            trusted.client_ip(ip("10.0.0.5"), [&line].into_iter()),
            ip("198.51.100.7")
        );
        // Such a byte inside a hop the walk reaches stops it there, like any other garbage.
        let line = axum::http::HeaderValue::from_bytes(b"198.51.100.7, 10.\xff.1.1").unwrap();
        assert_eq!(
            trusted.client_ip(ip("10.0.0.5"), [&line].into_iter()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn only_trusted_hops_make_the_leftmost_one_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let got = trusted.client_ip(ip("10.0.0.5"), ["10.2.2.2, 10.3.3.3"].into_iter());
        assert_eq!(got, ip("10.2.2.2"));
        assert_eq!(
            trusted.client_ip(ip("10.0.0.5"), std::iter::empty::<&str>()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // A mapped peer inside an IPv4 trusted range is trusted…
        let got = trusted.client_ip(ip("::ffff:10.0.0.5"), ["::ffff:198.51.100.7"].into_iter());
        // …and a mapped forwarded client is reported as IPv4.
        assert_eq!(got, ip("198.51.100.7"));
        assert!(got.is_ipv4());
        // A mapped hop inside the trusted range is walked past like its IPv4 form.
        let got = trusted.client_ip(
            ip("10.0.0.5"),
            ["198.51.100.8, ::ffff:10.9.9.9"].into_iter(),
        );
        assert_eq!(got, ip("198.51.100.8"));
        // An untrusted mapped peer is the IPv4 client.
        assert_eq!(
            TrustedProxies::default()
                .client_ip(ip("::ffff:203.0.113.1"), std::iter::empty::<&str>()),
            ip("203.0.113.1")
        );
    }
}
