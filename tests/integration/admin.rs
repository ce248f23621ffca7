//! Admin API and reload reporting, in their own test process: the Prometheus recorder is
//! global, so counters are only exact where no other test reloads concurrently.

use crate::common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;

#[tokio::test]
async fn broken_config_is_refused_reported_and_counted_while_the_old_one_serves() {
    let first = spawn_backend("first").await;
    let second = spawn_backend("second").await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    let admin_section = "admin: {bind: 127.0.0.1:0}\nwatch: false\n";
    write_file(
        &path,
        &format!("{admin_section}{}", two_listeners(&[first.addr], "")),
    );
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let web = sluice.local_addr("web").unwrap();
    let admin = sluice.admin_addr().unwrap();

    write_file(
        &path,
        &format!(
            "{admin_section}{}",
            two_listeners(&[first.addr], "").replace("pool: app}", "pool: missing}")
        ),
    );
    let failures_before = reload_failures(admin).await;
    let response = admin_post(admin, "/reload").await;
    assert_status(&response, StatusCode::UNPROCESSABLE_ENTITY);
    let report: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let detail = report["detail"].as_str().unwrap();
    assert!(
        detail.contains("sluice.yaml:4:") && detail.contains("listeners.web.pool"),
        "{detail}"
    );
    assert_eq!(reload_failures(admin).await, failures_before + 1);
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    assert_eq!(status["last_reload"]["success"], false);
    assert_eq!(
        body_text(&get(web, "/").await),
        "backend first",
        "old config still serving"
    );

    write_file(
        &path,
        &format!("{admin_section}{}", two_listeners(&[second.addr], "")),
    );
    let response = admin_post(admin, "/reload").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&get(web, "/").await), "backend second");
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    assert_eq!(status["last_reload"]["success"], true);
    assert_eq!(
        status["pools"][0]["backends"][0]["address"],
        second.addr.to_string()
    );
    let metrics = body_text(&get(admin, "/metrics").await);
    let up = format!(
        "sluice_backend_up{{pool=\"app\",backend=\"{}\"}} 1",
        second.addr
    );
    assert!(metrics.contains(&up), "{up} in\n{metrics}");
    assert!(
        metrics.contains("sluice_pool_backends{pool=\"app\",state=\"healthy\"} 1"),
        "{metrics}"
    );
    // The total is a family of its own, not a value of the state label (issue 25).
    assert!(
        metrics.contains("sluice_pool_configured_backends{pool=\"app\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("state=\"total\""), "{metrics}");
    // Traffic moves the request metrics: responses by class, the duration histogram, and
    // listener connection counts.
    let responses = format!(
        "sluice_backend_responses_total{{pool=\"app\",backend=\"{}\",class=\"2xx\"}}",
        second.addr
    );
    let served: f64 = metrics
        .lines()
        .find(|l| l.starts_with(&responses))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{responses} in\n{metrics}"));
    assert!(served >= 1.0);
    assert!(
        metrics.contains(
            "sluice_http_request_duration_seconds_bucket{listener=\"web\",le=\"0.0005\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_listener_connections_total{listener=\"web\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_listener_active_connections{listener=\"web\"}"),
        "{metrics}"
    );
    let bytes_out: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sluice_listener_bytes_total{listener=\"web\",direction=\"out\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("bytes out in\n{metrics}"));
    assert!(bytes_out >= "backend second".len() as f64, "{bytes_out}");
}

async fn reload_failures(admin: SocketAddr) -> u64 {
    let metrics = body_text(&get(admin, "/metrics").await);
    metrics
        .lines()
        .find(|l| l.starts_with("sluice_config_reloads_total{result=\"failure\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in:\n{metrics}"))
}

#[tokio::test]
async fn admin_actions_need_the_token_when_one_is_configured() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let token_path = directory.path().join("admin.token");
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let path = directory.path().join("sluice.yaml");
    let text = format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0, token_file: '{}'}}\n{}",
        token_path.display(),
        two_listeners(&[backend.addr], "")
    );
    write_file(&path, &text);
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let admin = sluice.admin_addr().unwrap();
    let post = |token: Option<&'static str>| async move {
        let mut request = http::Request::post("/reload").header("host", "admin");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        send(
            admin,
            request
                .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
                .unwrap(),
        )
        .await
    };
    assert_status(&post(None).await, StatusCode::UNAUTHORIZED);
    assert_status(&post(Some("wrong")).await, StatusCode::UNAUTHORIZED);
    assert_status(&post(Some("s3cret-token")).await, StatusCode::OK);

    let config = get(admin, "/config").await;
    assert_status(&config, StatusCode::OK);
    assert_eq!(body_text(&config), text, "the running config, as loaded");
    let page = get(admin, "/").await;
    assert_status(&page, StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        body_text(&page).contains("fetch(\"/status\""),
        "the page reads /status"
    );
}

