//! Certificates that rotate without a reload: the files rewritten in place, renamed over,
//! swapped by a Kubernetes `..data` symlink, the key written before the certificate; and the
//! pairs that must not be served (a key that does not fit, an expired certificate), where the
//! last good certificate keeps serving and `/status` and `/metrics` say why. Each test waits
//! for the certificate a real TLS client is presented, with a deadline.

use crate::common::tls::*;
use crate::common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn config(cert: &Path, key: &Path, backend: SocketAddr) -> String {
    format!(
        "watch: false\nadmin: {{bind: 127.0.0.1:0}}\nlisteners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n    tls:\n      certificates:\n        - {{cert: '{}', key: '{}'}}\npools:\n  app:\n    backends: [{backend}]\n",
        cert.display(),
        key.display()
    )
}

/// The DER of the certificate a fresh handshake is presented.
async fn served(addr: SocketAddr) -> Vec<u8> {
    presented(&connect_tls(addr, "a.example.com", &[]).await.unwrap())
}

async fn until_served(addr: SocketAddr, der: &[u8]) -> bool {
    wait_until_async(DEADLINE, || async { served(addr).await == der }).await
}

/// The `certificates` entry of listener `https` in `/status`.
async fn cert_status(admin: SocketAddr) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    let listeners = status["listeners"].as_array().unwrap();
    let https = listeners.iter().find(|l| l["name"] == "https").unwrap();
    https["certificates"][0].clone()
}

