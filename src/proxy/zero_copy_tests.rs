//! One direction over real loopback sockets: small messages are copied and never make a
//! pipe, bulk switches to splice(2) and arrives intact, EOF is passed on as a shutdown.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

/// Runs `one_way` from `source`'s peer to `sink`'s peer while `drive` writes into `source`
/// and reads from `sink`; returns what `one_way` moved and what `drive` returned.
async fn through<F, T>(drive: impl FnOnce(TcpStream, TcpStream) -> F) -> (Moved, T)
where
    F: std::future::Future<Output = T>,
{
    let (source, mut inbound) = pair().await;
    let (mut outbound, sink) = pair().await;
    let clock = Activity::new();
    let (from, _) = inbound.split();
    let (_, to) = outbound.split();
    let (moved, driven) = tokio::join!(one_way(from, to, &clock), drive(source, sink));
    (moved.unwrap(), driven)
}

#[tokio::test]
async fn small_messages_are_copied_and_eof_is_passed_on() {
    let (moved, ()) = through(|mut source, mut sink| async move {
        for _ in 0..50 {
            source.write_all(b"13 bytes here").await.unwrap();
            let mut answer = [0u8; 13];
            sink.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"13 bytes here");
        }
        source.shutdown().await.unwrap();
        let mut rest = Vec::new();
        sink.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    })
    .await;
    assert_eq!(
        moved,
        Moved {
            bytes: 50 * 13,
            spliced: 0
        }
    );
}

#[tokio::test]
async fn bulk_switches_to_splice_and_arrives_intact() {
    let payload = bytes(4 * 1024 * 1024 + 17);
    let sent = payload.clone();
    let (moved, received) = through(|mut source, mut sink| async move {
        let write = async {
            source.write_all(b"hello").await.unwrap();
            source.write_all(&sent).await.unwrap();
            source.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let read = sink.read_to_end(&mut received);
        let ((), read) = tokio::join!(write, read);
        read.unwrap();
        received
    })
    .await;
    assert_eq!(moved.bytes, payload.len() as u64 + 5);
    assert!(moved.spliced > 0, "{moved:?}");
    assert_eq!(&received[..5], b"hello");
    assert!(received[5..] == payload[..], "payload differs");
}

#[test]
fn a_pipe_is_bigger_than_the_copy_buffer() {
    // Only past the user's pipe quota would this be None; a test process is far from it.
    let pipe = Pipe::new().expect("a pipe");
    assert!(pipe.size > COPY_BUFFER, "{}", pipe.size);
}
