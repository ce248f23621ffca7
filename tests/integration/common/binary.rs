//! The real `sluice` binary as a child process: starting it on a config file, reading the
//! addresses it logs, and sending it signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The child, the address its first listener bound, and its log lines as they come.
pub type Spawned = (Child, SocketAddr, Receiver<String>);

/// Starts the real binary, reads the address it bound from its log, and returns both.
pub fn spawn_binary(config: &std::path::Path) -> Spawned {
    spawn_binary_with(config, &[])
}

/// `spawn_binary` with extra environment variables.
pub fn spawn_binary_with(config: &std::path::Path, env: &[(&str, &std::path::Path)]) -> Spawned {
    let mut child = Command::new(BIN)
        .args(["-c"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("SLUICE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = wait_for_line(&lines_rx, "addr=");
    let addr = logged_addr(&line).parse().unwrap();
    (child, addr, lines_rx)
}

/// The next log line that contains `needle` (the ones before it are dropped); panics after
/// 10 s without one.
pub fn wait_for_line(logs: &Receiver<String>, needle: &str) -> String {
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("sluice logs a line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The `addr=` field of a log line.
pub fn logged_addr(line: &str) -> &str {
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// Sends the signal `name` (`HUP`, `TERM`...) to the child.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and waits for the child to exit with success (a clean drain).
pub async fn terminate(mut child: Child) {
    signal(&child, "TERM");
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "{exited:?}");
}
