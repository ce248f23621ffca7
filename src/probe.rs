//! The I/O that feeds the health state machines: active probe tasks (TCP connect or an HTTP
//! request per backend, with jitter and their own timeout), the ticker that ends ejections,
//! and the outcome reports the proxy makes after each upstream attempt. Probes connect with
//! the pool's own dialer, so they reach Unix socket backends and speak TLS (and HTTP/2) to the
//! backends of pools that have `tls:` (`protocol: h2`), exactly as requests do. State changes are
//! logged once each, with their reason, and exported as metrics.

use crate::backend::Backend;
use crate::config::health::{ActiveCheck, CheckKind, HealthPolicy, HttpCheck};
use crate::config::{BackendAddress, UpstreamProtocol};
use crate::error::Chain;
use crate::health::evacuation::Cause;
use crate::health::machine::{Change, State, may_eject_another};
use crate::state::{Pool, SharedSnapshot};
use crate::upstream::UpstreamClient;
use crate::upstream::connector::Conn;
use crate::upstream::tls::Alpn;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod grpc;
mod tasks;

pub use tasks::Probes;

/// How often ejections are checked for expiry.
const TICK: Duration = Duration::from_millis(100);
/// The most of a response body an HTTP check reads for `body_contains`.
const CHECK_BODY_LIMIT: usize = 64 * 1024;

/// Records one outcome of real traffic for passive ejection. Cheap for a success on a
/// backend without recent failures: one atomic load.
pub fn report_outcome(pool: &Pool, backend: &Backend, ok: bool, detail: &str) {
    if let Some(policy) = &pool.config.resilience.breaker
        && let Some((state, reason)) = backend.state.breaker.record(ok, policy)
    {
        let (pool_name, address) = (&pool.config.name, &backend.address);
        warn!(pool = %pool_name, backend = %address, ?state, "circuit breaker: {reason}");
        crate::metrics::breaker(pool_name, address, state);
    }
    let cell = &backend.state.health;
    if ok && !cell.has_passive_failures() {
        return;
    }
    let policy = &pool.config.health;
    let may_eject = may_eject_another(
        pool.ejected_count(),
        pool.backends.len(),
        policy.outlier.max_ejection_percent,
    );
    let now = Instant::now();
    let change = cell.update(|machine| machine.record_outcome(now, ok, detail, may_eject, policy));
    if let Some(change) = change {
        announce(pool, backend, &change);
    }
}

/// Logs a state change once, updates metrics, and re-evaluates the pool's panic mode.
pub fn announce(pool: &Pool, backend: &Backend, change: &Change) {
    let (pool_name, address) = (&pool.config.name, &backend.address);
    if change.to == State::Up {
        info!(pool = %pool_name, backend = %address, from = ?change.from, "backend up: {}", change.reason);
    } else {
        warn!(pool = %pool_name, backend = %address, from = ?change.from, to = ?change.to, "backend out: {}", change.reason);
    }
    crate::metrics::backend_state(pool_name, address, change);
    if let Some(panic) = pool.update_panic() {
        if panic {
            warn!(pool = %pool_name, "panic mode: too few healthy backends, balancing over all of them");
        } else {
            info!(pool = %pool_name, "panic mode over");
        }
        crate::metrics::pool_panic(pool_name, panic);
    }
}

/// Ends ejections whose time is over, until `shutdown`.
pub fn spawn_ticker(snapshot: SharedSnapshot, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let current = snapshot.load_full();
            for pool in current.pools.values() {
                for backend in pool.backends.iter().filter(|b| b.state.health.is_ejected()) {
                    let now = Instant::now();
                    let policy = &pool.config.health;
                    let change = backend
                        .state
                        .health
                        .update(|machine| machine.tick(now, policy));
                    if let Some(change) = change {
                        announce(pool, backend, &change);
                    }
                }
            }
        }
    });
}

