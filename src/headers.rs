//! Pure header rewriting between client and backend (RFC 9110 7.6.1 hop-by-hop rules and the
//! `X-Forwarded-*` family). No I/O; unit-tested here, benchmarked later as a hot path.
//!
//! A leaf (imports nothing of the crate): `proxy` rewrites with it and `upstream` strips
//! hop-by-hop headers before sending, so it sits below both (it was `proxy::headers`, which
//! made `upstream` import `proxy`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one connection, never the message, so a proxy must not forward them
/// (RFC 9110 7.6.1, plus the de-facto `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including every header named in `Connection` tokens.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names is cheaper than hashing seven
    // names for removal (this runs twice per proxied request).
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Collect names listed in Connection first: they may be arbitrary (`Connection: X-Foo`).
    // `close` names no header and `keep-alive`'s header goes below anyway: skipping them keeps
    // the common `Connection: close` from allocating a name and a list.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("close") && !token.eq_ignore_ascii_case("keep-alive")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers from a request, but keeps `TE: trailers`: it is end-to-end in
/// meaning (the client accepts trailers), HTTP/2 allows exactly that value, and gRPC servers
/// refuse requests without it.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap) {
    let trailers = headers.get_all(header::TE).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites a client request's headers for the backend: strips hop-by-hop headers, appends
/// the client to `X-Forwarded-For`, sets `X-Forwarded-Proto` and `X-Forwarded-Host`, and makes
/// sure `Host` is present (HTTP/2 clients send `:authority` instead, which HTTP/1.1 backends
/// cannot see). `Host` itself is kept as the client sent it.
///
/// A client without an address (`None`: a unix socket peer that sent no PROXY header) adds
/// nothing to `X-Forwarded-For`: a made-up address would mislead the backend's logs and ACLs.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    client: Option<&ClientIp>,
    scheme: &'static str,
    authority: Option<&str>,
) {
    strip_request_hop_by_hop(headers);
    if !headers.contains_key(header::HOST)
        && let Some(value) = authority.and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(client) = client {
        append_forwarded_for(headers, client);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// A client address as `X-Forwarded-For` writes it, formatted once per connection rather than
/// once per request (formatting showed in profiles of the keep-alive path).
#[derive(Debug, Clone)]
pub struct ClientIp {
    text: HeaderValue,
}

impl ClientIp {
    pub fn new(ip: IpAddr) -> ClientIp {
        use std::io::Write;
        // Formatted on the stack (the longest IPv6 text is 45 bytes): a `String` first cost
        // two allocations more per connection.
        let mut text = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        let written = write!(cursor, "{ip}").map(|()| cursor.position() as usize);
        let value = written
            .ok()
            .and_then(|length| HeaderValue::from_bytes(&text[..length]).ok());
        ClientIp {
            text: value.unwrap_or_else(|| HeaderValue::from_static("unknown")),
        }
    }
}

/// How many client addresses each thread keeps formatted (`ClientIp::recent`).
const RECENT_CLIENTS: usize = 64;

thread_local! {
    /// Direct-mapped by address: a collision replaces the older entry.
    static RECENT: std::cell::RefCell<[Option<(IpAddr, ClientIp)>; RECENT_CLIENTS]> =
        const { std::cell::RefCell::new([const { None }; RECENT_CLIENTS]) };
}

impl ClientIp {
    /// `new`, shared with recent connections from the same address (this thread's last 64
    /// or so): a connection then holds a reference, not two allocations of its own (the text
    /// and the count that sharing it takes). Clients behind one NAT, CDN or load balancer
    /// open many connections; a miss costs what `new` does.
    pub fn recent(ip: IpAddr) -> ClientIp {
        let slot = recent_slot(ip);
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            match &recent[slot] {
                Some((seen, client)) if *seen == ip => client.clone(),
                _ => {
                    let client = ClientIp::new(ip);
                    recent[slot] = Some((ip, client.clone()));
                    client
                }
            }
        })
    }
}

/// Where `ip` goes in the recent-clients table: a multiplicative hash of its bits.
fn recent_slot(ip: IpAddr) -> usize {
    let folded = match ip {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    };
    let spread = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (spread >> (64 - RECENT_CLIENTS.trailing_zeros())) as usize
}

/// Appends to an existing `X-Forwarded-For` chain (folding repeated headers into one, as
/// nginx's `$proxy_add_x_forwarded_for` does) or starts one.
fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientIp) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, client.text.clone());
        return;
    }
    let mut chain = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(text) = value.to_str() {
            let text = text.trim();
            if !text.is_empty() {
                chain.push_str(text);
                chain.push_str(", ");
            }
        }
    }
    chain.push_str(client.text.to_str().unwrap_or("unknown"));
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Drops the last `entries` addresses of the `X-Forwarded-For` chain (folding repeated
/// headers into one), removing the header when nothing is left: the client's own entry and
/// the trusted proxies after it, before the client address sluice decided on is appended
/// (`edge::client_address`), so the chain's rightmost entry is that address.
pub fn truncate_forwarded_for(headers: &mut HeaderMap, entries: usize) {
    let mut chain: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect();
    chain.truncate(chain.len().saturating_sub(entries));
    match HeaderValue::from_str(&chain.join(", ")) {
        Ok(value) if !chain.is_empty() => {
            headers.insert(X_FORWARDED_FOR, value);
        }
        _ => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
}

/// RFC 7239's `Forwarded`, appended as one more element after any the client sent (as for
/// `X-Forwarded-For`): `for=` the client (`"[v6]"` quoted, `unknown` without an address),
/// `proto=`, `host=` the request's `Host`, and `by=` the address the client reached, if
/// asked for.
pub fn append_forwarded(
    headers: &mut HeaderMap,
    client: Option<IpAddr>,
    by: Option<std::net::SocketAddr>,
    proto: &'static str,
) {
    let mut element = String::with_capacity(64);
    if let Some(by) = by {
        element.push_str("by=");
        push_node(&mut element, Some(by.ip()));
        element.push(';');
    }
    element.push_str("for=");
    push_node(&mut element, client);
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_value(&mut element, host);
    }
    element.push_str(";proto=");
    element.push_str(proto);
    let mut chain = String::new();
    for value in headers.get_all(header::FORWARDED) {
        if let Ok(text) = value.to_str() {
            let text = text.trim();
            if !text.is_empty() {
                chain.push_str(text);
                chain.push_str(", ");
            }
        }
    }
    chain.push_str(&element);
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(header::FORWARDED, value);
    }
}

