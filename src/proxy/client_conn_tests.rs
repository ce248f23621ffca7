//! Parking and the hand-over between sluice's own HTTP/1 server and hyper, tested over an
//! in-memory stream with paused time: a parked connection serves its next request, pipelined
//! bytes are not lost (also across a hand-over), connections with bodies never park, a hyper
//! connection parks back to the own server, and the idle deadline closes a parked connection.

use super::*;
use crate::proxy::activity::{Activity, ClientTimeouts};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const TIMEOUTS: ClientTimeouts = ClientTimeouts {
    header: Duration::from_secs(5),
    idle: Duration::from_secs(30),
};

/// Starts `drive` on one end of a duplex stream with a service that echoes the request's
/// path, body length and which server read it (and keeps the connection's activity marks as
/// the proxy does).
fn start() -> (DuplexStream, Arc<ConnActivity>, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let activity = Arc::new(ConnActivity::default());
    let io = TimedIo::new(server, Arc::clone(&activity) as Activity, TIMEOUTS);
    let marks = Arc::clone(&activity);
    let service = service_fn(move |request: Request<Incoming>| {
        let marks = Arc::clone(&marks);
        async move {
            let active = ConnActivity::begin(Arc::clone(&marks) as Activity);
            if !request.body().is_end_stream() {
                marks.mark_body();
            }
            let path = request.uri().path().to_owned();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len());
            drop(active);
            let text = format!("{path} {} hyper", body.unwrap_or(0));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    });
    let marks = Arc::clone(&activity);
    let own = move |request: Request<ClientBody>| {
        let active = ConnActivity::begin(Arc::clone(&marks) as Activity);
        async move {
            let text = format!("{} 0 own", request.uri().path());
            drop(active);
            Response::new(Full::new(Bytes::from(text)))
        }
    };
    let task = tokio::spawn({
        async move {
            let _ = drive(
                io,
                service,
                own,
                Versions::Detect,
                HyperLimits::default(),
                Closing::Drop,
                CancellationToken::new(),
            )
            .await;
        }
    });
    (client, activity, task)
}

/// Waits (in paused time) until the connection has been parked `times` times.
async fn until_parked(activity: &ConnActivity, times: u32) {
    let deadline = tokio::time::Instant::now() + PARK_AFTER * 10;
    while activity.times_parked() < times {
        assert!(tokio::time::Instant::now() < deadline, "not parked");
        tokio::time::sleep(PARK_AFTER / 10).await;
    }
}

/// Reads until `marker` has arrived (several responses, say); everything read so far.
async fn read_until(client: &mut DuplexStream, marker: &str) -> String {
    let mut got = String::new();
    while !got.contains(marker) {
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

/// Reads one whole response (the tests' bodies are short and sent with a length).
async fn read_response(client: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= length {
                return text;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_parks_and_serves_its_next_request() {
    let (mut client, activity, _task) = start();
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/one 0 own"));
    until_parked(&activity, 1).await;
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/two 0 own"));
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_takes_pipelined_requests_in_order() {
    let (mut client, activity, _task) = start();
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    until_parked(&activity, 1).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut client, "/b 0").await;
    let (a, b) = (got.find("/a 0").unwrap(), got.find("/b 0").unwrap());
    assert!(a < b, "{got}");
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_keep_their_order_across_a_hand_over_to_hyper() {
    let (mut client, _activity, _task) = start();
    client
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
              GET /c HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let got = read_until(&mut client, "/c 0").await;
    let a = got.find("/a 0 own").expect(&got);
    let b = got.find("/b 3 hyper").expect(&got);
    let c = got.find("/c 0 hyper").expect(&got);
    assert!(a < b && b < c, "{got}");
}

#[tokio::test(start_paused = true)]
async fn a_hyper_connection_parks_back_to_the_own_server() {
    let (mut client, activity, _task) = start();
    // A declared empty body is hyper's to serve; it leaves nothing unread, so it may park.
    client
        .write_all(b"GET /h HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/h 0 hyper"));
    until_parked(&activity, 1).await;
    client
        .write_all(b"GET /o HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/o 0 own"));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_had_a_body_never_parks() {
    let (mut client, activity, _task) = start();
    client
        .write_all(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/p 5 hyper"));
    tokio::time::sleep(PARK_AFTER * 4).await;
    assert_eq!(activity.times_parked(), 0);
    client
        .write_all(b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.ends_with("/g 0 hyper"));
}

#[tokio::test(start_paused = true)]
async fn the_idle_deadline_closes_a_parked_connection() {
    let (mut client, activity, task) = start();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    let started = tokio::time::Instant::now();
    task.await.unwrap();
    assert_eq!(activity.times_parked(), 1);
    let idle = started.elapsed();
    assert!(
        idle >= TIMEOUTS.idle && idle < TIMEOUTS.idle + Duration::from_secs(1),
        "{idle:?}"
    );
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_http2_preface_gets_an_http2_connection() {
    let (client, _activity, _task) = start();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("http://a/h2")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/h2 3 hyper");
}

/// HTTP/2 streams run on the connection's task (`h2_streams`): several in flight at once
/// are all answered, and a stop (with its grace period over) lets them finish before the
/// connection closes.
#[tokio::test(start_paused = true)]
async fn http2_streams_in_flight_finish_across_a_stop() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let activity = Arc::new(ConnActivity::default());
    let io = TimedIo::new(server, Arc::clone(&activity) as Activity, TIMEOUTS);
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let service = service_fn({
        let (release, started) = (Arc::clone(&release), Arc::clone(&started));
        move |request: Request<Incoming>| {
            let (release, started) = (Arc::clone(&release), Arc::clone(&started));
            async move {
                started.add_permits(1);
                release.notified().await;
                let text = format!("{} answered", request.uri().path());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            }
        }
    });
    let own = |_: Request<ClientBody>| async { Response::new(Full::new(Bytes::new())) };
    let stop = CancellationToken::new();
    let task = tokio::spawn(drive(
        io,
        service,
        own,
        Versions::Detect,
        HyperLimits::default(),
        Closing::Drop,
        stop.clone(),
    ));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(connection);
    let requests: Vec<_> = (0..3)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = Request::builder()
                    .uri(format!("http://a/s{i}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    // All three are in the service at once, then the listener stops.
    let _all = started.acquire_many(3).await.unwrap();
    stop.cancel();
    tokio::time::sleep(IDLE_CLOSE_GRACE * 2).await;
    assert!(!task.is_finished(), "closed with streams in flight");
    release.notify_waiters();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(request.await.unwrap(), format!("/s{i} answered"));
    }
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection closes once its streams are answered")
        .unwrap()
        .unwrap();
}