async fn probe_loop(
    pool_name: String,
    address: BackendAddress,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) {
    // Start at a random point of the interval so checks of many backends don't march in step.
    let first_delay = {
        let current = snapshot.load();
        current
            .pools
            .get(&pool_name)
            .and_then(|p| p.config.health.active.as_ref())
            .map_or(Duration::ZERO, |c| c.interval.mul_f64(fastrand::f64()))
    };
    if sleep_or_stop(first_delay, &stop).await {
        return;
    }
    // Where the backend was in its pool last round: checked, not trusted, so a reload that
    // moved it costs one search, and a pool of 10,000 backends is not searched 10,000 times
    // per interval (quadratic).
    let mut index = 0;
    loop {
        // Look the pool up each round: the probe follows reloads (weights, panic threshold).
        let current = snapshot.load_full();
        let Some(pool) = current.pools.get(&pool_name) else {
            return;
        };
        let found = match pool.backends.get(index) {
            Some(b) if b.address == address => Some(index),
            _ => pool.backends.iter().position(|b| b.address == address),
        };
        let Some((at, backend)) = found.and_then(|at| Some((at, pool.backends.get(at)?))) else {
            return;
        };
        index = at;
        let Some(check) = pool.config.health.active.clone() else {
            return;
        };
        let result = tokio::select! {
            result = tokio::time::timeout(check.timeout, probe(&pool.client, &address, &check)) => match result {
                Ok(result) => result,
                Err(_) => {
                    // No answer to a trivial request: what waits on the backend is stuck too.
                    backend.state.health.evacuation().sound(Cause::CheckTimedOut);
                    Err(format!("timed out after {:?}", check.timeout))
                }
            },
            () = stop.cancelled() => return,
        };
        record(pool, backend, &pool.config.health, result);
        let healthy = backend.state.health.is_healthy();
        let base = if healthy {
            check.interval
        } else {
            check.unhealthy_interval
        };
        // +-10% jitter keeps probes from re-synchronising.
        let next = base.mul_f64(0.9 + 0.2 * fastrand::f64());
        drop(current);
        if sleep_or_stop(next, &stop).await {
            return;
        }
    }
}

fn record(pool: &Pool, backend: &Backend, policy: &HealthPolicy, result: Result<String, String>) {
    let cell = &backend.state.health;
    let ok = result.is_ok();
    let counter = if ok {
        &cell.checks_passed
    } else {
        &cell.checks_failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::health_check(&pool.config.name, &backend.address, ok);
    let detail = match result {
        Ok(detail) | Err(detail) => detail,
    };
    let now = Instant::now();
    let change = cell.update(|machine| machine.record_check(now, ok, detail, policy));
    if let Some(change) = change {
        announce(pool, backend, &change);
    }
}

/// True when stopped.
async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = stop.cancelled() => true,
    }
}

/// One check. `Ok(detail)` when the backend passes, `Err(why)` otherwise.
/// A TCP check passes once connected (and the TLS handshake done, for a TLS pool).
async fn probe(
    client: &UpstreamClient,
    address: &BackendAddress,
    check: &ActiveCheck,
) -> Result<String, String> {
    let alpn = match check.kind {
        CheckKind::Tcp => Alpn::None,
        // A gRPC check's pool speaks h2 (validation requires it): ALPN offers h2.
        CheckKind::Http(_) | CheckKind::Grpc(_) => Alpn::Http,
    };
    let conn = client
        .dialer()
        .connect(address, alpn)
        .await
        .map_err(|e| format!("connect failed: {}", Chain(&e)))?;
    match &check.kind {
        CheckKind::Tcp => Ok("connect succeeded".to_owned()),
        CheckKind::Http(http_check) => {
            let h2 = client.protocol() == UpstreamProtocol::H2;
            http_probe(conn, h2, client.dialer().is_tls(), address, http_check).await
        }
        CheckKind::Grpc(grpc_check) => {
            grpc::probe(conn, client.dialer().is_tls(), address, grpc_check).await
        }
    }
}

