//! Resilience end to end: timeouts, safe retries on another backend, the retry budget, the
//! bounded wait queue, and a hung backend. Real sockets throughout.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Accepts connections and never answers (a stopped process: the kernel still accepts).
async fn spawn_hung_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = socket.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

/// Reads a request head, then closes without answering (a reset after the request was sent).
async fn spawn_resetting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                drop(stream);
            });
        }
    });
    (addr, requests)
}

fn pool_yaml(backends: &[SocketAddr], pool_options: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{}]\n{pool_options}",
        list.join(", ")
    )
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_never_answers_gives_504_within_the_timeout() {
    let (hung, _) = spawn_hung_backend().await;
    let sluice = start_sluice(&pool_yaml(&[hung], "    timeouts: {response: 300ms}\n")).await;
    let started = Instant::now();
    let response = get(sluice.local_addr("web").unwrap(), "/").await;
    assert_status(&response, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    // Paused clock: the timeout to the millisecond of the timer wheel.
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(301),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_backend() {
    let dead = dead_addr().await;
    let good = spawn_backend("good").await;
    // Passive ejection off, so every request meets the dead backend in its turn.
    let options = "    outlier: {consecutive_failures: 0}\n";
    let sluice = start_sluice(&pool_yaml(&[dead, good.addr], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    for _ in 0..10 {
        let post = Request::post("/echo")
            .header("host", "t")
            .body(Full::new(Bytes::from_static(b"payload")).boxed())
            .unwrap();
        let response = send(addr, post).await;
        assert_status(&response, StatusCode::OK);
        assert_eq!(
            &response.body()[..],
            b"payload",
            "POSTs too: nothing reached the dead one"
        );
    }
    assert_eq!(good.requests(), 10);
}

#[tokio::test]
async fn a_post_is_not_retried_after_its_body_was_sent_but_a_get_is() {
    let (first, first_count) = spawn_resetting_backend().await;
    let (second, second_count) = spawn_resetting_backend().await;
    let options = "    outlier: {consecutive_failures: 0}\n    retry: {attempts: 2, budget_min_per_second: 100}\n";
    let sluice = start_sluice(&pool_yaml(&[first, second], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    let post = Request::post("/order")
        .header("host", "t")
        .body(Full::new(Bytes::from_static(b"buy one")).boxed())
        .unwrap();
    assert_status(&send(addr, post).await, StatusCode::BAD_GATEWAY);
    let seen = || first_count.load(Ordering::SeqCst) + second_count.load(Ordering::SeqCst);
    assert_eq!(seen(), 1, "the POST reached one backend once");

    assert_status(&get(addr, "/page").await, StatusCode::BAD_GATEWAY);
    assert_eq!(
        seen(),
        1 + 3,
        "the GET was tried three times (1 + 2 retries)"
    );

    let keyed = Request::post("/order")
        .header("host", "t")
        .header("idempotency-key", "abc")
        .body(Full::new(Bytes::from_static(b"buy one")).boxed())
        .unwrap();
    assert_status(&send(addr, keyed).await, StatusCode::BAD_GATEWAY);
    assert_eq!(seen(), 4 + 3, "Idempotency-Key opts a POST into retries");
}

#[tokio::test]
async fn the_retry_budget_caps_retries_when_a_backend_fails_everything() {
    let failing = spawn_failing_backend(503).await;
    let good_one = spawn_backend("good1").await;
    let good_two = spawn_backend("good2").await;
    let options = "    outlier: {consecutive_failures: 0}\n    retry: {attempts: 1, budget_percent: 20, budget_min_per_second: 0}\n";
    let sluice = start_sluice(&pool_yaml(
        &[failing.0, good_one.addr, good_two.addr],
        options,
    ))
    .await;
    let addr = sluice.local_addr("web").unwrap();
    let mut unavailable = 0;
    for _ in 0..300 {
        let response = get(addr, "/").await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
        }
    }
    let tries = failing.1.load(Ordering::SeqCst) + good_one.requests() + good_two.requests();
    let retries = tries - 300;
    eprintln!(
        "retry budget: {retries} retries for 300 requests ({:.0}%), {unavailable} answered 503",
        retries as f64 / 3.0
    );
    assert!(retries <= 60, "at most 20% of 300: {retries}");
    assert!(retries >= 40, "the budget is used: {retries}");
    assert_eq!(
        unavailable + retries,
        failing.1.load(Ordering::SeqCst),
        "every failure was retried or returned"
    );
}

/// Answers every request with `status`.
async fn spawn_failing_backend(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut response =
                        http::Response::new(Full::new(Bytes::from_static(b"failing")));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(start_paused = true)]
async fn a_full_pool_queues_up_to_max_pending_and_refuses_the_rest_fast() {
    let slow = spawn_backend_with_delay("slow", Duration::from_millis(300)).await;
    let options = "    limits: {max_requests_per_backend: 5, max_pending: 50, queue_timeout: 5s}\n";
    let sluice = start_sluice(&pool_yaml(&[slow.addr], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    let requests: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let response = get(addr, "/").await;
                (response, started.elapsed())
            })
        })
        .collect();
    let (mut ok, mut refused, mut slowest_refusal) = (0, 0, Duration::ZERO);
    for request in requests {
        let (response, took) = request.await.unwrap();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                slowest_refusal = slowest_refusal.max(took);
            }
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("queue: {ok} served, {refused} refused, slowest refusal {slowest_refusal:?}");
    assert_eq!(ok + refused, 200);
    assert!(ok >= 55, "5 in flight + 50 queued are served: {ok}");
    assert!(refused >= 100, "the rest is refused: {refused}");
    // Paused clock: a refusal that waited for a slot would show the backend's 300 ms.
    assert!(
        slowest_refusal < Duration::from_millis(300),
        "refusals are immediate, not a pile-up: {slowest_refusal:?}"
    );
    assert!(slow.requests() <= ok + 5);
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_costs_at_most_one_per_try_timeout() {
    let (hung, hung_accepts) = spawn_hung_backend().await;
    let good = spawn_backend("good").await;
    let options = "    timeouts: {response: 5s}\n    retry: {attempts: 2, per_try_timeout: 200ms}\n    outlier: {consecutive_failures: 3}\n";
    let sluice = start_sluice(&pool_yaml(&[hung, good.addr], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut slow = 0;
    for _ in 0..40 {
        let started = Instant::now();
        let response = get(addr, "/").await;
        assert_status(&response, StatusCode::OK);
        let took = started.elapsed();
        // Paused clock: one per-try timeout (200 ms) and one retry's backoff (25 ms at most).
        assert!(
            took <= Duration::from_millis(200 + 25),
            "bounded by one per-try timeout: {took:?}"
        );
        if took >= Duration::from_millis(200) {
            slow += 1;
        }
    }
    eprintln!(
        "hung backend: {slow} of 40 requests paid the per-try timeout; backend accepted {} connections",
        hung_accepts.load(Ordering::SeqCst)
    );
    assert!(
        slow <= 3,
        "ejected after consecutive_failures timeouts: {slow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_opens_on_a_flapping_backend_and_closes_after_probes() {
    use std::sync::atomic::AtomicBool;
    let failing = Arc::new(AtomicBool::new(true));
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flappy = socket.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    {
        let (failing, served) = (failing.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let (failing, served) = (failing.clone(), served.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        served.fetch_add(1, Ordering::SeqCst);
                        let fail = failing.load(Ordering::SeqCst);
                        let mut response =
                            http::Response::new(Full::new(Bytes::from_static(b"flappy")));
                        if fail {
                            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    let good = spawn_backend("good").await;
    let options = "    outlier: {consecutive_failures: 0}\n    circuit_breaker: {window: 5s, min_requests: 6, failure_ratio: 0.5, open_for: 300ms, probes: 2}\n";
    let sluice = start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}\n{}",
        pool_yaml(&[flappy, good.addr], options)
    ))
    .await;
    let addr = sluice.local_addr("web").unwrap();
    for _ in 0..20 {
        get(addr, "/").await;
    }
    let breaker_state = |sluice: &sluice::Server| {
        let snapshot = sluice.snapshot().load();
        let backend = snapshot.pools["app"]
            .backends
            .iter()
            .find(|b| b.address.inet() == Some(flappy))
            .unwrap();
        backend.state.breaker.machine().state()
    };
    assert_eq!(
        breaker_state(&sluice),
        sluice::resilience::breaker::BreakerState::Open
    );
    let status: serde_json::Value =
        serde_json::from_slice(get(sluice.admin_addr().unwrap(), "/status").await.body()).unwrap();
    let reason = status["pools"][0]["backends"][0]["circuit_breaker"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("requests failed"), "{reason}");
    let before = served.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(
            body_text(&get(addr, "/").await),
            "backend good",
            "open breaker: no traffic to flappy"
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), before);

    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await; // the open_for period under test
    let mut flappy_answers = 0;
    for _ in 0..20 {
        if body_text(&get(addr, "/").await) == "flappy" {
            flappy_answers += 1;
        }
    }
    assert_eq!(
        breaker_state(&sluice),
        sluice::resilience::breaker::BreakerState::Closed
    );
    assert!(
        flappy_answers >= 5,
        "closed again: flappy serves ({flappy_answers} of 20)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_max_connections_leaves_new_clients_in_the_backlog() {
    use tokio::io::AsyncWriteExt;
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app, max_connections: 2}}\npools:\n  app:\n    backends: [{}]\n",
        backend.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The third connect succeeds in the kernel backlog but is not served yet.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), third.read_to_end(&mut answer)).await;
    assert!(
        early.is_err() && answer.is_empty(),
        "served past max_connections"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test(start_paused = true)]
async fn tcp_sessions_redispatch_failed_connects_and_close_when_idle() {
    use tokio::io::AsyncWriteExt;
    let dead = dead_addr().await;
    let echo = spawn_tcp_echo().await;
    let yaml = format!(
        "listeners:\n  db: {{bind: 127.0.0.1:0, protocol: tcp, pool: db}}\npools:\n  db:\n    backends: [{dead}, {echo}]\n    outlier: {{consecutive_failures: 0}}\n    timeouts: {{idle: 300ms}}\n"
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("db").unwrap();
    for _ in 0..4 {
        let mut session = tokio::net::TcpStream::connect(addr).await.unwrap();
        session.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), session.read_exact(&mut buf))
            .await
            .expect("echo through the live backend")
            .unwrap();
        assert_eq!(&buf, b"ping");
        // Then stay quiet: the session is closed after the idle timeout.
        let started = Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), session.read_to_end(&mut rest))
            .await
            .expect("closed when idle")
            .unwrap();
        let took = started.elapsed();
        // Paused clock: the idle timeout, plus at most one step of the watchdog that checks
        // it (a quarter of the timeout).
        assert!(
            took >= Duration::from_millis(300) && took <= Duration::from_millis(375),
            "took {took:?}"
        );
    }
}

/// A body that sends one chunk every `every` (forever, or until `chunks` were sent and then
/// stalls without ending).
struct Drip {
    every: Option<Duration>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    sent: usize,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.sent > 0 {
            let Some(every) = self.every else {
                return std::task::Poll::Pending; // stalls for good after the first chunk
            };
            std::task::ready!(self.sleep.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + every;
            self.sleep.as_mut().reset(next);
        }
        self.sent += 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"chunk;",
        )))))
    }
}

