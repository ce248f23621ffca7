//! DNS discovery against a real dnsmasq on a free loopback port (never the internet): SRV
//! and A-record pools route to what DNS answers, follow changed records, keep the last set
//! while DNS is down or answers nothing (and say so in /status), and withdraw it after
//! `max_stale`. dnsmasq (Debian `dnsmasq-base`) must be installed: CI installs it (elsewhere the tests are skipped with a message).

use crate::common::*;
use sluice::Server;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const DEADLINE: Duration = Duration::from_secs(10);

/// dnsmasq in the foreground with fixed records; killed on drop.
struct Dnsmasq {
    port: u16,
    child: Running,
}

impl Dnsmasq {
    fn start(port: u16, records: &[String]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} not found: install Debian package dnsmasq-base (apt-get install dnsmasq-base); \
             .ci/run installs it"
        );
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--local-ttl=1",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DNSMASQ}: {e}"));
        let mut dnsmasq = Dnsmasq {
            port,
            child: Running(child),
        };
        dnsmasq.wait_listening();
        dnsmasq
    }

    /// Waits until dnsmasq holds its UDP port (read from /proc/net/udp, without touching the
    /// port: a probe bind could make dnsmasq's own bind fail), so queries never race its
    /// start-up; fails if it exited instead.
    fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let needle = format!("0100007F:{:04X}", self.port);
        loop {
            let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
            if table
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(needle.as_str()))
            {
                return;
            }
            if let Some(status) = self.child.exited() {
                panic!(
                    "dnsmasq exited with {status} before listening on {}",
                    self.port
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq never listened on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self) {
        self.child.stop();
    }

    fn restart(&mut self, records: &[String]) {
        self.stop();
        *self = Dnsmasq::start(self.port, records);
    }
}

/// A loopback UDP port nobody uses right now, below the ephemeral range (32768+): resolvers
/// send each query from a random ephemeral port, and one could take dnsmasq's port while it
/// restarts.
fn free_udp_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn srv(name: &str, backend: SocketAddr, weight: u16) -> String {
    format!(
        "--srv-host={name},backends.lb.test,{},0,{weight}",
        backend.port()
    )
}

fn config(dns: &str) -> String {
    format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: api}}\n\
         pools:\n  api:\n    discovery:\n      dns: {dns}\n"
    )
}

fn backends_of(sluice: &Server) -> BTreeSet<(SocketAddr, u32)> {
    sluice.snapshot().load().pools["api"]
        .backends
        .iter()
        .filter_map(|b| Some((b.address.inet()?, b.weight)))
        .collect()
}

async fn wait_for(sluice: &Server, want: &[(SocketAddr, u32)]) {
    let want: BTreeSet<_> = want.iter().copied().collect();
    let reached = wait_until(DEADLINE, || backends_of(sluice) == want).await;
    assert!(reached, "backends {:?}, want {want:?}", backends_of(sluice));
}

fn last_error(sluice: &Server) -> Option<String> {
    sluice.discovery_status()["api"][0].last_error.clone()
}

#[tokio::test]
async fn srv_records_are_followed_and_kept_while_dns_is_down() {
    if require_program(&[DNSMASQ], "dnsmasq-base").is_none() {
        return;
    }
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let port = free_udp_port();
    let host = "--host-record=backends.lb.test,127.0.0.1".to_owned();
    let mut dns = Dnsmasq::start(port, &[host.clone(), srv("_http._tcp.lb.test", a.addr, 0)]);
    let sluice = start_sluice(&config(&format!(
        "{{name: _http._tcp.lb.test, server: '127.0.0.1:{port}', refresh: 2s, timeout: 500ms}}"
    )))
    .await;
    let web = sluice.local_addr("web").unwrap();
    // SRV weight 0 ("no preference") is weight 1 here.
    wait_for(&sluice, &[(a.addr, 1)]).await;
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    dns.restart(&[
        host.clone(),
        srv("_http._tcp.lb.test", a.addr, 10),
        srv("_http._tcp.lb.test", b.addr, 30),
    ]);
    wait_for(&sluice, &[(a.addr, 10), (b.addr, 30)]).await;
    let mut seen = BTreeSet::new();
    for _ in 0..8 {
        seen.insert(body_text(&get(web, "/").await));
    }
    assert_eq!(seen.len(), 2, "both SRV targets serve: {seen:?}");

    dns.stop();
    assert!(
        wait_until(DEADLINE, || last_error(&sluice).is_some()).await,
        "DNS failure reported"
    );
    assert_eq!(backends_of(&sluice).len(), 2, "last good set kept");
    assert_eq!(get(web, "/").await.status(), http::StatusCode::OK);
    let status = get(sluice.admin_addr().unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
    let source = &status["pools"][0]["discovery"][0];
    assert_eq!(source["source"], "dns");
    assert_eq!(source["backends"], 2);
    assert!(
        source["last_error"]
            .as_str()
            .unwrap()
            .contains("_http._tcp.lb.test")
    );
    assert!(source["last_update"].as_f64().is_some());
}

#[tokio::test]
async fn a_records_with_a_port_and_max_stale_withdraws_the_set() {
    if require_program(&[DNSMASQ], "dnsmasq-base").is_none() {
        return;
    }
    let a = spawn_backend("a").await;
    let port = free_udp_port();
    let mut dns = Dnsmasq::start(port, &["--host-record=api.lb.test,127.0.0.1".to_owned()]);
    let sluice = start_sluice(&config(&format!(
        "{{name: api.lb.test, port: {}, server: '127.0.0.1:{port}', refresh: 1s, max_stale: 3s, timeout: 500ms}}",
        a.addr.port()
    )))
    .await;
    let web = sluice.local_addr("web").unwrap();
    wait_for(&sluice, &[(a.addr, 1)]).await;
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    // The name disappears (dnsmasq answers without records): kept at first, then withdrawn.
    dns.restart(&["--host-record=other.lb.test,127.0.0.1".to_owned()]);
    let failed_at = tokio::time::Instant::now();
    assert!(wait_until(DEADLINE, || last_error(&sluice).is_some()).await);
    assert_eq!(backends_of(&sluice).len(), 1, "kept while within max_stale");
    wait_for(&sluice, &[]).await;
    assert!(
        failed_at.elapsed() >= Duration::from_secs(1),
        "not withdrawn at once"
    );
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );

    // Back in DNS: back in the pool.
    dns.restart(&["--host-record=api.lb.test,127.0.0.1".to_owned()]);
    wait_for(&sluice, &[(a.addr, 1)]).await;
}
