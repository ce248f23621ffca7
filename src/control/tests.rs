//! The transaction with real sockets: a failure at the end of prepare (after every socket is
//! bound, taken over, duplicated and registered, and the snapshot built) leaves the running
//! listeners, snapshot and admin token as they were, and the report says it failed; the same
//! change then applies whole.

use super::{Control, ControlPlane, Hooks};
use crate::config::Config;
use crate::upgrade::Inherited;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn quiet_hooks() -> Hooks {
    Hooks {
        admin: Box::new(|_, _, _, _| {}),
        config_committed: Box::new(|_| {}),
    }
}

/// A backend that answers every connection with its name and closes.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(name.as_bytes()).await;
        }
    });
    addr
}

/// What a TCP connection through `addr` reads.
async fn through(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = String::new();
    let read = stream.read_to_string(&mut text);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer in time")
        .unwrap();
    text
}

fn config(
    runtime: &str,
    admin_token: &std::path::Path,
    listeners: &str,
    backend: SocketAddr,
) -> Config {
    let text = format!(
        "{runtime}admin: {{bind: 127.0.0.1:0, token_file: '{}'}}\nlisteners:\n{listeners}pools:\n  app:\n    backends: [{backend}]\n",
        admin_token.display()
    );
    Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_failed_prepare_changes_nothing_and_the_same_change_then_applies() {
    failed_prepare_then_apply("").await;
}

/// The same with worker threads: prepare registers the sockets with each worker's event loop
/// (and the group's further sockets); a failed prepare drops them from this thread.
#[tokio::test]
async fn with_worker_threads_too() {
    for accept in ["shared", "reuseport"] {
        let runtime =
            format!("runtime: {{worker_threads: 2, scheduler: per_thread, accept: {accept}}}\n");
        failed_prepare_then_apply(&runtime).await;
    }
}

async fn failed_prepare_then_apply(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::write(&one, "first-token\n").unwrap();
    std::fs::write(&two, "second-token\n").unwrap();
    let (a, b) = (backend("a").await, backend("b").await);
    let first = config(
        runtime,
        &one,
        "  web: {bind: 127.0.0.1:0, protocol: tcp, pool: app}\n  old: {bind: 127.0.0.1:0, protocol: tcp, pool: app}\n",
        a,
    );
    let control = Control::start(first, None, None, &mut Inherited::default(), quiet_hooks())
        .expect("starts");
    let web = control.local_addr("web").unwrap();
    let old = control.local_addr("old").unwrap();
    let admin = control.admin_addr().unwrap();
    let before = control.snapshot().load_full();
    assert_eq!(through(web).await, "a");

    // `web` renamed at its address (its socket taken over), `old` removed, `fresh` added,
    // the pool moved to another backend and a new admin token.
    let second = config(
        runtime,
        &two,
        &format!(
            "  site: {{bind: '{web}', protocol: tcp, pool: app}}\n  fresh: {{bind: 127.0.0.1:0, protocol: tcp, pool: app}}\n"
        ),
        b,
    );
    control.fail_next_prepare();
    let error = control.apply_config(second.clone()).await.unwrap_err();
    assert!(error.to_string().contains("injected"), "{error}");

    assert!(Arc::ptr_eq(&before, &control.snapshot().load_full()));
    assert_eq!(control.local_addr("web"), Some(web));
    assert_eq!(control.local_addr("old"), Some(old));
    assert_eq!(
        (control.local_addr("site"), control.local_addr("fresh")),
        (None, None)
    );
    assert_eq!(control.admin_addr(), Some(admin));
    let view = control.view();
    assert_eq!(view.admin_token.as_deref(), Some("first-token"));
    let report = view.last_reload.expect("a report");
    assert!(
        !report.success && report.detail.contains("injected"),
        "{report:?}"
    );
    assert_eq!(through(web).await, "a", "the running listener still serves");
    assert_eq!(through(old).await, "a");

    let plan = control.apply_config(second).await.expect("applies");
    assert_eq!(plan.listeners_added, ["fresh", "site"]);
    assert_eq!(
        control.local_addr("site"),
        Some(web),
        "the renamed listener kept its socket"
    );
    assert!(control.local_addr("web").is_none());
    assert!(control.local_addr("old").is_none());
    assert_eq!(through(web).await, "b");
    let fresh = control.local_addr("fresh").expect("bound");
    assert_eq!(through(fresh).await, "b");
    assert_eq!(control.view().admin_token.as_deref(), Some("second-token"));
    assert!(control.view().last_reload.is_some_and(|r| r.success));
}
