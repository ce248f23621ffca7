//! The admin status page in a real headless browser (Debian's chromium): it loads, runs its
//! script against `/status`, shows the running config's pools, and a drained backend as
//! drained. CI installs chromium (and fails without it); elsewhere the test is skipped with a
//! message when no chromium is installed.

use crate::common::*;
use http::StatusCode;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_pools_and_a_drained_backend() {
    let Some(browser) = require_program(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    ) else {
        return;
    };
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: storefront}}\npools:\n  storefront:\n    backends: [{}, {}]\n",
        a.addr, b.addr
    );
    let sluice = start_sluice(&yaml).await;
    let admin = sluice.admin_addr().unwrap();
    let drained = admin_post(
        admin,
        &format!("/pools/storefront/backends/{}/drain", b.addr),
    )
    .await;
    assert_status(&drained, StatusCode::OK);

    let url = format!("http://{admin}/");
    let dom = tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--dump-dom", &url])
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), dom)
        .await
        .expect("browser finished")
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("pool storefront"),
        "pools of the running config: {dom}"
    );
    let drained_row = dom
        .split("<tr")
        .find(|row| row.contains(&b.addr.to_string()))
        .unwrap_or_else(|| panic!("no row for {}: {dom}", b.addr));
    assert!(
        drained_row.contains("class=\"drained\">drained<"),
        "{drained_row}"
    );
    let up_row = dom
        .split("<tr")
        .find(|row| row.contains(&a.addr.to_string()))
        .unwrap();
    assert!(up_row.contains("class=\"up\">up<"), "{up_row}");
}
