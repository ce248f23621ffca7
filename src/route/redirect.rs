//! The `Location` of a route's redirect, from the request's scheme, host and target. Pure.
//!
//! Rules: what the redirect does not name is kept from the request (scheme, host, path,
//! query). The request's port is kept only while neither the scheme nor the host changes
//! (`http://a:8080` redirected to `https` must not keep 8080); a port that is the scheme's
//! default is never written.

use crate::config::Redirect;

/// The absolute URL to redirect to; `None` when the request names no host and the redirect
/// names none either (there is nothing to build an absolute URL from).
pub fn location(
    redirect: &Redirect,
    request_scheme: &str,
    request_host: Option<&str>,
    path_and_query: &str,
) -> Option<String> {
    let scheme = redirect.scheme.unwrap_or(request_scheme);
    let (host, port) = match &redirect.host {
        Some(host) => (host.as_str(), redirect.port),
        None => {
            let raw = request_host?.trim();
            let name = super::host_without_port(raw);
            let kept_port = (redirect.scheme.is_none_or(|s| s == request_scheme))
                .then(|| raw[name.len()..].strip_prefix(':')?.parse::<u16>().ok())
                .flatten();
            (name, redirect.port.or(kept_port))
        }
    };
    if host.is_empty() {
        return None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let path = redirect.path.as_deref().unwrap_or(path);
    let mut out = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    let default_port = if scheme == "https" { 443 } else { 80 };
    if let Some(port) = port.filter(|&p| p != default_port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(if path.is_empty() { "/" } else { path });
    if let Some(query) = query.filter(|_| !redirect.strip_query) {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn redirect(scheme: Option<&'static str>, host: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme,
            host: host.map(str::to_owned),
            port,
            path: None,
            strip_query: false,
            code: StatusCode::MOVED_PERMANENTLY,
        }
    }

    #[test]
    fn http_to_https_keeps_host_path_and_query_and_drops_the_old_port() {
        let r = redirect(Some("https"), None, None);
        assert_eq!(
            location(&r, "http", Some("Example.com:8080"), "/a/b?x=1&y").as_deref(),
            Some("https://Example.com/a/b?x=1&y")
        );
        assert_eq!(
            location(&r, "http", Some("[::1]:80"), "/").as_deref(),
            Some("https://[::1]/")
        );
    }

    #[test]
    fn same_scheme_keeps_a_non_default_port_and_never_writes_a_default_one() {
        let r = redirect(None, None, None);
        let r = Redirect {
            path: Some("/new".into()),
            ..r
        };
        assert_eq!(
            location(&r, "http", Some("a.test:8080"), "/old?q").as_deref(),
            Some("http://a.test:8080/new?q")
        );
        let to_port = redirect(Some("https"), Some("b.test"), Some(443));
        assert_eq!(
            location(&to_port, "http", Some("a.test"), "/").as_deref(),
            Some("https://b.test/")
        );
        let odd_port = redirect(Some("https"), Some("b.test"), Some(8443));
        assert_eq!(
            location(&odd_port, "http", None, "/x").as_deref(),
            Some("https://b.test:8443/x")
        );
    }

    #[test]
    fn strip_query_drops_the_query_only() {
        let r = Redirect {
            strip_query: true,
            ..redirect(None, Some("new.test"), None)
        };
        assert_eq!(
            location(&r, "https", Some("old.test"), "/p?secret=1").as_deref(),
            Some("https://new.test/p")
        );
    }

    #[test]
    fn no_host_anywhere_gives_none() {
        let r = redirect(Some("https"), None, None);
        assert_eq!(location(&r, "http", None, "/"), None);
        assert_eq!(location(&r, "http", Some(""), "/"), None);
    }
}
