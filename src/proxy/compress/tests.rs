use super::*;
use crate::config::compression::DEFAULT_TYPES;

fn config() -> Compression {
    Compression {
        algorithms: vec![Coding::Zstd, Coding::Br, Coding::Gzip],
        min_size: 1024,
        types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        gzip_level: 6,
        br_level: 4,
        zstd_level: 3,
    }
}

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

fn decide_for(accept: &'static str, response: &[(&'static str, &'static str)]) -> Decision {
    decide(
        &config(),
        &Method::GET,
        &map(&[("accept-encoding", accept)]),
        StatusCode::OK,
        &map(response),
    )
}

const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

#[test]
fn the_client_weights_decide_and_the_configured_order_breaks_ties() {
    assert_eq!(
        decide_for("gzip, br", &[JSON]),
        Decision::Compress(Coding::Br)
    );
    assert_eq!(
        decide_for("gzip, br;q=0.5", &[JSON]),
        Decision::Compress(Coding::Gzip)
    );
    assert_eq!(decide_for("*", &[JSON]), Decision::Compress(Coding::Zstd));
    assert_eq!(decide_for("identity", &[JSON]), Decision::VaryOnly);
    assert_eq!(
        decide_for("gzip;q=0, br;q=0, zstd;q=0", &[JSON]),
        Decision::VaryOnly
    );
}

#[test]
fn never_on_encoded_ranged_no_transform_small_or_other_types() {
    let gzip = "gzip";
    assert_eq!(
        decide_for(gzip, &[JSON, ("content-encoding", "br")]),
        Decision::Skip
    );
    assert_eq!(
        decide_for(gzip, &[JSON, ("content-range", "bytes 0-9/99")]),
        Decision::Skip
    );
    assert_eq!(
        decide_for(gzip, &[JSON, ("cache-control", "public, No-Transform")]),
        Decision::Skip
    );
    assert_eq!(
        decide_for(gzip, &[JSON, ("content-length", "1023")]),
        Decision::Skip
    );
    assert_eq!(
        decide_for(gzip, &[JSON, ("content-length", "1024")]),
        Decision::Compress(Coding::Gzip)
    );
    assert_eq!(
        decide_for(gzip, &[("content-type", "image/png")]),
        Decision::Skip
    );
    assert_eq!(
        decide_for(gzip, &[("content-type", "Text/HTML")]),
        Decision::Compress(Coding::Gzip)
    );
    assert_eq!(decide_for(gzip, &[]), Decision::Skip, "no type, no guess");
    let request = map(&[("accept-encoding", "gzip")]);
    for status in [204, 206, 304, 101] {
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            decide(&config(), &Method::GET, &request, status, &map(&[JSON])),
            Decision::Skip
        );
    }
    assert_eq!(
        decide(
            &config(),
            &Method::HEAD,
            &request,
            StatusCode::OK,
            &map(&[JSON])
        ),
        Decision::Skip
    );
}

#[test]
fn compressed_headers_lose_length_and_ranges_and_weaken_the_etag() {
    let mut headers = map(&[
        JSON,
        ("content-length", "5000"),
        ("accept-ranges", "bytes"),
        ("etag", "\"abc\""),
        ("vary", "Origin"),
    ]);
    rewrite_headers(&mut headers, Decision::Compress(Coding::Gzip));
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(!headers.contains_key("content-length"));
    assert!(!headers.contains_key("accept-ranges"));
    assert_eq!(headers["etag"], "W/\"abc\"");
    let vary: Vec<_> = headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);

    let mut weak = map(&[("etag", "W/\"x\""), ("vary", "accept-encoding")]);
    rewrite_headers(&mut weak, Decision::Compress(Coding::Br));
    assert_eq!(weak["etag"], "W/\"x\"");
    assert_eq!(weak.get_all("vary").iter().count(), 1);

    let mut plain = map(&[("content-length", "5000")]);
    rewrite_headers(&mut plain, Decision::VaryOnly);
    assert_eq!(plain["vary"], "Accept-Encoding");
    assert_eq!(plain["content-length"], "5000");
}
