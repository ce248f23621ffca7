//! Per-backend series follow the running config (issue 27): a backend that leaves takes its
//! series out of `/metrics` (they used to stay for the life of the process, and 10,000
//! backends moved back and forth doubled the RSS), while one that stays keeps its counters.

use crate::common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;

/// The value of the first `/metrics` line that starts with `prefix`.
fn value(metrics: &str, prefix: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn responses_2xx(backend: SocketAddr) -> String {
    format!("sluice_backend_responses_total{{pool=\"app\",backend=\"{backend}\",class=\"2xx\"}}")
}

#[tokio::test]
async fn a_removed_backends_series_leave_metrics_and_a_kept_ones_counters_stay() {
    let kept = spawn_backend("kept").await;
    let removed = spawn_backend("removed").await;
    let added = spawn_backend("added").await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    let admin_section = "admin: {bind: 127.0.0.1:0}\nwatch: false\n";
    write_file(
        &path,
        &format!(
            "{admin_section}{}",
            two_listeners(&[kept.addr, removed.addr], "")
        ),
    );
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let web = sluice.local_addr("web").unwrap();
    let admin = sluice.admin_addr().unwrap();
    for _ in 0..6 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }
    let before = body_text(&get(admin, "/metrics").await);
    let kept_count = value(&before, &responses_2xx(kept.addr)).expect("kept backend's counter");
    let removed_count = value(&before, &responses_2xx(removed.addr)).expect("removed one's");
    assert!(kept_count > 0 && removed_count > 0, "{before}");
    let removed_label = format!("backend=\"{}\"", removed.addr);

    write_file(
        &path,
        &format!(
            "{admin_section}{}",
            two_listeners(&[kept.addr, added.addr], "")
        ),
    );
    assert_status(&admin_post(admin, "/reload").await, StatusCode::OK);
    // One backend's state alone, as the running snapshot has it.
    let one = get(admin, &format!("/pools/app/backends/{}", kept.addr)).await;
    assert_status(&one, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_slice(one.body()).unwrap();
    assert_eq!(status["address"], kept.addr.to_string());
    let path = format!("/pools/app/backends/{}", removed.addr);
    assert_status(&get(admin, &path).await, StatusCode::NOT_FOUND);
    assert_status(
        &get(admin, "/pools/nope/backends/127.0.0.1:1").await,
        StatusCode::NOT_FOUND,
    );
    // Gone once nothing holds the backend any more (the reload's answer may come first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (gone, last) = loop {
        let last = body_text(&get(admin, "/metrics").await);
        let gone = !last.contains(&removed_label);
        if gone || tokio::time::Instant::now() > deadline {
            break (gone, last);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(gone, "{removed_label} still in\n{last}");
    assert_eq!(
        value(&last, &responses_2xx(kept.addr)),
        Some(kept_count),
        "a kept backend's counter must not reset:\n{last}"
    );
    let added_up = format!(
        "sluice_backend_up{{pool=\"app\",backend=\"{}\"}} 1",
        added.addr
    );
    assert!(last.contains(&added_up), "{added_up} in\n{last}");
    // The kept backend keeps counting from where it was.
    for _ in 0..4 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }
    let after = body_text(&get(admin, "/metrics").await);
    let now = value(&after, &responses_2xx(kept.addr)).unwrap_or(0);
    assert!(now > kept_count, "{now} after {kept_count}:\n{after}");
}
