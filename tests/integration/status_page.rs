//! The admin status page in a real headless browser (Debian's chromium): it loads, runs its
//! script against `/status`, shows the running config's pools, and a drained backend as
//! drained. The second test drives the live page over the DevTools protocol: a backend
//! drained through the admin API shows as drained by the next refresh, the drain and enable
//! buttons send the admin token, and the listeners, charts, discovery and reload history
//! sections show what the server holds; the first also finds an edge rule's refusals. CI
//! installs chromium (and fails without it); elsewhere the tests are skipped with a message
//! when no chromium is installed.

use crate::common::cdp::Browser;
use crate::common::*;
use http::StatusCode;
use http_body_util::BodyExt;
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
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: storefront}}\n  closed: {{bind: 127.0.0.1:0, pool: storefront, access: [{{deny: 127.0.0.0/8, name: no-loopback}}]}}\npools:\n  storefront:\n    backends: [{}, {}]\n",
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
    let closed = sluice.local_addr("closed").unwrap();
    assert_status(&get(closed, "/").await, StatusCode::FORBIDDEN);

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
    // The edge section names the rule that refused the loopback client, and how often.
    let refused_row = dom
        .split("<tr")
        .find(|row| row.contains("data-refused=\"127.0.0.1\""))
        .unwrap_or_else(|| panic!("no refused-key row: {dom}"));
    assert!(
        refused_row.contains("no-loopback") && refused_row.contains("access_denied"),
        "{refused_row}"
    );
}

const TOKEN: &str = "page-t0ken";

async fn post_with_token(admin: std::net::SocketAddr, path: &str) -> http::Response<bytes::Bytes> {
    let request = http::Request::post(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    send(admin, request).await
}

async fn backend_state(admin: std::net::SocketAddr, address: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    (status["pools"][0]["backends"].as_array().unwrap().iter())
        .find(|b| b["address"] == address)
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_follows_drains_and_its_buttons_use_the_token() {
    let Some(program) = require_program(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    ) else {
        return;
    };
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    write_file(&token_file, &format!("{TOKEN}\n"));
    let discovered = dir.path().join("backends.yaml");
    write_file(&discovered, &format!("- {}\n", c.addr));
    let config_path = dir.path().join("sluice.yaml");
    let text = format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0, token_file: '{}'}}\n\
         listeners:\n  web: {{bind: 127.0.0.1:0, pool: storefront}}\n\
         pools:\n  storefront:\n    backends: [{}, {}]\n    discovery:\n      file: '{}'\n",
        token_file.display(),
        a.addr,
        b.addr,
        discovered.display()
    );
    write_file(&config_path, &text);
    let sluice = sluice::Server::start_from_file(&config_path).await.unwrap();
    let admin = sluice.admin_addr().unwrap();
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(
        &sluice,
        "storefront",
        &[a.addr, b.addr, c.addr],
        Duration::from_secs(10),
    )
    .await;
    // A refused reload (its error text must show) and then a good one.
    write_file(
        &config_path,
        &text.replace("pool: storefront", "pool: nowhere"),
    );
    assert_status(
        &post_with_token(admin, "/reload").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    write_file(&config_path, &text);
    assert_status(&post_with_token(admin, "/reload").await, StatusCode::OK);
    for _ in 0..20 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }

    let mut page = Browser::start(&program).await;
    page.navigate(&format!("http://{admin}/")).await;
    let refreshed = "Number(document.body.dataset.refreshes) >= 1";
    page.until(Duration::from_secs(20), refreshed, "a first refresh")
        .await;
    let row = |address: std::net::SocketAddr| {
        format!("document.querySelector('tr[data-backend=\"{address}\"]')")
    };
    let state_of = |address| format!("{}?.children[1]?.textContent", row(address));
    assert_eq!(page.eval(&state_of(b.addr)).await, "up");

    // Drained through the admin API: the next refresh that starts afterwards shows it.
    assert_status(
        &post_with_token(
            admin,
            &format!("/pools/storefront/backends/{}/drain", b.addr),
        )
        .await,
        StatusCode::OK,
    );
    let started = page
        .eval("Number(document.body.dataset.refreshStarted)")
        .await
        .as_u64()
        .unwrap();
    page.until(
        Duration::from_secs(10),
        &format!("Number(document.body.dataset.refreshes) >= {}", started + 1),
        "the next refresh",
    )
    .await;
    assert_eq!(
        page.eval(&state_of(b.addr)).await,
        "drained",
        "within one refresh"
    );

    // The buttons: without the token the page says it is needed and nothing changes.
    let button = |address, action: &str| {
        format!(
            "{}.querySelector('button[data-action=\"{action}\"]')",
            row(address)
        )
    };
    page.eval(&format!("{}.click()", button(a.addr, "drain")))
        .await;
    page.until(
        Duration::from_secs(10),
        "document.getElementById('notice').textContent.includes('token is required')",
        "a refused drain",
    )
    .await;
    assert_eq!(backend_state(admin, &a.addr.to_string()).await, "up");
    // With the token kept for the tab, enable works.
    page.eval(&format!("document.getElementById('token').value = '{TOKEN}'; document.getElementById('token-save').click()")).await;
    assert_eq!(
        page.eval("sessionStorage.getItem('sluice-admin-token')")
            .await,
        TOKEN
    );
    page.eval(&format!("{}.click()", button(b.addr, "enable")))
        .await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            backend_state(admin, &b.addr.to_string()).await == "up"
        })
        .await,
        "enabled by the page's button"
    );
    page.until(
        Duration::from_secs(10),
        &format!("{} === 'up'", state_of(b.addr)),
        "b shown up again",
    )
    .await;

    // Sections: listeners, charts, where each backend came from, discovery, reloads.
    let web_row = "document.querySelector('tr[data-listener=\"web\"]')?.textContent ?? ''";
    assert!(
        page.eval(web_row)
            .await
            .as_str()
            .unwrap()
            .contains("storefront")
    );
    let charts = "document.querySelectorAll('[data-charts=\"storefront\"] svg').length";
    assert_eq!(
        page.eval(charts).await,
        3,
        "requests/s, p99 and errors charts"
    );
    let origin = |address| {
        format!(
            "{}.querySelector('[data-origin]')?.dataset.origin",
            row(address)
        )
    };
    assert_eq!(page.eval(&origin(a.addr)).await, "config");
    assert_eq!(page.eval(&origin(c.addr)).await, "file");
    let source = "document.querySelector('tr[data-source=\"file\"]')?.textContent ?? ''";
    assert!(
        page.eval(source)
            .await
            .as_str()
            .unwrap()
            .contains("backends.yaml")
    );
    let failed = "document.querySelector('tr[data-reload=\"failure\"]')?.textContent ?? ''";
    let failed = page.eval(failed).await;
    assert!(
        failed.as_str().unwrap().contains("nowhere"),
        "the error text: {failed}"
    );
    let applied = "document.querySelectorAll('tr[data-reload=\"success\"]').length";
    assert_eq!(page.eval(applied).await, 1);

    // The charts draw the samples: after a tick with traffic, a line or a point.
    for _ in 0..20 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }
    let drawn = "document.querySelector('[data-chart=\"requests/s\"] svg polyline, [data-chart=\"requests/s\"] svg circle') !== null";
    page.until(
        Duration::from_secs(20),
        drawn,
        "a requests/s chart with samples",
    )
    .await;
}
