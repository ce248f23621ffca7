//! TLS termination on HTTP listeners: certificate choice by SNI, ALPN (h2 and http/1.1),
//! X-Forwarded-Proto, certificate reloads, handshake failures, and the PROXY header before
//! the ClientHello. Real sockets on 127.0.0.1:0, a real sluice and real backends.

use crate::common::tls::*;
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn https_config(backend: SocketAddr, certs: &[&TestCert], extra: &str) -> String {
    let list: String = certs
        .iter()
        .map(|c| {
            format!(
                "        - {{cert: {}, key: {}}}\n",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect();
    format!(
        "listeners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n{extra}    tls:\n      certificates:\n{list}pools:\n  app:\n    backends: [{backend}]\n"
    )
}

/// One GET over an established stream, HTTP/1.1 or HTTP/2; returns (status, body).
async fn get_over<S>(stream: S, h2: bool, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(format!("https://a.example.com{path}"))
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_unknown_names_get_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let b = write_cert(dir.path(), "b", &["*.b.example.com"]);
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&https_config(backend.addr, &[&a, &b], "")).await;
    let addr = sluice.local_addr("https").unwrap();

    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert!(presented(&tls) == a.der, "exact name: certificate a");
    let tls = connect_tls(addr, "www.b.example.com", &[]).await.unwrap();
    assert!(presented(&tls) == b.der, "wildcard name: certificate b");
    let tls = connect_tls(addr, "unknown.test", &[]).await.unwrap();
    assert!(
        presented(&tls) == a.der,
        "unknown name: the first (default)"
    );
    let tls = connect_tls(addr, "127.0.0.1", &[]).await.unwrap();
    assert!(presented(&tls) == a.der, "no SNI: the default");
}

#[tokio::test]
async fn default_certificate_can_be_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let b = write_cert(dir.path(), "b", &["b.example.com"]);
    let backend = spawn_backend("app").await;
    let yaml = https_config(backend.addr, &[&a, &b], "").replace(
        "      certificates:\n",
        "      default_certificate: b.example.com\n      certificates:\n",
    );
    let sluice = start_sluice(&yaml).await;
    let tls = connect_tls(sluice.local_addr("https").unwrap(), "127.0.0.1", &[])
        .await
        .unwrap();
    assert!(presented(&tls) == b.der);
}

#[tokio::test]
async fn h2_over_tls_reaches_the_backend_with_forwarded_proto_https() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&https_config(backend.addr, &[&a], "")).await;
    let tls = connect_tls(
        sluice.local_addr("https").unwrap(),
        "a.example.com",
        &["h2", "http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get_over(tls, true, "/over-h2").await;
    assert_eq!((status, body.as_str()), (200, "backend app"));
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/over-h2");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn http1_over_tls_with_and_without_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&https_config(backend.addr, &[&a], "")).await;
    let addr = sluice.local_addr("https").unwrap();
    let tls = connect_tls(addr, "a.example.com", &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_over(tls, false, "/one").await.0, 200);
    // No ALPN at all (curl --no-alpn, old clients): HTTP/1.1 still works.
    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    assert_eq!(get_over(tls, false, "/two").await.0, 200);
    let seen = backend.seen();
    assert!(
        seen.iter()
            .all(|s| s.headers["x-forwarded-proto"] == "https")
    );
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn a_connection_closed_after_its_response_ends_with_tls_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&https_config(backend.addr, &[&a], "")).await;
    let addr = sluice.local_addr("https").unwrap();
    let mut tls = connect_tls(addr, "a.example.com", &["http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET /last HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // rustls reports a close without close_notify as an error (a truncation attack looks
    // the same), so an Ok end means the stream was shut down, not just dropped.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
        .await
        .expect("the connection was not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(read.is_ok(), "{read:?} after {text:?}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
}

#[tokio::test]
async fn plaintext_listeners_still_serve_h2c_with_proto_http() {
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let stream = tokio::net::TcpStream::connect(sluice.local_addr("web").unwrap())
        .await
        .unwrap();
    assert_eq!(get_over(stream, true, "/h2c").await.0, 200);
    assert_eq!(backend.seen()[0].headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn a_failed_handshake_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let extra = "    timeouts: {client_header: 300ms}\n";
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\n{}",
        https_config(backend.addr, &[&a], extra)
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("https").unwrap();
    // Plain HTTP on a TLS port: an alert or a close, never a response.
    let answer = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    // A client that never sends its ClientHello is closed at the client_header timeout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_all(&mut idle)).await;
    assert!(closed.is_ok(), "handshake deadline closes the connection");
    // The listener still serves.
    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert_eq!(get_over(tls, false, "/").await.0, 200);
    // Both failures are counted, by reason (plain HTTP is not a TLS record: `protocol`).
    let metrics = body_text(&get(sluice.admin_addr().unwrap(), "/metrics").await);
    let failures: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_tls_handshake_failures_total{"))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("reason=\"protocol\"")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|l| l.contains("reason=\"timeout\"")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn proxy_header_comes_before_the_client_hello() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let extra = "    proxy_protocol: accept\n";
    let sluice = start_sluice(&https_config(backend.addr, &[&a], extra)).await;
    let mut stream = tokio::net::TcpStream::connect(sluice.local_addr("https").unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"PROXY TCP4 192.0.2.9 10.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let tls = tls_over(stream, "a.example.com", &["h2"]).await.unwrap();
    assert_eq!(get_over(tls, true, "/proxied").await.0, 200);
    let seen = backend.seen();
    assert_eq!(seen[0].headers["x-forwarded-for"], "192.0.2.9");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
}

fn write(path: &Path, text: &str) {
    write_file(path, text);
}

#[tokio::test]
async fn certificate_reloads_apply_to_new_connections_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_cert(dir.path(), "site", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let path = dir.path().join("sluice.yaml");
    let yaml = format!("watch: false\n{}", https_config(backend.addr, &[&old], ""));
    write(&path, &yaml);
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let addr = sluice.local_addr("https").unwrap();

    // An open connection made with the old certificate.
    let open = connect_tls(addr, "a.example.com", &["http/1.1"])
        .await
        .unwrap();
    assert!(presented(&open) == old.der);

    // A broken key: the reload is refused, naming the field, and the old certificate serves.
    std::fs::write(&old.key, "not a key").unwrap();
    let report = sluice.reload_file("test").await;
    assert!(!report.success);
    assert!(
        report
            .detail
            .contains("listeners.https.tls.certificates[0].key"),
        "{}",
        report.detail
    );
    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert!(presented(&tls) == old.der, "old certificate still served");

    // Renewed files (same paths, new content): new connections get the new certificate.
    let renewed = write_cert(dir.path(), "site", &["a.example.com"]);
    let report = sluice.reload_file("test").await;
    assert!(report.success, "{}", report.detail);
    assert!(
        report.detail.contains("listener changed: https"),
        "{}",
        report.detail
    );
    assert_eq!(sluice.local_addr("https"), Some(addr), "socket kept");
    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert!(
        presented(&tls) == renewed.der,
        "new connection, new certificate"
    );
    // The connection opened before the reload goes on.
    assert_eq!(get_over(open, false, "/still-open").await.0, 200);
}

/// The sticky cookie is `Secure` on a request that came over TLS, `HttpOnly` and
/// `SameSite=Lax` by default; the same pool behind a plain listener gets no `Secure`.
#[tokio::test]
async fn the_sticky_cookie_is_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let yaml = https_config(backend.addr, &[&a], "").replace(
        "    backends: [",
        "    sticky: {cookie: SRV}\n    backends: [",
    );
    let yaml = yaml.replace(
        "pools:\n",
        "  plain:\n    bind: 127.0.0.1:0\n    pool: app\npools:\n",
    );
    let sluice = start_sluice(&yaml).await;
    let tls = connect_tls(sluice.local_addr("https").unwrap(), "a.example.com", &[])
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("SRV="), "{cookie}");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
    let plain = get(sluice.local_addr("plain").unwrap(), "/").await;
    let cookie = plain.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; HttpOnly; SameSite=Lax"), "{cookie}");
}

/// A verifier that only offers RSA signature schemes, as an old client would.
#[derive(Debug)]
struct RsaOnly(Arc<dyn rustls::client::danger::ServerCertVerifier>);

impl rustls::client::danger::ServerCertVerifier for RsaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        use rustls::SignatureScheme as S;
        vec![S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256, S::RSA_PSS_SHA384]
    }
}

/// An ECDSA and an RSA certificate for the same name: a client that offers ECDSA gets the
/// first listed (ECDSA), one that only verifies RSA gets the RSA one.
#[tokio::test]
async fn ecdsa_and_rsa_certificates_for_one_name_are_chosen_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ecdsa = write_cert(dir.path(), "ecdsa", &["a.example.com"]);
    let rsa = {
        let key =
            rcgen::KeyPair::from_pem(include_str!("../../src/tls/testdata/rsa2048.key")).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (path, key_path) = (dir.path().join("rsa.pem"), dir.path().join("rsa.key"));
        std::fs::write(&path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCert {
            cert: path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    };
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&https_config(backend.addr, &[&ecdsa, &rsa], "")).await;
    let addr = sluice.local_addr("https").unwrap();
    let tls = connect_tls(addr, "a.example.com", &[]).await.unwrap();
    assert!(
        presented(&tls) == ecdsa.der,
        "a modern client: the first listed"
    );
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RsaOnly(accept_any())))
            .with_no_client_auth();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("a.example.com").unwrap(),
                stream,
            )
            .await
            .unwrap();
        assert!(
            presented(&tls) == rsa.der,
            "an RSA-only client: RSA ({versions:?})"
        );
    }
}
