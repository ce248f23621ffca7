//! Sluice in-process: starting it from YAML, the small configs tests build, rewriting a
//! watched config file, and reading (or waiting for) a pool's backends in the snapshot.

use super::wait_until;
use sluice::{Config, Server};
use std::net::SocketAddr;
use std::time::Duration;

/// Starts sluice in-process from YAML text (listeners should bind 127.0.0.1:0).
pub async fn start_sluice(yaml: &str) -> Server {
    let config = Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    Server::start(config).await.unwrap()
}

/// A one-listener HTTP config over the given backends.
pub fn http_config(backends: &[SocketAddr], extra_pool: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n\
         pools:\n  app:\n    backends: [{}]\n{extra_pool}",
        list.join(", ")
    )
}

/// Parses YAML that a test wrote, panicking with the config error if it is invalid.
pub fn config(yaml: &str) -> Config {
    Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// An HTTP listener `web` over `backends`, plus `extra` listener lines (indented YAML).
pub fn two_listeners(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n{extra}pools:\n  app:\n    backends: [{}]\n",
        list.join(", ")
    )
}

/// Writes a file the way editors and config managers do: a temporary file, then rename.
pub fn write_file(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The addresses of a pool's backends in the running snapshot.
pub fn backend_addresses(sluice: &Server, pool: &str) -> std::collections::BTreeSet<SocketAddr> {
    sluice.snapshot().load().pools[pool]
        .backends
        .iter()
        .filter_map(|b| b.address.inet())
        .collect()
}

/// Waits until a pool's backends are exactly `want`, failing with what it has at `deadline`.
pub async fn wait_for_backends(
    sluice: &Server,
    pool: &str,
    want: &[SocketAddr],
    deadline: Duration,
) {
    let want: std::collections::BTreeSet<SocketAddr> = want.iter().copied().collect();
    let reached = wait_until(deadline, || backend_addresses(sluice, pool) == want).await;
    assert!(
        reached,
        "backends {:?}, want {want:?}",
        backend_addresses(sluice, pool)
    );
}
