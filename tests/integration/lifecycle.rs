//! Process-level behaviour: graceful drain, `sluice check`, and the real binary on signals.

use crate::common::*;
use http::StatusCode;
use sluice::DrainOutcome;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_stops_accepting() {
    let backend = spawn_backend("slow").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "/sleep/2000").await });
    assert!(
        wait_until(Duration::from_secs(5), || backend
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "request reached the backend"
    );
    let outcome = sluice.shutdown(Duration::from_secs(10)).await;
    assert_eq!(outcome, DrainOutcome::Complete);
    let response = in_flight.await.unwrap();
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&response), "backend slow");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_deadline_bounds_the_shutdown() {
    let backend = spawn_backend("slow").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let _stuck = tokio::spawn(async move { get(addr, "/sleep/10000").await });
    assert!(
        wait_until(Duration::from_secs(5), || backend
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        sluice.shutdown(Duration::from_millis(300)).await,
        DrainOutcome::TimedOut
    );
    // Paused clock: the drain deadline to the millisecond of the timer wheel.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(301),
        "{took:?}"
    );
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn check_accepts_the_shipped_reference_config() {
    let output = Command::new(BIN)
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/conf/sluice.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("is valid"));
}

/// The config the Debian package installs as /etc/sluice/sluice.yaml starts and answers as
/// installed, with nothing else on the machine: its pool is sluice's own admin listener,
/// read-only. Its fixed ports (8080, 9900) are moved to free ones here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packaged_config_starts_and_answers_as_installed() {
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/packaged.yaml");
    let output = Command::new(BIN)
        .args(["check", "-c", packaged])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(packaged).unwrap();
    assert!(text.contains("bind: 127.0.0.1:8080") && text.contains("[127.0.0.1:9900]"));
    let admin = format!("127.0.0.1:{}", crate::common::etcd::free_port());
    let file = write_config(
        &text
            .replace("127.0.0.1:8080", "127.0.0.1:0")
            .replace("127.0.0.1:9900", &admin),
    );
    let (child, addr, _logs) = spawn_binary(file.path());
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            try_get(addr, "/healthz").await.as_deref() == Some("ok\n")
        })
        .await,
        "the packaged listener answers through its pool"
    );
    let page = get(addr, "/").await;
    assert_status(&page, StatusCode::OK);
    assert!(body_text(&page).contains("<html"), "the status page");
    // Admin actions are not reachable through the listener.
    assert_status(&admin_post(addr, "/reload").await, StatusCode::NOT_FOUND);
    terminate(child).await;
}

#[test]
fn check_refuses_an_access_log_file_it_could_not_create() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing").join("access.log");
    let file = write_config(&format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    access_log: {{ path: '{}' }}\npools:\n  app: {{ backends: [127.0.0.1:9] }}\n",
        missing.display()
    ));
    let output = Command::new(BIN)
        .args(["check", "-q", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:5:25: listeners.web.access_log.path: cannot create the file: directory {}",
            file.path().display(),
            missing.parent().unwrap().display()
        )),
        "{stderr}"
    );
    // Once the directory exists the same file checks (and nothing is created by the check).
    std::fs::create_dir(missing.parent().unwrap()).unwrap();
    let output = Command::new(BIN)
        .args(["check", "-q", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!missing.exists());
}

