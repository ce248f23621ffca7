use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn encoded(framing: RequestFraming, pairs: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    encode_request(&mut out, &Method::POST, "/a?b=1", &headers(pairs), framing).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn request_head_carries_headers_and_the_framing_sluice_chose() {
    assert_eq!(
        encoded(
            RequestFraming::Empty,
            &[("host", "example.com"), ("x-a", "1")]
        ),
        "POST /a?b=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\n\r\n"
    );
    // The client's own length (or coding) is replaced by the one matching what is sent.
    assert_eq!(
        encoded(
            RequestFraming::Length(1234567890),
            &[("content-length", "5"), ("host", "h")]
        ),
        "POST /a?b=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 1234567890\r\n\r\n"
    );
    assert_eq!(
        encoded(
            RequestFraming::Chunked,
            &[("transfer-encoding", "gzip"), ("content-length", "5")]
        ),
        "POST /a?b=1 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        encoded(RequestFraming::Length(0), &[]),
        "POST /a?b=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn request_targets_that_would_split_the_line_are_refused() {
    for target in ["", "/a b", "/a\r\nX: y", "/\t"] {
        let mut out = Vec::new();
        let result = encode_request(
            &mut out,
            &Method::GET,
            target,
            &HeaderMap::new(),
            RequestFraming::Empty,
        );
        assert_eq!(result, Err(HeadError::BadTarget), "{target:?}");
    }
}

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Multi: a\r\nx-multi: b\r\nServer: t\r\n\r\nhello";

#[test]
fn response_head_parses_from_any_split_and_leaves_the_body() {
    for split in 1..RESPONSE.len() {
        let mut buf = BytesMut::from(&RESPONSE[..split]);
        let mut parsed = parse_response(&mut buf).unwrap();
        buf.extend_from_slice(&RESPONSE[split..]);
        if parsed.is_none() {
            parsed = parse_response(&mut buf).unwrap();
        }
        let head = parsed.unwrap_or_else(|| panic!("split {split}: incomplete"));
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["content-length"], "5");
        let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert_eq!(&buf[..], b"hello", "split {split}");
    }
}

#[test]
fn malformed_and_oversized_heads_are_errors() {
    let mut buf = BytesMut::from(&b"SMTP ready\r\n\r\n"[..]);
    assert!(matches!(
        parse_response(&mut buf),
        Err(HeadError::Malformed(_))
    ));
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"[..]);
    assert!(parse_response(&mut buf).is_err());
    let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
    big.resize(MAX_HEAD_BYTES + 1, b'a');
    assert_eq!(
        parse_response(&mut BytesMut::from(&big[..])).unwrap_err(),
        HeadError::TooLarge
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(parse_response(&mut BytesMut::from(&many[..])).is_err());
}

#[test]
fn framing_follows_rfc_9112() {
    let get = Method::GET;
    let ok = StatusCode::OK;
    let framing = |method: &Method, status, pairs: &[(&str, &str)]| {
        response_framing(method, status, Version::HTTP_11, &headers(pairs))
    };
    assert_eq!(
        framing(&Method::HEAD, ok, &[("content-length", "9")]),
        Ok(Framing::None)
    );
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        assert_eq!(
            framing(&get, status, &[("content-length", "9")]),
            Ok(Framing::None)
        );
    }
    assert_eq!(
        framing(&get, ok, &[("content-length", "9")]),
        Ok(Framing::Length(9))
    );
    assert_eq!(
        framing(&get, ok, &[("content-length", "9, 9")]),
        Ok(Framing::Length(9))
    );
    assert!(
        framing(
            &get,
            ok,
            &[("content-length", "9"), ("content-length", "8")]
        )
        .is_err()
    );
    for bad in ["", "-1", "+5", "0x10", "99999999999999999999"] {
        assert!(
            framing(&get, ok, &[("content-length", bad)]).is_err(),
            "{bad:?}"
        );
    }
    // Transfer-Encoding wins over a length (the length is never trusted next to it).
    assert_eq!(
        framing(
            &get,
            ok,
            &[
                ("transfer-encoding", "gzip, chunked"),
                ("content-length", "3")
            ]
        ),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        framing(&get, ok, &[("transfer-encoding", "gzip")]),
        Ok(Framing::UntilClose)
    );
    assert_eq!(framing(&get, ok, &[]), Ok(Framing::UntilClose));
}

/// Found by the differential fuzz target (`fuzz/fuzz_targets/response.rs`): sluice read an
/// HTTP/1.0 response with Transfer-Encoding as chunked (or until close); RFC 9112 6.1 says its
/// framing is faulty, and hyper's client refuses it.
#[test]
fn transfer_encoding_in_an_http_1_0_response_is_refused() {
    let mut buf = BytesMut::from(&b"HTTP/1.0 240\nTraNsfer-Encoding:\n\n"[..]);
    assert!(matches!(
        parse_final_response(&mut buf, &Method::GET),
        Err(HeadError::Malformed(_))
    ));
    let te = headers(&[
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
    ]);
    assert!(response_framing(&Method::GET, StatusCode::OK, Version::HTTP_10, &te).is_err());
    // A response that has no body anyway is not framed by it.
    assert_eq!(
        response_framing(&Method::HEAD, StatusCode::OK, Version::HTTP_10, &te),
        Ok(Framing::None)
    );
    assert_eq!(
        response_framing(&Method::GET, StatusCode::OK, Version::HTTP_11, &te),
        Ok(Framing::Chunked)
    );
}

#[test]
fn interim_responses_are_skipped_up_to_the_final_one() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s>\r\n\r\n\
           HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
    );
    let (head, framing) = parse_final_response(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(framing, Framing::Length(2));
    assert_eq!(&buf[..], b"ok");
    let mut switch = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
    let (head, _) = parse_final_response(&mut switch, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
}

#[test]
fn keep_alive_by_version_and_connection_tokens() {
    assert!(keeps_alive(Version::HTTP_11, &headers(&[])));
    assert!(!keeps_alive(
        Version::HTTP_11,
        &headers(&[("connection", "Close")])
    ));
    assert!(!keeps_alive(
        Version::HTTP_11,
        &headers(&[("connection", "x-foo, close")])
    ));
    assert!(!keeps_alive(Version::HTTP_10, &headers(&[])));
    assert!(keeps_alive(
        Version::HTTP_10,
        &headers(&[("connection", "keep-alive")])
    ));
}

/// Responses as backends write them, interim ones included, with the odd malformed line, bare
/// LF line endings and bytes of a body after the head; one byte sometimes replaced.
fn response_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    const STATUS: [&str; 7] = [
        "HTTP/1.1 200 OK",
        "HTTP/1.0 404 Not Found",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 103 Early Hints",
        "HTTP/1.1 204 ",
        "HTTP/1.1 999 X",
        "HTTP/2 200 OK",
    ];
    const FIELDS: [&str; 9] = [
        "content-length: 5",
        "Content-Length: 5, 5",
        "transfer-encoding: chunked",
        "x-a: 1",
        "X-A: two words",
        "connection: close",
        "Bad Name: x",
        "x-obs: caf\u{e9}",
        " folded",
    ];
    crate::wire_strategy::heads(&STATUS, &FIELDS)
}

