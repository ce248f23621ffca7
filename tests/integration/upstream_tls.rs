//! TLS to backends: verification against a pool's CA with and without SNI, a clean 502 for
//! an untrusted certificate, `verify: false`, HTTP/2 by ALPN, TLS originated by a TCP
//! listener, health checks over TLS, client certificates for backends that require them
//! (mutual TLS), and CA files and client certificate/key pairs checked at validation.

use crate::common::tls::TestCert;
use crate::common::upstream::*;
use crate::common::*;
use http::{StatusCode, Version};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn tls_config(backend: &str, tls: &str, extra: &str) -> String {
    format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{backend}]\n    tls: {tls}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_with_sni_reaches_the_backend_and_health_checks_use_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let tls = server_tls(ca.leaf(&["api.internal"]), &[b"http/1.1"]);
    let backend = spawn_upstream("secure", Listen::Tcp, Some(tls), Speaks::Http1).await;
    let yaml = tls_config(
        &backend.address,
        &format!("{{ca: {}, sni: api.internal}}", ca.pem_path.display()),
        "    health_check: {type: http, path: /health, interval: 200ms, timeout: 200ms}\n",
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    let response = get(addr, "/hello").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&response), "ok secure");
    let saw = backend.saw();
    let request = saw.iter().find(|s| s.uri.path() == "/hello").unwrap();
    assert_eq!(request.sni.as_deref(), Some("api.internal"));
    assert_eq!(request.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(request.headers["host"], "test.local", "the client's Host");

    let checked = wait_until(Duration::from_secs(5), || {
        backend.paths().iter().any(|p| p == "/health")
    })
    .await;
    assert!(checked, "health check over TLS: {:?}", backend.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sni_an_ip_backend_is_checked_against_its_ip_san() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let tls = server_tls(ca.leaf(&["127.0.0.1"]), &[b"http/1.1"]);
    let backend = spawn_upstream("ip", Listen::Tcp, Some(tls), Speaks::Http1).await;
    let yaml = tls_config(
        &backend.address,
        &format!("{{ca: {}}}", ca.pem_path.display()),
        "",
    );
    let sluice = start_sluice(&yaml).await;
    let response = get(sluice.local_addr("web").unwrap(), "/").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(backend.saw()[0].sni, None, "no SNI for an IP literal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_quick_502_unless_verify_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(dir.path(), "trusted");
    let other = TestCa::new(dir.path(), "other");
    let tls = server_tls(other.leaf(&["127.0.0.1"]), &[b"http/1.1"]);
    let backend = spawn_upstream("rogue", Listen::Tcp, Some(tls), Speaks::Http1).await;

    let yaml = tls_config(
        &backend.address,
        &format!("{{ca: {}}}", trusted.pem_path.display()),
        "    timeouts: {connect: 10s}\n",
    );
    let sluice = start_sluice(&yaml).await;
    let started = Instant::now();
    let response = get(sluice.local_addr("web").unwrap(), "/").await;
    assert_status(&response, StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused certificate fails at once, not at the connect timeout: {:?}",
        started.elapsed()
    );
    assert!(backend.saw().is_empty(), "no request reached the backend");

    let insecure = tls_config(&backend.address, "{verify: false}", "");
    let sluice = start_sluice(&insecure).await;
    let response = get(sluice.local_addr("web").unwrap(), "/").await;
    assert_status(&response, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let tls = server_tls(ca.leaf(&["grpc.internal"]), &[b"h2"]);
    let backend = spawn_upstream("h2tls", Listen::Tcp, Some(tls), Speaks::H2).await;
    let yaml = tls_config(
        &backend.address,
        &format!("{{ca: {}, sni: grpc.internal}}", ca.pem_path.display()),
        "    protocol: h2\n",
    );
    let sluice = start_sluice(&yaml).await;
    let response = get(sluice.local_addr("web").unwrap(), "/over-tls").await;
    assert_status(&response, StatusCode::OK);
    let saw = &backend.saw()[0];
    assert_eq!(saw.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(saw.version, Version::HTTP_2);
    assert_eq!(saw.uri.scheme_str(), Some("https"));
    assert_eq!(
        saw.uri.authority().map(|a| a.as_str()),
        Some("test.local"),
        "the client's Host became :authority"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_originates_tls_to_a_tls_pool() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let tls = server_tls(ca.leaf(&["db.internal"]), &[]);
    let backend = spawn_upstream("tcp-tls", Listen::Tcp, Some(tls), Speaks::Http1).await;
    let yaml = format!(
        "listeners:\n  db: {{bind: 127.0.0.1:0, protocol: tcp, pool: app}}\npools:\n  app:\n    backends: [{}]\n    tls: {{ca: {}, sni: db.internal}}\n",
        backend.address,
        ca.pem_path.display()
    );
    let sluice = start_sluice(&yaml).await;
    let mut client = tokio::net::TcpStream::connect(sluice.local_addr("db").unwrap())
        .await
        .unwrap();
    client
        .write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok tcp-tls"), "{reply}");
    let saw = &backend.saw()[0];
    assert_eq!(saw.sni.as_deref(), Some("db.internal"));
    assert_eq!(saw.alpn, None, "no ALPN on an L4 session");
}

/// A backend that refuses any client without a certificate from `client_ca`; its own
/// certificate is for `mtls.internal`, signed by `server_ca`.
async fn spawn_mtls_upstream(server_ca: &TestCa, client_ca: &TestCa) -> Upstream {
    let tls = server_tls_requiring_client_cert(
        server_ca.leaf(&["mtls.internal"]),
        client_ca,
        &[b"http/1.1"],
    );
    spawn_upstream("mtls", Listen::Tcp, Some(tls), Speaks::Http1).await
}

fn mtls_pool(server_ca: &TestCa, client: Option<&TestCert>) -> String {
    let identity = client
        .map(|c| format!(", cert: {}, key: {}", c.cert.display(), c.key.display()))
        .unwrap_or_default();
    format!(
        "{{ca: {}, sni: mtls.internal{identity}}}",
        server_ca.pem_path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_requiring_a_client_certificate_is_reached_with_the_pools_cert_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new(dir.path(), "server-ca");
    let client_ca = TestCa::new(dir.path(), "client-ca");
    let client = client_ca.client(dir.path(), "sluice-client", "sluice");
    let backend = spawn_mtls_upstream(&server_ca, &client_ca).await;
    let yaml = tls_config(&backend.address, &mtls_pool(&server_ca, Some(&client)), "");
    let sluice = start_sluice(&yaml).await;

    let response = get(sluice.local_addr("web").unwrap(), "/mutual").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&response), "ok mtls");
    let saw = backend.saw();
    assert_eq!(saw.len(), 1, "{saw:?}");
    assert_eq!(saw[0].uri.path(), "/mutual");
    assert!(
        saw[0].client_cert.as_ref() == Some(&client.der),
        "the backend saw the pool's client certificate, not {:?}",
        saw[0].client_cert.as_ref().map(Vec::len)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_a_backend_requiring_one_is_a_quick_502() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new(dir.path(), "server-ca");
    let client_ca = TestCa::new(dir.path(), "client-ca");
    let backend = spawn_mtls_upstream(&server_ca, &client_ca).await;
    let yaml = tls_config(
        &backend.address,
        &mtls_pool(&server_ca, None),
        "    timeouts: {connect: 10s, response: 10s}\n",
    );
    let sluice = start_sluice(&yaml).await;

    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        get(sluice.local_addr("web").unwrap(), "/"),
    )
    .await
    .expect("sluice answers instead of hanging");
    assert_status(&response, StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused handshake fails at once, not at a timeout: {:?}",
        started.elapsed()
    );
    assert!(
        backend.connections.load(Ordering::SeqCst) > 0,
        "sluice did reach the backend"
    );
    assert!(
        backend.saw().is_empty(),
        "no request got past the handshake"
    );
}

#[test]
fn a_client_certificate_with_a_key_of_another_is_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let one = ca.client(dir.path(), "one", "one");
    let other = ca.client(dir.path(), "other", "other");
    let tls = format!(
        "{{cert: {}, key: {}}}",
        one.cert.display(),
        other.key.display()
    );
    let error = sluice::Config::parse(&tls_config("127.0.0.1:1", &tls, ""), "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("test.yaml:6:"), "{error}");
    assert!(error.contains(": pools.app.tls.key: "), "{error}");
    let crossed = format!(
        "{} does not fit {}",
        other.key.display(),
        one.cert.display()
    );
    assert!(error.contains(&crossed), "names both files: {error}");

    let tls = format!(
        "{{cert: {}, key: {}}}",
        one.cert.display(),
        one.key.display()
    );
    let matched = sluice::Config::parse(&tls_config("127.0.0.1:1", &tls, ""), "test.yaml");
    assert!(
        matched.is_ok(),
        "the matching pair is accepted: {matched:?}"
    );
}

#[test]
fn ca_files_are_checked_when_the_config_is() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let yaml = tls_config("127.0.0.1:1", &format!("{{ca: {}}}", missing.display()), "");
    let error = sluice::Config::parse(&yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("test.yaml:6:15: pools.app.tls.ca: "),
        "{error}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let yaml = tls_config("127.0.0.1:1", &format!("{{ca: {}}}", garbage.display()), "");
    let error = sluice::Config::parse(&yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("no PEM certificate"), "{error}");

    let yaml = tls_config("unix:/run/app.sock", "{sni: }", "");
    assert!(sluice::Config::parse(&yaml, "test.yaml").is_err());
    let yaml = tls_config("unix:/run/app.sock", "{}", "");
    let error = sluice::Config::parse(&yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("pools.app.tls.sni"), "{error}");
}