async fn until_problem(admin: SocketAddr, needle: &str) -> serde_json::Value {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = cert_status(admin).await;
        if status["problem"]
            .as_str()
            .is_some_and(|p| p.contains(needle))
        {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no problem naming {needle:?} in {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    sluice: sluice::Server,
    addr: SocketAddr,
    admin: SocketAddr,
    first: PemPair,
}

/// Sluice serving `first` from `dir/tls.crt` and `dir/tls.key` (paths as given by `paths`).
async fn setup(link: bool) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let first = pem_pair(&["a.example.com"], false);
    if link {
        // What the kubelet writes for a secret volume.
        std::fs::create_dir(dir.join("..2026_01")).unwrap();
        std::fs::write(dir.join("..2026_01/tls.crt"), &first.cert).unwrap();
        std::fs::write(dir.join("..2026_01/tls.key"), &first.key).unwrap();
        std::os::unix::fs::symlink("..2026_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
    } else {
        std::fs::write(dir.join("tls.crt"), &first.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &first.key).unwrap();
    }
    let backend = spawn_backend("app").await;
    let sluice = start_sluice(&config(
        &dir.join("tls.crt"),
        &dir.join("tls.key"),
        backend.addr,
    ))
    .await;
    let addr = sluice.local_addr("https").unwrap();
    let admin = sluice.admin_addr().unwrap();
    assert_eq!(served(addr).await, first.der);
    Setup {
        _dir: tmp,
        dir,
        sluice,
        addr,
        admin,
        first,
    }
}

#[tokio::test]
async fn a_pair_rewritten_in_place_is_served_without_a_reload() {
    let s = setup(false).await;
    let next = pem_pair(&["a.example.com"], false);
    // certbot's order: the certificate, then the key, each truncated and rewritten.
    std::fs::write(s.dir.join("tls.crt"), &next.cert).unwrap();
    std::fs::write(s.dir.join("tls.key"), &next.key).unwrap();
    assert!(
        until_served(s.addr, &next.der).await,
        "the new certificate is served"
    );
    let status = cert_status(s.admin).await;
    assert!(status["problem"].is_null(), "{status}");
    assert!(status["rotated_at"].as_f64().is_some(), "{status}");
    let metrics = body_text(&get(s.admin, "/metrics").await);
    assert!(
        metrics.contains(
            "sluice_tls_certificate_rotations_total{listener=\"https\",result=\"rotated\"} 1"
        ),
        "{metrics}"
    );
    drop(s.sluice);
}

#[tokio::test]
async fn a_pair_renamed_over_is_served() {
    let s = setup(false).await;
    let next = pem_pair(&["a.example.com"], false);
    std::fs::write(s.dir.join("tls.key.new"), &next.key).unwrap();
    std::fs::write(s.dir.join("tls.crt.new"), &next.cert).unwrap();
    std::fs::rename(s.dir.join("tls.key.new"), s.dir.join("tls.key")).unwrap();
    std::fs::rename(s.dir.join("tls.crt.new"), s.dir.join("tls.crt")).unwrap();
    assert!(until_served(s.addr, &next.der).await);
}

#[tokio::test]
async fn a_kubernetes_data_symlink_swap_is_served() {
    let s = setup(true).await;
    let next = pem_pair(&["a.example.com"], false);
    let d = &s.dir;
    std::fs::create_dir(d.join("..2026_02")).unwrap();
    std::fs::write(d.join("..2026_02/tls.crt"), &next.cert).unwrap();
    std::fs::write(d.join("..2026_02/tls.key"), &next.key).unwrap();
    std::os::unix::fs::symlink("..2026_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_01")).unwrap();
    assert!(until_served(s.addr, &next.der).await);
    let status = cert_status(s.admin).await;
    assert!(status["problem"].is_null(), "{status}");
}

#[tokio::test]
async fn a_key_written_before_its_certificate_keeps_the_old_pair_until_both_are_there() {
    let s = setup(false).await;
    let next = pem_pair(&["a.example.com"], false);
    std::fs::write(s.dir.join("tls.key"), &next.key).unwrap();
    // The new key does not fit the old certificate: handshakes meanwhile get the old pair,
    // never a half-changed one.
    for _ in 0..5 {
        assert_eq!(served(s.addr).await, s.first.der, "the old pair serves");
    }
    std::fs::write(s.dir.join("tls.crt"), &next.cert).unwrap();
    assert!(until_served(s.addr, &next.der).await);
    let status = cert_status(s.admin).await;
    assert!(
        status["problem"].is_null(),
        "complete in time: nothing to report: {status}"
    );
}

#[tokio::test]
async fn a_key_that_does_not_fit_is_refused_and_the_old_pair_keeps_serving() {
    let s = setup(false).await;
    let a = pem_pair(&["a.example.com"], false);
    let b = pem_pair(&["a.example.com"], false);
    std::fs::write(s.dir.join("tls.crt"), &a.cert).unwrap();
    std::fs::write(s.dir.join("tls.key"), &b.key).unwrap();
    let status = until_problem(s.admin, "does not fit").await;
    assert_eq!(
        served(s.addr).await,
        s.first.der,
        "the last good pair serves"
    );
    assert!(status["problem_since"].as_f64().is_some());
    let metrics = body_text(&get(s.admin, "/metrics").await);
    assert!(
        metrics.contains(&format!(
            "sluice_tls_certificate_stale{{listener=\"https\",cert=\"{}\"}} 1",
            s.dir.join("tls.crt").display()
        )),
        "{metrics}"
    );
    // Fixed: served, and the problem is gone.
    std::fs::write(s.dir.join("tls.key"), &a.key).unwrap();
    assert!(until_served(s.addr, &a.der).await);
    assert!(cert_status(s.admin).await["problem"].is_null());
}

#[tokio::test]
async fn an_expired_certificate_is_refused_and_the_old_pair_keeps_serving() {
    let s = setup(false).await;
    let old = pem_pair(&["a.example.com"], true);
    std::fs::write(s.dir.join("tls.crt"), &old.cert).unwrap();
    std::fs::write(s.dir.join("tls.key"), &old.key).unwrap();
    until_problem(s.admin, "expired").await;
    assert_eq!(served(s.addr).await, s.first.der);
}

#[tokio::test]
async fn expiry_is_in_status_and_metrics() {
    let s = setup(false).await;
    let status = cert_status(s.admin).await;
    let expires = status["expires_at"].as_i64().unwrap();
    assert!(
        expires > 4_000_000_000,
        "rcgen's default notAfter is 4096: {status}"
    );
    assert_eq!(status["names"][0], "a.example.com");
    let metrics = body_text(&get(s.admin, "/metrics").await);
    let line = format!(
        "sluice_tls_certificate_expiry_timestamp_seconds{{listener=\"https\",name=\"a.example.com\",cert=\"{}\"}} {expires}",
        s.dir.join("tls.crt").display()
    );
    assert!(metrics.contains(&line), "{line} in {metrics}");
    assert!(metrics.contains("# HELP sluice_tls_certificate_expiry_timestamp_seconds"));
}

/// `sluice check` warns about a certificate that expires within 14 days (and one already
/// expired) and still says the config is valid.
#[test]
fn check_warns_about_a_certificate_close_to_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let soon = {
        let mut params = rcgen::CertificateParams::new(vec!["soon.test".to_owned()]).unwrap();
        // Ten days from now, in whole days from the Unix epoch (rcgen takes a date).
        #[allow(clippy::disallowed_types)] // a date for a certificate, not a duration
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        params.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now / 86_400 + 10) * 86_400);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let far = pem_pair(&["far.test"], false);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (soon_cert, soon_key) = (write("soon.pem", &soon.0), write("soon.key", &soon.1));
    let (far_cert, far_key) = (write("far.pem", &far.cert), write("far.key", &far.key));
    let config = write(
        "sluice.yaml",
        &format!(
            "listeners:\n  https:\n    bind: 127.0.0.1:0\n    pool: app\n    tls:\n      certificates:\n        - {{cert: '{}', key: '{}'}}\n        - {{cert: '{}', key: '{}'}}\npools:\n  app: {{backends: [127.0.0.1:9]}}\n",
            far_cert.display(),
            far_key.display(),
            soon_cert.display(),
            soon_key.display()
        ),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expected = format!(
        "sluice: warning: listeners.https.tls.certificates[1] ({}): TLS certificate expires in ",
        soon_cert.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("certificates[0]"), "{stderr}");
}