type Final = Result<Option<(StatusCode, Version, HeaderMap, Framing, Vec<u8>)>, HeadError>;

/// `parse_final_response` fed `input` in pieces ending at `cuts`, each appended to the same
/// buffer when the last call asked for more: the head, its framing and the bytes left after
/// it once a head is there; `Ok(None)` if the input ends first.
fn final_in_pieces(input: &[u8], method: &Method, cuts: &[usize]) -> Final {
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
    ends.push(input.len());
    ends.sort_unstable();
    ends.dedup();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for end in ends {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        if let Some((head, framing)) = parse_final_response(&mut buf, method)? {
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&input[fed..]);
            return Ok(Some((
                head.status,
                head.version,
                head.headers,
                framing,
                rest,
            )));
        }
    }
    Ok(None)
}

proptest::proptest! {
    /// Each prefix of a response is still incomplete or already gives the whole input's
    /// answer (the same head and the same bytes after it): a head is complete only when its
    /// last byte is there, and an error never depends on what follows.
    #[test]
    fn every_prefix_is_partial_or_the_whole_answer(input in response_bytes()) {
        let mut buf = BytesMut::from(&input[..]);
        let whole = parse_response(&mut buf).map(|head| head.map(|h| (h.status, h.version, h.headers)));
        let length = input.len() - buf.len();
        for cut in 0..input.len() {
            let mut prefix = BytesMut::from(&input[..cut]);
            let parsed = parse_response(&mut prefix)
                .map(|head| head.map(|h| (h.status, h.version, h.headers)));
            match (&parsed, &whole) {
                (Ok(None), Ok(Some(_))) => proptest::prop_assert!(cut < length, "cut {}", cut),
                (Ok(None), _) => {}
                _ => {
                    proptest::prop_assert_eq!(&parsed, &whole, "cut {}", cut);
                    proptest::prop_assert_eq!(&prefix[..], &input[length..cut]);
                }
            }
        }
    }

    /// Whatever TCP splits, the final head (after any 1xx), its framing and what follows it
    /// are the same as for the response read whole.
    #[test]
    fn any_split_gives_the_same_final_head(
        input in response_bytes(),
        head_request in proptest::prelude::any::<bool>(),
        cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..8),
    ) {
        let method = if head_request { Method::HEAD } else { Method::GET };
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        let whole = final_in_pieces(&input, &method, &[]);
        let split = final_in_pieces(&input, &method, &cuts);
        proptest::prop_assert_eq!(&whole, &split, "cuts {:?}", cuts);
        let byte_by_byte: Vec<usize> = (1..input.len()).collect();
        proptest::prop_assert_eq!(&whole, &final_in_pieces(&input, &method, &byte_by_byte));
    }
}
