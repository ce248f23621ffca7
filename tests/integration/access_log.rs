//! Access logs and request IDs, end to end: lines in both formats with the right fields, the
//! request ID shared by client, backend and log, and log files reopened on SIGUSR1.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::Duration;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn json_and_combined_lines_carry_the_request_and_its_id() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let (json_path, combined_path) = (
        directory.path().join("json.log"),
        directory.path().join("combined.log"),
    );
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app, access_log: {{format: json, path: '{}'}}}}\n  \
         classic: {{bind: 127.0.0.1:0, pool: app, access_log: {{path: '{}'}}}}\npools:\n  app:\n    backends: [{}]\n",
        json_path.display(),
        combined_path.display(),
        backend.addr
    );
    let sluice = start_sluice(&yaml).await;
    let web = sluice.local_addr("web").unwrap();

    let with_id = Request::get("/traced?x=1")
        .header("host", "shop.example")
        .header("x-request-id", "trace-42")
        .header("user-agent", "test-agent/1.0")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let response = send(web, with_id).await;
    assert_eq!(
        response.headers()["x-request-id"],
        "trace-42",
        "an incoming id is kept"
    );
    assert_eq!(backend.seen()[0].headers["x-request-id"], "trace-42");
    let fresh = get(web, "/bytes/1000").await;
    let generated = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "a new id is generated: {generated}");
    assert_eq!(
        backend.seen()[1].headers["x-request-id"],
        generated.as_str()
    );

    assert!(
        wait_until(Duration::from_secs(5), || lines(&json_path).len() == 2).await,
        "two JSON lines"
    );
    let first: serde_json::Value = serde_json::from_str(&lines(&json_path)[0]).unwrap();
    assert_eq!(first["request_id"], "trace-42");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/traced?x=1");
    assert_eq!(first["host"], "shop.example");
    assert_eq!(first["status"], 200);
    assert_eq!(first["listener"], "web");
    assert_eq!(first["pool"], "app");
    assert_eq!(first["upstream_addr"], backend.addr.to_string());
    assert_eq!(first["user_agent"], "test-agent/1.0");
    let second: serde_json::Value = serde_json::from_str(&lines(&json_path)[1]).unwrap();
    assert_eq!(second["bytes_out"], 1000, "bytes counted as streamed");
    assert_eq!(second["request_id"], generated.as_str());

    let classic = sluice.local_addr("classic").unwrap();
    assert_status(&get(classic, "/hello").await, StatusCode::OK);
    assert!(wait_until(Duration::from_secs(5), || !lines(&combined_path).is_empty()).await);
    let line = &lines(&combined_path)[0];
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("] \"GET /hello HTTP/1.1\" 200 9 \"-\" \"-\""),
        "nginx combined: {line}"
    );
}

#[tokio::test]
async fn sluice_answers_are_logged_too() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("access.log");
    let dead = dead_addr().await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app, access_log: {{format: json, path: '{}'}}}}\npools:\n  app:\n    backends: [{dead}]\n",
        path.display()
    );
    let sluice = start_sluice(&yaml).await;
    assert_status(
        &get(sluice.local_addr("web").unwrap(), "/").await,
        StatusCode::BAD_GATEWAY,
    );
    assert!(wait_until(Duration::from_secs(5), || !lines(&path).is_empty()).await);
    let line: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(line["status"], 502);
    assert_eq!(line["upstream_addr"], serde_json::Value::Null);
    assert_eq!(line["pool"], "app");
}
