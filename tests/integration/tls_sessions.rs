//! TLS session resumption: a rustls client that keeps its session resumes with a TLS 1.3
//! ticket and with a TLS 1.2 session ID or ticket, not when resumption is off, and across two
//! instances that share a ticket key file (a fleet). Real sockets, a real sluice.

use crate::common::tls::*;
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(accept_any())
            .with_no_client_auth(),
    )
}

/// One request on a new connection (so a TLS 1.3 ticket arrives); how the handshake went.
async fn exchange(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> HandshakeKind {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(ServerName::try_from("a.example.com").unwrap(), stream)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    kind
}

async fn sluice_with(extra: &str, dir: &std::path::Path) -> (sluice::Server, SocketAddr) {
    let cert = write_cert(dir, "a", &["a.example.com"]);
    let backend = spawn_backend("app").await;
    let yaml = format!(
        "listeners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n    tls:\n{extra}      certificates:\n        - {{cert: '{}', key: '{}'}}\npools:\n  app:\n    backends: [{}]\n",
        cert.cert.display(),
        cert.key.display(),
        backend.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("https").unwrap();
    (sluice, addr)
}

#[tokio::test]
async fn tls13_tickets_and_tls12_sessions_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (_sluice, addr) = sluice_with("", dir.path()).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = client(versions);
        assert_eq!(exchange(addr, &config).await, HandshakeKind::Full);
        assert_eq!(
            exchange(addr, &config).await,
            HandshakeKind::Resumed,
            "{versions:?}"
        );
    }
    // TLS 1.2 by session ID alone: a client that does not take tickets.
    let mut config = (*client(&[&rustls::version::TLS12])).clone();
    config.resumption = config
        .resumption
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    let config = Arc::new(config);
    assert_eq!(exchange(addr, &config).await, HandshakeKind::Full);
    assert_eq!(exchange(addr, &config).await, HandshakeKind::Resumed);
}

#[tokio::test]
async fn resumption_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_sluice, addr) = sluice_with(
        "      session_cache: 0\n      session_tickets: false\n",
        dir.path(),
    )
    .await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let tickets = Arc::new(CountingStore::default());
        let mut config = (*client(versions)).clone();
        config.resumption = rustls::client::Resumption::store(tickets.clone());
        let config = Arc::new(config);
        assert_eq!(exchange(addr, &config).await, HandshakeKind::Full);
        assert_eq!(
            exchange(addr, &config).await,
            HandshakeKind::Full,
            "{versions:?}"
        );
        // Not even sent: a ticket nothing could resume costs the server for nothing.
        assert_eq!(tickets.tls13.load(Ordering::Relaxed), 0, "{versions:?}");
    }
}

/// rustls' client store, counting the TLS 1.3 tickets the server sent.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tls13: AtomicUsize,
}

impl Default for CountingStore {
    fn default() -> Self {
        CountingStore {
            inner: rustls::client::ClientSessionMemoryCache::new(16),
            tls13: AtomicUsize::new(0),
        }
    }
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.tls13.fetch_add(1, Ordering::Relaxed);
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

#[tokio::test]
async fn a_fleet_sharing_a_ticket_key_file_resumes_on_any_instance() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket.keys");
    use base64::Engine;
    let line = base64::engine::general_purpose::STANDARD.encode([7u8; 48]);
    std::fs::write(&keys, format!("{line}\n")).unwrap();
    let extra = format!(
        "      session_cache: 0\n      ticket_keys: '{}'\n",
        keys.display()
    );
    let (one_dir, two_dir) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir(&one_dir).unwrap();
    std::fs::create_dir(&two_dir).unwrap();
    let (_one, one) = sluice_with(&extra, &one_dir).await;
    let (_two, two) = sluice_with(&extra, &two_dir).await;
    let config = client(&[&rustls::version::TLS13]);
    assert_eq!(exchange(one, &config).await, HandshakeKind::Full);
    assert_eq!(
        exchange(two, &config).await,
        HandshakeKind::Resumed,
        "a ticket of one resumes on two"
    );
    // Without the shared file: a ticket of one is unknown to a third instance.
    let three_dir = dir.path().join("three");
    std::fs::create_dir(&three_dir).unwrap();
    let (_three, three) = sluice_with("", &three_dir).await;
    let config = client(&[&rustls::version::TLS13]);
    assert_eq!(exchange(one, &config).await, HandshakeKind::Full);
    assert_eq!(exchange(three, &config).await, HandshakeKind::Full);
}

/// A reload that keeps the listener's resumption settings keeps its sessions and ticket keys:
/// a client resumes across it, with a ticket (TLS 1.3) and with a session ID (TLS 1.2).
#[tokio::test]
async fn sessions_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (sluice, addr) = sluice_with("", dir.path()).await;
    let tls13 = client(&[&rustls::version::TLS13]);
    let mut tls12 = (*client(&[&rustls::version::TLS12])).clone();
    tls12.resumption = tls12
        .resumption
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    let tls12 = Arc::new(tls12);
    assert_eq!(exchange(addr, &tls13).await, HandshakeKind::Full);
    assert_eq!(exchange(addr, &tls12).await, HandshakeKind::Full);
    // Another backend: the listener is rebuilt from a fresh parse (new ServerConfig).
    let other = spawn_backend("other").await;
    let text = format!(
        "listeners:\n  https:\n    bind: {addr}\n    pool: app\n    tls:\n      certificates:\n        - {{cert: '{0}/a.pem', key: '{0}/a.key'}}\npools:\n  app:\n    backends: [{1}]\n",
        dir.path().display(),
        other.addr
    );
    let config = sluice::Config::parse(&text, "reload.yaml").unwrap();
    sluice.reload(config).await.unwrap();
    assert_eq!(
        exchange(addr, &tls13).await,
        HandshakeKind::Resumed,
        "a ticket"
    );
    assert_eq!(
        exchange(addr, &tls12).await,
        HandshakeKind::Resumed,
        "a session ID"
    );
    assert_eq!(other.requests(), 2, "served by the reloaded config");
}