async fn spawn_drip_backend(every: Option<Duration>) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = Drip {
                        every,
                        sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                        sent: 0,
                    };
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Reads a raw response until the connection closes; returns what came and how long it took.
async fn read_until_closed(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let raw = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    (raw, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_hits_the_idle_timeout_and_a_dripping_one_the_total() {
    let stalled = spawn_drip_backend(None).await;
    let sluice = start_sluice(&pool_yaml(&[stalled], "    timeouts: {idle: 300ms}\n")).await;
    let (raw, took) = read_until_closed(sluice.local_addr("web").unwrap()).await;
    assert!(
        raw.starts_with("HTTP/1.1 200") && raw.contains("chunk;"),
        "{raw}"
    );
    // Paused clock: the timeouts to the millisecond of the timer wheel.
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(301),
        "idle cut after {took:?}"
    );

    let dripping = spawn_drip_backend(Some(Duration::from_millis(100))).await;
    let sluice = start_sluice(&pool_yaml(
        &[dripping],
        "    timeouts: {idle: 5s, total: 600ms}\n",
    ))
    .await;
    let (raw, took) = read_until_closed(sluice.local_addr("web").unwrap()).await;
    assert!(
        raw.matches("chunk;").count() >= 3,
        "chunks flowed before the cut: {raw}"
    );
    assert!(
        took >= Duration::from_millis(600) && took <= Duration::from_millis(601),
        "total cut after {took:?}"
    );
}

/// Starts a pool of a backend that can be hung and a steady one, with HTTP checks every
/// 200 ms and the default retry policy and per-try timeout (none), a JSON access log, and
/// `response` as the response timeout.
async fn hung_pool(
    directory: &std::path::Path,
    response: &str,
) -> (
    sluice::Server,
    Controls,
    Backend,
    Backend,
    std::path::PathBuf,
) {
    let controls = Controls::default();
    let flaky = spawn_controlled_backend("flaky", Duration::ZERO, controls.clone()).await;
    let steady = spawn_backend("steady").await;
    let log = directory.join("access.log");
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app, access_log: {{format: json, path: '{}'}}}}\n\
         pools:\n  app:\n    backends: [{}, {}]\n    timeouts: {{response: {response}}}\n    \
         health_check: {{path: /health, interval: 200ms, timeout: 200ms}}\n",
        log.display(),
        flaky.addr,
        steady.addr
    );
    let sluice = start_sluice(&yaml).await;
    (sluice, controls, flaky, steady, log)
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_on_a_hung_backend_move_to_another_after_one_check_timeout() {
    let directory = tempfile::tempdir().unwrap();
    // A response timeout long enough to tell a move from a timeout.
    let (sluice, controls, flaky, _steady, log) = hung_pool(directory.path(), "10s").await;
    let (addr, admin) = (
        sluice.local_addr("web").unwrap(),
        sluice.admin_addr().unwrap(),
    );
    controls.hung.store(true, Ordering::SeqCst);
    let started = Instant::now();
    // Eight at once: round robin sends half of them to the hung backend.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let sent = Instant::now();
                let response = get(addr, "/").await;
                (response.status(), body_text(&response), sent.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for request in requests {
        let (status, body, took) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "backend steady");
        slowest = slowest.max(took);
    }
    eprintln!(
        "hung backend: slowest of 8 requests took {slowest:?} (check interval 200 ms, timeout 200 ms, response timeout 10 s)"
    );
    // One check cycle (interval + timeout, +10% jitter) plus the move's grace: 540 ms, on a
    // paused clock, so no slack for a loaded machine. The response timeout would be 10 s.
    assert!(slowest <= Duration::from_millis(540), "took {slowest:?}");
    assert!(started.elapsed() <= Duration::from_millis(540));

    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() >= 8)
        })
        .await
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let moved: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("moved").is_some())
        .collect();
    assert!(!moved.is_empty(), "moved requests are logged:\n{text}");
    let why = moved[0]["moved"].as_str().unwrap();
    assert!(
        why.starts_with(&format!("from {} after ", flaky.addr)),
        "{why}"
    );
    assert_eq!(moved[0]["status"], 200);
    let metrics = body_text(&get(admin, "/metrics").await);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_requests_moved_total{pool=\"app\"")),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_on_a_hung_backend_is_never_moved() {
    let directory = tempfile::tempdir().unwrap();
    let (sluice, controls, _flaky, steady, _log) = hung_pool(directory.path(), "2s").await;
    let addr = sluice.local_addr("web").unwrap();
    controls.hung.store(true, Ordering::SeqCst);
    // Four at once: round robin sends two to the hung backend. Those wait for the response
    // timeout although the backend is evacuated: a POST may have reached the application.
    let posts: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let request = Request::post("/order")
                    .header("host", "t")
                    .body(Full::new(Bytes::from_static(b"item=1")).boxed())
                    .unwrap();
                let sent = Instant::now();
                let response = send(addr, request).await;
                (response.status(), sent.elapsed())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for post in posts {
        outcomes.push(post.await.unwrap());
    }
    let timed_out: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::GATEWAY_TIMEOUT)
        .collect();
    assert_eq!(timed_out.len(), 2, "{outcomes:?}");
    assert!(
        timed_out
            .iter()
            .all(|(_, took)| *took >= Duration::from_secs(2)),
        "{outcomes:?}"
    );
    let posts_seen = steady.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts_seen, 2, "no POST was sent twice");
}
