//! How the operator commands reach a running sluice: which admin address (the option, else
//! the config file's `admin.bind`, else the default), which bearer token, and one HTTP/1.1
//! request to the admin listener with a deadline. The daemon side is `src/admin/`.

use super::CliError;
use crate::config::Config;
use crate::error::Error;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that holds the admin token itself (not a file name).
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// The bearer token the operator commands send, first found of: `--token-file`, the
/// `SLUICE_ADMIN_TOKEN` variable, the config file's `admin.token_file`. `None`: send none
/// (actions from loopback need none while the daemon has no token file). A file named but
/// unreadable is an error, not a silent request without the token that would only get a 401.
pub fn admin_token(
    token_file: Option<&Path>,
    from_env: Option<String>,
    config_token_file: Option<&Path>,
) -> Result<Option<String>, Error> {
    if let Some(path) = token_file {
        return crate::control::read_token_file(path).map(Some);
    }
    if let Some(token) = from_env
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    config_token_file
        .map(crate::control::read_token_file)
        .transpose()
}

/// The token an action sends: `--token-file`, else SLUICE_ADMIN_TOKEN, else the config's file.
pub fn action_token(
    token_file: Option<&Path>,
    config_token_file: Option<&Path>,
) -> Result<Option<String>, Error> {
    admin_token(token_file, std::env::var(TOKEN_ENV).ok(), config_token_file)
}

/// The admin address (given, else the config file's `admin.bind`, else the default) and the
/// config file's `admin.token_file`, if it has one. A config file that cannot be loaded is
/// no error here: the operator may have given `--admin`, and the request says if it fails.
pub fn admin_target(
    given: Option<SocketAddr>,
    config_path: &Path,
) -> (SocketAddr, Option<PathBuf>) {
    let admin = Config::load(config_path).ok().and_then(|c| c.admin);
    let token_file = admin.as_ref().and_then(|a| a.token_file.clone());
    let address = given.or_else(|| admin.map(|a| a.bind)).unwrap_or_else(|| {
        crate::config::DEFAULT_ADMIN_BIND
            .parse()
            .expect("the default admin address is valid")
    });
    (address, token_file)
}

/// Sends one request to the admin listener, with `Authorization: Bearer TOKEN` when a token
/// is given; returns the status code and the body.
pub async fn admin_request(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), Error> {
    let io_error = |context: String| move |source| Error::Io { context, source };
    let exchange = async {
        let stream = TcpStream::connect(admin).await.map_err(io_error(format!(
            "cannot reach the admin listener at {admin} (is sluice running? is admin.bind set?)"
        )))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_error(format!("admin {admin}"))(std::io::Error::other(e)))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, admin.to_string());
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| io_error("admin request".into())(std::io::Error::other(e)))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| io_error(format!("admin {admin}"))(std::io::Error::other(e)))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| io_error(format!("admin {admin}"))(std::io::Error::other(e)))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| io_error(format!("admin {admin}"))(std::io::ErrorKind::TimedOut.into()))?
}

/// `admin_request` from synchronous code: a current-thread runtime for the one request.
pub fn admin_call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), CliError> {
    let runtime = super::current_thread_runtime()?;
    Ok(runtime.block_on(admin_request(admin, method, path, token))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_option_then_the_environment_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let option = dir.path().join("option.token");
        let config = dir.path().join("config.token");
        std::fs::write(&option, "from-option\n").unwrap();
        std::fs::write(&config, "  from-config\n").unwrap();
        let env = || Some("from-env".to_owned());
        let token = |file, env, config| admin_token(file, env, config).unwrap();
        assert_eq!(
            token(Some(&option), env(), Some(&config)).as_deref(),
            Some("from-option")
        );
        assert_eq!(
            token(None, env(), Some(&config)).as_deref(),
            Some("from-env")
        );
        assert_eq!(
            token(None, Some(" ".into()), Some(&config)).as_deref(),
            Some("from-config")
        );
        assert_eq!(token(None, None, None), None);
        // A file that was named but cannot be read is an error, not a request without it.
        let missing = dir.path().join("missing.token");
        assert!(admin_token(Some(&missing), None, None).is_err());
        assert!(admin_token(None, None, Some(&missing)).is_err());
    }
}
