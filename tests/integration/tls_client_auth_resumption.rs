//! Resumption ends where the client-auth trust changes: a client revoked by a CRL swapped in
//! without a reload, or by a reload that points at another CRL, cannot resume the session it
//! made before; its resumption attempt falls back to a full handshake, which the new CRL
//! refuses. A client still trusted does one full handshake and resumes again; a reload that
//! leaves the files alone keeps every session. Real files, a real sluice, a real rustls client
//! that keeps its sessions.

use crate::common::tls::*;
use crate::common::*;
use crate::tls_client_auth::{Pki, config, get_as, pki, replace};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// A client that presents `identity` and keeps its sessions (rustls' default store).
fn client(
    identity: &(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(accept_any())
            .with_client_auth_cert(identity.0.clone(), identity.1.clone_key())
            .unwrap(),
    )
}

/// One request on a new connection (so the tickets arrive): how the handshake went, or
/// `None` when the connection was refused.
async fn exchange(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Option<HandshakeKind> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("a.example.com").unwrap(), stream)
        .await
        .ok()?;
    let kind = tls.get_ref().1.handshake_kind()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    // TLS 1.3: a client whose certificate is refused learns it on its first read.
    let response = sender.send_request(request).await.ok()?;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.ok()?;
    Some(kind)
}

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    yaml: String,
    /// The CRL that revokes client 1 (PEM).
    revoking: Vec<u8>,
    sluice: sluice::Server,
    addr: SocketAddr,
}

/// A listener requiring client certificates, started with a CRL that revokes nothing.
async fn setup(name: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (app, other) = (spawn_backend("app").await, spawn_backend("other").await);
    let revoking = std::fs::read(&pki.crl_pem).unwrap();
    std::fs::write(&pki.crl_pem, &pki.crl_none).unwrap();
    let log = dir.path().join("access.log");
    let yaml = config(dir.path(), &pki, "required", &[app.addr, other.addr], &log)
        .replace("  https:\n", &format!("  {name}:\n"));
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr(name).unwrap();
    Setup {
        _dir: dir,
        pki,
        yaml,
        revoking,
        sluice,
        addr,
    }
}

/// Both clients hold a session, and resuming works (so a refusal later is the trust change).
async fn both_resume(
    addr: SocketAddr,
    good: &Arc<rustls::ClientConfig>,
    revoked: &Arc<rustls::ClientConfig>,
) {
    for config in [good, revoked] {
        assert_eq!(exchange(addr, config).await, Some(HandshakeKind::Full));
        assert_eq!(exchange(addr, config).await, Some(HandshakeKind::Resumed));
    }
}

#[tokio::test]
async fn a_crl_swapped_without_a_reload_ends_the_revoked_clients_resumption() {
    let setup = setup("mtls-resume-swap").await;
    let (addr, pki) = (setup.addr, &setup.pki);
    let (good, revoked) = (client(&pki.clients[0]), client(&pki.clients[1]));
    both_resume(addr, &good, &revoked).await;

    replace(&pki.crl_pem, &setup.revoking);
    // Applied once a fresh handshake of the revoked client (no session) is refused.
    let applied = wait_until_async(DEADLINE, || async {
        get_as(addr, Some(&pki.clients[1]), "/").await.is_none()
    })
    .await;
    assert!(applied, "the new CRL was not applied");
    assert_eq!(
        exchange(addr, &revoked).await,
        None,
        "the revoked client resumed a session made before the CRL"
    );
    // The trusted client's old session is gone too: one full handshake, then it resumes.
    assert_eq!(exchange(addr, &good).await, Some(HandshakeKind::Full));
    assert_eq!(exchange(addr, &good).await, Some(HandshakeKind::Resumed));
}

#[tokio::test]
async fn a_reload_to_another_crl_ends_resumption_and_one_keeping_the_files_does_not() {
    let setup = setup("mtls-resume-reload").await;
    let (addr, pki) = (setup.addr, &setup.pki);
    let (good, revoked) = (client(&pki.clients[0]), client(&pki.clients[1]));
    both_resume(addr, &good, &revoked).await;

    // The same config again: sessions are carried and still resume.
    setup.sluice.reload(config_of(&setup.yaml)).await.unwrap();
    assert_eq!(exchange(addr, &good).await, Some(HandshakeKind::Resumed));
    assert_eq!(exchange(addr, &revoked).await, Some(HandshakeKind::Resumed));

    // A reload pointing at a CRL that revokes client 1.
    let revoking = pki.crl_pem.with_file_name("revoking.pem");
    std::fs::write(&revoking, &setup.revoking).unwrap();
    let yaml = setup.yaml.replace(
        &pki.crl_pem.display().to_string(),
        &revoking.display().to_string(),
    );
    assert_ne!(yaml, setup.yaml);
    setup.sluice.reload(config_of(&yaml)).await.unwrap();
    assert_eq!(
        exchange(addr, &revoked).await,
        None,
        "the revoked client resumed across the reload"
    );
    assert_eq!(exchange(addr, &good).await, Some(HandshakeKind::Full));
    assert_eq!(exchange(addr, &good).await, Some(HandshakeKind::Resumed));
}

fn config_of(yaml: &str) -> sluice::config::Config {
    crate::common::config(yaml)
}
