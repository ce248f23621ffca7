//! Upstream-side fixtures: a test CA and certificates (rcgen), backends that speak TLS
//! (optionally requiring a client certificate), HTTP/2 only or listen on a Unix socket and
//! record what they saw of each request (SNI, ALPN, client certificate, version, authority,
//! headers), gRPC-style answers with trailers, and an h2c client.

use super::tls::{TestCert, provider};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A CA that signs leaf certificates, with its PEM written to a file for `tls.ca`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem_path: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem_path = dir.join(format!("{name}.pem"));
        std::fs::write(&pem_path, issuer.pem()).unwrap();
        TestCa { issuer, pem_path }
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (cert, key) = self.sign(CertificateParams::new(names).unwrap());
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], der)
    }

    /// A client certificate (extended key usage clientAuth, common name `name`) signed by
    /// this CA, written as `dir/stem.pem` and `dir/stem.key` for a pool's `tls.cert` and
    /// `tls.key`.
    pub fn client(&self, dir: &Path, stem: &str, name: &str) -> TestCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = self.sign(params);
        let paths = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        TestCert {
            cert: paths.0,
            key: paths.1,
            der: cert.der().to_vec(),
        }
    }

    fn sign(&self, params: CertificateParams) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap(), key)
    }
}

/// A rustls server config offering `alpn` (ring provider, as sluice uses).
pub fn server_tls(
    leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    server_tls_with(leaf, alpn, WebPkiClientVerifier::no_client_auth())
}

/// `server_tls` that refuses the handshake unless the client presents a certificate signed
/// by `client_ca` (rustls's `WebPkiClientVerifier`, as a backend enforcing mutual TLS would).
pub fn server_tls_requiring_client_cert(
    leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client_ca: &TestCa,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.issuer.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    server_tls_with(leaf, alpn, verifier)
}

fn server_tls_with(
    (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    alpn: &[&[u8]],
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Saw {
    pub version: Version,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The SNI the client sent (TLS only).
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// The DER of the certificate the client presented (TLS with client auth only).
    pub client_cert: Option<Vec<u8>>,
}

/// What the TLS handshake of a connection settled, recorded with each of its requests.
#[derive(Clone, Default)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    client_cert: Option<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    Http1,
    /// HTTP/2 only (prior knowledge on plaintext, or whatever ALPN said over TLS).
    H2,
}

pub enum Listen {
    Tcp,
    Unix(PathBuf),
}

pub struct Upstream {
    /// The address to put in `backends:` (`127.0.0.1:PORT` or `unix:/path`).
    pub address: String,
    pub saw: Arc<Mutex<Vec<Saw>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn saw(&self) -> Vec<Saw> {
        self.saw.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.saw().iter().map(|s| s.uri.path().to_owned()).collect()
    }
}

/// Serves HTTP on `listen` until the test ends. Paths: `/grpc/ok` answers a gRPC-style body
/// with `grpc-status: 0` trailers, `/grpc/unavailable` HTTP 200 with `grpc-status: 14`;
/// anything else `ok NAME` (and the request body length in `x-body-len`).
pub async fn spawn_upstream(
    name: &str,
    listen: Listen,
    tls: Option<Arc<rustls::ServerConfig>>,
    speaks: Speaks,
) -> Upstream {
    let saw = Arc::new(Mutex::new(Vec::new()));
    let (address, mut accept) = bind(listen).await;
    let name = name.to_owned();
    let record = Arc::clone(&saw);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Some(stream) = accept.next().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (saw, name, tls) = (Arc::clone(&record), name.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(stream, Handshake::default(), speaks, name, saw).await,
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let connection = stream.get_ref().1;
                        let handshake = Handshake {
                            sni: connection.server_name().map(str::to_owned),
                            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
                            client_cert: connection
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|cert| cert.to_vec()),
                        };
                        serve(stream, handshake, speaks, name, saw).await;
                    }
                }
            });
        }
    });
    Upstream {
        address,
        saw,
        connections,
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    async fn next(&mut self) -> Option<Box<dyn Stream>> {
        match self {
            Acceptor::Tcp(listener) => Some(Box::new(listener.accept().await.ok()?.0)),
            Acceptor::Unix(listener) => Some(Box::new(listener.accept().await.ok()?.0)),
        }
    }
}

async fn bind(listen: Listen) -> (String, Acceptor) {
    match listen {
        Listen::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            (address, Acceptor::Tcp(listener))
        }
        Listen::Unix(path) => {
            let listener = UnixListener::bind(&path).unwrap();
            (format!("unix:{}", path.display()), Acceptor::Unix(listener))
        }
    }
}

async fn serve<S: Stream>(
    stream: S,
    handshake: Handshake,
    speaks: Speaks,
    name: String,
    saw: Arc<Mutex<Vec<Saw>>>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let (saw, name, handshake) = (saw.clone(), name.clone(), handshake.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_owned();
            saw.lock().unwrap().push(Saw {
                version: parts.version,
                uri: parts.uri,
                headers: parts.headers,
                body: body.clone(),
                sni: handshake.sni,
                alpn: handshake.alpn,
                client_cert: handshake.client_cert,
            });
            Ok::<_, Infallible>(answer(&path, &name, body.len()))
        }
    });
    let io = TokioIo::new(stream);
    match speaks {
        Speaks::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
        Speaks::H2 => {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
    }
}

fn answer(path: &str, name: &str, body_len: usize) -> Response<Body> {
    let grpc = |status: &'static str, message: &'static str| {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(status));
        trailers.insert("grpc-message", HeaderValue::from_static(message));
        // A gRPC message: flag 0, length 5, "hello".
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
            Ok(Frame::trailers(trailers)),
        ];
        Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures_iter(frames)).boxed())
            .unwrap()
    };
    match path {
        "/grpc/ok" => grpc("0", ""),
        "/grpc/unavailable" => grpc("14", "backend%20down"),
        _ => Response::builder()
            .header("x-body-len", body_len)
            .body(Full::new(Bytes::from(format!("ok {name}"))).boxed())
            .unwrap(),
    }
}

/// Frames one after another, so the body has no length and ends with trailers.
fn futures_iter<T: Unpin>(items: Vec<T>) -> Frames<T> {
    Frames(items.into_iter())
}

struct Frames<T>(std::vec::IntoIter<T>);

impl<T: Unpin> futures_core::Stream for Frames<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// Sends one request over a new h2c (prior knowledge) connection; the response comes back
/// with its body and trailers.
pub async fn h2c_send(
    addr: SocketAddr,
    request: Request<Body>,
) -> (http::response::Parts, Bytes, Option<HeaderMap>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}