async fn http_probe(
    conn: Conn,
    h2: bool,
    tls: bool,
    address: &BackendAddress,
    check: &HttpCheck,
) -> Result<String, String> {
    // A socket path is no host name; "localhost" is what curl sends over --unix-socket.
    let host = check.host.clone().unwrap_or_else(|| match address {
        BackendAddress::Inet(inet) => inet.to_string(),
        BackendAddress::Unix(_) => "localhost".to_owned(),
    });
    let builder = Request::builder().method(check.method.as_str()).header(
        header::USER_AGENT,
        concat!("sluice-health-check/", env!("CARGO_PKG_VERSION")),
    );
    // An HTTP/1 connection ends with this check, answered or not: a check that timed out
    // must not leave its connection waiting on the backend while the next check opens
    // another. (An HTTP/2 connection ends when its sender is dropped.)
    let mut connection_task = None;
    let response = if h2 {
        // HTTP/2 carries the host in `:authority`, taken from the URI.
        let scheme = if tls { "https" } else { "http" };
        let request = builder
            .uri(format!("{scheme}://{host}{}", check.path))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad check request: {e}"))?;
        let mut sender = crate::upstream::h2::handshake(conn)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {}", Chain(&e)))?;
        sender.send_request(request).await
    } else {
        let request = builder
            .uri(check.path.as_str())
            .header(header::HOST, host)
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad check request: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| format!("HTTP handshake failed: {}", Chain(&e)))?;
        connection_task = Some(AbortOnDrop(tokio::spawn(connection)));
        sender.send_request(request).await
    }
    .map_err(|e| format!("request failed: {}", Chain(&e)))?;
    let status = response.status().as_u16();
    if !check.status_ok(status) {
        return Err(format!(
            "HTTP {status} (expected {})",
            describe_ranges(&check.expect_status)
        ));
    }
    if let Some(needle) = &check.body_contains {
        let body = Limited::new(response.into_body(), CHECK_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading body failed: {}", Chain(&*e)))?
            .to_bytes();
        if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
            return Err(format!("HTTP {status} but body lacks {needle:?}"));
        }
    }
    drop(connection_task);
    Ok(format!("HTTP {status}"))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn describe_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::Snapshot;
    use arc_swap::ArcSwap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a backend saw of the checks: when each began, and how many were open at once.
    #[derive(Default)]
    struct Seen {
        starts: Mutex<Vec<tokio::time::Instant>>,
        open: AtomicUsize,
        most_open: AtomicUsize,
    }

    /// An HTTP backend that answers each request `answer_after` it arrived, unless the
    /// checker closes the connection first.
    async fn slow_backend(answer_after: Duration) -> (SocketAddr, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = Arc::clone(&shared);
                let open = seen.open.fetch_add(1, SeqCst) + 1;
                seen.most_open.fetch_max(open, SeqCst);
                seen.starts
                    .lock()
                    .unwrap()
                    .push(tokio::time::Instant::now());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(answer_after) => {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                            let _ = stream.write_all(answer).await;
                        }
                        // The checker gave up and closed.
                        _ = stream.read(&mut buf) => {}
                    }
                    seen.open.fetch_sub(1, SeqCst);
                });
            }
        });
        (addr, seen)
    }

    fn snapshot_checking(addr: SocketAddr, check: &str) -> SharedSnapshot {
        snapshot_of(addr, &format!("    health_check: {{{check}}}\n"))
    }

    /// Pool `app` over the one backend `addr`, with `pool_options` (indented YAML lines).
    fn snapshot_of(addr: SocketAddr, pool_options: &str) -> SharedSnapshot {
        let yaml = format!(
            "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: ['{addr}']\n{pool_options}"
        );
        let config = Config::parse(&yaml, "t.yaml").unwrap();
        Arc::new(ArcSwap::from_pointee(Snapshot::build(
            Arc::new(config),
            None,
        )))
    }

    /// Reports `failures` failed requests to the pool's one backend.
    fn fail_requests(snapshot: &SharedSnapshot, failures: u32) {
        let current = snapshot.load();
        let pool = &current.pools["app"];
        for _ in 0..failures {
            report_outcome(pool, &pool.backends[0], false, "connect refused");
        }
    }

    fn ejected(snapshot: &SharedSnapshot) -> bool {
        snapshot.load().pools["app"].backends[0]
            .state
            .health
            .is_ejected()
    }

    /// How long (paused clock) until `condition` holds, looking every millisecond.
    async fn time_until(condition: impl Fn() -> bool) -> Duration {
        let started = tokio::time::Instant::now();
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }

    /// Without active checks, the ticker ends an ejection when its time is over, and a
    /// backend ejected again soon after serves twice the time (the backoff), then no more
    /// than `max_ejection_time`. Paused clock: the times are exact to the ticker's 100 ms.
    #[tokio::test(start_paused = true)]
    async fn the_ticker_ends_ejections_on_time_and_repeat_offenders_serve_longer() {
        let snapshot = snapshot_of(
            "127.0.0.1:9".parse().unwrap(),
            "    outlier: {consecutive_failures: 2, base_ejection_time: 10s, max_ejection_time: 25s}\n",
        );
        let shutdown = CancellationToken::new();
        spawn_ticker(snapshot.clone(), shutdown.clone());
        for expected in [10, 20, 25] {
            fail_requests(&snapshot, 2);
            assert!(ejected(&snapshot));
            let out_for = time_until(|| !ejected(&snapshot)).await;
            let expected = Duration::from_secs(expected);
            assert!(
                out_for >= expected && out_for <= expected + TICK,
                "ejected for {out_for:?}, expected {expected:?}"
            );
        }
        shutdown.cancel();
    }

    /// With active checks, `rise` checks passing after a passive ejection end it long before
    /// its time (30 s): within rise (2) intervals (100 ms, +10% jitter).
    #[tokio::test(start_paused = true)]
    async fn passing_checks_end_a_first_ejection_within_rise_intervals() {
        let (addr, _seen) = slow_backend(Duration::ZERO).await;
        let snapshot = snapshot_of(
            addr,
            "    health_check: {type: http, path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}\n    outlier: {consecutive_failures: 3, base_ejection_time: 30s}\n",
        );
        let stop = CancellationToken::new();
        Probes::default().sync(&snapshot, &stop);
        tokio::time::sleep(Duration::from_secs(1)).await;
        fail_requests(&snapshot, 3);
        assert!(ejected(&snapshot));
        let out_for = time_until(|| !ejected(&snapshot)).await;
        assert!(
            out_for <= Duration::from_millis(220),
            "back after {out_for:?}"
        );
        stop.cancel();
    }

    /// `interval: 300ms, timeout: 500ms` against a backend slower than the interval, once
    /// answering within the timeout and once not: either way the backend never has two
    /// checks open, and each check starts an interval (less the jitter) after the previous
    /// one ended.
    #[tokio::test(start_paused = true)]
    async fn a_backend_slower_than_the_interval_gets_one_check_at_a_time() {
        let interval = Duration::from_millis(300);
        let timeout = Duration::from_millis(500);
        for answer_after in [Duration::from_millis(400), Duration::from_secs(2)] {
            let (addr, seen) = slow_backend(answer_after).await;
            let snapshot = snapshot_checking(
                addr,
                "type: http, path: /health, interval: 300ms, timeout: 500ms",
            );
            let stop = CancellationToken::new();
            Probes::default().sync(&snapshot, &stop);
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();

            let answered = answer_after < timeout;
            assert_eq!(seen.most_open.load(SeqCst), 1, "{answer_after:?}");
            let starts = seen.starts.lock().unwrap().clone();
            assert!(
                starts.len() >= 10,
                "{answer_after:?}: {} checks",
                starts.len()
            );
            let check_time = answer_after.min(timeout);
            for pair in starts.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= check_time + interval.mul_f64(0.9),
                    "{answer_after:?}: a check began {gap:?} after the previous one"
                );
            }
            let current = snapshot.load();
            let health = &current.pools["app"].backends[0].state.health;
            let (passed, failed) = (
                health.checks_passed.load(SeqCst),
                health.checks_failed.load(SeqCst),
            );
            if answered {
                assert!(
                    failed == 0 && passed >= 10,
                    "{passed} passed, {failed} failed"
                );
            } else {
                assert!(
                    passed == 0 && failed >= 10,
                    "{passed} passed, {failed} failed"
                );
            }
        }
    }
}