#[test]
fn check_reports_file_line_column_and_path_and_exits_1() {
    let file = write_config(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: nope\npools:\n  app:\n    backends: [127.0.0.1:1]\n",
    );
    for args in [vec!["check", "-c"], vec!["-t", "-c"]] {
        let output = Command::new(BIN)
            .args(&args)
            .arg(file.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!(
            "{}:4:11: listeners.web.pool: no pool named \"nope\"",
            file.path().display()
        );
        assert!(stderr.contains(&expected), "{stderr}");
    }
    let missing = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/sluice.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/sluice.yaml"));
}

#[test]
fn version_flag_prints_the_version() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reloads_on_sighup_and_drains_on_sigterm() {
    let first = spawn_backend("first").await;
    let second = spawn_backend("second").await;
    let file = write_config(&http_config(&[first.addr], ""));
    let (mut child, addr, logs) = spawn_binary(file.path());
    assert_eq!(body_text(&get(addr, "/").await), "backend first");

    // A broken config is refused and the running one stays in force.
    std::fs::write(file.path(), "listeners: [oops").unwrap();
    signal(&child, "HUP");
    let refused = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("reload outcome logged");
        if line.contains("reload failed") {
            break line;
        }
    };
    assert!(
        refused.contains(&file.path().display().to_string()),
        "{refused}"
    );
    assert_eq!(body_text(&get(addr, "/").await), "backend first");

    std::fs::write(file.path(), http_config(&[second.addr], "")).unwrap();
    signal(&child, "HUP");
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("reload logged");
        if line.contains("configuration reloaded") {
            break;
        }
    }
    assert_eq!(body_text(&get(addr, "/").await), "backend second");

    let in_flight = tokio::spawn(async move { get(addr, "/sleep/1500").await });
    assert!(
        wait_until(Duration::from_secs(5), || second
            .started
            .load(Ordering::SeqCst)
            == 2)
        .await
    );
    signal(&child, "TERM");
    let response = in_flight.await.unwrap();
    assert_status(&response, StatusCode::OK);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit 0 after drain: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_protocol_ready_reloading_stopping() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let notify_path = directory.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config_file = write_config(&format!(
        "watch: false\n{}",
        http_config(&[backend.addr], "")
    ));
    let (mut child, _addr, _logs) =
        spawn_binary_with(config_file.path(), &[("NOTIFY_SOCKET", &notify_path)]);
    let receive = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = receive();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("STATUS=serving"),
        "{ready:?}"
    );

    signal(&child, "HUP");
    let reloading = receive();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(usec > 0);
    let after = receive();
    assert!(
        after.starts_with("READY=1\n") && after.contains("last reload succeeded"),
        "{after:?}"
    );

    signal(&child, "TERM");
    assert_eq!(receive(), "STOPPING=1\n");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[test]
fn check_diff_prints_the_reload_plan() {
    let running = write_config(
        "listeners:\n  web: {bind: 127.0.0.1:8080, pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001, 127.0.0.1:9002]\n",
    );
    let next = write_config(
        "listeners:\n  web: {bind: 127.0.0.1:8080, pool: app}\n  db: {bind: 127.0.0.1:6432, protocol: tcp, pool: app}\npools:\n  app:\n    backends: [{address: 127.0.0.1:9001, weight: 4}]\n",
    );
    let output = Command::new(BIN)
        .args(["check", "-q", "-c"])
        .arg(next.path())
        .arg("--diff")
        .arg(running.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(plan.contains("listener added: db"), "{plan}");
    assert!(plan.contains("backend removed: 127.0.0.1:9002"), "{plan}");
    assert!(
        plan.contains("backend reweighted: 127.0.0.1:9001 1 -> 4 (state kept)"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_on_sigusr2_under_load_fails_no_request() {
    upgrade_under_load("runtime: {worker_threads: 2, accept: shared}\n").await;
}

/// With `accept: reuseport` every worker's socket of the group must be handed over: one the
/// new process did not take would be closed with the connections queued on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_hands_over_every_reuseport_socket_and_fails_no_request() {
    upgrade_under_load("runtime: {worker_threads: 3, accept: reuseport}\n").await;
}

/// The inodes of the sockets listening on `port` (IPv4): the same inodes before and after an
/// upgrade mean the new process took over those sockets rather than binding new ones.
fn listening_inodes(port: u16) -> std::collections::BTreeSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok() == Some(port))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

async fn upgrade_under_load(runtime: &str) {
    let backend = spawn_backend("a").await;
    let file = write_config(&format!(
        "watch: false\n{runtime}{}",
        http_config(&[backend.addr], "")
    ));
    let (mut old, addr, logs) = spawn_binary(file.path());
    let sockets_before = listening_inodes(addr.port());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tally = std::sync::Arc::new(Tally::default());
    let clients: Vec<_> = (0..6)
        .map(|i| tokio::spawn(load_client(addr, i % 2 == 0, stop.clone(), tally.clone())))
        .collect();
    assert!(
        wait_until(Duration::from_secs(5), || tally.ok.load(Ordering::Relaxed)
            > 50)
        .await
    );

    signal(&old, "USR2");
    let new_pid: u32 = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(20))
            .expect("upgrade outcome logged");
        assert!(!line.contains("upgrade failed"), "{line}");
        if line.contains("the new process serves") {
            let pid = line
                .split("pid=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            break pid.parse().unwrap();
        }
    };
    assert_ne!(new_pid, old.id());
    // Whatever happens next, do not leave the new process running after the test.
    let _reap = KillOnDrop(new_pid);
    let status = tokio::task::spawn_blocking(move || old.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "old process drained and exited 0: {status:?}"
    );
    // Every listening socket was handed over (three with three reuseport workers): none was
    // closed with connections queued on it, none bound anew.
    let expected = if runtime.contains("reuseport") { 3 } else { 1 };
    assert_eq!(sockets_before.len(), expected);
    assert_eq!(listening_inodes(addr.port()), sockets_before);

    // Traffic keeps flowing to the new process on the same port.
    let served_before = tally.ok.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || tally.ok.load(Ordering::Relaxed)
            > served_before + 100)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!("upgrade under load: {ok} requests served");
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "failed requests during the upgrade ({ok} served)"
    );

    drop(_reap);
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "new process shut down"
    );
}

