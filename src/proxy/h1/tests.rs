//! The own server over an in-memory stream: what a client reads back for the response shapes
//! the proxy produces, keep-alive and close, and what is left for hyper.

use super::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use std::convert::Infallible;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestBody = BoxBody<Bytes, Infallible>;

/// A response whose body streams `pieces` with no declared length.
fn streamed(pieces: &[&'static str]) -> TestBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = pieces
        .iter()
        .map(|piece| Ok(Frame::data(Bytes::from_static(piece.as_bytes()))))
        .collect();
    StreamBody::new(tokio_stream_iter(frames)).boxed()
}

fn tokio_stream_iter<T>(items: Vec<T>) -> impl futures_core::Stream<Item = T> {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<T>> {
            Poll::Ready(self.get_mut().0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

/// Serves `input` with a responder that answers by path, and returns what the client read
/// and how serving ended.
async fn exchange(input: &str) -> (String, End) {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    client.write_all(input.as_bytes()).await.unwrap();
    // Ends the client's sending side only: the server reads an end after `input`.
    client.shutdown().await.unwrap();
    let respond = |request: Request<ClientBody>| async move {
        let body: TestBody = match request.uri().path() {
            "/stream" => streamed(&["hello ", "", "world"]),
            "/empty" => Empty::new().boxed(),
            path => Full::new(Bytes::from(format!("path {path}"))).boxed(),
        };
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("date", http::HeaderValue::from_static("d"));
        response
    };
    let end = serve(&mut server, BytesMut::new(), &respond).await.unwrap();
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    (String::from_utf8(got).unwrap(), end)
}

#[tokio::test]
async fn a_known_length_response_is_one_head_and_body_and_then_the_connection_is_idle() {
    let (got, end) = exchange("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 7\r\n\r\npath /x"
    );
    assert!(matches!(end, End::Idle), "{end:?}");
}

#[tokio::test]
async fn a_streamed_response_is_chunked_and_empty_pieces_are_skipped() {
    let (got, _) = exchange("GET /stream HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n\
         6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn head_gets_the_headers_of_get_and_no_body() {
    let (got, _) = exchange("HEAD /x HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 7\r\n\r\n"
    );
    let (got, _) = exchange("HEAD /empty HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn connection_close_is_answered_in_kind_and_ends_the_connection() {
    let (got, end) =
        exchange("GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 7\r\nconnection: close\r\n\r\npath /1"
    );
    assert!(matches!(end, End::Close), "{end:?}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_until_one_is_hyper_s() {
    let (got, end) = exchange(
        "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    )
    .await;
    let first = got.find("path /1").expect(&got);
    let second = got.find("path /2").expect(&got);
    assert!(first < second && !got.contains("/3"), "{got}");
    let End::Handover(rest) = end else {
        panic!("{end:?}");
    };
    assert_eq!(&rest[..], b"POST /3 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx");
}

#[tokio::test]
async fn a_malformed_head_is_left_whole_for_hyper_to_refuse() {
    let (got, end) = exchange("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").await;
    assert_eq!(got, "");
    let End::Handover(rest) = end else {
        panic!("{end:?}");
    };
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n");
}

#[tokio::test]
async fn a_head_cut_short_by_the_client_closes_without_an_answer() {
    let (got, end) = exchange("GET / HTTP/1.1\r\nHost:").await;
    assert_eq!(got, "");
    assert!(matches!(end, End::Close), "{end:?}");
}

#[tokio::test]
async fn a_body_shorter_than_its_declared_length_is_an_error() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let respond = |_: Request<ClientBody>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"abc")));
        response
            .headers_mut()
            .insert("content-length", http::HeaderValue::from_static("10"));
        response
    };
    let error = serve(&mut server, BytesMut::new(), &respond)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("shorter"), "{error}");
}

#[tokio::test]
async fn large_pieces_are_written_whole_with_partial_writes_resumed() {
    // A small pipe forces partial writes of the head, the piece and the chunk's CRLF.
    let (mut client, mut server) = tokio::io::duplex(100);
    let piece = "y".repeat(3 * outbox::COPY_LIMIT);
    let expected = format!(
        "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{piece}\r\n0\r\n\r\n",
        piece.len()
    );
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let respond = move |_: Request<ClientBody>| {
        let piece = piece.clone();
        async move {
            let frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(piece)))];
            let mut response = Response::new(StreamBody::new(tokio_stream_iter(frames)));
            response
                .headers_mut()
                .insert("date", http::HeaderValue::from_static("d"));
            response
        }
    };
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    });
    serve(&mut server, BytesMut::new(), &respond).await.unwrap();
    drop(server);
    assert_eq!(String::from_utf8(reader.await.unwrap()).unwrap(), expected);
}
