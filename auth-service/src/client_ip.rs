//! The client's IP address: the TCP peer, or — when the peer is a trusted proxy — the rightmost
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of that are
//! client-supplied and could be forged, so they are never believed.

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

    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded_for
            .flat_map(|header| header.split(','))
            .filter_map(|entry| entry.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .unwrap_or(peer)
    }
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
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
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
        // Only proxies and garbage: the peer.
        let got = trusted.client_ip(ip("10.0.0.5"), ["10.2.2.2, not-an-ip"].into_iter());
        assert_eq!(got, ip("10.0.0.5"));
    }
}
