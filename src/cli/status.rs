//! `sluice status`: the running sluice's `/status` JSON as a table a person can read in a
//! terminal (`--json` prints the answer itself).

use super::admin::{admin_call, admin_target};
use super::args::AdminArgs;
use super::{CliError, exit_status};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// `sluice status`: GETs /status and prints it.
pub fn status(args: &AdminArgs, config_path: &Path) -> Result<ExitCode, CliError> {
    let (admin, _) = admin_target(args.admin, config_path);
    let (status, body) = admin_call(admin, http::Method::GET, "/status", None)?;
    if args.json {
        print!("{body}");
    } else if (200..300).contains(&status) {
        let value: Value = serde_json::from_str(&body).map_err(|source| CliError::Context {
            context: format!("unexpected answer from {admin}"),
            source: Box::new(source),
        })?;
        print!("{}", status_table(&value));
    } else {
        eprintln!("sluice: {admin} answered {status}: {}", body.trim_end());
    }
    Ok(exit_status(status))
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
