//! The `zookeeper` discovery settings of a pool: the YAML mirror, the validated type, and the
//! checks of host lists and znode paths.
//!
//! Pure like the rest of `config`; the watching task is `crate::discovery::zookeeper`. Kept
//! apart from `discovery.rs` only to keep that file short.

use super::Validator;
use crate::error::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::Ipv6Addr;
use std::time::Duration;

/// ZooKeeper's own clients default to 10 s to 30 s; 10 s notices a dead registrant (its
/// ephemeral nodes vanish) within seconds while riding out a short server hiccup.
pub const DEFAULT_ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZooKeeper {
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub path: Spanned<String>,
    pub session_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZooKeeperSource {
    /// `HOST:PORT` each, as the client's connect string wants them.
    pub hosts: Vec<String>,
    /// The znode whose children are the backends (`IP:PORT` each). No trailing slash.
    pub path: String,
    /// Asked of the server, which may clamp it to its own min/max (2 to 20 ticks by default).
    pub session_timeout: Duration,
}

impl ZooKeeperSource {
    /// The connect string: `host1:port,host2:port` (no chroot: `path` is absolute).
    pub fn connect_string(&self) -> String {
        self.hosts.join(",")
    }
}

impl Validator<'_> {
    pub(super) fn zookeeper(
        &self,
        path: &str,
        raw: &Spanned<RawZooKeeper>,
    ) -> Result<ZooKeeperSource, ConfigError> {
        let hosts = &raw.value.hosts;
        if hosts.value.is_empty() {
            return Err(self.error_at(
                hosts.referenced,
                format!("{path}.hosts"),
                "list at least one server, e.g. 127.0.0.1:2181".into(),
            ));
        }
        let mut valid_hosts = Vec::new();
        for (index, host) in hosts.value.iter().enumerate() {
            let host_port = parse_host_port(&host.value).map_err(|message| {
                self.error_at(host.referenced, format!("{path}.hosts[{index}]"), message)
            })?;
            valid_hosts.push(host_port);
        }
        let znode = &raw.value.path;
        check_znode_path(&znode.value)
            .map_err(|message| self.error_at(znode.referenced, format!("{path}.path"), message))?;
        let session_timeout = self.duration(
            raw.value.session_timeout.as_ref(),
            &format!("{path}.session_timeout"),
            DEFAULT_ZK_SESSION_TIMEOUT,
        )?;
        if session_timeout < Duration::from_secs(1) {
            let at = raw.value.session_timeout.as_ref().map(|t| t.referenced);
            return Err(self.error_at(
                at.unwrap_or(raw.referenced),
                format!("{path}.session_timeout"),
                "must be at least 1s".into(),
            ));
        }
        Ok(ZooKeeperSource {
            hosts: valid_hosts,
            path: znode.value.clone(),
            session_timeout,
        })
    }
}

/// `HOST:PORT` with a DNS name, an IPv4 address or a bracketed IPv6 address. The port is
/// required: a silent default of 2181 would hide a typo such as `zk1:21818` turned `zk1`.
pub fn parse_host_port(text: &str) -> Result<String, String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "invalid ZooKeeper server {text:?}: expected HOST:PORT such as 127.0.0.1:2181, \
             zk1.example:2181 or [::1]:2181"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    if port == 0 || !host_ok {
        return Err(invalid());
    }
    Ok(format!("{host}:{port}"))
}

/// An absolute znode path: `/a/b`, no trailing slash, no empty, `.` or `..` segment (what the
/// server itself refuses, caught before it is asked).
pub fn check_znode_path(path: &str) -> Result<(), String> {
    let segments_ok = path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(char::is_control))
    });
    if segments_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid znode path {path:?}: write an absolute path such as /services/jobs \
             (no trailing slash)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_checked_and_normalized() {
        assert_eq!(parse_host_port(" 10.0.0.1:2181 ").unwrap(), "10.0.0.1:2181");
        assert_eq!(
            parse_host_port("zk-1.example:2182").unwrap(),
            "zk-1.example:2182"
        );
        assert_eq!(parse_host_port("[::1]:2181").unwrap(), "[::1]:2181");
        for bad in [
            "zk1",
            "zk1:",
            ":2181",
            "zk1:0",
            "zk1:99999",
            "a b:2181",
            "::1:2181",
            "[zz]:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn znode_paths_must_be_absolute_without_trailing_slash() {
        assert!(check_znode_path("/services/jobs").is_ok());
        assert!(check_znode_path("/a").is_ok());
        for bad in ["", "/", "services", "/a/", "/a//b", "/a/./b", "/a/.."] {
            assert!(check_znode_path(bad).is_err(), "{bad}");
        }
    }
}
