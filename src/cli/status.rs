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
        print!("{}", status_table(&value, crate::clock::unix_seconds()));
    } else {
        eprintln!("sluice: {admin} answered {status}: {}", body.trim_end());
    }
    Ok(exit_status(status))
}

/// `/status` JSON as a table a person can read in a terminal: the backends with their state,
/// load, latency over the last minute (p50/p99, time to response headers), attempts that got
/// no response and where each comes from; then each pool's discovery sources with the
/// entries a registry listed but sluice left out (a Consul instance in maintenance or with a
/// critical check), as the status page shows them. `now` is Unix seconds, for "ago".
pub fn status_table(status: &Value, now: f64) -> String {
    let mut out = String::new();
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
    let header = [
        "POOL",
        "BACKEND",
        "STATE",
        "WEIGHT",
        "IN-FLIGHT",
        "SELECTED",
        "P50",
        "P99",
        "FAILED",
        "FROM",
        "SINCE",
        "REASON",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    let pools = status["pools"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for pool in pools {
        let mut name = text(&pool["name"]);
        if pool["panic"] == true {
            name.push_str(" (PANIC)");
        }
        for backend in pool["backends"].as_array().into_iter().flatten() {
            rows.push(vec![
                name.clone(),
                text(&backend["address"]),
                text(&backend["state"]),
                text(&backend["weight"]),
                text(&backend["in_flight"]),
                text(&backend["picked_total"]),
                milliseconds(&backend["latency_p50_ms"]),
                milliseconds(&backend["latency_p99_ms"]),
                text(&backend["failures_total"]),
                origins(&backend["origins"]),
                format!(
                    "{:.0}s",
                    backend["since_seconds"].as_f64().unwrap_or_default()
                ),
                text(&backend["reason"]),
            ]);
        }
    }
    for line in aligned(&rows) {
        let _ = writeln!(out, "{line}");
    }
    discovery(&mut out, pools, now);
    out
}

/// The discovery sources of every pool that has one, each followed by what it left out.
fn discovery(out: &mut String, pools: &[Value], now: f64) {
    let header = [
        "POOL",
        "SOURCE",
        "TARGET",
        "BACKENDS",
        "UPDATED",
        "READS",
        "FAILURES",
        "LAST ERROR",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    // Lines printed under each row (index into `rows`): the entries left out of the pool.
    let mut left_out: Vec<Vec<String>> = vec![Vec::new()];
    for pool in pools {
        for source in pool["discovery"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&pool["name"]),
                text(&source["source"]),
                text(&source["target"]),
                text(&source["backends"]),
                ago(&source["last_update"], now),
                text(&source["updates"]),
                text(&source["failures"]),
                source["last_error"].as_str().unwrap_or("").to_owned(),
            ]);
            left_out.push(
                (source["excluded"].as_array().into_iter().flatten())
                    .map(|e| {
                        format!(
                            "  left out: {} ({})",
                            text(&e["address"]),
                            text(&e["reason"])
                        )
                    })
                    .collect(),
            );
        }
    }
    if rows.len() == 1 {
        return;
    }
    out.push('\n');
    for (line, extra) in aligned(&rows).into_iter().zip(left_out) {
        let _ = writeln!(out, "{line}");
        for extra in extra {
            let _ = writeln!(out, "{extra}");
        }
    }
}

/// A string as itself, anything else as JSON (`null` for a missing field).
fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// `12.3ms`, or `-` before any response (the JSON's `null`).
fn milliseconds(value: &Value) -> String {
    match value.as_f64() {
        Some(ms) if ms >= 100.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{ms:.1}ms"),
        None => "-".into(),
    }
}

/// `config,consul`: the sources that list the backend (`-` for none, e.g. a drained leftover).
fn origins(value: &Value) -> String {
    let sources: Vec<String> = (value.as_array().into_iter().flatten())
        .map(|o| text(&o["source"]))
        .collect();
    if sources.is_empty() {
        "-".into()
    } else {
        sources.join(",")
    }
}

/// `4s ago` from Unix seconds; `never` for `null`.
fn ago(value: &Value, now: f64) -> String {
    match value.as_f64() {
        Some(at) => format!("{:.0}s ago", (now - at).max(0.0)),
        None => "never".into(),
    }
}

/// Rows as lines with every column but the last padded to its widest cell.
fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            (rows.iter())
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
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
                 "picked_total": 7, "since_seconds": 3.2, "reason": "ejected for 30s: 5 consecutive failures",
                 "latency_p50_ms": 1.25, "latency_p99_ms": 250.4, "failures_total": 5,
                 "origins": [{"source": "config", "last_seen": 1.0}, {"source": "consul", "last_seen": 2.0}]},
                {"address": "10.0.0.2:80", "state": "up", "weight": 3, "in_flight": 2,
                 "picked_total": 70, "since_seconds": 100.0, "reason": "no active check configured; available",
                 "latency_p50_ms": null, "latency_p99_ms": null, "failures_total": 0, "origins": []}
            ]}]
        });
        let table = status_table(&status, 100.0);
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
        // Columns line up: each column starts at the same offset on every row.
        let cell = |line: &str, column: &str| {
            let at = lines[2].find(column).unwrap();
            line[at..].split("  ").next().unwrap().to_owned()
        };
        assert_eq!(cell(lines[3], "P50"), "1.2ms");
        assert_eq!(cell(lines[3], "P99"), "250ms");
        assert_eq!(cell(lines[3], "FAILED"), "5");
        assert_eq!(cell(lines[3], "FROM"), "config,consul");
        assert_eq!(
            cell(lines[4], "P50"),
            "-",
            "no responses in the last minute"
        );
        assert_eq!(cell(lines[4], "FROM"), "-");
        let offset = lines[2].find("REASON").unwrap();
        assert_eq!(&lines[4][offset..], "no active check configured; available");
        // No pool has a discovery source: no second table.
        assert_eq!(lines.len(), 5, "{table}");
    }

    #[test]
    fn discovery_sources_show_what_they_left_out() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 1.0, "config_file": null, "last_reload": null,
            "pools": [
                {"name": "app", "panic": false, "backends": [], "discovery": [
                    {"source": "consul", "target": "http://127.0.0.1:8500 service web", "backends": 1,
                     "last_update": 96.0, "last_error": null, "updates": 4, "failures": 0,
                     "excluded": [
                        {"address": "10.0.0.3:80", "reason": "maintenance: deploy"},
                        {"address": "10.0.0.4:80", "reason": "check service:web critical"}
                     ]}
                ]},
                {"name": "db", "panic": false, "backends": [], "discovery": [
                    {"source": "dns", "target": "db.internal", "backends": 0, "last_update": null,
                     "last_error": "no answer", "updates": 0, "failures": 3, "excluded": []}
                ]}
            ]
        });
        let table = status_table(&status, 100.0);
        let lines: Vec<&str> = table.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("POOL  SOURCE"))
            .unwrap();
        assert!(lines[header + 1].starts_with("app   consul"), "{table}");
        assert!(lines[header + 1].contains("4s ago"), "{table}");
        assert_eq!(
            lines[header + 2],
            "  left out: 10.0.0.3:80 (maintenance: deploy)"
        );
        assert_eq!(
            lines[header + 3],
            "  left out: 10.0.0.4:80 (check service:web critical)"
        );
        assert!(
            lines[header + 4].starts_with("db    dns")
                && lines[header + 4].contains("never")
                && lines[header + 4].ends_with("no answer"),
            "{table}"
        );
    }
}
