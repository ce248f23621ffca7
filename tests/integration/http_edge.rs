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
