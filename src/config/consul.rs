//! The `consul` discovery settings of a pool: the YAML mirror, the validated type, and the
//! checks of the agent address, service name and token file.
//!
//! Pure like the rest of `config`: the token file is read by the task at each (re)connect,
//! not here (as `admin.token_file`), so a rotated token is picked up and a missing one shows
//! in `/status`. The watching task is `crate::discovery::consul`.

use super::Validator;
use super::file::Text;
use super::upstream_tls::{RawUpstreamTls, UpstreamTls};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::time::Duration;

/// How long one blocking query may wait for a change. consul-template's choice; Consul's own
/// default is 5 min, but a shorter wait confirms the set (and the agent) more often.
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(60);
/// Consul caps `wait` at 10 min.
pub const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);
pub const DEFAULT_CONSUL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    /// `http://HOST:PORT` or `https://HOST:PORT` of a Consul agent (default port 8500).
    pub address: Option<Text>,
    pub service: Text,
    pub tag: Option<Text>,
    pub datacenter: Option<Text>,
    pub passing_only: Option<bool>,
    pub token_file: Option<Text>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
    pub wait: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsulSource {
    /// The agent, as written (`http://127.0.0.1:8500`), without a trailing slash.
    pub address: String,
    /// `HOST:PORT` to connect to.
    pub authority: String,
    /// `https://`: TLS with `tls` (or verified against the bundled public roots).
    pub https: bool,
    pub tls: Option<UpstreamTls>,
    pub service: String,
    pub tag: Option<String>,
    pub datacenter: Option<String>,
    /// `true` (default): only instances whose every check passes. `false`: warning ones too,
    /// at `Weights.Warning`. Critical and maintenance are out either way.
    pub passing_only: bool,
    /// Sent as `X-Consul-Token`; read at each (re)connect.
    pub token_file: Option<PathBuf>,
    /// The blocking query's `wait`.
    pub wait: Duration,
    /// Connecting, and an answer beyond `wait`.
    pub timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn consul(
        &self,
        path: &str,
        raw: &Spanned<RawConsul>,
    ) -> Result<ConsulSource, ConfigError> {
        let consul = &raw.value;
        let (address, authority, https) = match &consul.address {
            None => (
                "http://127.0.0.1:8500".to_owned(),
                "127.0.0.1:8500".into(),
                false,
            ),
            Some(text) => parse_agent_address(&text.value).map_err(|message| {
                self.error_at(text.referenced, format!("{path}.address"), message)
            })?,
        };
        let service = consul.service.value.trim();
        if !valid_name(service) {
            return Err(self.error_at(
                consul.service.referenced,
                format!("{path}.service"),
                format!(
                    "invalid service name {:?}: letters, digits, '-', '_' and '.'",
                    consul.service.value
                ),
            ));
        }
        let tag = self.consul_word(consul.tag.as_ref(), &format!("{path}.tag"))?;
        let datacenter =
            self.consul_word(consul.datacenter.as_ref(), &format!("{path}.datacenter"))?;
        let tls = self.upstream_tls(path, consul.tls.as_ref())?;
        if let (Some(written), false) = (&consul.tls, https) {
            return Err(self.error_at(
                written.referenced,
                format!("{path}.tls"),
                "tls is set but the address is http://: write https://HOST:PORT".into(),
            ));
        }
        let token_file = match &consul.token_file {
            None => None,
            Some(file) if file.value.trim().is_empty() => {
                return Err(self.error_at(
                    file.referenced,
                    format!("{path}.token_file"),
                    "empty path".into(),
                ));
            }
            Some(file) => Some(PathBuf::from(file.value.trim())),
        };
        let wait = self.duration(
            consul.wait.as_ref(),
            &format!("{path}.wait"),
            DEFAULT_CONSUL_WAIT,
        )?;
        if wait < Duration::from_secs(1) || wait > MAX_CONSUL_WAIT {
            let at = consul.wait.as_ref().map(|w| w.referenced);
            return Err(self.error_at(
                at.unwrap_or(raw.referenced),
                format!("{path}.wait"),
                "must be between 1s and 10m (Consul's limit)".into(),
            ));
        }
        let timeout = self.duration(
            consul.timeout.as_ref(),
            &format!("{path}.timeout"),
            DEFAULT_CONSUL_TIMEOUT,
        )?;
        Ok(ConsulSource {
            address,
            authority,
            https,
            tls,
            service: service.to_owned(),
            tag,
            datacenter,
            passing_only: consul.passing_only.unwrap_or(true),
            token_file,
            wait,
            timeout,
        })
    }

    fn consul_word(&self, text: Option<&Text>, path: &str) -> Result<Option<String>, ConfigError> {
        let Some(text) = text else { return Ok(None) };
        let word = text.value.trim();
        if !valid_name(word) {
            return Err(self.error_at(
                text.referenced,
                path.to_owned(),
                format!(
                    "invalid value {:?}: letters, digits, '-', '_' and '.'",
                    text.value
                ),
            ));
        }
        Ok(Some(word.to_owned()))
    }
}

/// Service names, tags and datacenters as they go into a query string unescaped.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// `http(s)://HOST[:PORT]` -> (address without trailing slash, `HOST:PORT`, https).
pub fn parse_agent_address(text: &str) -> Result<(String, String, bool), String> {
    let text = text.trim().trim_end_matches('/');
    let invalid = || {
        format!("invalid Consul address {text:?}: expected http://HOST:PORT or https://HOST:PORT")
    };
    let (https, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(invalid());
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return Err(invalid());
    }
    let uri: http::uri::Authority = rest.parse().map_err(|_| invalid())?;
    let port = uri.port_u16().unwrap_or(8500);
    let host = uri.host();
    Ok((text.to_owned(), format!("{host}:{port}"), https))
}

/// The token in `path`, trimmed; an error if unreadable or empty.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: empty token file", path.display()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_addresses_are_http_or_https_urls() {
        let parsed = parse_agent_address("http://10.0.0.1:8500/").unwrap();
        assert_eq!(
            parsed,
            ("http://10.0.0.1:8500".into(), "10.0.0.1:8500".into(), false)
        );
        let parsed = parse_agent_address("https://consul.service").unwrap();
        assert_eq!(parsed.1, "consul.service:8500");
        assert!(parsed.2);
        assert_eq!(parse_agent_address("http://[::1]:1").unwrap().1, "[::1]:1");
        for bad in [
            "10.0.0.1:8500",
            "http://",
            "http://h:1/v1",
            "ftp://h",
            "http://u@h",
        ] {
            assert!(parse_agent_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_go_into_a_query_unescaped() {
        assert!(valid_name("web-api_v2.prod"));
        for bad in ["", "a b", "a&b", "a=b", "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
