//! Unix socket backends (`unix:/path`): HTTP pools (HTTP/1.1 and HTTP/2), TCP pools, and
//! health checks that reach the socket (and take a missing one out).

use crate::common::upstream::*;
use crate::common::*;
use http::{StatusCode, Version};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pool_reaches_a_unix_backend_and_checks_its_health() {
    let dir = tempfile::tempdir().unwrap();
    let backend = spawn_upstream(
        "sock",
        Listen::Unix(dir.path().join("app.sock")),
        None,
        Speaks::Http1,
    )
    .await;
    let missing = format!("unix:{}", dir.path().join("gone.sock").display());
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{}, {missing}]\n    health_check: {{type: http, path: /health, interval: 100ms, timeout: 100ms, fall: 1}}\n",
        backend.address
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    let checked = wait_until(Duration::from_secs(5), || {
        backend.paths().iter().any(|p| p == "/health")
    })
    .await;
    assert!(checked, "health check over the unix socket");
    let snapshot = sluice.snapshot();
    let down = wait_until(Duration::from_secs(5), || {
        let current = snapshot.load();
        current.pools["app"]
            .backends
            .iter()
            .any(|b| b.address.to_string() == missing && !b.state.health.is_healthy())
    })
    .await;
    assert!(down, "a missing socket fails its check");

    for _ in 0..3 {
        let response = get(addr, "/page").await;
        assert_status(&response, StatusCode::OK);
        assert_eq!(body_text(&response), "ok sock");
    }
    let saw = backend.saw();
    let page = saw.iter().find(|s| s.uri.path() == "/page").unwrap();
    assert_eq!(
        page.headers["host"], "test.local",
        "the client's Host, not the path"
    );
    assert_eq!(page.uri.to_string(), "/page");

    // The admin API names a unix backend with its slashes escaped.
    let segment = backend.address.replace('/', "%2F");
    let admin = sluice.admin_addr().unwrap();
    let drained = admin_post(admin, &format!("/pools/app/backends/{segment}/drain")).await;
    assert_status(&drained, StatusCode::OK);
    assert!(
        body_text(&drained).contains(&backend.address),
        "{}",
        body_text(&drained)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_pool_reaches_a_unix_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend = spawn_upstream(
        "sock2",
        Listen::Unix(dir.path().join("h2.sock")),
        None,
        Speaks::H2,
    )
    .await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    protocol: h2\n    backends: [{}]\n",
        backend.address
    );
    let sluice = start_sluice(&yaml).await;
    let response = get(sluice.local_addr("web").unwrap(), "/x").await;
    assert_status(&response, StatusCode::OK);
    let saw = &backend.saw()[0];
    assert_eq!(saw.version, Version::HTTP_2);
    assert_eq!(saw.uri.authority().unwrap().as_str(), "test.local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_pool_splices_to_a_unix_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let yaml = format!(
        "listeners:\n  raw: {{bind: 127.0.0.1:0, protocol: tcp, pool: echo}}\npools:\n  echo:\n    backends: [unix:{}]\n    send_proxy: v2\n",
        path.display()
    );
    let sluice = start_sluice(&yaml).await;
    let mut client = tokio::net::TcpStream::connect(sluice.local_addr("raw").unwrap())
        .await
        .unwrap();
    client.write_all(b"ping over a unix socket").await.unwrap();
    client.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    // The PROXY v2 header (the client's TCP addresses) comes first, then the bytes.
    assert!(echoed.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{echoed:?}");
    assert!(echoed.ends_with(b"ping over a unix socket"), "{echoed:?}");
}
