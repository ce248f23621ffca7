//! Binary upgrade without a refused connection: on SIGUSR2 the running sluice starts the
//! (possibly new) binary with the same arguments and hands it its listening sockets over a
//! unix socket (SCM_RIGHTS), as nginx, HAProxy and Pingora do. Once the new process says it
//! is serving, the old one stops accepting and drains. The sockets are never closed in
//! between, so the kernel keeps queueing connections throughout.
//!
//! Wire format on the unix stream: old -> new, one message whose data is a JSON list of
//! socket names (`"listener:NAME"`, `"listener:NAME#N"` for the further sockets of an
//! SO_REUSEPORT group, `"admin"`) with the descriptors attached in the same
//! order; new -> old, the line `ready\n` once it serves. Safe Rust throughout (rustix).
//!
//! Unix domain socket listeners are passed the same way, matched by path; the old process
//! then leaves the socket file in place when it stops (the new one accepts on it).

use crate::config::BindAddr;
use crate::error::Error;
use crate::listener::Bound;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Names the unix socket a new process connects to for its inherited listeners.
pub const UPGRADE_SOCKET_ENV: &str = "SLUICE_UPGRADE_SOCKET";
/// Under the kernel's SCM_MAX_FD (253): listeners, their SO_REUSEPORT sockets and the admin.
const MAX_SOCKETS: usize = 240;
/// How long the new process may take to start serving before the upgrade is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The listening sockets a process inherited from its predecessor, taken by name.
#[derive(Default)]
pub struct Inherited {
    sockets: HashMap<String, OwnedFd>,
    /// Kept open to tell the old process when this one serves.
    channel: Option<UnixStream>,
}

impl Inherited {
    /// Connects to the old process when started by an upgrade; empty otherwise.
    pub fn receive() -> Result<Inherited, Error> {
        let Some(path) = std::env::var_os(UPGRADE_SOCKET_ENV) else {
            return Ok(Inherited::default());
        };
        let stream = UnixStream::connect(&path).map_err(io_error("cannot reach the old sluice"))?;
        let mut data = vec![0u8; 64 * 1024];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| Error::Io {
            context: "cannot receive the inherited sockets".into(),
            source: e.into(),
        })?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let names: Vec<String> = serde_json::from_slice(&data[..received.bytes])
            .map_err(|e| io_error("bad upgrade message")(std::io::Error::other(e)))?;
        if names.len() != fds.len() {
            return Err(io_error("bad upgrade message")(std::io::Error::other(
                format!("{} names for {} sockets", names.len(), fds.len()),
            )));
        }
        let sockets = names.into_iter().zip(fds).collect();
        Ok(Inherited {
            sockets,
            channel: Some(stream),
        })
    }

    /// The inherited socket for `name` if it is bound where the config wants it. A configured
    /// port 0 ("any port") accepts the inherited port, so an upgrade keeps ephemeral ports.
    pub fn take(&mut self, name: &str, wanted: &BindAddr) -> Option<Bound> {
        let fd = self.sockets.remove(name)?;
        let wanted = match wanted {
            BindAddr::Tcp(addr) => *addr,
            BindAddr::Unix(path) => {
                let socket = std::os::unix::net::UnixListener::from(fd);
                let actual = socket.local_addr().ok()?;
                if actual.as_pathname() != Some(path.as_path()) {
                    return None;
                }
                socket.set_nonblocking(true).ok()?;
                return tokio::net::UnixListener::from_std(socket)
                    .ok()
                    .map(Bound::Unix);
            }
        };
        let socket = std::net::TcpListener::from(fd);
        let actual = socket.local_addr().ok()?;
        let matches = actual == wanted || (wanted.port() == 0 && actual.ip() == wanted.ip());
        if !matches {
            return None;
        }
        socket.set_nonblocking(true).ok()?;
        tokio::net::TcpListener::from_std(socket)
            .ok()
            .map(Bound::Tcp)
    }

    /// The further sockets of `first`'s SO_REUSEPORT group that the old process passed under
    /// `key` (`shard_key`), each bound where `first` is.
    pub fn take_shards(&mut self, key: &str, first: &Bound) -> Vec<std::net::TcpListener> {
        let Ok(BindAddr::Tcp(wanted)) = first.local() else {
            return Vec::new();
        };
        let mut shards = Vec::new();
        for index in 0.. {
            let Some(fd) = self.sockets.remove(&shard_key(key, index)) else {
                break;
            };
            let socket = std::net::TcpListener::from(fd);
            if socket.local_addr().ok() == Some(wanted) && socket.set_nonblocking(true).is_ok() {
                shards.push(socket);
            }
        }
        shards
    }

    /// Tells the old process that this one serves; it then stops accepting and drains.
    pub fn confirm_serving(&mut self) {
        if let Some(mut channel) = self.channel.take() {
            let _ = channel.write_all(b"ready\n");
        }
    }
}

