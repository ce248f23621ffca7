//! Sticky sessions by cookie: the pure helpers that pin an HTTP client to a backend while that
//! backend is available (HAProxy `cookie ... insert`, nginx Plus `sticky cookie`).
//!
//! The cookie value is a token, 16 hex digits of a fixed hash of the backend's address, so it
//! does not show the raw address; being unsalted, it can be matched against guessed
//! addresses, and it is the same on every sluice instance (any node honours any node's cookie).
//!
//! The proxy's part, per request on a pool with `sticky:`:
//! 1. `PickContext::for_request` reads the cookie into `context.sticky`;
//! 2. `Balancer::pick` returns the pinned backend if it is still in the pool and available,
//!    otherwise runs the pool's algorithm;
//! 3. on the response, `set_cookie_if_needed(pool.config.sticky.as_ref(), &context, address)`
//!    gives the `Set-Cookie` value to append when the client is not pinned to the backend
//!    that served it (first visit, or its backend went away).
//!
//! Sticky is HTTP only; a TCP listener's pool ignores it.

use super::PickContext;
use super::key::{hash_bytes, mix};
use crate::config::BackendAddress;
use crate::config::StickyConfig;
use http::HeaderValue;

/// The token a sticky cookie carries for a backend.
pub fn token(address: &BackendAddress) -> u64 {
    let address = match address {
        BackendAddress::Inet(address) => address,
        BackendAddress::Unix(path) => {
            return mix(hash_bytes(path.as_os_str().as_encoded_bytes()) ^ 0x5354_4943_4b59);
        }
    };
    // The port is part of the identity (two backends may share an IP); the extra mix keeps
    // the token unrelated to the hash-ring points of the same address.
    let mut bytes = [0u8; 18];
    match address.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => bytes[12..16].copy_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => bytes[..16].copy_from_slice(&v6.octets()),
    }
    bytes[16..].copy_from_slice(&address.port().to_be_bytes());
    mix(hash_bytes(&bytes) ^ 0x5354_4943_4b59)
}

/// The cookie value naming a backend: its token as 16 lowercase hex digits.
pub fn cookie_value(address: &BackendAddress) -> String {
    format!("{:016x}", token(address))
}

/// The token in a cookie value, or `None` if it is not one of ours (then the request is
/// balanced as if it had no cookie).
pub fn parse_cookie_value(value: &[u8]) -> Option<u64> {
    if value.len() != 16 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// `NAME=TOKEN; Path=/; HttpOnly; SameSite=Lax[; Secure][; Max-Age=SECONDS]`. `Secure`
/// when the request came over TLS (`tls`) unless `secure:` says always or never. `None` only
/// for a cookie name that is not an HTTP token, which config validation already refuses.
pub fn set_cookie(
    config: &StickyConfig,
    backend: &BackendAddress,
    tls: bool,
) -> Option<HeaderValue> {
    let mut text = format!(
        "{}={}; Path=/; HttpOnly; SameSite={}",
        config.cookie,
        cookie_value(backend),
        config.same_site.as_str()
    );
    // SameSite=None without Secure is dropped by browsers: it implies Secure.
    let none = config.same_site == crate::config::SameSite::None;
    if config.secure.unwrap_or(tls || none) {
        text.push_str("; Secure");
    }
    if let Some(ttl) = config.ttl {
        // Max-Age counts whole seconds; round a sub-second ttl up rather than to "expire now".
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        text.push_str(&format!("; Max-Age={seconds}"));
    }
    HeaderValue::try_from(text).ok()
}

/// The `Set-Cookie` value to send with a response from `served_by`, or `None` when the pool is
/// not sticky or the client's cookie already names that backend. A pinned client keeps the
/// cookie it has, so `ttl` counts from when it was issued, not from the last request.
pub fn set_cookie_if_needed(
    config: Option<&StickyConfig>,
    context: &PickContext,
    served_by: &BackendAddress,
    tls: bool,
) -> Option<HeaderValue> {
    let config = config?;
    if context.sticky == Some(token(served_by)) {
        return None;
    }
    set_cookie(config, served_by, tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Balancer;
    use crate::balance::testing::{fill, pool, rng};
    use crate::config::Algorithm;
    use std::time::Duration;

    fn config(ttl: Option<Duration>) -> StickyConfig {
        StickyConfig {
            cookie: "SLUICE".into(),
            ttl,
            same_site: crate::config::SameSite::Lax,
            secure: None,
        }
    }

    #[test]
    fn cookie_round_trips_and_hides_the_address() {
        let address: BackendAddress = "10.1.2.3:8080".parse().unwrap();
        let value = cookie_value(&address);
        assert_eq!(value.len(), 16);
        assert!(!value.contains("10.1.2.3") && !value.contains("0a010203"));
        assert_eq!(parse_cookie_value(value.as_bytes()), Some(token(&address)));
        assert_ne!(token(&address), token(&"10.1.2.3:8081".parse().unwrap()));
        assert_eq!(parse_cookie_value(b"not-a-token"), None);
        assert_eq!(parse_cookie_value(b"zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn set_cookie_has_path_httponly_and_max_age() {
        let address: BackendAddress = "10.1.2.3:8080".parse().unwrap();
        let header =
            set_cookie(&config(Some(Duration::from_millis(1500))), &address, false).unwrap();
        assert_eq!(
            header.to_str().unwrap(),
            format!(
                "SLUICE={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2",
                cookie_value(&address)
            )
        );
        let session = set_cookie(&config(None), &address, false).unwrap();
        assert!(!session.to_str().unwrap().contains("Max-Age"));
    }

    #[test]
    fn secure_over_tls_and_same_site_as_configured() {
        use crate::config::SameSite;
        let address: BackendAddress = "10.1.2.3:8080".parse().unwrap();
        let text = |same_site, secure, tls| {
            let config = StickyConfig {
                same_site,
                secure,
                ..config(None)
            };
            let value = set_cookie(&config, &address, tls).unwrap();
            value
                .to_str()
                .unwrap()
                .split_once("; ")
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(
            text(SameSite::Lax, None, true),
            "Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            text(SameSite::Lax, None, false),
            "Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            text(SameSite::Strict, Some(true), false),
            "Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            text(SameSite::Lax, Some(false), true),
            "Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            text(SameSite::None, None, false),
            "Path=/; HttpOnly; SameSite=None; Secure",
            "None implies Secure"
        );
    }

    #[test]
    fn pins_while_available_then_rebalances_and_reissues() {
        let mut backends = pool(&[1, 1, 1]);
        let balancer = Balancer::new(&Algorithm::RoundRobin, &backends);
        let pinned = PickContext {
            sticky: Some(token(&backends[2].address)),
            ..PickContext::default()
        };
        let mut rng = rng();
        assert!((0..10).all(|_| balancer.pick(&backends, &pinned, &mut rng) == Some(2)));
        let sticky = config(None);
        assert_eq!(
            set_cookie_if_needed(Some(&sticky), &pinned, &backends[2].address, false),
            None
        );

        let _full = fill(&mut backends, 2);
        let moved = balancer.pick(&backends, &pinned, &mut rng).unwrap();
        assert_ne!(moved, 2);
        assert!(
            set_cookie_if_needed(Some(&sticky), &pinned, &backends[moved].address, false).is_some()
        );
        assert_eq!(
            set_cookie_if_needed(None, &pinned, &backends[moved].address, false),
            None
        );

        let stranger = PickContext {
            sticky: Some(12345),
            ..PickContext::default()
        };
        assert!(balancer.pick(&backends, &stranger, &mut rng).is_some());
    }
}
