//! L4 bulk transfer through a real sluice on 127.0.0.1:0: several MiB each way at once
//! (checksummed, and the listener's byte counters checked), half-close started by the
//! backend, and the idle timeout on a session that moved bulk data. On Linux both ends are
//! plain TCP sockets, so this is the splice(2) path (`proxy::zero_copy`); elsewhere it is
//! the userspace copy, which must behave the same.

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

const BULK: usize = 8 * 1024 * 1024;

/// Bytes that never repeat with a short period (xorshift), so a chunk dropped, doubled or
/// reordered changes the digest.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// FNV-1a over a whole stream, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest {
    hash: u64,
    len: usize,
}

impl Digest {
    fn of(bytes: &[u8]) -> Digest {
        let mut digest = Digest {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        };
        digest.update(bytes);
        digest
    }

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash = (self.hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += bytes.len();
    }
}

/// Reads to EOF, digesting as it goes.
async fn digest_to_end<R: AsyncRead + Unpin>(reader: &mut R) -> Digest {
    let mut digest = Digest::of(&[]);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.expect("read");
        if n == 0 {
            return digest;
        }
        digest.update(&buf[..n]);
    }
}

fn tcp_config(listener: &str, backend: SocketAddr, pool_extra: &str) -> String {
    format!(
        "admin: {{bind: 127.0.0.1:0}}\n\
         listeners:\n  {listener}:\n    bind: 127.0.0.1:0\n    protocol: tcp\n    pool: db\n\
         pools:\n  db:\n    backends: [{backend}]\n    timeouts: {{connect: 1s{pool_extra}}}\n"
    )
}

/// A backend for one connection: sends `reply` and half-closes, while reading the client's
/// bytes to EOF; the digest of what it read comes back on the channel.
async fn spawn_bulk_backend(reply: Vec<u8>) -> (SocketAddr, oneshot::Receiver<Digest>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (report, seen) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = socket.accept().await.unwrap();
        let (mut read, mut write) = stream.split();
        let send = async {
            write.write_all(&reply).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let ((), digest) = tokio::join!(send, digest_to_end(&mut read));
        let _ = report.send(digest);
    });
    (addr, seen)
}

async fn listener_bytes(admin: SocketAddr, listener: &str, direction: &str) -> Option<u64> {
    let metrics = body_text(&get(admin, "/metrics").await);
    let prefix =
        format!("sluice_listener_bytes_total{{listener=\"{listener}\",direction=\"{direction}\"}}");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn megabytes_both_ways_at_once_arrive_intact_and_are_counted() {
    let upload = noise(1, BULK);
    let download = noise(2, BULK + 12_345);
    let (backend, backend_saw) = spawn_bulk_backend(download.clone()).await;
    let sluice = start_sluice(&tcp_config("bulk", backend, "")).await;
    let mut client = TcpStream::connect(sluice.local_addr("bulk").unwrap())
        .await
        .unwrap();
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(&upload).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let exchange = async { tokio::join!(send, digest_to_end(&mut read)).1 };
    let received = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("both directions finish");
    assert_eq!(received, Digest::of(&download), "backend -> client");
    let saw = tokio::time::timeout(Duration::from_secs(10), backend_saw)
        .await
        .expect("backend read to EOF")
        .unwrap();
    assert_eq!(saw, Digest::of(&upload), "client -> backend");

    // The session's byte counts are recorded once both directions closed.
    let admin = sluice.admin_addr().unwrap();
    let counted = wait_until_async(Duration::from_secs(5), || async {
        listener_bytes(admin, "bulk", "in").await == Some(upload.len() as u64)
            && listener_bytes(admin, "bulk", "out").await == Some(download.len() as u64)
    })
    .await;
    assert!(
        counted,
        "in {:?}, out {:?}",
        listener_bytes(admin, "bulk", "in").await,
        listener_bytes(admin, "bulk", "out").await
    );
}

#[tokio::test]
async fn backend_half_close_keeps_the_client_direction_flowing() {
    let (backend, backend_saw) = spawn_bulk_backend(b"bye".to_vec()).await;
    let sluice = start_sluice(&tcp_config("half", backend, "")).await;
    let mut client = TcpStream::connect(sluice.local_addr("half").unwrap())
        .await
        .unwrap();
    // The backend's FIN reaches us while our side is still open...
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("backend's FIN arrives")
        .unwrap();
    assert_eq!(answer, b"bye");
    // ...and bulk data still goes the other way, then our FIN ends it.
    let upload = noise(3, 3 * 1024 * 1024);
    client.write_all(&upload).await.unwrap();
    client.shutdown().await.unwrap();
    let saw = tokio::time::timeout(Duration::from_secs(10), backend_saw)
        .await
        .expect("backend read to EOF")
        .unwrap();
    assert_eq!(saw, Digest::of(&upload));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("session closed")
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn bulk_traffic_keeps_a_session_open_and_silence_closes_it() {
    let echo = spawn_tcp_echo().await;
    let sluice = start_sluice(&tcp_config("idle", echo, ", idle: 300ms")).await;
    let mut client = TcpStream::connect(sluice.local_addr("idle").unwrap())
        .await
        .unwrap();
    let (mut read, mut write) = client.split();
    let chunk = noise(4, 256 * 1024);
    let mut echoed = vec![0u8; chunk.len()];
    // Busy for well past the idle timeout: each exchange must be echoed in full.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(1) || rounds < 3 {
        let exchange =
            async { tokio::join!(write.write_all(&chunk), read.read_exact(&mut echoed)) };
        let (written, echoed_len) = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("echoed while busy");
        written.unwrap();
        echoed_len.expect("session still open while busy");
        assert!(echoed == chunk, "echo differs in round {rounds}");
        rounds += 1;
    }
    // Then quiet: closed after about the idle timeout.
    let quiet = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut rest))
        .await
        .expect("closed when idle")
        .unwrap();
    let took = quiet.elapsed();
    assert!(rest.is_empty());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}
