//! The PROXY protocol wire format (HAProxy's spec, versions 1 and 2): a pure, incremental
//! parser for headers that trusted peers put in front of a connection, and the encoder for the
//! header sluice writes to backends (`send_proxy`).
//!
//! Pure: no I/O. The parser never panics and never reads past the header: it says how many
//! bytes it needs in total, so the caller can read exactly that much from the socket and hand
//! the connection on with no byte of the payload consumed. What the connection does with the
//! result (deadline, trust) lives in `proxy::accept`.

use crate::config::SendProxy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound for a v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The shortest header of either version ("PROXY UNKNOWN\r\n" is 15, v2 is at least 16), so
/// the first read can ask for this much without waiting on a client that sent less.
const FIRST_READ: usize = 12;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The original client (`source`) and the address it connected to (`destination`).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (the proxy's own health check), v1 `UNKNOWN`, or an address family this
    /// proxy does not forward (unix, unspecified): the peer's own address stands.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Call again once the buffer holds at least `needed` bytes in total.
    Incomplete { needed: usize },
    /// The header, and how many bytes of the buffer it took.
    Complete { header: Header, consumed: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Parses the start of a connection. `Incomplete` asks for more bytes; an error means the
/// connection must be closed.
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    let probe = buf.len().min(FIRST_READ);
    if buf[..probe] == V2_SIGNATURE[..probe] {
        return if buf.len() < FIRST_READ {
            Ok(Parsed::Incomplete { needed: FIRST_READ })
        } else {
            parse_v2(buf)
        };
    }
    let probe = buf.len().min(V1_PREFIX.len());
    if buf[..probe] == V1_PREFIX[..probe] {
        return parse_v1(buf);
    }
    Err(ParseError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(ParseError::V1("longer than 107 bytes"));
        }
        return Ok(Parsed::Incomplete {
            needed: (buf.len() + 1).max(FIRST_READ),
        });
    };
    if newline == 0 || window[newline - 1] != b'\r' {
        return Err(ParseError::V1("line must end with CRLF"));
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..newline - 1])
        .map_err(|_| ParseError::V1("not ASCII"))?;
    let consumed = newline + 1;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ParseError::V1("missing field"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(ParseError::V1("too many fields"));
            }
            let ip = |text: &str| -> Result<IpAddr, ParseError> {
                if family == "TCP4" {
                    text.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    text.parse::<Ipv6Addr>().map(IpAddr::V6)
                }
                .map_err(|_| ParseError::V1("bad address"))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(src)?, v1_port(sport)?),
                destination: SocketAddr::new(ip(dst)?, v1_port(dport)?),
            }
        }
        _ => return Err(ParseError::V1("unknown protocol family")),
    };
    Ok(Parsed::Complete { header, consumed })
}

/// Decimal 0..65535 without sign or leading zeros, as the spec writes ports.
fn v1_port(text: &str) -> Result<u16, ParseError> {
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(ParseError::V1("bad port"));
    }
    text.parse().map_err(|_| ParseError::V1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ParseError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(Parsed::Incomplete { needed: 16 });
    };
    let (version_command, family) = (fixed[12], fixed[13]);
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if version_command >> 4 != 2 {
        return Err(ParseError::V2("version is not 2"));
    }
    let total = 16 + length;
    let Some(body) = buf.get(16..total) else {
        return Ok(Parsed::Incomplete { needed: total });
    };
    let header = match version_command & 0x0f {
        0x0 => Header::Local,
        0x1 => v2_addresses(family, body)?,
        _ => return Err(ParseError::V2("unknown command")),
    };
    Ok(Parsed::Complete {
        header,
        consumed: total,
    })
}

/// The address block of a v2 `PROXY` command; TLVs after it are skipped.
fn v2_addresses(family: u8, body: &[u8]) -> Result<Header, ParseError> {
    let short = ParseError::V2("address block shorter than its family needs");
    let port = |bytes: &[u8]| u16::from_be_bytes([bytes[0], bytes[1]]);
    match family >> 4 {
        // AF_INET, over TCP (1) or UDP (2).
        0x1 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                destination: SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
            })
        }
        0x2 => {
            let a = body.get(..36).ok_or(short)?;
            let ip = |b: &[u8]| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                destination: SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
            })
        }
        // AF_UNSPEC and AF_UNIX: nothing an IP proxy can use.
        0x0 | 0x3 => Ok(Header::Local),
        _ => Err(ParseError::V2("unknown address family")),
    }
}

/// The header to write in front of an upstream connection for a client `source` that
/// connected to `destination`. Mixed families are written as IPv6 (IPv4 mapped), since
/// both versions need the two addresses in one family.
pub fn encode(version: SendProxy, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        SendProxy::V1 => encode_v1(source, destination),
        SendProxy::V2 => encode_v2(source, destination),
    }
}

/// A header that carries no addresses (v1 `UNKNOWN`, v2 `LOCAL`): for clients that have
/// none, such as those on a unix socket.
pub fn encode_unknown(version: SendProxy) -> Vec<u8> {
    match version {
        SendProxy::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        SendProxy::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // Version 2, command LOCAL; family unspecified; no address bytes.
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            out
        }
    }
}

fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (s, d) = (source.ip().to_canonical(), destination.ip().to_canonical());
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    let (s, d) = match (s, d) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (s, d),
        _ => (v6(s), v6(d)),
    };
    (
        SocketAddr::new(s, source.port()),
        SocketAddr::new(d, destination.port()),
    )
}

pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let octets = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6.octets(),
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&octets(si));
            out.extend_from_slice(&octets(di));
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
