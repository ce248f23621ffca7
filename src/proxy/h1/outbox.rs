//! The bytes of a response waiting to be written: small parts (the head, chunk size lines,
//! small pieces of body) copied into one buffer, large pieces of body kept as they came, and
//! all of it written with as few `writev` calls as the stream allows.
//!
//! Why gather: a backend's body often arrives as several reads in a row (a 64 KiB response
//! is four or more); writing each as it comes costs a system call and a wake-up of the client
//! each, where one gathered write delivers them all (hyper's server gathers the same way).

use bytes::Bytes;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Body pieces up to this size are copied into the buffer of small parts.
pub const COPY_LIMIT: usize = 4 * 1024;
/// Slices per `writev` (Linux allows 1024; more than this would only be large pieces).
const MAX_SLICES: usize = 64;

#[derive(Debug, Default)]
pub struct Outbox {
    small: Vec<u8>,
    /// Large pieces, each with the length of `small` when it was queued: it goes out after
    /// `small[..at]` and before the rest.
    pieces: Vec<(usize, Bytes)>,
    /// Total length of `pieces`.
    queued: usize,
}

impl Outbox {
    /// Small parts go here (the head is written into it directly).
    pub fn small(&mut self) -> &mut Vec<u8> {
        &mut self.small
    }

    pub fn push(&mut self, data: Bytes) {
        if data.len() <= COPY_LIMIT {
            self.small.extend_from_slice(&data);
        } else {
            self.queued += data.len();
            self.pieces.push((self.small.len(), data));
        }
    }

    /// Bytes waiting, of either kind.
    pub fn len(&self) -> usize {
        self.small.len() + self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything queued, then empties the queue (keeping the small buffer's memory).
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        if self.pieces.is_empty() {
            io.write_all(&self.small).await?;
        } else {
            let total = self.len();
            let mut written = 0;
            while written < total {
                // The slices are built on the stack of each poll: kept across an await they
                // would be 1 KiB of every request's future.
                let n = poll_fn(|cx| {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let count = self.unwritten(written, &mut slices);
                    Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
                })
                .await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                written += n;
            }
        }
        self.small.clear();
        self.pieces.clear();
        self.queued = 0;
        Ok(())
    }

    /// Fills `slices` with the queue after its first `written` bytes, in order; returns how
    /// many.
    fn unwritten<'a>(&'a self, written: usize, slices: &mut [IoSlice<'a>]) -> usize {
        let mut skip = written;
        let mut count = 0;
        for part in self.parts() {
            if part.len() <= skip {
                skip -= part.len();
                continue;
            }
            slices[count] = IoSlice::new(&part[skip..]);
            skip = 0;
            count += 1;
            if count == slices.len() {
                break;
            }
        }
        count
    }

    /// The whole queue in order: small parts and large pieces interleaved.
    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        let last = self.pieces.last().map_or(0, |(at, _)| *at);
        self.pieces
            .iter()
            .flat_map(move |(at, piece)| {
                let before = &self.small[from..*at];
                from = *at;
                [before, &piece[..]]
            })
            .chain(std::iter::once(&self.small[last..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn small_parts_and_large_pieces_come_out_in_order_through_partial_writes() {
        let mut outbox = Outbox::default();
        let large = |byte: u8| Bytes::from(vec![byte; COPY_LIMIT + 1]);
        outbox.small().extend_from_slice(b"head|");
        outbox.push(large(b'a'));
        outbox.small().extend_from_slice(b"|mid|");
        outbox.push(Bytes::from_static(b"small"));
        outbox.push(large(b'b'));
        outbox.push(large(b'c'));
        outbox.small().extend_from_slice(b"|end");
        let mut expected = b"head|".to_vec();
        expected.extend(vec![b'a'; COPY_LIMIT + 1]);
        expected.extend_from_slice(b"|mid|small");
        expected.extend(vec![b'b'; COPY_LIMIT + 1]);
        expected.extend(vec![b'c'; COPY_LIMIT + 1]);
        expected.extend_from_slice(b"|end");
        assert_eq!(outbox.len(), expected.len());
        // A pipe of 100 bytes makes every write partial, some ending inside a piece.
        let (mut reader, mut writer) = tokio::io::duplex(100);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        outbox.write_to(&mut writer).await.unwrap();
        assert!(outbox.is_empty());
        outbox.small().extend_from_slice(b"+next");
        outbox.write_to(&mut writer).await.unwrap();
        drop(writer);
        expected.extend_from_slice(b"+next");
        assert_eq!(read.await.unwrap(), expected);
    }
}
