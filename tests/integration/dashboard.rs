//! The Grafana dashboard in `docs/grafana/sluice-dashboard.json` names only metrics sluice
//! has: every metric in its PromQL (panels, template variables, annotations) is in a real
//! sluice's `/metrics` after traffic, or, for the families that appear only once their event
//! happened (an ejection, a TLS failure), among the families `src/metrics.rs` and the files
//! under `src/metrics/` register.

use crate::common::*;
use http::StatusCode;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Every `sluice_*` / `process_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if at_word_start && (rest.starts_with("sluice_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every expression of the dashboard: panel targets, variable queries, annotations.
fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(text)) => {
                        out.push(text.clone())
                    }
                    ("query", serde_json::Value::String(text)) if text.contains('(') => {
                        out.push(text.clone())
                    }
                    _ => expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The families `src/metrics.rs` and the files under `src/metrics/` register (their name
/// strings).
fn registered_families() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("metrics.rs")];
    for entry in std::fs::read_dir(root.join("metrics")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            if (piece.starts_with("sluice_") || piece.starts_with("process_"))
                && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                names.insert(piece.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_expression_parser_finds_metric_names() {
    let names = metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(sluice_http_request_duration_seconds_bucket{instance=~\"$instance\"}[5m]))) / process_open_fds",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "process_open_fds",
            "sluice_http_request_duration_seconds_bucket"
        ]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_names_exists() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/sluice-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() > 20, "{used:?}");

    // A sluice with traffic of every kind the dashboard shows: HTTP answers, a dead backend
    // (retries, failed checks), a malformed request, a TCP session, a reload, discovery.
    let good = spawn_backend("a").await.addr;
    let dead = dead_addr().await;
    let echo = spawn_tcp_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let discovered = dir.path().join("backends.yaml");
    write_file(&discovered, "[]\n");
    let config_path = dir.path().join("sluice.yaml");
    write_file(
        &config_path,
        &format!(
            "watch: false\nadmin: {{bind: 127.0.0.1:0}}\nlisteners:\n  dash_web: {{bind: 127.0.0.1:0, pool: dash_app}}\n  \
             dash_tcp: {{bind: 127.0.0.1:0, protocol: tcp, pool: dash_tcp_pool}}\n\
             pools:\n  dash_app:\n    backends: [{good}, {dead}]\n    health_check: {{type: tcp, interval: 100ms}}\n    \
             discovery:\n      file: '{}'\n  dash_tcp_pool:\n    backends: [{echo}]\n",
            discovered.display()
        ),
    );
    let sluice = sluice::Server::start_from_file(&config_path).await.unwrap();
    let web = sluice.local_addr("dash_web").unwrap();
    let admin = sluice.admin_addr().unwrap();
    for _ in 0..10 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }
    raw_exchange(web, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5)).await;
    let mut tcp = tokio::net::TcpStream::connect(sluice.local_addr("dash_tcp").unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"ping")
        .await
        .unwrap();
    drop(tcp);
    assert_status(&admin_post(admin, "/reload").await, StatusCode::OK);
    let checked = wait_until_async(Duration::from_secs(10), || async {
        body_text(&get(admin, "/metrics").await).contains("result=\"failure\"")
    })
    .await;
    assert!(checked, "failed health checks of the dead backend");

    let text = body_text(&get(admin, "/metrics").await);
    let scraped: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let registered = registered_families();
    let mut missing = Vec::new();
    let mut not_scraped = Vec::new();
    for name in &used {
        if scraped.contains(name) {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if registered.contains(name) || registered.contains(family) {
            not_scraped.push(name.clone());
        } else {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard names metrics sluice does not have: {missing:?}"
    );
    // Most of it must be live, not only registered.
    assert!(
        not_scraped.len() * 4 < used.len(),
        "only registered, never scraped here: {not_scraped:?}"
    );
}
