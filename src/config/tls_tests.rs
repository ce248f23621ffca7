//! Validation of `tls:`, `match.sni` routes and `unix:` binds, with real certificate files
//! made by rcgen in a temporary directory.

use super::*;
use std::path::PathBuf;

/// Writes a self-signed certificate for `names` and its key; returns (cert, key) paths.
fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn tls_config(pairs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let list: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "        - {{cert: {}, key: {}}}\n",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "listeners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n    tls:\n      certificates:\n{}{extra}pools:\n  app:\n    backends: [127.0.0.1:9001]\n",
        list.concat()
    )
}

#[test]
fn certificates_load_and_defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let b = write_cert(dir.path(), "b", &["*.example.org"]);
    let config = Config::parse(&tls_config(&[a.clone(), b.clone()], ""), "t.yaml").unwrap();
    let tls = config.listeners["https"].tls.as_ref().unwrap();
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.default_certificate, 0);
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert_eq!(tls.min_version, crate::tls::TlsVersion::V1_2);
    assert_eq!(
        tls.server_config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let extra = "      default_certificate: x.example.org\n      min_version: \"1.3\"\n      alpn: [http/1.1]\n";
    let config = Config::parse(&tls_config(&[a, b], extra), "t.yaml").unwrap();
    let tls = config.listeners["https"].tls.as_ref().unwrap();
    assert_eq!(
        tls.default_certificate, 1,
        "chosen by a name the wildcard covers"
    );
    assert_eq!(tls.min_version, crate::tls::TlsVersion::V1_3);
    assert_eq!(tls.alpn, ["http/1.1"]);
}

#[test]
fn missing_and_mismatched_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let b = write_cert(dir.path(), "b", &["b.example.com"]);
    let missing = (a.0.clone(), dir.path().join("nope.key"));
    let error = Config::parse(&tls_config(&[a.clone(), missing], ""), "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.certificates[1].key");
    assert!(error.message.contains("cannot read"), "{error}");
    assert!(error.position.is_some(), "{error}");

    let crossed = (a.0.clone(), b.1.clone());
    let error = Config::parse(&tls_config(&[crossed], ""), "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.certificates[0].key");
    assert!(error.message.contains("does not fit"), "{error}");

    let not_pem = (b.1.clone(), b.1.clone());
    let error = Config::parse(&tls_config(&[not_pem], ""), "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.certificates[0].cert");

    let error = Config::parse(
        &tls_config(std::slice::from_ref(&a), "      min_version: \"1.1\"\n"),
        "t.yaml",
    )
    .unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.min_version");
    let error = Config::parse(
        &tls_config(
            std::slice::from_ref(&a),
            "      default_certificate: z.test\n",
        ),
        "t.yaml",
    )
    .unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.default_certificate");
    let error = Config::parse(&tls_config(&[a], "      alpn: [spdy]\n"), "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.https.tls.alpn");
}

#[test]
fn rewritten_certificate_content_is_a_listener_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let text = tls_config(std::slice::from_ref(&a), "");
    let before = Config::parse(&text, "t.yaml").unwrap();
    assert!(diff::diff(&before, &Config::parse(&text, "t.yaml").unwrap()).is_empty());
    write_cert(dir.path(), "a", &["a.example.com"]);
    let after = Config::parse(&text, "t.yaml").unwrap();
    let plan = diff::diff(&before, &after);
    assert_eq!(plan.listeners_changed, ["https"], "changed, not re-bound");
    assert!(plan.listeners_rebound.is_empty());
}

const TCP: &str = "listeners:\n  pass:\n    bind: 127.0.0.1:0\n    protocol: tcp\n    routes:\n      - match: {sni: API.example.com}\n        pool: app\n      - match: {sni: '*.example.com'}\n        pool: app\npools:\n  app:\n    backends: [127.0.0.1:9001]\n";

