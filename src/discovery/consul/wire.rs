//! What Consul's answers mean, without a socket: the `/v1/health/service/NAME` JSON into
//! backends and excluded entries (each with why), and the blocking-query index rules.
//! Unit-tested below.
//!
//! An instance's state is the worst of its checks, node checks included (Consul's own
//! aggregation): maintenance (the `_node_maintenance` and `_service_maintenance:ID` checks
//! Consul adds, critical, with the operator's reason in `Notes`) > critical > warning >
//! passing. Maintenance and critical are always out; warning is out under `passing_only`
//! (as Consul's `?passing` filter does), else in at `Weights.Warning`. The filtering is done
//! here rather than with `?passing` so that `/status` can say why each one is out.

use crate::config::{BackendAddress, BackendConfig, MAX_WEIGHT};
use crate::discovery::Excluded;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    #[serde(default)]
    pub node: Node,
    pub service: Service,
    #[serde(default)]
    pub checks: Vec<Check>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub weights: Option<Weights>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    #[serde(default)]
    pub passing: u32,
    #[serde(default)]
    pub warning: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub output: String,
}

const NODE_MAINTENANCE: &str = "_node_maintenance";
const SERVICE_MAINTENANCE: &str = "_service_maintenance:";

/// The answer as backends and excluded entries.
pub fn parse_health(
    body: &[u8],
    passing_only: bool,
) -> Result<(Vec<BackendConfig>, Vec<Excluded>), String> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| format!("unexpected answer: {e}"))?;
    let mut backends = Vec::new();
    let mut excluded = Vec::new();
    for entry in &entries {
        match judge(entry, passing_only) {
            Ok(backend) => backends.push(backend),
            Err(out) => excluded.push(out),
        }
    }
    Ok((backends, excluded))
}

/// One instance: in the pool at its weight, or out with the reason.
fn judge(entry: &Entry, passing_only: bool) -> Result<BackendConfig, Excluded> {
    let host = if entry.service.address.is_empty() {
        &entry.node.address
    } else {
        &entry.service.address
    };
    let shown = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, entry.service.port).to_string(),
        Err(_) => format!("{host}:{}", entry.service.port),
    };
    let out = |reason: String| Excluded {
        address: shown.clone(),
        reason,
    };
    let Ok(ip) = host.parse::<IpAddr>() else {
        return Err(out(format!(
            "service {:?}: address {host:?} is not an IP address",
            entry.service.id
        )));
    };
    if entry.service.port == 0 {
        return Err(out(format!("service {:?} has no port", entry.service.id)));
    }
    for check in &entry.checks {
        if check.check_id == NODE_MAINTENANCE {
            return Err(out(format!(
                "node {} in maintenance{}",
                entry.node.node,
                because(&check.notes)
            )));
        }
        if check.check_id.starts_with(SERVICE_MAINTENANCE) {
            return Err(out(format!(
                "service {} in maintenance{}",
                entry.service.id,
                because(&check.notes)
            )));
        }
    }
    let worst = |status: &str| entry.checks.iter().find(|c| c.status == status);
    if let Some(check) = worst("critical") {
        return Err(out(format!(
            "check {} critical{}",
            name(check),
            because(&check.output)
        )));
    }
    let weights = entry.service.weights.unwrap_or(Weights {
        passing: 1,
        warning: 1,
    });
    let weight = match worst("warning") {
        Some(check) if passing_only => {
            return Err(out(format!(
                "check {} warning (passing_only){}",
                name(check),
                because(&check.output)
            )));
        }
        Some(check) if weights.warning == 0 => {
            return Err(out(format!(
                "check {} warning and Weights.Warning is 0",
                name(check)
            )));
        }
        Some(_) => weights.warning,
        // Consul refuses a registration with Passing 0; an answer without one means 1.
        None => weights.passing.max(1),
    };
    Ok(BackendConfig {
        address: BackendAddress::Inet(SocketAddr::new(ip, entry.service.port)),
        weight: weight.min(MAX_WEIGHT),
        max_connections: None,
    })
}

fn name(check: &Check) -> String {
    if check.name.is_empty() || check.name == check.check_id {
        format!("{:?}", check.check_id)
    } else {
        format!("{:?} ({})", check.name, check.check_id)
    }
}

/// `: TEXT` (first line, at most 200 characters), or nothing.
fn because(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    if line.is_empty() {
        return String::new();
    }
    let short: String = line.chars().take(200).collect();
    format!(": {short}")
}