/// The name under which the `index`th further socket of listener `key`'s SO_REUSEPORT group
/// is passed (`listener:NAME#1`, `#2`, ...).
pub fn shard_key(key: &str, index: usize) -> String {
    format!("{key}#{}", index + 1)
}

/// Starts the new process, hands it `sockets`, and waits until it serves. Returns its pid.
/// Blocking: call from `spawn_blocking`. On error the old process simply keeps serving.
pub fn hand_over(sockets: Vec<(String, OwnedFd)>) -> Result<u32, Error> {
    if sockets.len() > MAX_SOCKETS {
        return Err(io_error("upgrade")(std::io::Error::other(format!(
            "{} sockets exceed the {MAX_SOCKETS} an upgrade can pass",
            sockets.len()
        ))));
    }
    let directory = std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = directory.join(format!("sluice-upgrade-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(io_error("cannot create the upgrade socket"))?;
    let result = hand_over_on(&listener, &path, sockets);
    let _ = std::fs::remove_file(&path);
    result
}

fn hand_over_on(
    listener: &UnixListener,
    path: &std::path::Path,
    sockets: Vec<(String, OwnedFd)>,
) -> Result<u32, Error> {
    let executable = std::env::current_exe().map_err(io_error("cannot find the sluice binary"))?;
    let mut child = Command::new(&executable)
        .args(std::env::args_os().skip(1))
        .env(UPGRADE_SOCKET_ENV, path)
        .spawn()
        .map_err(io_error(format!("cannot start {}", executable.display())))?;
    let pid = child.id();

    // Wait for the child to connect, but notice if it dies first (bad binary, bad config).
    listener
        .set_nonblocking(true)
        .map_err(io_error("upgrade socket"))?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(io_error("new process")(std::io::Error::other(format!(
                        "exited with {status} before taking over"
                    ))));
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    return Err(io_error("new process")(std::io::Error::other(
                        "did not connect in time",
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_error("upgrade socket accept")(e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(io_error("upgrade socket"))?;

    let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();
    let header = serde_json::to_vec(&names)
        .map_err(|e| io_error("upgrade message")(std::io::Error::other(e)))?;
    let borrowed: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io_error("upgrade message")(std::io::Error::other(
            "too many sockets",
        )));
    }
    rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(&header)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| io_error("cannot pass the sockets")(e.into()))?;

    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(io_error("upgrade socket"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(io_error("waiting for the new process"))?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(io_error("new process")(std::io::Error::other(
            "closed the upgrade channel before serving",
        )));
    }
    // The child outlives us (it is reparented when we exit): dropping the handle neither
    // waits for it nor kills it.
    drop(child);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener;

    #[tokio::test]
    async fn every_inherited_socket_of_a_group_is_taken_and_a_stranger_is_not() {
        let first =
            listener::bind_any(&BindAddr::Tcp("127.0.0.1:0".parse().unwrap()), None, true).unwrap();
        let shard = || OwnedFd::from(listener::bind_shard(&first).unwrap());
        let elsewhere = listener::bind_tcp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let key = "listener:web";
        let mut inherited = Inherited::default();
        for (index, fd) in [shard(), OwnedFd::from(elsewhere), shard()]
            .into_iter()
            .enumerate()
        {
            inherited.sockets.insert(shard_key(key, index), fd);
        }
        // Past the last one, nothing: the count is what the old process passed.
        let taken = inherited.take_shards(key, &first);
        let port = first.local().unwrap().tcp().unwrap().port();
        assert_eq!(
            taken.len(),
            2,
            "the one bound elsewhere is not part of the group"
        );
        assert!(taken.iter().all(|s| s.local_addr().unwrap().port() == port));
        assert!(inherited.sockets.is_empty(), "all of them were looked at");
        assert_eq!(shard_key(key, 0), "listener:web#1");
    }
}
