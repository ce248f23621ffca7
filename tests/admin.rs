//! Admin API and reload reporting, in their own test process: the Prometheus recorder is
//! global, so counters are only exact where no other test reloads concurrently.

mod common;

use common::*;
use http::StatusCode;
use std::net::SocketAddr;

#[tokio::test]
async fn broken_config_is_refused_reported_and_counted_while_the_old_one_serves() {
    let first = spawn_backend("first").await;
    let second = spawn_backend("second").await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    let admin_section = "admin: {bind: 127.0.0.1:0}\nwatch: false\n";
    write_file(
        &path,
        &format!("{admin_section}{}", two_listeners(&[first.addr], "")),
    );
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let web = sluice.local_addr("web").unwrap();
    let admin = sluice.admin_addr().unwrap();

    write_file(
        &path,
        &format!(
            "{admin_section}{}",
            two_listeners(&[first.addr], "").replace("pool: app}", "pool: missing}")
        ),
    );
    let failures_before = reload_failures(admin).await;
    let response = admin_post(admin, "/reload").await;
    assert_status(&response, StatusCode::UNPROCESSABLE_ENTITY);
    let report: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let detail = report["detail"].as_str().unwrap();
    assert!(
        detail.contains("sluice.yaml:4:") && detail.contains("listeners.web.pool"),
        "{detail}"
    );
    assert_eq!(reload_failures(admin).await, failures_before + 1);
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    assert_eq!(status["last_reload"]["success"], false);
    assert_eq!(
        body_text(&get(web, "/").await),
        "backend first",
        "old config still serving"
    );

    write_file(
        &path,
        &format!("{admin_section}{}", two_listeners(&[second.addr], "")),
    );
    let response = admin_post(admin, "/reload").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&get(web, "/").await), "backend second");
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    assert_eq!(status["last_reload"]["success"], true);
    assert_eq!(
        status["pools"][0]["backends"][0]["address"],
        second.addr.to_string()
    );
    let metrics = body_text(&get(admin, "/metrics").await);
    let up = format!(
        "sluice_backend_up{{pool=\"app\",backend=\"{}\"}} 1",
        second.addr
    );
    assert!(metrics.contains(&up), "{up} in\n{metrics}");
    assert!(
        metrics.contains("sluice_pool_backends{pool=\"app\",state=\"healthy\"} 1"),
        "{metrics}"
    );
}

async fn reload_failures(admin: SocketAddr) -> u64 {
    let metrics = body_text(&get(admin, "/metrics").await);
    metrics
        .lines()
        .find(|l| l.starts_with("sluice_config_reloads_total{result=\"failure\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in:\n{metrics}"))
}
