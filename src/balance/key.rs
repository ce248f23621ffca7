//! Request facts to `PickContext`: the hash key (source IP, header, cookie, path, query
//! parameter) hashed to a `u64`, and the sticky cookie's backend token, read straight from the
//! borrowed request parts without allocating.
//!
//! On TCP only `source_ip` exists; a pool hashing on a header, cookie, path or query parameter
//! gets no key there and uses its `fallback` algorithm. The hash is fixed (FNV-1a plus a
//! murmur3 finalizer), not randomly seeded: two sluice instances, or one across restarts, must
//! send the same key to the same backend.

use super::PickContext;
use super::sticky;
use crate::config::{Algorithm, HashKey, PoolConfig};
use http::{HeaderMap, Uri, header};
use std::net::{IpAddr, SocketAddr};

impl PickContext {
    /// The context for one HTTP request to `pool`, from the request head and the client address.
    pub fn for_request(
        pool: &PoolConfig,
        headers: &HeaderMap,
        uri: &Uri,
        client: Option<SocketAddr>,
        now_micros: u64,
    ) -> PickContext {
        PickContext {
            key: hash_key_of(pool).and_then(|spec| request_key(spec, headers, uri, client)),
            sticky: pool.sticky.as_ref().and_then(|config| {
                cookie(headers, &config.cookie).and_then(sticky::parse_cookie_value)
            }),
            now_micros,
        }
    }

    /// The context for one TCP connection to `pool`: only a `source_ip` key exists here.
    /// A unix socket client (`client` is `None`) has no `source_ip` key: the pool's fallback
    /// algorithm picks, as for a request without the configured header.
    pub fn for_connection(
        pool: &PoolConfig,
        client: Option<SocketAddr>,
        now_micros: u64,
    ) -> PickContext {
        PickContext {
            key: hash_key_of(pool).and_then(|spec| connection_key(spec, client)),
            sticky: None,
            now_micros,
        }
    }
}

fn hash_key_of(pool: &PoolConfig) -> Option<&HashKey> {
    match &pool.algorithm {
        Algorithm::Hash(options) => Some(&options.key),
        _ => None,
    }
}

/// The hashed key of an HTTP request; `None` when the request lacks it (or it is empty).
pub fn request_key(
    spec: &HashKey,
    headers: &HeaderMap,
    uri: &Uri,
    client: Option<SocketAddr>,
) -> Option<u64> {
    let value: &[u8] = match spec {
        HashKey::SourceIp => return client.map(|c| ip_key(c.ip())),
        HashKey::Header(name) => headers.get(name)?.as_bytes(),
        HashKey::Cookie(name) => cookie(headers, name)?,
        HashKey::Path => uri.path().as_bytes(),
        HashKey::Query(name) => query_param(uri.query()?, name)?,
    };
    (!value.is_empty()).then(|| hash_bytes(value))
}

/// The hashed key of a TCP connection: only `source_ip` is known before any byte is read.
pub fn connection_key(spec: &HashKey, client: Option<SocketAddr>) -> Option<u64> {
    match spec {
        HashKey::SourceIp => client.map(|c| ip_key(c.ip())),
        _ => None,
    }
}

/// The address only, never the port (a client's ports change per connection), and an IPv4
/// client seen through a dual-stack socket (`::ffff:a.b.c.d`) hashes like plain IPv4.
fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

/// A stable 64-bit hash: FNV-1a over the bytes, then murmur3's finalizer, because FNV alone
/// leaves the high bits of short keys poorly mixed, and the ring compares whole words.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

pub(super) fn mix(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The value of cookie `name` from the request's `Cookie` headers (one or several, `a=1; b=2`),
/// without surrounding double quotes.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (key.trim_ascii() == name.as_bytes()).then(|| {
                let value = value[1..].trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
}

