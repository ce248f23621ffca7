//! One HTTP request forwarded with the pool's resilience policy: pick a backend (waiting in a
//! bounded queue when all are full), send, and retry safely within the budget.
//!
//! What is retried (Envoy's and HAProxy's rules, made one policy):
//! - a failed connect, always: nothing reached the backend;
//! - a reset, a 502/503, or a per-try timeout, only for idempotent methods (GET, HEAD,
//!   OPTIONS, PUT, DELETE, TRACE) or requests carrying `Idempotency-Key`;
//! - never a request whose body was streamed (over `REPLAY_LIMIT`, or without a length):
//!   it cannot be sent twice.
//!
//! Each retry goes to a backend not tried yet when one is available, after a jittered
//! exponential backoff, if the retry budget allows; otherwise the last error goes back.
//!
//! A request that is safe to send again (idempotent, body read whole) and still waits for
//! its response head leaves its backend when that backend is evacuated: an active check of
//! it timed out, or it went down or was ejected (`health::evacuation`). It is retried on
//! another backend at once, as one of its `attempts` and within the retry budget; when the
//! budget says no, it keeps waiting. Nothing of the response reached the client yet, so the
//! client only sees a later answer. Without this, a hung backend (accepting, never answering)
//! held every request sent to it until the response timeout (60 s by default), as it does
//! behind nginx and HAProxy; with active checks, a request now waits at most about one check
//! interval plus the check's timeout. The moved request counts as a failure of the backend
//! (so a hung backend is ejected after `consecutive_failures` of them), is counted in
//! `sluice_requests_moved_total{pool,cause}`, and its access log line says `moved`.
//!
//! Whose fault a failure is decides what it touches. A try that failed because the client's
//! streamed body failed (aborted, malformed, too slow, too large) is the client's: it is not
//! reported to passive ejection or the circuit breaker, not retried, and answered with the
//! client's 4xx (Envoy's split of local-origin and upstream errors). For the same reason the
//! response timeout does not run while the client is still sending its body: a backend
//! waiting for the rest of an upload is not slow.

use crate::backend::{Backend, InFlight};
use crate::balance::PickContext;
use crate::config::BackendAddress;
use crate::health::evacuation::{Cause, Evacuation};
use crate::probe::report_outcome;
use crate::proxy::request_body::{ClientBodyError, Prepared};
use crate::proxy::{clock_instant, clock_micros, pick_backend_where};
use crate::resilience::backoff::backoff;
use crate::state::Pool;
use crate::upstream::{RequestHead, UpstreamBody, UpstreamError};
use http::{HeaderMap, Method, Response, StatusCode};
use std::error::Error as StdError;
use std::io;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// A response from a backend, with the slot it holds until the body is sent.
pub struct Forwarded<'p> {
    pub backend: &'p Backend,
    pub in_flight: InFlight,
    pub response: Response<UpstreamBody>,
    /// Set when the request left a backend that stopped answering: from where and why.
    pub moved: Option<String>,
}

/// Why no backend response is coming: the status and short text for the client.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub text: &'static str,
    /// Seconds for `Retry-After` (queue full or queue timeout).
    pub retry_after: Option<u32>,
    /// Set when the client's own body failed: the failure is the client's.
    pub client: Option<ClientBodyError>,
    /// Set when the request left a backend that stopped answering: from where and why.
    pub moved: Option<String>,
}

impl Refused {
    fn new(status: StatusCode, text: &'static str) -> Refused {
        Refused {
            status,
            text,
            retry_after: None,
            client: None,
            moved: None,
        }
    }

    fn client(error: ClientBodyError) -> Refused {
        Refused {
            status: error.status(),
            text: error.text(),
            retry_after: None,
            client: Some(error),
            moved: None,
        }
    }
}

/// While the client is still sending its body, the response deadline is looked at again
/// this often; the backend's full per-try time starts once the body is in.
const CLIENT_RECHECK: Duration = Duration::from_secs(1);

/// How long a movable request waits before it listens for its backend's evacuation. Nearly
/// every answer comes sooner, and those then cost no registration with the backend's shared
/// `Notify` (a lock every worker would take per request); an evacuation sounded meanwhile is
/// seen by its epoch when the grace ends. A check timeout is far longer, so this delays a
/// move by at most this much.
const MOVE_GRACE: Duration = Duration::from_millis(100);

