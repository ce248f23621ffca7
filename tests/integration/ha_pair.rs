//! An HA pair that is tested, not described: two sluice hosts behind one floating address
//! moved by keepalived (VRRP), on a network of namespaces built by the test (`common/netns.rs`):
//!
//! ```text
//!   client 10.231.0.100 ──┐
//!   lb1    10.231.0.11  ──┤ bridge ── backend 10.231.0.21:9000
//!   lb2    10.231.0.12  ──┘          floating 10.231.0.50:8080
//! ```
//!
//! keepalived runs in lb1 and lb2 with the shipped `conf/keepalived.conf` (names and
//! addresses substituted): the `sluice ready` track_script, both `state BACKUP` with
//! `nopreempt`, VRRPv3 adverts every 0.2 s. A client thread in the client
//! namespace sends one request every 20 ms (a new connection each) through the floating
//! address and records each outcome. Events, each measured as failed requests and seconds
//! without service (first failure to first success after the last failure):
//! 1. SIGKILL of the active sluice (say lb1): its track_script fails, lb1 goes FAULT, lb2
//!    takes over;
//! 2. lb1's sluice started again: the address stays on lb2 (nopreempt), nothing fails;
//! 3. the now active host's link (lb2's eth0) goes down: lb1 takes over;
//! 4. the link comes back: the address stays on lb1, nothing fails.
//!
//! Which host wins the first election is up to keepalived's timers (both start BACKUP); the
//! test follows whichever holds the address.
//!
//! Skipped with a message where namespaces cannot be made (not root) or keepalived is not
//! installed; required under CI. Everything is torn down on drop, panics included.

use crate::common::netns::Lab;
use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const FLOATING: &str = "10.231.0.50";
const BACKEND: &str = "10.231.0.21:9000";
const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// Time for an event to be handled: failover takes a few seconds, far less than this.
const SETTLE: Duration = Duration::from_secs(20);
/// After an event, this many successes in a row mean service is back.
const STREAK: usize = 25;

/// What the client saw: (start of the request, answered 200).
type Outcomes = Arc<Mutex<Vec<(Instant, bool)>>>;

fn sluice_config(dir: &Path, role: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{role}.yaml"));
    std::fs::write(
        &path,
        format!(
            "admin: {{bind: 127.0.0.1:9900}}\n\
             listeners:\n  web: {{bind: 0.0.0.0:8080, pool: app}}\n\
             pools:\n  app:\n    backends: [{BACKEND}]\n"
        ),
    )
    .unwrap();
    path
}

/// keepalived's config for one host: the shipped `conf/keepalived.conf` itself, with this
/// test's binary, host name, priority and floating address substituted (VRRPv3, 0.2 s
/// adverts, `nopreempt`, the `sluice ready` track_script: all as shipped).
fn keepalived_config(dir: &Path, role: &str, priority: u8) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keepalived.conf");
    let text = std::fs::read_to_string(shipped).unwrap();
    // enable_script_security refuses a script under a directory others may write to, and the
    // build directory's owner is the machine's business: run a copy from the test's own
    // directory (0700, root's), as the package's /usr/bin/sluice would be.
    let script = dir.join("sluice");
    if !script.exists() {
        std::fs::copy(BIN, &script).unwrap();
    }
    let mut replaced = text.clone();
    for (from, to) in [
        ("/usr/bin/sluice", script.display().to_string()),
        ("router_id sluice-lb1", format!("router_id {role}")),
        ("priority 150", format!("priority {priority}")),
        ("192.0.2.10/24", format!("{FLOATING}/24")),
    ] {
        assert!(
            replaced.contains(from),
            "conf/keepalived.conf no longer has {from:?}"
        );
        replaced = replaced.replace(from, &to);
    }
    let path = dir.join(format!("keepalived-{role}.conf"));
    std::fs::write(&path, replaced).unwrap();
    path
}

fn start_sluice_in(lab: &mut Lab, dir: &Path, role: &str) {
    let config = sluice_config(dir, role);
    let log = dir.join(format!("sluice-{role}.log"));
    lab.spawn(role, BIN, &["-c", config.to_str().unwrap()], &log);
}

