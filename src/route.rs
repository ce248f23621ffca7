//! The HTTP route table of a listener, compiled once per snapshot, and the pure per-request
//! match and rewrites (path prefix stripping, header edits).
//!
//! Pure: no I/O, no clock; imports only `config`. Generic over the route target so the snapshot
//! can point straight at its `Arc<Pool>` (no name lookup per request) while tests use strings.
//! Matching borrows from the request and allocates nothing.
//!
//! Rules, decided here: first match wins, in config order. Hosts compare case-insensitively
//! without the port (and without a trailing dot); `*.example.com` matches any depth of
//! subdomain (nginx), not `example.com`. `path_prefix` is segment-aware: `/api` matches `/api`
//! and `/api/x`, never `/apix`. Paths are compared as sent (no percent-decoding, no dot-segment
//! removal), so routing is not an access-control mechanism.

use crate::config::{HeaderEdits, HostPattern, PathPattern, RouteConfig, RouteMatch};
use http::{HeaderMap, Method, Uri, header};

/// What matching looks at, borrowed from one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Without port; `None` when the request names no host.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The client's verified certificate (`tls.client_auth`), for `match.client_cert`.
    pub client_cert: Option<&'a crate::tls::client::ClientCert>,
}

impl<'a> RequestView<'a> {
    /// The host comes from `Host`, or from the URI authority (HTTP/2 `:authority`, or an
    /// absolute-form HTTP/1.1 target).
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> RequestView<'a> {
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .map(host_without_port);
        RequestView {
            method,
            host,
            path: uri.path(),
            headers,
            client_cert: None,
        }
    }

    pub fn with_client_cert(
        mut self,
        cert: Option<&'a crate::tls::client::ClientCert>,
    ) -> RequestView<'a> {
        self.client_cert = cert;
        self
    }
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`, `example.com.` -> `example.com`.
pub fn host_without_port(host: &str) -> &str {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && (!name.contains(':') || name.ends_with(']'))
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[derive(Debug)]
pub struct Route<T> {
    pub config: RouteConfig,
    pub target: T,
}

/// A listener's routes with their resolved targets, plus the default target.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<Route<T>>,
    default: Option<T>,
}

/// The outcome of a match: the target, and the route when one matched (`None`: default).
#[derive(Debug)]
pub struct Routed<'r, T> {
    pub target: &'r T,
    pub route: Option<&'r RouteConfig>,
    /// The route's position in the listener's `routes` (`None`: the default).
    pub index: Option<usize>,
}

impl<T> Router<T> {
    pub fn new(routes: Vec<Route<T>>, default: Option<T>) -> Router<T> {
        Router { routes, default }
    }

    /// First route that matches, else the default target; `None` means 404.
    pub fn route(&self, request: &RequestView<'_>) -> Option<Routed<'_, T>> {
        match self
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| matches(&r.config.matcher, request))
        {
            Some((index, route)) => Some(Routed {
                target: &route.target,
                route: Some(&route.config),
                index: Some(index),
            }),
            None => self.default.as_ref().map(|target| Routed {
                target,
                route: None,
                index: None,
            }),
        }
    }

    pub fn default_target(&self) -> Option<&T> {
        self.default.as_ref()
    }
}

pub fn matches(matcher: &RouteMatch, request: &RequestView<'_>) -> bool {
    if let Some(method) = &matcher.method
        && method != request.method
    {
        return false;
    }
    if let Some(pattern) = &matcher.host
        && !request.host.is_some_and(|host| host_matches(pattern, host))
    {
        return false;
    }
    if let Some(pattern) = &matcher.path
        && !path_matches(pattern, request.path)
    {
        return false;
    }
    if let Some(condition) = &matcher.client_cert {
        let fits = match (request.client_cert, &condition.san) {
            (None, _) => !condition.present,
            (Some(_), None) => condition.present,
            (Some(cert), Some(san)) => cert.has_san(san),
        };
        if !fits {
            return false;
        }
    }
    if let Some(condition) = &matcher.header {
        let mut values = request.headers.get_all(&condition.name).iter();
        let found = match &condition.value {
            None => values.next().is_some(),
            Some(wanted) => values.any(|v| v == wanted),
        };
        if !found {
            return false;
        }
    }
    true
}

pub fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
        HostPattern::Wildcard(suffix) => {
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

pub fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(exact) => path == exact,
        PathPattern::Prefix(prefix) => prefix_rest(path, prefix).is_some(),
    }
}

/// What follows `prefix` in `path` when `prefix` covers whole segments, e.g. `/api` in
/// `/api/x` -> `/x`, in `/api` -> ``; `None` for `/apix`. `prefix` has no trailing slash
/// (validation trims it), except `/` itself.
fn prefix_rest<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix == "/" {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The request target with `prefix` stripped from its path (query kept); `None` when the path
/// does not start with that prefix, and the target stays as it was. Never returns an empty
/// path: `/static` with prefix `/static` becomes `/`.
pub fn strip_prefix(path_and_query: &str, prefix: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let rest = prefix_rest(path, prefix)?;
    let mut out = String::with_capacity(path_and_query.len());
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// `remove` first, then `set` (replacing every value the header had).
pub fn apply_edits(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
}

pub mod redirect;

#[cfg(test)]
mod tests;