/// The parts of the client's request every try needs.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// A PROXY protocol header for the backend (`send_proxy`): then each try uses a new
    /// connection that starts with it, since a pooled one would carry another client's.
    pub proxy_header: Option<&'a [u8]>,
}

pub async fn forward<'p>(
    pool: &'p Pool,
    request: Outgoing<'_>,
    mut body: Prepared,
    pick: &PickContext,
    arrived: u64,
) -> Result<Forwarded<'p>, Refused> {
    let policy = &pool.config.resilience.retry;
    let idempotent = is_idempotent(request.method, request.headers);
    let deadline = clock_instant(arrived) + pool.config.timeouts.response;
    let mut sent_at = arrived;
    deposit(pool, arrived);
    let mut tried = Tried::default();
    let mut attempt = 0;
    let mut moved: Option<String> = None;
    loop {
        let (backend, in_flight) = match acquire_slot(pool, pick, &tried).await {
            Ok(found) => found,
            Err(refused) => return Err(Refused { moved, ..refused }),
        };
        tried.add(&backend.address);
        let Some(try_body) = body.next_try() else {
            return Err(Refused {
                moved,
                ..Refused::new(StatusCode::BAD_GATEWAY, "backend failed to respond\n")
            });
        };
        if attempt > 0 {
            sent_at = clock_micros();
        }
        let head = RequestHead {
            method: request.method,
            target: request.path_and_query,
            headers: request.headers,
            idempotent,
            now_micros: sent_at,
        };
        let try_time = policy
            .per_try_timeout
            .map_or(pool.config.timeouts.response, |t| {
                t.min(pool.config.timeouts.response)
            });
        let try_deadline = policy
            .per_try_timeout
            .map_or(deadline, |t| deadline.min(clock_instant(sent_at) + t));
        let exchange = pool
            .client
            .send(&backend.state, request.proxy_header, &head, try_body);
        // Only what can be sent again may leave its backend, and only as one more attempt.
        let movable = idempotent && body.replayable() && attempt < policy.attempts;
        let outcome = if movable {
            let evacuation = backend.state.health.evacuation();
            let sent = clock_instant(sent_at);
            let may_move = || {
                let granted = withdraw(pool);
                if !granted {
                    crate::metrics::retry_budget_exhausted(&pool.config.name);
                }
                granted
            };
            wait_or_move(exchange, try_deadline, sent, evacuation, may_move).await
        } else {
            wait_for_backend(exchange, try_deadline, try_time, &body)
                .await
                .map_err(|_elapsed| Stop::TimedOut)
        };
        let failure = match outcome {
            Ok(Ok(response)) => {
                let now = clock_micros();
                backend
                    .state
                    .record_latency(now.saturating_sub(sent_at), now);
                let status = response.status();
                backend.state.count_response(status.as_u16());
                let counts_as_failure =
                    status.is_server_error() && pool.config.health.outlier.http_5xx;
                let retry_status = matches!(status.as_u16(), 502 | 503);
                if counts_as_failure {
                    report_outcome(pool, backend, false, &format!("HTTP {}", status.as_u16()));
                } else {
                    report_outcome(pool, backend, true, "");
                }
                if !(retry_status && idempotent && body.replayable()) {
                    return Ok(Forwarded {
                        backend,
                        in_flight,
                        response,
                        moved,
                    });
                }
                Failure {
                    retry_safe: true,
                    budget_taken: false,
                    refused: Refused::new(status, "backend unavailable\n"),
                    response: Some(Forwarded {
                        backend,
                        in_flight,
                        response,
                        moved: None,
                    }),
                }
            }
            Ok(Err(error)) => {
                if let Some(fault) = body.client_failure() {
                    debug!(backend = %backend.address, %fault, "request cut short by its client");
                    return Err(Refused::client(fault));
                }
                let (status, text) = classify_upstream_error(&error);
                if status == StatusCode::GATEWAY_TIMEOUT {
                    crate::metrics::timeout(&pool.name, "connect");
                }
                backend.state.count_failure();
                report_outcome(pool, backend, false, &error_chain(&error));
                debug!(backend = %backend.address, error = %crate::error::Chain(&error), "upstream request failed");
                Failure {
                    // A failed connect sent nothing; anything else may have reached the app.
                    retry_safe: body.replayable() && (error.is_connect() || idempotent),
                    budget_taken: false,
                    refused: Refused::new(status, text),
                    response: None,
                }
            }
            Err(Stop::Moved(cause)) => {
                let waited = Duration::from_micros(clock_micros().saturating_sub(sent_at));
                let why = format!(
                    "from {} after {} ms: {}",
                    backend.address,
                    waited.as_millis(),
                    cause.describe()
                );
                crate::metrics::request_moved(&pool.name, cause.label());
                backend.state.count_failure();
                // The backend's failure: it did not answer while it was stuck or failing.
                report_outcome(
                    pool,
                    backend,
                    false,
                    &format!(
                        "no response after {} ms; {}",
                        waited.as_millis(),
                        cause.describe()
                    ),
                );
                debug!(backend = %backend.address, "request moved {why}");
                moved = Some(why);
                Failure {
                    retry_safe: true,
                    // `wait_or_move` took the retry from the budget before giving up the try.
                    budget_taken: true,
                    refused: Refused::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "backend stopped answering\n",
                    ),
                    response: None,
                }
            }
            Err(Stop::TimedOut) => {
                if let Some(fault) = body.client_failure() {
                    return Err(Refused::client(fault));
                }
                crate::metrics::timeout(&pool.name, "response");
                backend.state.count_failure();
                report_outcome(pool, backend, false, "response timed out");
                debug!(backend = %backend.address, "upstream response timed out");
                Failure {
                    retry_safe: policy.per_try_timeout.is_some() && idempotent && body.replayable(),
                    budget_taken: false,
                    refused: Refused::new(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n"),
                    response: None,
                }
            }
        };
        attempt += 1;
        let time_left = deadline.saturating_duration_since(Instant::now());
        // A move goes to another backend once: nothing to back off from.
        let wait = if failure.budget_taken {
            Duration::ZERO
        } else {
            backoff(
                attempt,
                policy.backoff_base,
                policy.backoff_max,
                fastrand::f64(),
            )
        };
        let allowed = failure.retry_safe && attempt <= policy.attempts && time_left > wait;
        if !(allowed && (failure.budget_taken || withdraw(pool))) {
            if allowed {
                // Only the budget said no (not the policy or the deadline).
                crate::metrics::retry_budget_exhausted(&pool.config.name);
            }
            // A backend's own 502/503 goes back as it came; otherwise sluice's answer.
            return match failure.response {
                Some(forwarded) => Ok(Forwarded { moved, ..forwarded }),
                None => Err(Refused {
                    moved,
                    ..failure.refused
                }),
            };
        }
        drop(failure);
        crate::metrics::retry(&pool.config.name);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why a try ended without the backend's answer.
enum Stop {
    /// The response (or per-try) deadline passed.
    TimedOut,
    /// The backend was evacuated and the request may leave it (a retry was withdrawn).
    Moved(Cause),
}

/// `wait_for_backend` for a request that may leave its backend (idempotent, body read whole,
/// an attempt left): besides the answer and the deadline, it listens for the backend's
/// evacuation from `MOVE_GRACE` after `sent` on, and gives the try up when one was sounded
/// after the request was sent and `may_move` (the retry budget) agrees. When the budget says
/// no, it keeps waiting for the answer: leaving would then only fail the request.
async fn wait_or_move<F: std::future::Future>(
    exchange: F,
    deadline: Instant,
    sent: Instant,
    evacuation: &Evacuation,
    mut may_move: impl FnMut() -> bool,
) -> Result<F::Output, Stop> {
    let mut epoch = evacuation.epoch();
    tokio::pin!(exchange);
    let grace_end = deadline.min(sent + MOVE_GRACE);
    match tokio::time::timeout_at(grace_end, exchange.as_mut()).await {
        Ok(output) => return Ok(output),
        Err(_) if grace_end >= deadline => return Err(Stop::TimedOut),
        Err(_) => {}
    }
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    loop {
        let sounded = evacuation.notified();
        tokio::pin!(sounded);
        sounded.as_mut().enable();
        if let Some(cause) = evacuation.since(epoch) {
            if may_move() {
                return Err(Stop::Moved(cause));
            }
            epoch = evacuation.epoch();
            continue;
        }
        tokio::select! {
            biased;
            output = exchange.as_mut() => return Ok(output),
            () = expiry.as_mut() => return Err(Stop::TimedOut),
            () = sounded => {}
        }
    }
}

/// Waits for the backend's response head until `deadline`; while the client is still sending
/// its body the deadline moves on, and once the body is in the backend gets `try_time` more.
async fn wait_for_backend<F: std::future::Future>(
    exchange: F,
    mut deadline: Instant,
    try_time: Duration,
    body: &Prepared,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(exchange);
    let mut waited_for_client = false;
    loop {
        match tokio::time::timeout_at(deadline, exchange.as_mut()).await {
            Ok(output) => return Ok(output),
            Err(_) if body.client_still_sending() && body.client_failure().is_none() => {
                waited_for_client = true;
                deadline = Instant::now() + CLIENT_RECHECK;
            }
            Err(_) if waited_for_client => {
                waited_for_client = false;
                deadline = Instant::now() + try_time;
            }
            Err(elapsed) => return Err(elapsed),
        }
    }
}

struct Failure<'p> {
    retry_safe: bool,
    /// The retry was already taken from the budget (a move).
    budget_taken: bool,
    refused: Refused,
    /// The backend's own error response, returned as is when no retry happens.
    response: Option<Forwarded<'p>>,
}