#[test]
fn sni_routes_only_on_tcp_listeners() {
    let config = Config::parse(TCP, "t.yaml").unwrap();
    let pass = &config.listeners["pass"];
    assert_eq!(pass.sni_routes.len(), 2);
    assert_eq!(
        pass.sni_routes[0].sni,
        HostPattern::Exact("api.example.com".into())
    );
    assert!(
        pass.pool.is_none(),
        "no default: unmatched connections are closed"
    );

    let http = TCP.replace("protocol: tcp", "protocol: http");
    let error = Config::parse(&http, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.pass.routes[0].match.sni");
    assert!(error.message.contains("protocol: tcp"), "{error}");

    let mixed = TCP.replace("{sni: API.example.com}", "{sni: a.test, path: /x}");
    let error = Config::parse(&mixed, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.pass.routes[0]");

    let bad = TCP.replace("API.example.com", "a..b");
    let error = Config::parse(&bad, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.pass.routes[0].match.sni");
}

#[test]
fn tls_on_a_tcp_listener_is_refused() {
    let text = TCP.replace(
        "    routes:\n",
        "    tls: {certificates: [{cert: /a, key: /b}]}\n    routes:\n",
    );
    let error = Config::parse(&text, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.pass.tls");
}

#[test]
fn unix_binds_and_modes() {
    let text = "listeners:\n  local:\n    bind: unix:/run/sluice/http.sock\n    mode: \"0660\"\n    pool: app\n  twin:\n    bind: unix:/run/sluice/http.sock\n    pool: app\npools:\n  app:\n    backends: [127.0.0.1:9001]\n";
    let error = Config::parse(text, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.twin.bind", "same path twice");
    let single = text.replace(
        "unix:/run/sluice/http.sock\n    pool: app\npools",
        "unix:/run/other.sock\n    pool: app\npools",
    );
    let config = Config::parse(&single, "t.yaml").unwrap();
    let local = &config.listeners["local"];
    assert_eq!(local.bind, BindAddr::Unix("/run/sluice/http.sock".into()));
    assert_eq!(local.unix_mode, Some(0o660));
    let tcp_mode = single.replace("unix:/run/sluice/http.sock", "127.0.0.1:0");
    let error = Config::parse(&tcp_mode, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.local.mode");
}

#[test]
fn client_auth_loads_and_refusals_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    // A self-signed certificate serves as its own CA bundle here.
    let ca = a.0.display().to_string();
    let with = |auth: &str| {
        tls_config(
            std::slice::from_ref(&a),
            &format!("      client_auth: {auth}\n"),
        )
    };
    let config = Config::parse(&with(&format!("{{ca: '{ca}'}}")), "t.yaml").unwrap();
    let auth = config.listeners["https"]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .clone()
        .unwrap();
    assert!(auth.required, "required unless said otherwise");
    assert_eq!(auth.header, "x-forwarded-client-cert");
    let text = with(&format!(
        "{{ca: '{ca}', mode: optional, header: x-client-cert}}"
    ));
    let auth = Config::parse(&text, "t.yaml").unwrap().listeners["https"]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .clone()
        .unwrap();
    assert!(!auth.required);
    assert_eq!(auth.header, "x-client-cert");

    let refused = |auth: String| Config::parse(&with(&auth), "t.yaml").unwrap_err().path;
    assert_eq!(
        refused(format!("{{ca: '{ca}', mode: maybe}}")),
        "listeners.https.tls.client_auth.mode"
    );
    assert_eq!(
        refused("{ca: /nonexistent.pem}".into()),
        "listeners.https.tls.client_auth.ca"
    );
    assert_eq!(
        refused(format!("{{ca: '{ca}', crl: /nonexistent.crl}}")),
        "listeners.https.tls.client_auth.crl"
    );
    assert_eq!(
        refused(format!("{{ca: '{ca}', header: 'bad header'}}")),
        "listeners.https.tls.client_auth.header"
    );
}

#[test]
fn client_cert_routes_need_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.example.com"]);
    let routes =
        "    routes:\n      - match: {client_cert: {san: spiffe://x/y}}\n        pool: app\n";
    let text = tls_config(std::slice::from_ref(&a), "")
        .replace("    tls:\n", &format!("{routes}    tls:\n"));
    let error = Config::parse(&text, "t.yaml").unwrap_err();
    assert_eq!(error.path, "listeners.https.routes[0].match.client_cert");
    let ok = text.replace(
        "pools:\n",
        &format!("      client_auth: {{ca: '{}'}}\npools:\n", a.0.display()),
    );
    let config = Config::parse(&ok, "t.yaml").unwrap();
    let matcher = &config.listeners["https"].routes[0].matcher;
    assert_eq!(
        matcher.client_cert,
        Some(crate::config::tls::ClientCertMatch {
            present: true,
            san: Some("spiffe://x/y".into())
        })
    );
    let bad = ok.replace("{san: spiffe://x/y}", "{present: false, san: x}");
    assert_eq!(
        Config::parse(&bad, "t.yaml").unwrap_err().path,
        "listeners.https.routes[0].match.client_cert"
    );
}