/// The raw value of the first `name=` parameter (not percent-decoded: `a%20b` and `a+b` are
/// different keys, which only matters if clients vary their encoding).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const CLIENT: &str = "192.0.2.7:51000";

    fn key(spec: &str, headers: &HeaderMap, uri: &str) -> Option<u64> {
        let spec = crate::config::parse_hash_key(spec).unwrap();
        request_key(
            &spec,
            headers,
            &uri.parse().unwrap(),
            Some(CLIENT.parse().unwrap()),
        )
    }

    #[test]
    fn each_key_source_reads_its_part_of_the_request() {
        let headers = request(&[
            ("x-user", "alice"),
            ("cookie", "a=1; session=\"s42\""),
            ("cookie", "theme=dark"),
        ]);
        let uri = "/cart/items?lang=fr&user=bob";
        assert_eq!(
            key("header:X-User", &headers, uri),
            Some(hash_bytes(b"alice"))
        );
        assert_eq!(
            key("cookie:session", &headers, uri),
            Some(hash_bytes(b"s42"))
        );
        assert_eq!(
            key("cookie:theme", &headers, uri),
            Some(hash_bytes(b"dark"))
        );
        assert_eq!(key("path", &headers, uri), Some(hash_bytes(b"/cart/items")));
        assert_eq!(key("query:user", &headers, uri), Some(hash_bytes(b"bob")));
        assert_eq!(
            key("source_ip", &headers, uri),
            Some(hash_bytes(&[192, 0, 2, 7]))
        );
    }

    #[test]
    fn missing_or_empty_keys_are_none_so_the_fallback_runs() {
        let headers = request(&[("x-user", ""), ("cookie", "sessionx=1")]);
        assert_eq!(key("header:X-User", &headers, "/"), None);
        assert_eq!(key("header:X-Other", &headers, "/"), None);
        assert_eq!(key("cookie:session", &headers, "/"), None);
        assert_eq!(key("query:user", &headers, "/?username=x&user"), None);
        let client: SocketAddr = CLIENT.parse().unwrap();
        let header = crate::config::parse_hash_key("header:X-User").unwrap();
        assert_eq!(connection_key(&header, Some(client)), None);
        // A unix socket client has no address: no source_ip key, the fallback picks.
        assert_eq!(connection_key(&HashKey::SourceIp, None), None);
    }

    #[test]
    fn source_ip_ignores_the_port_and_the_v4_mapped_form() {
        let v4: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:2".parse().unwrap();
        assert_eq!(
            connection_key(&HashKey::SourceIp, Some(v4)),
            connection_key(&HashKey::SourceIp, Some(mapped))
        );
    }

    #[test]
    fn contexts_fill_only_what_the_pool_uses() {
        let text = "listeners:\n  web: {bind: '127.0.0.1:0', pool: app}\npools:\n  app:\n    algorithm: hash\n    hash: {key: 'cookie:uid'}\n    sticky: {cookie: lb}\n    backends: [127.0.0.1:9001]\n  plain:\n    backends: [127.0.0.1:9002]\n";
        let config = Config::parse(text, "t.yaml").unwrap();
        let value = sticky::cookie_value(&"127.0.0.1:9001".parse().unwrap());
        let headers = request(&[("cookie", &format!("uid=7; lb={value}"))]);
        let uri: Uri = "/".parse().unwrap();
        let client = Some(CLIENT.parse().unwrap());
        let app = PickContext::for_request(&config.pools["app"], &headers, &uri, client, 5);
        assert_eq!(app.key, Some(hash_bytes(b"7")));
        assert_eq!(
            app.sticky,
            Some(sticky::token(&"127.0.0.1:9001".parse().unwrap()))
        );
        assert_eq!(app.now_micros, 5);
        let plain = PickContext::for_request(&config.pools["plain"], &headers, &uri, client, 5);
        assert_eq!((plain.key, plain.sticky), (None, None));
        let tcp = PickContext::for_connection(&config.pools["app"], client, 5);
        assert_eq!((tcp.key, tcp.sticky), (None, None));
    }
}