/// Sends SIGTERM to a process we did not spawn (the upgraded sluice) when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_subcommands_talk_to_the_admin_listener() {
    let backend = spawn_backend("a").await;
    let file = write_config(&format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0}}\n{}",
        http_config(&[backend.addr], "")
    ));
    let (child, _addr, logs) = spawn_binary(file.path());
    let admin = logged_addr(&wait_for_line(&logs, "admin listening")).to_owned();
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .args(["--admin", &admin])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, table) = run(&["status"]);
    assert!(ok, "{table}");
    assert!(
        table.contains("POOL")
            && table.contains(&backend.addr.to_string())
            && table.contains(" up ")
            && table.contains(" P50 ")
            && table.contains(" config "),
        "{table}"
    );

    // People get a sentence; scripts ask for JSON.
    let (ok, answer) = run(&["drain", "app", &backend.addr.to_string()]);
    assert!(ok, "{answer}");
    assert_eq!(
        answer,
        format!(
            "app {}: drained (drained by admin API from 127.0.0.1)\n",
            backend.addr
        )
    );
    let (_, table) = run(&["status"]);
    assert!(
        table.contains("drained by admin API from 127.0.0.1"),
        "{table}"
    );
    let (ok, answer) = run(&["enable", "app", &backend.addr.to_string(), "--json"]);
    assert!(ok, "{answer}");
    let enabled: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(enabled["address"], backend.addr.to_string());
    assert_ne!(enabled["state"], "drained");
    let (ok, answer) = run(&["reload"]);
    assert!(ok && answer.starts_with("reload succeeded: "), "{answer}");
    let (ok, answer) = run(&["reload", "--json"]);
    assert!(ok && answer.contains("\"success\": true"), "{answer}");

    // A failed reload prints the error with its caret snippet as lines, on stderr, exit 1.
    let broken = std::fs::read_to_string(file.path())
        .unwrap()
        .replace("pool: app", "pool: ap");
    std::fs::write(file.path(), broken).unwrap();
    let output = Command::new(BIN)
        .args(["reload", "--admin", &admin])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("sluice: reload failed; the running config stays in force:\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("listeners.web.pool: no pool named \"ap\"")
            && stderr
                .lines()
                .any(|l| l.starts_with("  |") && l.ends_with('^'))
            && !stderr.contains("\\n"),
        "{stderr}"
    );

    let output = Command::new(BIN)
        .args([
            "drain",
            "nope",
            &backend.addr.to_string(),
            "--admin",
            &admin,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "unknown pool exits 1");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "sluice: drain: admin API answered 404: no pool named \"nope\"\n"
    );

    terminate(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_send_the_admin_token() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let file = write_config(&format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0, token_file: '{}'}}\n{}",
        token_file.display(),
        http_config(&[backend.addr], "")
    ));
    let config = file.path().display().to_string();
    let (child, _addr, logs) = spawn_binary(file.path());
    let admin = logged_addr(&wait_for_line(&logs, "admin listening")).to_owned();
    let address = backend.addr.to_string();
    let run = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--admin", &admin])
            .env_remove(sluice::cli::TOKEN_ENV);
        if let Some(token) = token {
            command.env(sluice::cli::TOKEN_ENV, token);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    // Without the token (a config without admin:, none in the environment): refused, and
    // told how to give it.
    let (code, _, stderr) = run(&["drain", "app", &address, "-c", "/nonexistent.yaml"], None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("sluice: drain: admin API answered 401: admin token required")
            && stderr.contains("--token-file FILE or SLUICE_ADMIN_TOKEN"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        &["drain", "app", &address, "-c", "/nonexistent.yaml"],
        Some("wrong"),
    );
    assert_eq!(code, Some(1), "{stderr}");

    // From the config's admin.token_file.
    let (code, stdout, stderr) = run(&["drain", "app", &address, "-c", &config], None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!("app {address}: drained")),
        "{stdout}"
    );
    // From the environment, and from --token-file.
    let (code, stdout, stderr) = run(
        &["enable", "app", &address, "-c", "/nonexistent.yaml"],
        Some("s3cret-token"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("drained"), "{stdout}");
    let token_option = token_file.display().to_string();
    let (code, stdout, stderr) = run(
        &[
            "reload",
            "-c",
            "/nonexistent.yaml",
            "--token-file",
            &token_option,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("reload succeeded: "), "{stdout}");
    // A token file that cannot be read is said, not sent as nothing.
    let (code, _, stderr) = run(&["reload", "--token-file", "/nonexistent.token"], None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("sluice: cannot read admin token file /nonexistent.token: "),
        "{stderr}"
    );

    terminate(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_files_are_reopened_on_sigusr1() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let config = write_config(&format!(
        "watch: false\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app, access_log: {{path: '{}'}}}}\npools:\n  app:\n    backends: [{}]\n",
        log.display(),
        backend.addr
    ));
    let (child, addr, logs) = spawn_binary(config.path());
    let count = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    get(addr, "/before").await;
    assert!(wait_until(Duration::from_secs(5), || count(&log) == 1).await);
    // logrotate: move the file away, then signal.
    let rotated = directory.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&child, "USR1");
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("reopen logged");
        if line.contains("reopening access log") {
            break;
        }
    }
    // The writer reopens asynchronously: the first line after the signal lands in one file.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = std::net::TcpStream::connect(addr).map(|mut s| {
                use std::io::Write;
                let _ = s.write_all(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
            });
            count(&log) >= 1
        })
        .await,
        "a new file is written after SIGUSR1"
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("/after"));
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/before")
    );
    terminate(child).await;
}