/// The index for the next blocking query, per Consul's rules: an index that went backwards
/// (a server restored from a snapshot, a new leader's state) resets to 0, which makes the next
/// query return at once with the current state; an index of 0 where a real one was expected
/// (a bug Consul's docs warn of) is used as 1, or every query would return at once again.
/// A missing header is a reset too.
pub fn next_index(previous: u64, answered: Option<u64>) -> u64 {
    match answered {
        None => 0,
        Some(index) if index < previous => 0,
        Some(0) => 1,
        Some(index) => index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, port: u16, weights: &str, checks: &str) -> String {
        format!(
            r#"{{"Node": {{"Node": "n1", "Address": "10.0.0.1"}},
                "Service": {{"ID": "web-1", "Service": "web", "Address": "{address}",
                            "Port": {port}{weights}}},
                "Checks": [{checks}]}}"#
        )
    }

    fn check(id: &str, status: &str, notes: &str) -> String {
        format!(
            r#"{{"CheckID": "{id}", "Name": "{id}", "Status": "{status}", "Notes": "{notes}", "Output": "out {id}"}}"#
        )
    }

    fn parse(entries: &[String], passing_only: bool) -> (Vec<(String, u32)>, Vec<String>) {
        let body = format!("[{}]", entries.join(","));
        let (backends, excluded) = parse_health(body.as_bytes(), passing_only).unwrap();
        (
            backends
                .iter()
                .map(|b| (b.address.to_string(), b.weight))
                .collect(),
            excluded
                .iter()
                .map(|e| format!("{} {}", e.address, e.reason))
                .collect(),
        )
    }

    #[test]
    fn weights_and_the_node_address_fallback() {
        let weights = r#", "Weights": {"Passing": 5, "Warning": 2}"#;
        let (backends, excluded) = parse(
            &[
                entry("10.0.0.8", 80, weights, &check("serfHealth", "passing", "")),
                entry("", 81, "", &check("service:web-1", "passing", "")),
                entry(
                    "10.0.0.9",
                    82,
                    weights,
                    &check("service:web-1", "warning", ""),
                ),
            ],
            false,
        );
        assert_eq!(
            backends,
            [
                ("10.0.0.8:80".to_owned(), 5),
                ("10.0.0.1:81".to_owned(), 1),
                ("10.0.0.9:82".to_owned(), 2)
            ]
        );
        assert!(excluded.is_empty(), "{excluded:?}");
    }

    #[test]
    fn maintenance_critical_and_warning_leave_with_their_reason() {
        let node_maintenance = [
            check("serfHealth", "passing", ""),
            check("_node_maintenance", "critical", "kernel upgrade"),
        ]
        .join(",");
        let (backends, excluded) = parse(
            &[
                entry("10.0.0.2", 80, "", &node_maintenance),
                entry(
                    "10.0.0.3",
                    80,
                    "",
                    &check("_service_maintenance:web-1", "critical", ""),
                ),
                entry("10.0.0.4", 80, "", &check("service:web-1", "critical", "")),
                entry("10.0.0.5", 80, "", &check("service:web-1", "warning", "")),
                entry("web.internal", 80, "", ""),
                entry(
                    "10.0.0.6",
                    80,
                    r#", "Weights": {"Passing": 1, "Warning": 0}"#,
                    &check("mem", "warning", ""),
                ),
            ],
            true,
        );
        assert!(backends.is_empty(), "{backends:?}");
        assert_eq!(
            excluded,
            [
                "10.0.0.2:80 node n1 in maintenance: kernel upgrade",
                "10.0.0.3:80 service web-1 in maintenance",
                "10.0.0.4:80 check \"service:web-1\" critical: out service:web-1",
                "10.0.0.5:80 check \"service:web-1\" warning (passing_only): out service:web-1",
                "web.internal:80 service \"web-1\": address \"web.internal\" is not an IP address",
                "10.0.0.6:80 check \"mem\" warning (passing_only): out mem",
            ]
        );
        // Without passing_only a warning instance stays, unless its warning weight is 0.
        let (backends, excluded) = parse(
            &[
                entry("10.0.0.5", 80, "", &check("service:web-1", "warning", "")),
                entry(
                    "10.0.0.6",
                    80,
                    r#", "Weights": {"Passing": 1, "Warning": 0}"#,
                    &check("mem", "warning", ""),
                ),
            ],
            false,
        );
        assert_eq!(backends, [("10.0.0.5:80".to_owned(), 1)]);
        assert_eq!(
            excluded,
            ["10.0.0.6:80 check \"mem\" warning and Weights.Warning is 0"]
        );
    }

    #[test]
    fn a_malformed_answer_is_an_error() {
        assert!(parse_health(b"{\"not\": \"a list\"}", true).is_err());
        assert!(parse_health(b"[]", true).unwrap().0.is_empty());
    }

    #[test]
    fn the_index_resets_when_it_goes_backwards_and_is_never_zero_after_an_answer() {
        assert_eq!(next_index(0, Some(7)), 7);
        assert_eq!(next_index(7, Some(7)), 7);
        assert_eq!(next_index(7, Some(9)), 9);
        assert_eq!(next_index(9, Some(3)), 0, "backwards: reset");
        assert_eq!(next_index(0, Some(0)), 1, "zero: used as 1");
        assert_eq!(next_index(5, None), 0);
    }
}
