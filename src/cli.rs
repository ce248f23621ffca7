//! The operator subcommands that talk to a running sluice through its admin listener
//! (`sluice status`, `reload`, `drain`, `enable`): a small HTTP client and what they print
//! for people (the `status` table, a reload's outcome with its error snippet as lines, a
//! backend's new state); `--json` prints the admin API's answer instead. The daemon side of
//! these endpoints is `src/admin/`. `man` builds the man pages from the clap definition.

pub mod man;

use crate::error::Error;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
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

/// What `sluice reload` prints: the outcome in words, and on failure the error as the daemon
/// logged it, caret snippet included, one line per line (not JSON-escaped). Anything that is
/// not a reload report (a refusal from the admin listener) is shown with its status code.
pub fn reload_outcome(status: u16, body: &str) -> String {
    let report: Option<Value> = serde_json::from_str(body).ok();
    match report
        .as_ref()
        .and_then(|r| r["success"].as_bool().map(|ok| (ok, r)))
    {
        Some((true, report)) => format!(
            "reload succeeded: {}\n",
            report["detail"].as_str().unwrap_or_default().trim_end()
        ),
        Some((false, report)) => format!(
            "reload failed; the running config stays in force:\n{}\n",
            report["detail"].as_str().unwrap_or_default().trim_end()
        ),
        None => refused(status, body),
    }
}

/// What `sluice drain` and `enable` print: the backend's state and its reason after the
/// action, e.g. `app 127.0.0.1:9001: drained (drained by admin API from 127.0.0.1)`.
pub fn backend_outcome(status: u16, body: &str, pool: &str, action: &str) -> String {
    let backend: Option<Value> = serde_json::from_str(body).ok();
    match backend.filter(|_| (200..300).contains(&status)) {
        Some(backend) => {
            let state = backend["state"].as_str().unwrap_or("unknown");
            let reason = backend["reason"].as_str().unwrap_or_default();
            let mut line = format!(
                "{pool} {}: {state}",
                backend["address"].as_str().unwrap_or("?")
            );
            if !reason.is_empty() {
                let _ = write!(line, " ({reason})");
            }
            line.push('\n');
            line
        }
        None => format!("{action}: {}", refused(status, body)),
    }
}

/// A non-JSON answer: its status code and text (`404: no pool named "nope"`).
fn refused(status: u16, body: &str) -> String {
    let hint = if status == 401 {
        "\n(give the token with --token-file FILE or SLUICE_ADMIN_TOKEN, or -c the config \
         whose admin.token_file holds it)"
    } else {
        ""
    };
    format!("admin API answered {status}: {}{hint}\n", body.trim_end())
}

/// `/status` JSON as a table a person can read in a terminal.
pub fn status_table(status: &Value) -> String {
    let mut out = String::new();
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let _ = writeln!(
        out,
        "sluice {} up {:.0}s, config {}",
        text(&status["version"]),
        status["uptime_seconds"].as_f64().unwrap_or_default(),
        status["config_file"].as_str().unwrap_or("(none)")
    );
    if let Some(reload) = status["last_reload"].as_object() {
        let outcome = if reload["success"] == true {
            "succeeded"
        } else {
            "FAILED"
        };
        let detail = reload["detail"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "last reload ({}) {outcome}: {detail}",
            text(&reload["trigger"])
        );
    }
    let mut rows = vec![
        [
            "POOL",
            "BACKEND",
            "STATE",
            "WEIGHT",
            "IN-FLIGHT",
            "SELECTED",
            "SINCE",
            "REASON",
        ]
        .map(str::to_owned),
    ];
    for pool in status["pools"].as_array().into_iter().flatten() {
        let mut name = text(&pool["name"]);
        if pool["panic"] == true {
            name.push_str(" (PANIC)");
        }
        for backend in pool["backends"].as_array().into_iter().flatten() {
            rows.push([
                name.clone(),
                text(&backend["address"]),
                text(&backend["state"]),
                text(&backend["weight"]),
                text(&backend["in_flight"]),
                text(&backend["picked_total"]),
                format!(
                    "{:.0}s",
                    backend["since_seconds"].as_f64().unwrap_or_default()
                ),
                text(&backend["reason"]),
            ]);
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_prints_its_snippet_as_lines() {
        let body = serde_json::json!({
            "trigger": "admin", "finished_at": 1.0, "success": false,
            "detail": "x.yaml:3:11: listeners.web.pool: no pool named \"ap\"\n  |\n3 |     pool: ap\n  |           ^"
        })
        .to_string();
        assert!(body.contains("\\n"), "the JSON escapes the newlines");
        assert_eq!(
            reload_outcome(422, &body),
            "reload failed; the running config stays in force:\n\
             x.yaml:3:11: listeners.web.pool: no pool named \"ap\"\n  |\n3 |     pool: ap\n  |           ^\n"
        );
        let ok = r#"{"trigger":"admin","finished_at":1.0,"success":true,"detail":"no changes"}"#;
        assert_eq!(reload_outcome(200, ok), "reload succeeded: no changes\n");
        assert_eq!(
            reload_outcome(403, "forbidden: admin actions need the token\n"),
            "admin API answered 403: forbidden: admin actions need the token\n"
        );
    }

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
        // A refusal for want of the token says how to give it.
        assert!(
            reload_outcome(401, "admin token required (Authorization: Bearer ...)\n")
                .contains("--token-file FILE or SLUICE_ADMIN_TOKEN")
        );
    }

    #[test]
    fn backend_actions_say_the_new_state_and_why() {
        let body = r#"{"address":"127.0.0.1:9001","state":"drained","reason":"drained by admin API from 127.0.0.1"}"#;
        assert_eq!(
            backend_outcome(200, body, "app", "drain"),
            "app 127.0.0.1:9001: drained (drained by admin API from 127.0.0.1)\n"
        );
        assert_eq!(
            backend_outcome(404, "no pool named \"nope\"\n", "nope", "drain"),
            "drain: admin API answered 404: no pool named \"nope\"\n"
        );
    }

    #[test]
    fn table_lists_every_backend_with_state_and_reason() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 12.3, "config_file": "/etc/sluice/sluice.yaml",
            "last_reload": {"trigger": "SIGHUP", "success": false, "detail": "x.yaml:3:4: pools: bad\\nsnippet"},
            "pools": [{"name": "app", "panic": true, "backends": [
                {"address": "10.0.0.1:80", "state": "ejected", "weight": 1, "in_flight": 0,
                 "picked_total": 7, "since_seconds": 3.2, "reason": "ejected for 30s: 5 consecutive failures"},
                {"address": "10.0.0.2:80", "state": "up", "weight": 3, "in_flight": 2,
                 "picked_total": 70, "since_seconds": 100.0, "reason": "no active check configured; available"}
            ]}]
        });
        let table = status_table(&status);
        assert!(
            table.contains("last reload (SIGHUP) FAILED: x.yaml:3:4: pools: bad"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].starts_with("POOL"), "{table}");
        assert!(
            lines[3].contains("app (PANIC)")
                && lines[3].contains("ejected")
                && lines[3].ends_with("5 consecutive failures"),
            "{table}"
        );
        // Columns line up: the REASON column starts at the same offset on every row.
        let offset = lines[2].find("REASON").unwrap();
        assert_eq!(&lines[4][offset..], "no active check configured; available");
    }
}
