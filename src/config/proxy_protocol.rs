//! Validated PROXY protocol settings: `proxy_protocol:` on a listener (accept a header from
//! trusted peers) and `send_proxy:` on a pool (write one to backends). Pure config types and
//! the CIDR check; the wire format lives in `crate::proxy_protocol`.

use super::Validator;
use super::file::{RawProxyProtocol, Text};
use crate::error::ConfigError;
use serde_saphyr::Spanned;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptProxy {
    /// Peers that must send a PROXY header. Empty: every peer (HAProxy's `accept-proxy`).
    /// Connections from other peers are served as plain connections: their own address is
    /// the client address and no header is parsed, so they cannot spoof one.
    pub trusted: Vec<Cidr>,
}

impl AcceptProxy {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.iter().any(|cidr| cidr.contains(peer))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    V1,
    V2,
}

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let bad = || format!("invalid address block {text:?}: expected e.g. 10.0.0.0/8 or ::1/128");
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn prefix_equal(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl Validator<'_> {
    pub(super) fn accept_proxy(
        &self,
        path: &str,
        raw: Option<&Spanned<RawProxyProtocol>>,
    ) -> Result<Option<AcceptProxy>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        if raw.value.mode.trim() != "accept" {
            return Err(self.error_at(
                raw.referenced,
                format!("{path}.proxy_protocol"),
                format!(
                    "unknown mode {:?}: the only mode is `accept` (omit the key to turn it off)",
                    raw.value.mode
                ),
            ));
        }
        let mut trusted = Vec::new();
        for (index, text) in raw.value.trusted.iter().flatten().enumerate() {
            trusted.push(Cidr::parse(text).map_err(|message| {
                self.error_at(
                    raw.referenced,
                    format!("{path}.proxy_protocol.trusted[{index}]"),
                    message,
                )
            })?);
        }
        Ok(Some(AcceptProxy { trusted }))
    }

    pub(super) fn send_proxy(
        &self,
        path: &str,
        raw: Option<&Text>,
    ) -> Result<Option<SendProxy>, ConfigError> {
        match raw.map(|t| (t, t.value.trim())) {
            None => Ok(None),
            Some((_, "v1")) => Ok(Some(SendProxy::V1)),
            Some((_, "v2")) => Ok(Some(SendProxy::V2)),
            Some((text, other)) => Err(self.error_at(
                text.referenced,
                format!("{path}.send_proxy"),
                format!("unknown PROXY protocol version {other:?}: use v1 or v2"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.200.3.4".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(!block.contains("::1".parse().unwrap()));
        let odd = Cidr::parse("192.168.4.0/22").unwrap();
        assert!(odd.contains("192.168.7.255".parse().unwrap()));
        assert!(!odd.contains("192.168.8.0".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::/129", "1.2.3.4/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
