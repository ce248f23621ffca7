//! Zero-copy forwarding for L4 sessions whose two ends are plain TCP sockets (Linux only):
//! bulk bytes go socket -> pipe -> socket with splice(2), as HAProxy's `option splice-*`
//! does, and never cross into userspace. Same contract as `splice::splice`: half-close
//! passed on, the shared activity clock, the drain deadline, byte counts each way. Imports
//! nothing but `splice`: it is a data mover and knows no config.
//!
//! Each direction starts by copying through a 32 KiB buffer and switches to splicing, for
//! the rest of the session, once one read fills that buffer. Measured A/B against the
//! userspace copy (`benches/loadtest.py` scenarios, LB CPU per request, medians of
//! interleaved rounds, two runs; figures in the commit that added this module):
//! - splicing from the first byte cost 16-17% more CPU per 13-byte exchange (`tcp`): a short
//!   copy read lets tokio forget the socket's readiness, while a short splice cannot tell
//!   "socket drained" from "pipe slots full", so each message pays one more syscall that
//!   says `EAGAIN`;
//! - for 64 KiB responses (`tcp64k`) splicing cost 26-27% less, copy-first 27-30% less;
//! - copy-first matched the copy on `tcp` (x0.99 to x1.03, within the noise).
//!
//! So copy-first is never worse and is not a config option. Going back to copying after a
//! short splice measured no better and is one more rule; a session that turns chatty after
//! a bulk phase keeps splicing, at that one extra syscall per message.
//!
//! The pipe is made when a direction switches, so chatty sessions cost no extra fds, and
//! grown to 128 KiB: a 64 KiB response and its header in one call (with the 64 KiB default
//! it took two, and ~20% more CPU per response in the one run that compared them). Pipe
//! capacity counts against the user's `pipe-user-pages-soft` (64 MiB by default; sluice runs
//! as an unprivileged `DynamicUser`): past it the kernel refuses to grow pipes and then
//! hands out two-page ones, which would take more calls than the copy, so such a pipe is
//! dropped and the direction keeps copying. A pipe that cannot be made at all (out of fds)
//! does the same.
//!
//! Readiness comes from tokio (`readable()`/`writable()` + `try_io`), so a `WouldBlock` must
//! mean "the socket has nothing / has no room", never "the pipe is full / empty": data is
//! only spliced into an empty pipe, and the pipe is drained fully before the next read.
//!
//! WebSocket tunnels keep the userspace copy: hyper's upgraded connections wrap the socket
//! and may hold bytes already read, and their traffic is message-sized anyway.

use super::splice::{Activity, COPY_BUFFER, Limits, SpliceEnd, supervise};
use rustix::pipe::{
    PipeFlags, SpliceFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice,
};
use std::io;
use std::os::fd::OwnedFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The pipe capacity asked for (the kernel rounds to pages; the default is 64 KiB).
const PIPE_SIZE: usize = 128 * 1024;

const SPLICE_FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Forwards `client` <-> `backend` (half-close passed on) until both directions finish, the
/// session goes idle, or `stop` fires and `limits.drain` passes.
pub async fn forward(
    mut client: TcpStream,
    mut backend: TcpStream,
    limits: Limits,
    stop: &CancellationToken,
) -> SpliceEnd {
    let clock = Activity::new();
    let (client_read, client_write) = client.split();
    let (backend_read, backend_write) = backend.split();
    let copy = async {
        let (sent, received) = tokio::try_join!(
            one_way(client_read, backend_write, &clock),
            one_way(backend_read, client_write, &clock),
        )?;
        Ok((sent.bytes, received.bytes))
    };
    supervise(copy, &clock, limits, stop).await
}

/// What one direction moved: all of it, and how much of that went through the pipe.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Moved {
    bytes: u64,
    spliced: u64,
}

enum Mode {
    /// Reading into `buffer`; `may_splice` until a usable pipe could not be made.
    Copy {
        buffer: Vec<u8>,
        may_splice: bool,
    },
    Splice(Pipe),
}

/// Moves bytes `from` -> `to` until `from` sends EOF, then shuts `to` down for writing.
async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    clock: &Activity,
) -> io::Result<Moved> {
    let mut moved = Moved::default();
    let mut mode = Mode::Copy {
        // A read that fills the buffer switches the direction to splicing.
        buffer: vec![0; COPY_BUFFER],
        may_splice: true,
    };
    loop {
        let (n, switch) = match &mut mode {
            Mode::Splice(pipe) => {
                let n = splice_chunk(from.as_ref(), to.as_ref(), pipe, clock).await?;
                moved.spliced += n as u64;
                (n, false)
            }
            Mode::Copy { buffer, may_splice } => {
                let n = copy_chunk(&mut from, &mut to, buffer, clock).await?;
                (n, *may_splice && n == buffer.len())
            }
        };
        if n == 0 {
            break;
        }
        moved.bytes += n as u64;
        if switch {
            mode = match Pipe::new() {
                Some(pipe) => Mode::Splice(pipe),
                None => Mode::Copy {
                    buffer: vec![0; COPY_BUFFER],
                    may_splice: false,
                },
            };
        }
    }
    to.shutdown().await?;
    Ok(moved)
}

/// One read into `buffer` and all of it written out; 0 at EOF. A short read lets tokio
/// forget the socket's readiness, which saves the read that would only say `EAGAIN`.
async fn copy_chunk(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    buffer: &mut [u8],
    clock: &Activity,
) -> io::Result<usize> {
    let n = from.read(buffer).await?;
    if n > 0 {
        clock.touch();
    }
    let mut written = 0;
    while let Some(rest) = buffer.get(written..n).filter(|rest| !rest.is_empty()) {
        let w = to.write(rest).await?;
        if w == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += w;
        clock.touch();
    }
    Ok(n)
}

/// One splice from `from` into the (empty) pipe, then the pipe drained into `to`; 0 at EOF.
async fn splice_chunk(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    clock: &Activity,
) -> io::Result<usize> {
    let n = loop {
        from.readable().await?;
        let filled = from.try_io(Interest::READABLE, || {
            Ok(splice(
                from,
                None,
                &pipe.write,
                None,
                pipe.size,
                SPLICE_FLAGS,
            )?)
        });
        match filled {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Ok(0);
    }
    clock.touch();
    let mut left = n;
    while left > 0 {
        to.writable().await?;
        let drained = to.try_io(Interest::WRITABLE, || {
            Ok(splice(&pipe.read, None, to, None, left, SPLICE_FLAGS)?)
        });
        match drained {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => {
                left -= w;
                clock.touch();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(n)
}

/// Both ends of one non-blocking pipe and its capacity; whatever is left in it when dropped
/// is discarded (the session is over then).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A pipe grown towards `PIPE_SIZE`, or `None` when none can be made or the kernel only
    /// allows one no larger than the copy buffer (see the module notes).
    fn new() -> Option<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .inspect_err(|error| debug!(%error, "no pipe for splice(2); copying instead"))
            .ok()?;
        // Refused past the user's pipe quota: the pipe keeps the size it was made with.
        let size = fcntl_setpipe_size(&write, PIPE_SIZE)
            .or_else(|_| fcntl_getpipe_size(&write))
            .ok()?;
        if size <= COPY_BUFFER {
            debug!(size, "pipe too small for splice(2) to pay; copying instead");
            return None;
        }
        Some(Pipe { read, write, size })
    }
}

#[cfg(test)]
#[path = "zero_copy_tests.rs"]
mod tests;