fn start_keepalived_in(lab: &mut Lab, dir: &Path, role: &str, priority: u8) {
    let config = keepalived_config(dir, role, priority);
    let pid = |what: &str| dir.join(format!("{role}-{what}.pid")).display().to_string();
    let args = [
        "--dont-fork".to_owned(),
        "--log-console".to_owned(),
        "--log-detail".to_owned(),
        "--vrrp".to_owned(),
        format!("--use-file={}", config.display()),
        format!("--pid={}", pid("keepalived")),
        format!("--vrrp_pid={}", pid("vrrp")),
        format!("--checkers_pid={}", pid("checkers")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.join(format!("keepalived-{role}.log"));
    lab.spawn(role, "keepalived", &args, &log);
}

/// Whether `sluice ready` succeeds inside a host.
fn ready(lab: &Lab, role: &str) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.name(role),
            BIN,
            "ready",
            "--admin",
            "127.0.0.1:9900",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One request through the floating address: true for a 200.
fn request(target: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_millis(300)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: ha.test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// Failed requests and seconds without service after `event`: from the first failure to the
/// first success after the last failure. `None` until `STREAK` successes followed the last
/// failure (service not back yet).
fn outage(outcomes: &Outcomes, event: Instant) -> Option<(usize, f64)> {
    let seen = outcomes.lock().unwrap();
    let after: Vec<&(Instant, bool)> = seen.iter().filter(|(at, _)| *at >= event).collect();
    let last_failure = after.iter().rposition(|(_, ok)| !ok);
    let Some(last_failure) = last_failure else {
        return (after.len() >= STREAK).then_some((0, 0.0));
    };
    let tail = &after[last_failure + 1..];
    if tail.len() < STREAK {
        return None;
    }
    let failed = after.iter().filter(|(_, ok)| !ok).count();
    let first_failure = after.iter().find(|(_, ok)| !ok).map(|(at, _)| *at)?;
    let back = tail[0].0;
    Some((failed, back.duration_since(first_failure).as_secs_f64()))
}

async fn wait_outage(outcomes: &Outcomes, event: Instant, what: &str) -> (usize, f64) {
    let end = Instant::now() + SETTLE;
    loop {
        if let Some(result) = outage(outcomes, event) {
            eprintln!(
                "HA pair, {what}: {} failed requests, {:.2} s without service",
                result.0, result.1
            );
            return result;
        }
        assert!(
            Instant::now() < end,
            "{what}: service not back within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the client thread however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn wait_holder(lab: &Lab, role: &str) {
    let held = wait_until(SETTLE, || lab.holds(role, FLOATING)).await;
    assert!(held, "{role} does not hold {FLOATING} within {SETTLE:?}");
}

#[tokio::test]
async fn keepalived_moves_the_floating_address_when_sluice_or_the_link_dies() {
    let Some(mut lab) = Lab::new("ha") else {
        return;
    };
    if require_program(&["keepalived"], "keepalived").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    lab.switch();
    lab.host("lb1", "10.231.0.11/24");
    lab.host("lb2", "10.231.0.12/24");
    lab.host("client", "10.231.0.100/24");
    lab.host("backend", "10.231.0.21/24");
    let listener = lab
        .in_namespace("backend", || std::net::TcpListener::bind(BACKEND).unwrap())
        .join()
        .unwrap();
    let backend = serve_backend_on(listener, "app");

    for role in ["lb1", "lb2"] {
        start_sluice_in(&mut lab, dir.path(), role);
    }
    let both_ready = wait_until(SETTLE, || ready(&lab, "lb1") && ready(&lab, "lb2")).await;
    assert!(both_ready, "sluice not ready in both hosts");
    start_keepalived_in(&mut lab, dir.path(), "lb1", 150);
    start_keepalived_in(&mut lab, dir.path(), "lb2", 100);
    // Both start as BACKUP with nopreempt: the first election usually goes to lb1 (higher
    // priority), but whichever took the address keeps it, so the test follows the holder.
    let elected = wait_until(SETTLE, || {
        lab.holds("lb1", FLOATING) || lab.holds("lb2", FLOATING)
    })
    .await;
    assert!(elected, "nobody holds {FLOATING} within {SETTLE:?}");
    let (active, standby) = if lab.holds("lb1", FLOATING) {
        ("lb1", "lb2")
    } else {
        ("lb2", "lb1")
    };
    assert!(!lab.holds(standby, FLOATING), "both hold the address");
    eprintln!("HA pair: {active} won the first election");

    // The client: one request every 20 ms through the floating address.
    let outcomes: Outcomes = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let client = {
        let (outcomes, stop) = (outcomes.clone(), stop.clone());
        let target: SocketAddr = format!("{FLOATING}:8080").parse().unwrap();
        lab.in_namespace("client", move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = request(target);
                outcomes.lock().unwrap().push((started, ok));
                std::thread::sleep(Duration::from_millis(20).saturating_sub(started.elapsed()));
            }
        })
    };
    let baseline = Instant::now();
    let (failed, _) = wait_outage(&outcomes, baseline, "steady state").await;
    assert_eq!(failed, 0, "requests fail before any event");

    // 1. The active sluice is killed outright.
    let killed = Instant::now();
    lab.kill(active);
    wait_holder(&lab, standby).await;
    let (kill_failed, kill_outage) =
        wait_outage(&outcomes, killed, "SIGKILL of the active sluice").await;

    // 2. It comes back: the address stays where it is (nopreempt), nothing fails.
    start_sluice_in(&mut lab, dir.path(), active);
    assert!(wait_until(SETTLE, || ready(&lab, active)).await);
    let back = Instant::now();
    // rise 2 at interval 1: it is eligible again after about 2 s; give it 4.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        lab.holds(standby, FLOATING),
        "nopreempt: the address stays on {standby}"
    );
    assert!(!lab.holds(active, FLOATING));
    let (failed, _) = wait_outage(&outcomes, back, "killed sluice back (no move)").await;
    assert_eq!(failed, 0);

    // 3. The active host's link goes down.
    let unplugged = Instant::now();
    lab.ip(&["-n", &lab.name(standby), "link", "set", "eth0", "down"]);
    wait_holder(&lab, active).await;
    let (link_failed, link_outage) =
        wait_outage(&outcomes, unplugged, "link of the active host down").await;

    // 4. The link comes back: no move back, nothing fails, one holder.
    lab.ip(&["-n", &lab.name(standby), "link", "set", "eth0", "up"]);
    let plugged = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lab.holds(active, FLOATING) && !lab.holds(standby, FLOATING));
    let (failed, _) = wait_outage(&outcomes, plugged, "link back (no move)").await;
    assert_eq!(failed, 0);

    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let total = outcomes.lock().unwrap().len();
    eprintln!(
        "HA pair summary: {total} requests; SIGKILL: {kill_failed} failed, {kill_outage:.2} s; \
         link down: {link_failed} failed, {link_outage:.2} s; backend served {}",
        backend.requests()
    );
    // Failover happened within a few seconds, not by luck of a slow test.
    assert!(kill_outage < 5.0, "{kill_outage}");
    assert!(link_outage < 5.0, "{link_outage}");
}

/// `sluice ready` without namespaces: 0 for a running sluice, 1 (quickly) for a dead admin
/// address and for one that accepts but never answers (a hung daemon).
#[tokio::test]
async fn sluice_ready_answers_by_exit_code_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        "admin: {bind: 127.0.0.1:0}\nlisteners:\n  web: {bind: 127.0.0.1:0, pool: app}\n\
         pools:\n  app:\n    backends: [127.0.0.1:9]\n",
    )
    .unwrap();
    let (child, _, logs) = spawn_binary(&config);
    let line = wait_for_line(&logs, "admin");
    let admin = logged_addr(&line).to_owned();
    let run = |admin: String| async move {
        let started = Instant::now();
        let output = tokio::process::Command::new(BIN)
            .args(["ready", "--admin", &admin, "--timeout", "300ms"])
            .output()
            .await
            .unwrap();
        (output, started.elapsed())
    };
    let (ok, _) = run(admin).await;
    assert!(ok.status.success(), "{ok:?}");
    assert!(ok.stdout.is_empty() && ok.stderr.is_empty(), "{ok:?}");

    let (dead, _) = run(dead_addr().await.to_string()).await;
    assert_eq!(dead.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("not ready"));

    // Accepts (the kernel does) and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (silent, took) = run(hung.local_addr().unwrap().to_string()).await;
    assert_eq!(silent.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&silent.stderr).contains("no answer in 300ms"),
        "{silent:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    terminate(child).await;
}