/// A node: IPv4 as is, IPv6 bracketed and quoted (`:` is not a token character).
fn push_node(out: &mut String, ip: Option<IpAddr>) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = match ip {
        None => write!(out, "unknown"),
        Some(IpAddr::V4(v4)) => write!(out, "{v4}"),
        Some(IpAddr::V6(v6)) => write!(out, "\"[{v6}]\""),
    };
}

/// A value as a token when it is one, else a quoted string (RFC 7230 token / quoted-string).
fn push_value(out: &mut String, value: &str) {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_element_quotes_what_is_not_a_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example:8080"));
        append_forwarded(
            &mut headers,
            Some("192.0.2.7".parse().unwrap()),
            None,
            "https",
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=192.0.2.7;host=\"a.example:8080\";proto=https"
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example"));
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=198.51.100.1"),
        );
        let by: std::net::SocketAddr = "[2001:db8::2]:443".parse().unwrap();
        append_forwarded(
            &mut headers,
            Some("2001:db8::1".parse().unwrap()),
            Some(by),
            "http",
        );
        assert_eq!(
            headers[header::FORWARDED],
            "for=198.51.100.1, by=\"[2001:db8::2]\";for=\"[2001:db8::1]\";host=a.example;proto=http"
        );
        let mut headers = HeaderMap::new();
        append_forwarded(&mut headers, None, None, "http");
        assert_eq!(headers[header::FORWARDED], "for=unknown;proto=http");
    }

    fn client() -> ClientIp {
        ClientIp::new("192.0.2.7".parse().unwrap())
    }

    #[test]
    fn a_client_address_is_written_as_its_text_for_both_families() {
        for text in [
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.7",
        ] {
            assert_eq!(ClientIp::new(text.parse().unwrap()).text, text);
        }
    }

    #[test]
    fn recent_clients_share_one_text_and_collisions_keep_each_address_its_own() {
        let first = ClientIp::recent("198.51.100.1".parse().unwrap());
        let again = ClientIp::recent("198.51.100.1".parse().unwrap());
        assert_eq!(first.text, "198.51.100.1");
        assert_eq!(
            first.text.as_bytes().as_ptr(),
            again.text.as_bytes().as_ptr()
        );
        // Five times the table's size: slots are reused, and every answer is still right,
        // for addresses seen once, seen again, and of both families.
        for round in 0..2 {
            for n in 0..(RECENT_CLIENTS * 5) as u32 {
                let v4 = IpAddr::from(std::net::Ipv4Addr::from_bits(0x0a00_0000 + n * 7));
                let v6 = IpAddr::from(std::net::Ipv6Addr::from_bits(u128::from(n) << 64 | 1));
                for ip in [v4, v6] {
                    assert_eq!(ClientIp::recent(ip).text, ip.to_string(), "round {round}");
                }
            }
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_fixed_and_connection_listed_headers() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "s"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn a_request_keeps_te_trailers_only() {
        let mut headers = map(&[("te", "gzip, trailers"), ("connection", "te")]);
        rewrite_request_headers(&mut headers, Some(&client()), "http", None);
        assert_eq!(headers["te"], "trailers");
        let mut headers = map(&[("te", "gzip")]);
        rewrite_request_headers(&mut headers, Some(&client()), "http", None);
        assert!(!headers.contains_key("te"));
    }

    #[test]
    fn forwarded_headers_are_added_and_chained() {
        let mut headers = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        rewrite_request_headers(&mut headers, Some(&client()), "http", None);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(headers["host"], "example.com");
    }

    #[test]
    fn host_comes_from_authority_when_missing() {
        let mut headers = HeaderMap::new();
        rewrite_request_headers(
            &mut headers,
            Some(&ClientIp::new("::1".parse().unwrap())),
            "http",
            Some("h2.example:8080"),
        );
        assert_eq!(headers["host"], "h2.example:8080");
        assert_eq!(headers["x-forwarded-for"], "::1");
    }

    #[test]
    fn truncating_the_chain_drops_from_the_right() {
        let mut headers = map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        truncate_forwarded_for(&mut headers, 2);
        assert_eq!(headers[X_FORWARDED_FOR], "1.1.1.1");
        truncate_forwarded_for(&mut headers, 1);
        assert!(!headers.contains_key(X_FORWARDED_FOR));
    }

    #[test]
    fn a_client_without_address_adds_no_forwarded_for() {
        let mut headers = map(&[("host", "example.com")]);
        rewrite_request_headers(&mut headers, None, "https", None);
        assert!(!headers.contains_key("x-forwarded-for"));
        assert_eq!(headers["x-forwarded-proto"], "https");
    }
}
