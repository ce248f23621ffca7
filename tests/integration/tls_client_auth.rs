//! Mutual TLS on a listener (`tls.client_auth`): a client certificate verified against the
//! CA, passed to the backend in `x-forwarded-client-cert` (a forged one never passes), routes
//! on the certificate, the access log's subject, a revoked certificate refused by the CRL,
//! and handshake failures counted by reason. Real sockets, a real sluice, real backends.

use crate::common::tls::*;
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Pki {
    pub ca_pem: PathBuf,
    pub crl_pem: PathBuf,
    /// A CRL of the same CA that revokes nothing (PEM).
    pub crl_none: String,
    /// `(chain, key)` of client certificates: 0 has URI and DNS SANs, 1 is revoked.
    pub clients: Vec<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test ca");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let client = |cn: &str, sans: Vec<rcgen::SanType>, serial: u64| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    };
    let clients = vec![
        client(
            "app one",
            vec![
                rcgen::SanType::URI("spiffe://example.com/app".try_into().unwrap()),
                rcgen::SanType::DnsName("app.example.com".try_into().unwrap()),
            ],
            11,
        ),
        client("revoked", vec![], 12),
    ];
    let crl = |revoked_certs: Vec<rcgen::RevokedCertParams>| {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap()
    };
    let crl_none = crl(Vec::new()).pem().unwrap();
    let crl = crl(vec![rcgen::RevokedCertParams {
        serial_number: 12u64.into(),
        revocation_time: rcgen::date_time_ymd(2021, 1, 1),
        reason_code: None,
        invalidity_date: None,
    }]);
    let ca_pem = dir.join("ca.pem");
    let crl_pem = dir.join("crl.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&crl_pem, crl.pem().unwrap()).unwrap();
    Pki {
        ca_pem,
        crl_pem,
        crl_none,
        clients,
    }
}

/// A handshake with `identity` as the client certificate (none for `None`), then one GET
/// with a forged `x-forwarded-client-cert`; the status, or `None` when the connection failed.
pub(crate) async fn get_as(
    addr: SocketAddr,
    identity: Option<&(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    path: &str,
) -> Option<u16> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(accept_any());
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("a.example.com").unwrap(), stream)
        .await
        .ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "a.example.com")
        .header(
            "x-forwarded-client-cert",
            "Hash=forged;Subject=\"CN=admin\"",
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

pub(crate) fn config(
    dir: &Path,
    pki: &Pki,
    mode: &str,
    pools: &[SocketAddr; 2],
    log: &Path,
) -> String {
    let cert = write_cert(dir, "server", &["a.example.com"]);
    format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0}}\nlisteners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n    access_log: {{path: '{}', format: json}}\n    tls:\n      certificates:\n        - {{cert: '{}', key: '{}'}}\n      client_auth: {{ca: '{}', crl: '{}', mode: {mode}}}\n    routes:\n      - match: {{client_cert: {{san: 'spiffe://example.com/app'}}, path_prefix: /by-san}}\n        pool: other\n      - match: {{client_cert: {{present: false}}}}\n        pool: other\npools:\n  app:\n    backends: [{}]\n  other:\n    backends: [{}]\n",
        log.display(),
        cert.cert.display(),
        cert.key.display(),
        pki.ca_pem.display(),
        pki.crl_pem.display(),
        pools[0],
        pools[1],
    )
}

async fn failures(admin: SocketAddr, reason: &str) -> u64 {
    let metrics = body_text(&get(admin, "/metrics").await);
    let needle =
        format!("sluice_tls_handshake_failures_total{{listener=\"https\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn required_client_certificates_are_verified_passed_on_and_routed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (app, other) = (spawn_backend("app").await, spawn_backend("other").await);
    let log = dir.path().join("access.log");
    let sluice = start_sluice(&config(
        dir.path(),
        &pki,
        "required",
        &[app.addr, other.addr],
        &log,
    ))
    .await;
    let addr = sluice.local_addr("https").unwrap();
    let admin = sluice.admin_addr().unwrap();

    assert_eq!(get_as(addr, Some(&pki.clients[0]), "/x").await, Some(200));
    let seen = app.seen();
    let xfcc = seen[0].headers["x-forwarded-client-cert"].to_str().unwrap();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        xfcc.ends_with(
            ";Subject=\"CN=app one,O=Example\";URI=spiffe://example.com/app;DNS=app.example.com"
        ),
        "{xfcc}"
    );
    assert!(!xfcc.contains("forged"));
    // Routed by a SAN of the certificate.
    assert_eq!(
        get_as(addr, Some(&pki.clients[0]), "/by-san").await,
        Some(200)
    );
    assert_eq!(other.requests(), 1);

    // No certificate, a revoked one: the handshake fails, counted by reason.
    assert_eq!(get_as(addr, None, "/x").await, None);
    assert!(
        wait_until_async(Duration::from_secs(5), || async {
            failures(admin, "no_client_certificate").await == 1
        })
        .await
    );
    assert_eq!(get_as(addr, Some(&pki.clients[1]), "/x").await, None);
    assert!(
        wait_until_async(Duration::from_secs(5), || async {
            failures(admin, "client_certificate_revoked").await == 1
        })
        .await
    );
    assert_eq!(app.requests(), 1, "nothing failed reached a backend");

    // The access log names the subject.
    let logged = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await;
    assert!(logged);
    let text = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["client_subject"], "CN=app one,O=Example");
}

