//! The one client address of a request, decided once and used by everything that names the
//! client: access rules, rate limits, `source_ip` hashing, `X-Forwarded-For`/`Forwarded`
//! towards the backend, the access log and `/status`.
//!
//! Pure: the connection's address (already the PROXY header's when there was one) and the
//! request's `X-Forwarded-For` lines in, an address out. Decision (nginx's `real_ip_recursive
//! on`, Envoy's trusted-hops walk): only when the connection's own peer is a trusted proxy is
//! `X-Forwarded-For` read at all, from the right, skipping every hop that is itself a trusted
//! proxy; the first untrusted hop is the client. So a client that is not behind a trusted
//! proxy cannot move itself to another address by writing the header (traefik#7129), and a
//! client behind a CDN is not bucketed with every other client of that CDN (traefik#8052).
//!
//! Edge cases, decided:
//! - every hop trusted: the leftmost one is the client (nginx does the same);
//! - a hop that is not an address (`unknown`, garbage, an obfuscated RFC 7239 name): the walk
//!   stops and the last trusted hop is the client; whatever wrote the garbage was reached
//!   through it, and nothing left of garbage can be believed;
//! - `a.b.c.d:port` and `[v6]:port` forms are read as their address (some proxies add ports).

use crate::config::Cidr;
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The connection (or its PROXY header).
    Peer,
    /// `X-Forwarded-For`, with this many rightmost entries being trusted proxies that were
    /// walked past (they are dropped from the chain sent upstream, so that its rightmost
    /// entry is the client sluice decided on).
    ForwardedFor { trusted_hops: usize },
}

/// A request's client: its address (`None`: a unix socket peer without a PROXY header) and
/// where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: Option<IpAddr>,
    pub source: Source,
}

impl ClientAddress {
    pub fn peer(ip: Option<IpAddr>) -> ClientAddress {
        ClientAddress {
            ip,
            source: Source::Peer,
        }
    }
}

/// Decides a request's client address. `forwarded_for`: the request's `X-Forwarded-For`
/// lines in order (only read when the peer is trusted).
pub fn resolve<'h>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'h HeaderValue>,
    trusted: &[Cidr],
) -> ClientAddress {
    let Some(peer_ip) = peer else {
        return ClientAddress::peer(None);
    };
    if trusted.is_empty() || !is_trusted(peer_ip, trusted) {
        return ClientAddress::peer(Some(peer_ip));
    }
    let mut client = peer_ip;
    let mut walked = 0usize;
    // Lines from the last, entries in each from the right: together the chain from the right.
    for line in forwarded_for.rev() {
        let Ok(text) = line.to_str() else {
            return finish(client, walked);
        };
        for entry in text.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_hop(entry) else {
                return finish(client, walked);
            };
            walked += 1;
            client = ip;
            if !is_trusted(ip, trusted) {
                return ClientAddress {
                    ip: Some(ip),
                    source: Source::ForwardedFor {
                        trusted_hops: walked - 1,
                    },
                };
            }
        }
    }
    finish(client, walked)
}

/// The walk ended on a trusted hop (all trusted, garbage, or no header): that hop is the
/// client; `walked` entries were read, the last of which is it.
fn finish(client: IpAddr, walked: usize) -> ClientAddress {
    match walked {
        0 => ClientAddress::peer(Some(client)),
        n => ClientAddress {
            ip: Some(client),
            source: Source::ForwardedFor {
                trusted_hops: n - 1,
            },
        },
    }
}

fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|cidr| cidr.contains(ip))
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn run(peer: &str, lines: &[&str], trusted: &[&str]) -> ClientAddress {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).unwrap())
            .collect();
        resolve(Some(peer.parse().unwrap()), values.iter(), &cidrs(trusted))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let got = run("203.0.113.9", &["198.51.100.1"], &[]);
        assert_eq!(got, ClientAddress::peer(ip("203.0.113.9")));
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let got = run("203.0.113.9", &["10.0.0.1, 198.51.100.1"], &["10.0.0.0/8"]);
        assert_eq!(got, ClientAddress::peer(ip("203.0.113.9")));
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops_only() {
        // spoofed, real client, CDN edge (trusted); peer is the CDN's other hop.
        let got = run(
            "10.0.0.2",
            &["1.1.1.1, 198.51.100.7", "10.9.9.9"],
            &["10.0.0.0/8"],
        );
        assert_eq!(got.ip, ip("198.51.100.7"));
        assert_eq!(got.source, Source::ForwardedFor { trusted_hops: 1 });
    }

    #[test]
    fn a_trusted_peer_without_a_header_is_the_client() {
        let got = run("10.0.0.2", &[], &["10.0.0.0/8"]);
        assert_eq!(got, ClientAddress::peer(ip("10.0.0.2")));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let got = run("10.0.0.2", &["10.1.1.1, 10.2.2.2"], &["10.0.0.0/8"]);
        assert_eq!(got.ip, ip("10.1.1.1"));
        assert_eq!(got.source, Source::ForwardedFor { trusted_hops: 1 });
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let got = run(
            "10.0.0.2",
            &["198.51.100.7, unknown, 10.3.3.3"],
            &["10.0.0.0/8"],
        );
        assert_eq!(got.ip, ip("10.3.3.3"));
        let got = run("10.0.0.2", &["nonsense"], &["10.0.0.0/8"]);
        assert_eq!(got, ClientAddress::peer(ip("10.0.0.2")));
    }

    #[test]
    fn ports_brackets_ipv6_and_mapped_addresses() {
        let trusted = ["10.0.0.0/8", "2001:db8::/32"];
        assert_eq!(
            run("10.0.0.2", &["198.51.100.7:4711"], &trusted).ip,
            ip("198.51.100.7")
        );
        assert_eq!(
            run("10.0.0.2", &["[2001:db9::1]:80"], &trusted).ip,
            ip("2001:db9::1")
        );
        assert_eq!(
            run("2001:db8::5", &["2001:db9::1, 2001:db8::7"], &trusted).ip,
            ip("2001:db9::1")
        );
        // A dual-stack socket's ::ffff:10.0.0.2 is the trusted IPv4 proxy.
        assert_eq!(
            run("::ffff:10.0.0.2", &["::ffff:198.51.100.7"], &trusted).ip,
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_unix_peer_has_no_address() {
        let none: [HeaderValue; 0] = [];
        assert_eq!(
            resolve(None, none.iter(), &cidrs(&["10.0.0.0/8"])),
            ClientAddress::peer(None)
        );
    }
}