fn deposit(pool: &Pool, now_micros: u64) {
    if pool.config.resilience.retry.attempts > 0 {
        let elapsed = Duration::from_micros(now_micros);
        pool.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deposit(elapsed);
    }
}

fn withdraw(pool: &Pool) -> bool {
    let elapsed = Duration::from_micros(clock_micros());
    pool.budget
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .try_withdraw(elapsed)
}

/// RFC 9110 9.2.2 idempotent methods, or an explicit `Idempotency-Key` from the client.
fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// The backends a request went to; the first without allocating (most requests take one try).
#[derive(Default)]
struct Tried<'a> {
    first: Option<&'a BackendAddress>,
    retries: Vec<&'a BackendAddress>,
}

impl<'a> Tried<'a> {
    fn add(&mut self, address: &'a BackendAddress) {
        match self.first {
            None => self.first = Some(address),
            Some(_) => self.retries.push(address),
        }
    }

    fn contains(&self, address: &BackendAddress) -> bool {
        self.first == Some(address) || self.retries.contains(&address)
    }
}

/// A slot on a backend not tried yet (or any, when all available ones were tried), waiting in
/// the pool's bounded queue when every backend is at its limit.
async fn acquire_slot<'p>(
    pool: &'p Pool,
    pick: &PickContext,
    tried: &Tried<'_>,
) -> Result<(&'p Backend, InFlight), Refused> {
    let untried = |b: &Backend| !tried.contains(&b.address);
    if let Some(found) =
        pick_backend_where(pool, pick, untried).or_else(|| pick_backend_where(pool, pick, |_| true))
    {
        return Ok(found);
    }
    let no_backend = Refused::new(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
    let limits = &pool.config.resilience.limits;
    let Some(max_pending) = limits.max_pending else {
        return Err(no_backend);
    };
    // Waiting only helps when backends are merely full, not when none is usable at all.
    let only_full = pool
        .backends
        .iter()
        .any(|b| b.weight > 0 && b.state.health.usable());
    if !only_full {
        return Err(no_backend);
    }
    let Some(_place) = pool.queue.enter(max_pending) else {
        return Err(Refused {
            retry_after: Some(1),
            ..Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests waiting for a backend\n",
            )
        });
    };
    let deadline = Instant::now() + limits.queue_timeout;
    loop {
        let freed = pool.queue.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(found) = pick_backend_where(pool, pick, |_| true) {
            return Ok(found);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(Refused {
                retry_after: Some(1),
                ..Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timed out waiting for a free backend\n",
                )
            });
        }
    }
}

/// Connect timeouts are 504 (as nginx answers), refused or failed connections 502.
fn classify_upstream_error(error: &UpstreamError) -> (StatusCode, &'static str) {
    let timed_out = std::iter::successors(error.source(), |e| (*e).source()).any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
    });
    match (error.is_connect(), timed_out) {
        (true, true) => (StatusCode::GATEWAY_TIMEOUT, "backend connect timed out\n"),
        (true, false) => (StatusCode::BAD_GATEWAY, "backend connection failed\n"),
        (false, _) => (StatusCode::BAD_GATEWAY, "backend failed to respond\n"),
    }
}

/// The error with its causes ("client error (Connect): tcp connect error: Connection
/// refused"), for health reasons an operator can act on.
fn error_chain(error: &dyn StdError) -> String {
    crate::error::chain(error)
}
