//! Routing on HTTP listeners end to end: host and path routes to different pools, wildcard
//! hosts, the default pool, 404 without one, prefix stripping and header edits both ways.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;

struct Pools {
    web: Backend,
    api: Backend,
    stat: Backend,
    canary: Backend,
}

async fn pools() -> Pools {
    Pools {
        web: spawn_backend("web").await,
        api: spawn_backend("api").await,
        stat: spawn_backend("static").await,
        canary: spawn_backend("canary").await,
    }
}

fn routed_config(p: &Pools, default_pool: bool) -> String {
    let default = if default_pool { "    pool: web\n" } else { "" };
    format!(
        r#"listeners:
  web:
    bind: 127.0.0.1:0
{default}    routes:
      - match: {{ host: api.example.com }}
        pool: api
      - match: {{ host: "*.example.com", path_prefix: /static/ }}
        pool: static
        strip_prefix: /static
      - match: {{ path: /exact, method: GET, header: {{ name: X-Canary, value: "1" }} }}
        pool: canary
        request_headers: {{ set: {{ X-Route: canary }}, remove: [X-Debug] }}
        response_headers: {{ set: {{ X-Served-By: sluice }}, remove: [X-Backend] }}
pools:
  web: {{ backends: [{}] }}
  api: {{ backends: [{}] }}
  static: {{ backends: [{}] }}
  canary: {{ backends: [{}] }}
"#,
        p.web.addr, p.api.addr, p.stat.addr, p.canary.addr
    )
}

async fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    let mut builder = Request::get(path).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Full::new(Bytes::new()).boxed()).unwrap()).await
}

#[tokio::test]
async fn routes_by_host_and_path_with_wildcards_and_a_default() {
    let p = pools().await;
    let sluice = start_sluice(&routed_config(&p, true)).await;
    let addr = sluice.local_addr("web").unwrap();

    let answer = |r: http::Response<Bytes>| {
        assert_status(&r, StatusCode::OK);
        body_text(&r)
    };
    assert_eq!(
        answer(request(addr, "api.example.com", "/v1", &[]).await),
        "backend api"
    );
    assert_eq!(
        answer(request(addr, "API.example.com:8080", "/", &[]).await),
        "backend api"
    );
    assert_eq!(
        answer(request(addr, "cdn.eu.example.com", "/static/app.css", &[]).await),
        "backend static"
    );
    assert_eq!(
        answer(request(addr, "example.com", "/static/app.css", &[]).await),
        "backend web",
        "the wildcard needs at least one label in front"
    );
    assert_eq!(
        answer(request(addr, "cdn.example.com", "/staticky", &[]).await),
        "backend web",
        "prefixes match whole segments"
    );
    assert_eq!(
        answer(request(addr, "other.org", "/", &[]).await),
        "backend web"
    );
    assert_eq!(p.api.requests(), 2);
    assert_eq!(p.stat.requests(), 1);
    assert_eq!(p.web.requests(), 3);
}

#[tokio::test]
async fn without_a_default_pool_an_unmatched_request_gets_404() {
    let p = pools().await;
    let sluice = start_sluice(&routed_config(&p, false)).await;
    let addr = sluice.local_addr("web").unwrap();
    let response = request(addr, "other.org", "/", &[]).await;
    assert_status(&response, StatusCode::NOT_FOUND);
    assert_eq!(body_text(&response), "no route for this request\n");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_status(
        &request(addr, "api.example.com", "/", &[]).await,
        StatusCode::OK,
    );
    assert_eq!(p.web.requests(), 0);
}

#[tokio::test]
async fn strip_prefix_is_what_the_backend_sees_with_the_query_kept() {
    let p = pools().await;
    let sluice = start_sluice(&routed_config(&p, true)).await;
    let addr = sluice.local_addr("web").unwrap();
    for path in ["/static/css/app.css?v=3", "/static"] {
        assert_status(
            &request(addr, "a.example.com", path, &[]).await,
            StatusCode::OK,
        );
    }
    let seen = p.stat.seen();
    assert_eq!(seen[0].uri, "/css/app.css?v=3");
    assert_eq!(seen[1].uri, "/");
}

#[tokio::test]
async fn canary_route_edits_headers_both_ways() {
    let p = pools().await;
    let sluice = start_sluice(&routed_config(&p, true)).await;
    let addr = sluice.local_addr("web").unwrap();
    // The test backend answers /hop with `X-Backend: NAME`; the route removes it.
    let response = request(
        addr,
        "t",
        "/exact",
        &[("x-canary", "1"), ("x-debug", "secret")],
    )
    .await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&response), "backend canary");
    assert_eq!(response.headers()["x-served-by"], "sluice");
    let seen = &p.canary.seen()[0];
    assert_eq!(seen.headers["x-route"], "canary");
    assert!(!seen.headers.contains_key("x-debug"));

    // Wrong header value, or wrong method: the default pool, untouched headers.
    let response = request(addr, "t", "/exact", &[("x-canary", "0"), ("x-debug", "d")]).await;
    assert_eq!(body_text(&response), "backend web");
    assert!(!response.headers().contains_key("x-served-by"));
    assert_eq!(p.web.seen()[0].headers["x-debug"], "d");
}

#[tokio::test]
async fn response_header_removal_applies_to_backend_headers() {
    let p = pools().await;
    let yaml = routed_config(&p, true).replace("path: /exact", "path: /hop");
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let response = request(addr, "t", "/hop", &[("x-canary", "1")]).await;
    assert_eq!(body_text(&response), "hop");
    assert!(
        !response.headers().contains_key("x-backend"),
        "{:?}",
        response.headers()
    );
    assert_eq!(response.headers()["x-served-by"], "sluice");
    // Without the route the backend's header comes through.
    let plain = request(addr, "t", "/hop", &[]).await;
    assert_eq!(plain.headers()["x-backend"], "web");
}

#[tokio::test]
async fn routes_change_on_reload() {
    let p = pools().await;
    let sluice = start_sluice(&routed_config(&p, true)).await;
    let addr = sluice.local_addr("web").unwrap();
    assert_eq!(
        body_text(&request(addr, "api.example.com", "/", &[]).await),
        "backend api"
    );
    let moved = routed_config(&p, true).replace("host: api.example.com", "host: api2.example.com");
    let plan = sluice.reload(config(&moved)).await.unwrap();
    assert_eq!(plan.listeners_changed, ["web"]);
    assert_eq!(
        body_text(&request(addr, "api.example.com", "/", &[]).await),
        "backend web"
    );
    assert_eq!(
        body_text(&request(addr, "api2.example.com", "/", &[]).await),
        "backend api"
    );
}
