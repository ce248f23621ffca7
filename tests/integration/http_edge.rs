//! The HTTP edge end to end: redirects and direct answers without a pool, error pages for
//! sluice's own answers, traffic splits between pools (shares and stickiness), request
//! mirroring to a shadow pool, and response compression.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;

async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Full::new(Bytes::new()).boxed()).unwrap()).await
}

/// The sum of a family's series whose labels contain `labels`.
async fn metric(sluice: &sluice::Server, family: &str, labels: &str) -> u64 {
    let metrics = body_text(&get(sluice.admin_addr().unwrap(), "/metrics").await);
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn header<'r>(response: &'r http::Response<Bytes>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn redirects_and_direct_answers_never_reach_a_pool() {
    let web = spawn_backend("web").await;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("maintenance.html");
    write_file(&page, "<h1>back soon</h1>\n");
    let yaml = format!(
        r#"listeners:
  web:
    bind: 127.0.0.1:0
    pool: web
    routes:
      - match: {{ host: old.example.com }}
        redirect: {{ scheme: https, host: new.example.com, code: 308 }}
      - match: {{ host: plain.example.com }}
        redirect: {{ scheme: https }}
      - match: {{ path_prefix: /legacy }}
        redirect: {{ path: /moved, strip_query: true, code: 302 }}
      - match: {{ path: /robots.txt }}
        respond: {{ status: 200, body: "User-agent: *\nDisallow:\n", content_type: text/plain }}
      - match: {{ path: /down }}
        respond: {{ status: 503, file: {page}, headers: {{ Retry-After: "120" }} }}
pools:
  web: {{ backends: [{web}] }}
"#,
        page = page.display(),
        web = web.addr,
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    let moved = request(addr, "POST", "old.example.com:8080", "/a/b?x=1", &[]).await;
    assert_status(&moved, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        header(&moved, "location"),
        Some("https://new.example.com/a/b?x=1")
    );

    let https = request(addr, "GET", "plain.example.com:8080", "/p?q", &[]).await;
    assert_status(&https, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        header(&https, "location"),
        Some("https://plain.example.com/p?q")
    );

    let legacy = request(addr, "GET", "site.test:8080", "/legacy/x?token=1", &[]).await;
    assert_status(&legacy, StatusCode::FOUND);
    assert_eq!(
        header(&legacy, "location"),
        Some("http://site.test:8080/moved")
    );

    let robots = request(addr, "GET", "site.test", "/robots.txt", &[]).await;
    assert_status(&robots, StatusCode::OK);
    assert_eq!(body_text(&robots), "User-agent: *\nDisallow:\n");
    assert_eq!(header(&robots, "content-type"), Some("text/plain"));

    let head = request(addr, "HEAD", "site.test", "/robots.txt", &[]).await;
    assert_status(&head, StatusCode::OK);
    assert_eq!(header(&head, "content-length"), Some("24"));
    assert!(head.body().is_empty());

    let down = request(addr, "GET", "site.test", "/down", &[]).await;
    assert_status(&down, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_text(&down), "<h1>back soon</h1>\n");
    assert_eq!(
        header(&down, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&down, "retry-after"), Some("120"));

    assert_eq!(web.requests(), 0, "no direct answer reached the pool");
    let other = request(addr, "GET", "site.test", "/other", &[]).await;
    assert_eq!(body_text(&other), "backend web");
    assert_eq!(web.requests(), 1);

    // An HTTP/1.0 request without Host cannot be redirected to its own host: 400, not a
    // Location naming nothing.
    let raw = raw_exchange(
        addr,
        b"GET /legacy/p HTTP/1.0\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.0 400") || raw.starts_with("HTTP/1.1 400"),
        "{raw}"
    );
}

fn split_config(v1: SocketAddr, v2: SocketAddr, route_extra: &str, pool_extra: &str) -> String {
    format!(
        r#"admin: {{ bind: 127.0.0.1:0 }}
listeners:
  web:
    bind: 127.0.0.1:0
    routes:
      - match: {{ path_prefix: / }}
        pools: [ {{ pool: v1, weight: 80 }}, {{ pool: v2, weight: 20 }} ]
{route_extra}pools:
  v1: {{ backends: [{v1}]{pool_extra} }}
  v2: {{ backends: [{v2}]{pool_extra} }}
"#
    )
}

#[tokio::test]
async fn a_keyed_split_follows_the_weights_and_keeps_each_user_on_one_pool() {
    let v1 = spawn_backend("v1").await;
    let v2 = spawn_backend("v2").await;
    let yaml = split_config(v1.addr, v2.addr, "        split_key: header:X-User\n", "");
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut on_v2 = 0;
    for user in 0..300 {
        let id = format!("user-{user}");
        let first = body_text(&request(addr, "GET", "a.test", "/", &[("x-user", &id)]).await);
        on_v2 += usize::from(first == "backend v2");
        for _ in 0..2 {
            let again = request(addr, "GET", "a.test", "/", &[("x-user", &id)]).await;
            assert_eq!(body_text(&again), first, "{id} flapped between pools");
        }
    }
    // The key's hash is fixed, so this share is the same on every run (not a random draw).
    let share = on_v2 as f64 / 300.0;
    assert!((0.13..0.27).contains(&share), "v2 got {share} of users");
    let counted = metric(
        &sluice,
        "sluice_split_requests_total",
        "pool=\"v2\",by=\"key\"",
    )
    .await;
    assert_eq!(counted, on_v2 as u64 * 3);
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_client_on_the_pool_of_its_first_answer() {
    let v1 = spawn_backend("v1").await;
    let v2 = spawn_backend("v2").await;
    let yaml = split_config(v1.addr, v2.addr, "", ", sticky: { cookie: srv }");
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let first = request(addr, "GET", "a.test", "/", &[]).await;
        let pool = body_text(&first);
        seen.insert(pool.clone());
        let cookie = header(&first, "set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a sticky cookie on the first answer")
            .to_owned();
        for _ in 0..3 {
            let again = request(addr, "GET", "a.test", "/", &[("cookie", &cookie)]).await;
            assert_eq!(body_text(&again), pool, "cookie {cookie} flapped");
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "40 clients without a key all drew the same pool"
    );
}

#[tokio::test]
async fn sluice_answers_carry_the_listener_page_in_the_format_accept_prefers() {
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("502.html");
    let json = dir.path().join("502.json");
    let missing = dir.path().join("404.html");
    write_file(&html, "<h1>bad gateway</h1>\n");
    write_file(&json, "{\"error\":\"bad gateway\"}\n");
    write_file(&missing, "<h1>not here</h1>\n");
    let yaml = format!(
        r#"admin: {{ bind: 127.0.0.1:0 }}
listeners:
  web:
    bind: 127.0.0.1:0
    error_pages:
      502: {{ html: {html}, json: {json} }}
      404: {missing}
    routes:
      - match: {{ path_prefix: /app }}
        pool: dead
pools:
  dead: {{ backends: [{dead}], retry: {{ attempts: 1 }} }}
"#,
        html = html.display(),
        json = json.display(),
        missing = missing.display(),
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    let browser = request(
        addr,
        "GET",
        "a.test",
        "/app",
        &[("accept", "text/html,*/*;q=0.8")],
    )
    .await;
    assert_status(&browser, StatusCode::BAD_GATEWAY);
    assert_eq!(body_text(&browser), "<h1>bad gateway</h1>\n");
    assert_eq!(
        header(&browser, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&browser, "content-length"), Some("21"));

    let api = request(
        addr,
        "GET",
        "a.test",
        "/app",
        &[("accept", "application/json")],
    )
    .await;
    assert_status(&api, StatusCode::BAD_GATEWAY);
    assert_eq!(body_text(&api), "{\"error\":\"bad gateway\"}\n");
    assert_eq!(header(&api, "content-type"), Some("application/json"));

    let no_route = request(addr, "GET", "a.test", "/else", &[]).await;
    assert_status(&no_route, StatusCode::NOT_FOUND);
    assert_eq!(body_text(&no_route), "<h1>not here</h1>\n");
    // A client that takes JSON only, with an HTML page alone: the plain default stays.
    let plain = request(
        addr,
        "GET",
        "a.test",
        "/else",
        &[("accept", "application/json")],
    )
    .await;
    assert_status(&plain, StatusCode::NOT_FOUND);
    assert_eq!(body_text(&plain), "no route for this request\n");
    assert_eq!(
        header(&plain, "content-type"),
        Some("text/plain; charset=utf-8")
    );

    assert_eq!(
        metric(&sluice, "sluice_error_pages_total", "status=\"502\"").await,
        2
    );
}

fn mirror_config(main: SocketAddr, shadow: SocketAddr, mirror: &str) -> String {
    format!(
        r#"admin: {{ bind: 127.0.0.1:0 }}
listeners:
  web:
    bind: 127.0.0.1:0
    routes:
      - match: {{ path_prefix: / }}
        pool: main
        mirror: {{ pool: shadow, {mirror} }}
pools:
  main: {{ backends: [{main}] }}
  shadow: {{ backends: [{shadow}], timeouts: {{ response: 1h }}, retry: {{ attempts: 1 }} }}
"#
    )
}

#[tokio::test]
async fn a_hung_mirror_pool_costs_the_main_request_nothing() {
    let main = spawn_backend("main").await;
    let controls = Controls::default();
    controls
        .hung
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let shadow = spawn_controlled_backend("shadow", std::time::Duration::ZERO, controls).await;
    let sluice = start_sluice(&mirror_config(
        main.addr,
        shadow.addr,
        "percent: 100, max_in_flight: 3",
    ))
    .await;
    let addr = sluice.local_addr("web").unwrap();

    // Every main request is answered while the copies hang (the shadow's response timeout
    // is an hour): the deadline is the main path's own, far below anything a copy waits.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        for i in 0..6 {
            let response = request(addr, "GET", "a.test", &format!("/r{i}"), &[]).await;
            assert_eq!(body_text(&response), "backend main");
        }
    })
    .await;
    assert!(answered.is_ok(), "main requests waited on the hung mirror");
    assert_eq!(main.requests(), 6);
    // Three copies reached the hung shadow and hold its connections; the other three were
    // skipped at the bound instead of piling up.
    let shadow_connections = || shadow.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || shadow_connections()
            == 3)
        .await,
        "shadow saw {} copies",
        shadow_connections()
    );
    assert_eq!(
        metric(&sluice, "sluice_mirror_requests_total", "result=\"busy\"").await,
        3
    );
    assert_eq!(
        metric(
            &sluice,
            "sluice_mirror_in_flight_requests",
            "pool=\"shadow\""
        )
        .await,
        3
    );
}

