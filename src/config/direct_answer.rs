//! The routes that answer without a pool: `redirect` and `respond`. Their YAML mirror, the
//! validated types and their validation with positioned errors; and the reading of pages
//! (a `respond.file`, and the error pages of `error_pages.rs`) at validation, like a TLS
//! certificate: `sluice check` and a reload refuse a missing file, and the snapshot carries
//! the bytes.
//!
//! Decisions: a redirect keeps the request's scheme, host, path and query unless told
//! otherwise, answers 301 by default (Envoy's default, nginx's usual `return 301`), and one
//! that names nothing new (a loop) is refused.

use super::Validator;
use super::file::Text;
use crate::error::ConfigError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// `http` or `https`; kept from the request when absent.
    pub scheme: Option<Text>,
    pub host: Option<Text>,
    pub port: Option<Spanned<u16>>,
    /// Replaces the whole path.
    pub path: Option<Text>,
    pub strip_query: Option<bool>,
    pub code: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<Spanned<u16>>,
    pub body: Option<String>,
    pub file: Option<Text>,
    pub content_type: Option<Text>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `None`: the scheme the request came in with.
    pub scheme: Option<&'static str>,
    /// Lowercased, without port. `None`: the request's host.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub strip_query: bool,
    pub code: StatusCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Where the body was read from, for the reload plan and errors.
    pub file: Option<PathBuf>,
}

/// Headers a `respond.headers` map may not set: they frame the message, and sluice writes them.
const FRAMING: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "trailer",
];

impl Validator<'_> {
    pub(super) fn redirect(
        &self,
        path: &str,
        raw: &Spanned<RawRedirect>,
    ) -> Result<Redirect, ConfigError> {
        let redirect = &raw.value;
        let scheme = match &redirect.scheme {
            None => None,
            Some(text) => Some(match text.value.trim().to_ascii_lowercase().as_str() {
                "http" => "http",
                "https" => "https",
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.scheme"),
                        format!("unknown scheme {other:?}: expected http or https"),
                    ));
                }
            }),
        };
        let host = match &redirect.host {
            None => None,
            Some(text) => match super::route::host_pattern(&text.value) {
                Ok(super::HostPattern::Exact(name)) => Some(name),
                _ => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.host"),
                        format!(
                            "invalid host {:?}: expected a name like www.example.com (no port: use port, no '*')",
                            text.value
                        ),
                    ));
                }
            },
        };
        if let Some(port) = &redirect.port
            && port.value == 0
        {
            return Err(self.error_at(
                port.referenced,
                format!("{path}.port"),
                "port 0 cannot be redirected to".into(),
            ));
        }
        let target_path = match &redirect.path {
            None => None,
            Some(text) => {
                let value = text.value.trim();
                let valid = value.starts_with('/')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
                if !valid {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.path"),
                        format!(
                            "invalid path {value:?}: must start with '/', no spaces, '?' or '#'"
                        ),
                    ));
                }
                Some(value.to_owned())
            }
        };
        let code = match &redirect.code {
            None => StatusCode::MOVED_PERMANENTLY,
            Some(code) if [301, 302, 303, 307, 308].contains(&code.value) => {
                StatusCode::from_u16(code.value).unwrap_or(StatusCode::MOVED_PERMANENTLY)
            }
            Some(code) => {
                return Err(self.error_at(
                    code.referenced,
                    format!("{path}.code"),
                    format!(
                        "{} is not a redirect code: use 301, 302, 303, 307 or 308",
                        code.value
                    ),
                ));
            }
        };
        if scheme.is_none()
            && host.is_none()
            && redirect.port.is_none()
            && target_path.is_none()
            && !redirect.strip_query.unwrap_or(false)
        {
            return Err(self.error_at(
                raw.referenced,
                path.to_owned(),
                "redirects to the same URL (a loop): set scheme, host, port, path or strip_query"
                    .into(),
            ));
        }
        Ok(Redirect {
            scheme,
            host,
            port: redirect.port.as_ref().map(|p| p.value),
            path: target_path,
            strip_query: redirect.strip_query.unwrap_or(false),
            code,
        })
    }

    pub(super) fn respond(
        &self,
        path: &str,
        raw: &Spanned<RawRespond>,
    ) -> Result<Respond, ConfigError> {
        let respond = &raw.value;
        let status = match &respond.status {
            None => StatusCode::OK,
            Some(code) => match StatusCode::from_u16(code.value) {
                Ok(status) if code.value >= 200 && code.value <= 599 => status,
                _ => {
                    return Err(self.error_at(
                        code.referenced,
                        format!("{path}.status"),
                        format!("{} is not a final status code (200-599)", code.value),
                    ));
                }
            },
        };
        let (body, file) = match (&respond.body, &respond.file) {
            (Some(_), Some(file)) => {
                return Err(self.error_at(
                    file.referenced,
                    path.to_owned(),
                    "give either body or file, not both".into(),
                ));
            }
            (Some(body), None) => (Bytes::from(body.clone()), None),
            (None, Some(file)) => {
                let at = PathBuf::from(file.value.trim());
                let bytes = read_page(&at)
                    .map_err(|m| self.error_at(file.referenced, format!("{path}.file"), m))?;
                (bytes, Some(at))
            }
            (None, None) => (Bytes::new(), None),
        };
        if !body.is_empty() && matches!(status.as_u16(), 204 | 304) {
            return Err(self.error_at(
                raw.referenced,
                path.to_owned(),
                format!("status {} has no body", status.as_u16()),
            ));
        }
        let content_type = match &respond.content_type {
            Some(text) => HeaderValue::from_str(text.value.trim()).map_err(|_| {
                self.error_at(
                    text.referenced,
                    format!("{path}.content_type"),
                    format!("invalid content type {:?}", text.value),
                )
            })?,
            None => HeaderValue::from_static(
                file.as_deref()
                    .map_or("text/plain; charset=utf-8", content_type_of),
            ),
        };
        let mut headers = Vec::new();
        if let Some(map) = &respond.headers {
            for (name, value) in &map.value {
                let here = format!("{path}.headers.{name}");
                let parsed = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    self.error_at(
                        map.referenced,
                        here.clone(),
                        format!("invalid header name {name:?}"),
                    )
                })?;
                if FRAMING.contains(&parsed.as_str()) || parsed == http::header::CONTENT_TYPE {
                    return Err(self.error_at(
                        map.referenced,
                        here,
                        format!("{parsed} is written by sluice (use content_type for the type)"),
                    ));
                }
                let value = HeaderValue::from_str(value).map_err(|_| {
                    self.error_at(
                        map.referenced,
                        here.clone(),
                        format!("invalid header value {value:?}"),
                    )
                })?;
                headers.push((parsed, value));
            }
        }
        Ok(Respond {
            status,
            body,
            content_type,
            headers,
            file,
        })
    }
}

/// Reads a page or a direct answer's body at validation; the message says what went wrong.
pub(super) fn read_page(path: &std::path::Path) -> Result<Bytes, String> {
    /// A page is sent from memory with every such answer: keep it an error page, not a site.
    const MAX_PAGE: u64 = 1024 * 1024;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_PAGE {
        return Err(format!(
            "{} is {} bytes; pages are kept in memory, at most 1 MiB",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The content type of a page by its extension; `application/octet-stream` when unknown.
pub(super) fn content_type_of(path: &std::path::Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}
