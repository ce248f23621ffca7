//! Listener addresses: `IP:PORT` for TCP, `unix:/path` for a unix domain socket (with an
//! optional file `mode`). Pure parsing only; binding lives in `crate::listener`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BindAddr {
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            BindAddr::Tcp(addr) => Some(*addr),
            BindAddr::Unix(_) => None,
        }
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `unix:/run/sluice/http.sock` or `IP:PORT`.
pub fn parse_bind(text: &str) -> Result<BindAddr, String> {
    let text = text.trim();
    let Some(path) = text.strip_prefix("unix:") else {
        return super::parse_socket_addr(text).map(BindAddr::Tcp);
    };
    // sun_path holds 108 bytes including the terminating NUL.
    if !path.starts_with('/') || path.len() > 107 || path.contains('\0') {
        return Err(format!(
            "invalid unix socket path {path:?}: must be absolute and at most 107 bytes"
        ));
    }
    Ok(BindAddr::Unix(PathBuf::from(path)))
}

/// `"0660"` -> 0o660 (octal, as chmod reads it).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "invalid mode {text:?}: expected octal permissions such as \"0660\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_addresses() {
        assert_eq!(
            parse_bind("127.0.0.1:80"),
            Ok(BindAddr::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("unix:/run/s.sock"),
            Ok(BindAddr::Unix("/run/s.sock".into()))
        );
        assert_eq!(
            parse_bind("unix:/run/s.sock").unwrap().to_string(),
            "unix:/run/s.sock"
        );
        assert!(parse_bind("unix:relative.sock").is_err());
        assert!(parse_bind(&format!("unix:/{}", "x".repeat(120))).is_err());
        assert!(parse_bind("localhost").is_err());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("07777").is_err());
    }
}