#[test]
fn version_and_man_page_subcommands() {
    let version = Command::new(BIN).arg("version").output().unwrap();
    assert!(version.status.success());
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.starts_with(&format!("sluice {}\n", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(
        version.contains("TLS: rustls with the ring provider")
            && version.contains("HTTP/2")
            && !version.contains("none yet"),
        "{version}"
    );
    let man = Command::new(BIN).arg("man").output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    for section in [
        ".TH sluice 8",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH COMMANDS",
        ".SH OPTIONS",
        ".SH \"SIGNALS\"",
        ".SH \"FILES\"",
        ".SH \"ADMIN API\"",
        ".SH \"EXIT STATUS\"",
        ".SH \"ENVIRONMENT\"",
        ".SH \"EXAMPLES\"",
        ".SH \"SEE ALSO\"",
        "sluice\\-check(8)",
        "SIGUSR1",
    ] {
        assert!(page.contains(section), "{section} in\n{page}");
    }
    // One page per visible command, for the package.
    let directory = tempfile::tempdir().unwrap();
    let man = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(directory.path())
        .output()
        .unwrap();
    assert!(man.status.success());
    for name in [
        "sluice",
        "sluice-run",
        "sluice-check",
        "sluice-reload",
        "sluice-drain",
    ] {
        let page = std::fs::read_to_string(directory.path().join(format!("{name}.8"))).unwrap();
        assert!(page.contains(&format!(".TH {name} 8")), "{page}");
    }
    assert!(
        !directory.path().join("sluice-backends.8").exists(),
        "hidden"
    );
}

/// `--help` lists `man` and the exit status; `-q` is check's option, not every command's.
#[test]
fn help_is_for_people() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("\n  man ") && help.contains("Exit status:"),
        "{help}"
    );
    let check = Command::new(BIN)
        .args(["check", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("-q, --quiet"));
    let reload = Command::new(BIN)
        .args(["reload", "--help"])
        .output()
        .unwrap();
    let reload = String::from_utf8_lossy(&reload.stdout);
    assert!(
        !reload.contains("--quiet") && reload.contains("--json"),
        "{reload}"
    );
    // A usage error exits 2, as documented.
    let wrong = Command::new(BIN).args(["status", "-q"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}

#[tokio::test]
async fn answers_sluice_makes_up_are_logged_with_request_id_pool_and_reason() {
    let dead = dead_addr().await;
    let file = write_config(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app: {{backends: [{dead}]}}\n"
    ));
    let (mut child, addr, logs) = spawn_binary(file.path());
    let answer = raw_exchange(
        addr,
        b"GET /x HTTP/1.1\r\nhost: a\r\nx-request-id: trace-me-42\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let line = wait_for_line(&logs, "answered 502 by sluice");
    for wanted in [
        "WARN",
        "trace-me-42",
        "listener=\"web\"",
        "pool=\"app\"",
        "backend connection failed",
    ] {
        assert!(line.contains(wanted), "{wanted:?} missing from {line:?}");
    }
    // A refusal of what the client sent is logged the same way.
    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let line = wait_for_line(&logs, "answered 400 by sluice");
    assert!(line.contains("Host"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}
