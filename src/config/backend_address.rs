//! Where a backend is reached: an IP socket address or a Unix domain socket path.
//!
//! This is the backend's identity everywhere (runtime state, balancing keys, metrics labels,
//! the admin API), so its text form is stable: `10.0.0.1:80`, `[::1]:80`, `unix:/run/app.sock`.
//! Pure: parsing and formatting only, nothing here touches a socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The prefix that marks a Unix socket backend (nginx and HAProxy spell it the same way).
pub const UNIX_PREFIX: &str = "unix:";

/// Linux `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_PATH: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendAddress {
    Inet(SocketAddr),
    /// An absolute path; `Arc` because addresses are cloned per request (retry lists, logs).
    Unix(Arc<Path>),
}

impl BackendAddress {
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            BackendAddress::Inet(address) => Some(*address),
            BackendAddress::Unix(_) => None,
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, BackendAddress::Unix(_))
    }
}

impl From<SocketAddr> for BackendAddress {
    fn from(address: SocketAddr) -> BackendAddress {
        BackendAddress::Inet(address)
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddress::Inet(address) => address.fmt(f),
            BackendAddress::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// As its text form (`/status`, the access log's JSON).
impl serde::Serialize for BackendAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for BackendAddress {
    type Err = String;

    /// `IP:PORT` or `unix:/absolute/path`; the error is the message config validation shows.
    fn from_str(text: &str) -> Result<BackendAddress, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            // A relative path would depend on the daemon's working directory.
            if !path.starts_with('/') {
                return Err(format!(
                    "invalid unix socket address {text:?}: the path must be absolute, like unix:/run/app.sock"
                ));
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(format!(
                    "invalid unix socket address {text:?}: the path is longer than {MAX_UNIX_PATH} bytes"
                ));
            }
            return Ok(BackendAddress::Unix(Arc::from(Path::new(path))));
        }
        text.parse().map(BackendAddress::Inet).map_err(|_| {
            // A name would need resolving, and re-resolving as its records change: that is
            // DNS discovery's job, so say where it goes rather than only what is wrong.
            if let Some((name, port)) = super::host_name_and_port(text) {
                return format!(
                    "invalid socket address {text:?}: a host name is not an address here; \
                     backends are IP:PORT or unix:/path, and a pool finds backends by name \
                     with discovery: {{ dns: {{ name: {name}, port: {port} }} }}"
                );
            }
            format!(
                "invalid socket address {text:?}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080, or unix:/path/to.sock"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_kinds() {
        for text in ["10.0.0.1:80", "[::1]:8080", "unix:/run/app.sock"] {
            let address: BackendAddress = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        let unix: BackendAddress = " unix:/tmp/a.sock ".parse().unwrap();
        assert!(unix.is_unix());
        assert_eq!(unix.inet(), None);
    }

    #[test]
    fn refuses_relative_and_overlong_paths_and_bad_ips() {
        assert!(
            "unix:run/app.sock"
                .parse::<BackendAddress>()
                .unwrap_err()
                .contains("absolute")
        );
        let long = format!("unix:/{}", "a".repeat(120));
        assert!(
            long.parse::<BackendAddress>()
                .unwrap_err()
                .contains("longer")
        );
        assert!(
            "10.0.0.1:99999"
                .parse::<BackendAddress>()
                .unwrap_err()
                .contains("unix:/path")
        );
    }
}
