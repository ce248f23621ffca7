//! A small Consul-compatible agent for the tests (no Consul can be installed here): exactly
//! the HTTP API semantics sluice uses, as Consul documents them, and nothing else.
//!
//! - `GET /v1/health/service/NAME` with `tag`, `dc`, `passing`, and blocking queries: with
//!   `index=N` (N > 0) the answer waits until the index passes N or `wait` (default 5m, at
//!   most 10m) runs out; every answer carries `X-Consul-Index`. The JSON is Consul's shape:
//!   `[{"Node": {...}, "Service": {..., "Weights": {"Passing", "Warning"}}, "Checks": [...]}]`,
//!   node checks (`serfHealth`, `_node_maintenance`) and service checks together. A
//!   `dc` other than `dc1` is a 500 "No path to datacenter".
//! - `PUT /v1/agent/service/register` (`ID` defaults to `Name`; `Check`/`Checks` with `TTL`,
//!   starting critical unless `Status` says otherwise; IDs `service:ID`, or `service:ID:N`
//!   for several), `PUT /v1/agent/service/deregister/ID`.
//! - TTL checks: `PUT /v1/agent/check/pass|warn|fail/CHECK_ID?note=`, `PUT
//!   /v1/agent/check/update/CHECK_ID` with `{"Status", "Output"}`; a TTL check not refreshed
//!   in time turns critical ("TTL expired"), and `DeregisterCriticalServiceAfter` removes
//!   the service after that long critical.
//! - Maintenance: `PUT /v1/agent/maintenance?enable=&reason=` (node) and
//!   `PUT /v1/agent/service/maintenance/ID?enable=&reason=` add/remove the critical
//!   `_node_maintenance` / `_service_maintenance:ID` checks with the reason as `Notes`.
//! - ACL: with a token set, every call without `X-Consul-Token` equal to it is a 403.
//! - HTTPS, with a server config the test gives (`start_with_tls`).
//!
//! One global index stands for Consul's raft index: every change bumps it. Knobs let a test
//! make it misbehave the ways Consul's docs warn of (index going backwards, blocking ignored)
//! and count the health queries.

mod api;

use api::Server;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub const NODE: &str = "test-node";

#[derive(Clone)]
pub(super) struct CheckState {
    pub(super) name: String,
    pub(super) status: String,
    pub(super) notes: String,
    pub(super) output: String,
    pub(super) ttl: Option<Duration>,
    pub(super) expires: Option<Instant>,
    pub(super) critical_since: Option<Instant>,
    pub(super) deregister_after: Option<Duration>,
}

pub(super) struct Service {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) tags: Vec<String>,
    pub(super) weights: (u64, u64),
    pub(super) checks: BTreeMap<String, CheckState>,
    pub(super) maintenance: Option<String>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) index: u64,
    pub(super) services: BTreeMap<String, Service>,
    pub(super) node_maintenance: Option<String>,
    pub(super) token: Option<String>,
    pub(super) ignore_index: bool,
    pub(super) health_queries: u64,
}

/// The agent; the server task stops when this is dropped.
pub struct FakeConsul {
    pub addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeConsul {
    pub async fn start() -> FakeConsul {
        FakeConsul::start_with_tls(None).await
    }

    /// The agent over HTTPS with this server config (`url()` then says `https://`).
    pub async fn start_with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> FakeConsul {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let https = acceptor.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            index: 10,
            ..State::default()
        }));
        let (changed, _) = watch::channel(10);
        let stop = tokio_util::sync::CancellationToken::new();
        let consul = FakeConsul {
            addr,
            https,
            state,
            changed,
            stop,
        };
        let server = Server {
            state: consul.state.clone(),
            changed: consul.changed.clone(),
        };
        let stop = consul.stop.clone();
        let ttl_server = server.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                    () = stop.cancelled() => return,
                };
                let server = server.clone();
                let stop = stop.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(stream), server, stop).await,
                        Some(acceptor) => {
                            // A failed handshake (an untrusting client) just closes.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(TokioIo::new(stream), server, stop).await;
                            }
                        }
                    }
                });
            }
        });
        let stop = consul.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => ttl_server.expire(),
                    () = stop.cancelled() => return,
                }
            }
        });
        consul
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn server(&self) -> Server {
        Server {
            state: self.state.clone(),
            changed: self.changed.clone(),
        }
    }

    /// Registers a service instance directly (what a local agent's config file does), with
    /// one check in `status`.
    pub fn add(&self, id: &str, name: &str, addr: SocketAddr, weights: (u64, u64), status: &str) {
        self.server().write(|state| {
            let check = CheckState {
                name: format!("Service '{name}' check"),
                status: status.to_owned(),
                notes: String::new(),
                output: String::new(),
                ttl: None,
                expires: None,
                critical_since: None,
                deregister_after: None,
            };
            state.services.insert(
                id.to_owned(),
                Service {
                    name: name.to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    tags: Vec::new(),
                    weights,
                    checks: BTreeMap::from([(format!("service:{id}"), check)]),
                    maintenance: None,
                },
            );
        });
    }

    pub fn set_check(&self, id: &str, status: &str, output: &str) {
        self.server().write(|state| {
            let service = state.services.get_mut(id).expect("service");
            let check = service.checks.values_mut().next().expect("check");
            check.status = status.to_owned();
            check.output = output.to_owned();
        });
    }

    pub fn set_weights(&self, id: &str, weights: (u64, u64)) {
        self.server().write(|state| {
            state.services.get_mut(id).expect("service").weights = weights;
        });
    }

    pub fn remove(&self, id: &str) {
        self.server().write(|state| {
            state.services.remove(id);
        });
    }

    pub fn has_service(&self, id: &str) -> bool {
        self.state.lock().unwrap().services.contains_key(id)
    }

    /// The `DeregisterCriticalServiceAfter` of a service's first check, as registered.
    pub fn deregister_after(&self, id: &str) -> Option<Duration> {
        let state = self.state.lock().unwrap();
        let service = state.services.get(id)?;
        service.checks.values().next()?.deregister_after
    }

    /// The status of a service's first check.
    pub fn check_status(&self, id: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        let service = state.services.get(id)?;
        service.checks.values().next().map(|c| c.status.clone())
    }

    pub fn set_token(&self, token: Option<&str>) {
        self.state.lock().unwrap().token = token.map(str::to_owned);
    }

    /// Moves the index backwards (a restored snapshot) and wakes every blocked query.
    pub fn move_index_back(&self) {
        let mut state = self.state.lock().unwrap();
        state.index = 3;
        self.changed.send_replace(state.index);
    }

    /// Answers every blocking query at once, without waiting (a misbehaving server).
    pub fn ignore_index(&self, ignore: bool) {
        self.state.lock().unwrap().ignore_index = ignore;
    }

    pub fn health_queries(&self) -> u64 {
        self.state.lock().unwrap().health_queries
    }
}

/// One connection, HTTP/1.1 or HTTP/2, until it ends or the agent stops.
async fn serve<IO>(io: TokioIo<IO>, server: Server, stop: tokio_util::sync::CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::select! {
        _ = builder.serve_connection(io, service) => {}
        () = stop.cancelled() => {}
    }
}