#[tokio::test]
async fn an_empty_token_file_is_refused() {
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let token_path = directory.path().join("admin.token");
    std::fs::write(&token_path, "\n").unwrap();
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0, token_file: '{}'}}\n{}",
        token_path.display(),
        two_listeners(&[backend.addr], "")
    );
    let error = sluice::Server::start(config(&yaml))
        .await
        .err()
        .expect("refused");
    // The cause is the error's source: rendered with it as every operator message is.
    let error = sluice::error::chain(&error);
    assert!(error.contains("is empty"), "{error}");
}

/// Every family `/metrics` shows (`sluice_*`, `process_*`) has its `# HELP` and `# TYPE` lines (issue 25), checked on a
/// scrape after traffic, so that the data-path families are there too.
#[tokio::test]
async fn every_metric_family_has_help_and_type() {
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\n{}",
        two_listeners(&[backend.addr], "")
    );
    let sluice = start_sluice(&yaml).await;
    let web = sluice.local_addr("web").unwrap();
    let admin = sluice.admin_addr().unwrap();
    for _ in 0..3 {
        assert_status(&get(web, "/").await, StatusCode::OK);
    }
    let text = body_text(&get(admin, "/metrics").await);
    let described = |prefix: &str| -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| {
                let (name, tail) = rest.split_once(' ')?;
                Some((name.to_owned(), tail.to_owned()))
            })
            .collect()
    };
    let helps = described("# HELP ");
    let types = described("# TYPE ");
    let mut families = std::collections::BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        families.insert(family.to_owned());
    }
    let ours: Vec<_> = families
        .iter()
        .filter(|f| f.starts_with("sluice_"))
        .collect();
    for expected in [
        "sluice_build_info",
        "sluice_listener_connections_total",
        "sluice_http_request_duration_seconds",
        "sluice_backend_responses_total",
        "sluice_pool_backends",
    ] {
        assert!(families.contains(expected), "{expected} in\n{text}");
    }
    for family in ours {
        let help = helps.get(family.as_str());
        assert!(
            help.is_some_and(|h| !h.trim().is_empty()),
            "no # HELP for {family} in\n{text}"
        );
        assert!(
            types.contains_key(family.as_str()),
            "no # TYPE for {family} in\n{text}"
        );
    }
    assert_eq!(
        types
            .get("sluice_http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        types
            .get("sluice_listener_connections_total")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        types.get("sluice_pool_backends").map(String::as_str),
        Some("gauge")
    );
}

/// The `process_*` families every Prometheus client ships, read from `/proc` at the scrape,
/// with values in range for this test process (issue 25).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn process_metrics_are_scraped_with_sane_values() {
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\n{}",
        two_listeners(&[backend.addr], "")
    );
    let sluice = start_sluice(&yaml).await;
    let admin = sluice.admin_addr().unwrap();
    let text = body_text(&get(admin, "/metrics").await);
    let value = |name: &str| -> f64 {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "HELP for {name} in\n{text}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    let cpu = value("process_cpu_seconds_total");
    // Ticks of 10 ms: a test run alone may not have used one yet.
    assert!((0.0..1e6).contains(&cpu), "{cpu}");
    let resident = value("process_resident_memory_bytes");
    assert!(resident > 1e6, "{resident}");
    assert!(value("process_virtual_memory_bytes") >= resident);
    let open = value("process_open_fds");
    // At least the listeners, the admin socket and the scrape's own connection.
    assert!(open >= 3.0, "{open}");
    let max = value("process_max_fds");
    assert!(max >= open, "{max} >= {open}");
    let start = value("process_start_time_seconds");
    #[allow(clippy::disallowed_types)] // the wall clock is what the metric is compared with
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 24.0 * 3600.0,
        "started {start}, now {now}"
    );
}

/// A reload that moves many backends is reported and kept as a bounded summary (issue #27):
/// counts per kind, the first 50 lines, "... and K more"; not one line per backend.
#[tokio::test]
async fn a_reload_moving_many_backends_is_reported_as_a_bounded_summary() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    // Documentation addresses (TEST-NET-1): never dialled by this test.
    let config = |third: u8| {
        let backends: Vec<String> = (1..=200)
            .map(|i| format!("192.0.{third}.{}:80", i))
            .collect();
        format!(
            "admin: {{bind: 127.0.0.1:0}}\nwatch: false\nlisteners:\n  web: {{bind: '127.0.0.1:0', pool: app}}\npools:\n  app:\n    backends: [{}]\n",
            backends.join(", ")
        )
    };
    write_file(&path, &config(2));
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let admin = sluice.admin_addr().unwrap();

    write_file(&path, &config(3));
    let response = admin_post(admin, "/reload").await;
    assert_status(&response, StatusCode::OK);
    let report: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let detail = report["detail"].as_str().unwrap();
    let lines: Vec<&str> = detail.lines().collect();
    assert_eq!(
        lines[0], "400 changes (backends added: 200, backends removed: 200)",
        "{detail}"
    );
    assert_eq!(lines.len(), 52, "{detail}");
    assert_eq!(
        lines[51], "... and 350 more (the full plan is logged at debug level)",
        "{detail}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    let history = status["reload_history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["detail"].as_str(), Some(detail));
    assert_eq!(status["last_reload"]["detail"].as_str(), Some(detail));
}