#[tokio::test]
async fn optional_client_certificates_serve_clients_without_one_and_strip_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (app, other) = (spawn_backend("app").await, spawn_backend("other").await);
    let log = dir.path().join("access.log");
    let sluice = start_sluice(&config(
        dir.path(),
        &pki,
        "optional",
        &[app.addr, other.addr],
        &log,
    ))
    .await;
    let addr = sluice.local_addr("https").unwrap();
    assert_eq!(get_as(addr, None, "/anonymous").await, Some(200));
    let seen = other.seen();
    assert_eq!(seen.len(), 1, "present: false routes to other");
    assert!(
        !seen[0].headers.contains_key("x-forwarded-client-cert"),
        "a forged header never reaches the backend"
    );
    assert_eq!(get_as(addr, Some(&pki.clients[0]), "/x").await, Some(200));
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn a_plain_listener_strips_a_forged_client_certificate_header() {
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let request = Request::get("/")
        .header("x-forwarded-client-cert", "Hash=forged")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    assert_eq!(send(addr, request).await.status(), 200);
    assert!(
        !backend.seen()[0]
            .headers
            .contains_key("x-forwarded-client-cert")
    );
}

const DEADLINE: Duration = Duration::from_secs(10);

/// Replaces a file as deployment tools do: written beside it, renamed over it.
pub(crate) fn replace(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The listener of the rotation test: metrics are one registry per test process, so a name
/// no other test uses keeps its counters its own.
const ROTATING: &str = "mtls-rotating";

/// The rotation test listener's entry of `/status`.
async fn listener_status(admin: SocketAddr) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&body_text(&get(admin, "/status").await)).unwrap();
    (status["listeners"].as_array().unwrap().iter())
        .find(|l| l["name"] == ROTATING)
        .cloned()
        .unwrap()
}

async fn rotations(admin: SocketAddr, result: &str) -> u64 {
    let metrics = body_text(&get(admin, "/metrics").await);
    let needle = format!(
        "sluice_tls_certificate_rotations_total{{listener=\"{ROTATING}\",result=\"{result}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_rotated_crl_and_ca_bundle_apply_without_a_reload_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (app, other) = (spawn_backend("app").await, spawn_backend("other").await);
    // Start with a CRL that revokes nothing: client 1 is served.
    let revoking = std::fs::read(&pki.crl_pem).unwrap();
    std::fs::write(&pki.crl_pem, &pki.crl_none).unwrap();
    let log = dir.path().join("access.log");
    let config = config(dir.path(), &pki, "required", &[app.addr, other.addr], &log);
    let sluice = start_sluice(&config.replace("  https:\n", &format!("  {ROTATING}:\n"))).await;
    let addr = sluice.local_addr(ROTATING).unwrap();
    let admin = sluice.admin_addr().unwrap();
    let revoked = &pki.clients[1];
    assert_eq!(get_as(addr, Some(revoked), "/x").await, Some(200));

    // The CA publishes a CRL that revokes client 1: refused from its next handshake.
    replace(&pki.crl_pem, &revoking);
    let refused = wait_until_async(DEADLINE, || async {
        get_as(addr, Some(revoked), "/x").await.is_none()
    })
    .await;
    assert!(refused, "the new CRL was not applied");
    assert_eq!(get_as(addr, Some(&pki.clients[0]), "/x").await, Some(200));

    // A new CA bundle: the old CA's clients are refused, the new CA's served.
    let next = tempfile::tempdir().unwrap();
    let other_pki = self::pki(next.path());
    // (Both CAs are named "CN=test ca": the old CRL would be checked against the new key and
    // fail every client, so the new CA's CRL comes with it, as it would in a real rotation.)
    replace(&pki.ca_pem, &std::fs::read(&other_pki.ca_pem).unwrap());
    replace(&pki.crl_pem, other_pki.crl_none.as_bytes());
    let switched = wait_until_async(DEADLINE, || async {
        get_as(addr, Some(&other_pki.clients[0]), "/x").await == Some(200)
    })
    .await;
    assert!(switched, "the new CA bundle was not applied");
    assert_eq!(get_as(addr, Some(&pki.clients[0]), "/x").await, None);
    // The CRL, then the CA bundle and its CRL (one look or two, as the events fell).
    let rotated = rotations(admin, "rotated").await;
    assert!((2..=3).contains(&rotated), "{rotated}");
    assert!(
        listener_status(admin).await["client_auth_problem"].is_null(),
        "{}",
        listener_status(admin).await
    );

    // A bundle that is not PEM: refused, reported and counted; the one in force stays.
    replace(
        &pki.ca_pem,
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    let reported = wait_until_async(DEADLINE, || async {
        listener_status(admin).await["client_auth_problem"]
            .as_str()
            .is_some_and(|p| p.contains("ca.pem"))
    })
    .await;
    assert!(reported, "{}", listener_status(admin).await);
    assert_eq!(rotations(admin, "refused").await, 1);
    assert_eq!(
        get_as(addr, Some(&other_pki.clients[0]), "/x").await,
        Some(200),
        "the CA bundle in force keeps verifying"
    );
    assert_eq!(get_as(addr, Some(&pki.clients[0]), "/x").await, None);

    // Put right: the problem clears.
    replace(&pki.ca_pem, &std::fs::read(&other_pki.ca_pem).unwrap());
    let cleared = wait_until_async(DEADLINE, || async {
        listener_status(admin).await["client_auth_problem"].is_null()
    })
    .await;
    assert!(cleared, "{}", listener_status(admin).await);
    assert_eq!(rotations(admin, "refused").await, 1);
}