#[tokio::test]
async fn mirrors_copy_small_bodies_read_and_drop_answers_and_skip_large_bodies() {
    let main = spawn_backend("main").await;
    let shadow = spawn_backend("shadow").await;
    let sluice = start_sluice(&mirror_config(main.addr, shadow.addr, "max_body: 1KiB")).await;
    let addr = sluice.local_addr("web").unwrap();
    let post = |len: usize| {
        Request::post("/echo")
            .header("host", "a.test")
            .body(Full::new(Bytes::from(pattern(len))).boxed())
            .unwrap()
    };
    let small = send(addr, post(512)).await;
    assert_eq!(small.body().len(), 512, "the client gets the main answer");
    let large = send(addr, post(4096)).await;
    assert_eq!(large.body().len(), 4096);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || shadow.requests()
            == 1)
        .await,
        "shadow saw {} copies",
        shadow.requests()
    );
    let seen = &shadow.seen()[0];
    assert_eq!(seen.body_len, 512);
    assert_eq!(
        seen.headers.get("x-sluice-mirror").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(
        seen.headers.get("host").map(|v| v.as_bytes()),
        Some(&b"a.test"[..])
    );
    assert!(
        wait_until_async(std::time::Duration::from_secs(10), || async {
            metric(
                &sluice,
                "sluice_mirror_requests_total",
                "result=\"answered\"",
            )
            .await
                == 1
        })
        .await
    );
    assert_eq!(
        metric(
            &sluice,
            "sluice_mirror_requests_total",
            "result=\"body_too_large\""
        )
        .await,
        1
    );
    assert_eq!(main.requests(), 2);
}
