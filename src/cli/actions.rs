//! `sluice reload`, `drain` and `enable`: the admin actions, and what they print for people
//! (a reload's outcome with its error snippet as lines, a backend's new state); `--json`
//! prints the admin API's answer instead.

use super::admin::{action_token, admin_call, admin_target};
use super::args::{AdminArgs, BackendTarget, TokenArgs};
use super::{CliError, exit_status};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// `sluice reload`: POSTs /reload and prints the outcome.
pub fn reload(
    args: &AdminArgs,
    token: &TokenArgs,
    config_path: &Path,
) -> Result<ExitCode, CliError> {
    let (status, body) = post(args, token, config_path, "/reload")?;
    if args.json {
        print!("{body}");
    } else {
        human_answer(status, &reload_outcome(status, &body));
    }
    Ok(exit_status(status))
}

/// `sluice drain` / `enable`: POSTs the action and says what the backend is now.
pub fn backend_action(
    target: &BackendTarget,
    action: &str,
    args: &AdminArgs,
    token: &TokenArgs,
    config_path: &Path,
) -> Result<ExitCode, CliError> {
    let pool = &target.pool;
    let path = format!(
        "/pools/{pool}/backends/{}/{action}",
        path_segment(&target.backend)
    );
    let (status, body) = post(args, token, config_path, &path)?;
    if args.json {
        print!("{body}");
    } else {
        human_answer(status, &backend_outcome(status, &body, pool, action));
    }
    Ok(exit_status(status))
}

/// POSTs an action to the running sluice with the admin token the operator gave (or the
/// config file names): the status and body of its answer.
fn post(
    args: &AdminArgs,
    token: &TokenArgs,
    config_path: &Path,
    path: &str,
) -> Result<(u16, String), CliError> {
    let (admin, config_token) = admin_target(args.admin, config_path);
    let token = action_token(token.token_file.as_deref(), config_token.as_deref())?;
    admin_call(admin, http::Method::POST, path, token.as_deref())
}

/// A backend address as one URL path segment (a unix path's slashes escaped; the admin API
/// decodes them).
fn path_segment(backend: &crate::config::BackendAddress) -> String {
    backend.to_string().replace('/', "%2F")
}

/// Success to stdout, failure to stderr (after "sluice: ", like every other error).
fn human_answer(status: u16, text: &str) {
    if (200..300).contains(&status) {
        print!("{text}");
    } else {
        eprint!("sluice: {text}");
    }
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
}
