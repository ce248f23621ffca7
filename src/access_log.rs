//! Access logs: one line per HTTP request, nginx `combined` (so goaccess and friends read it)
//! or JSON, to stdout or a file, written by a background task so the data path never blocks
//! on I/O. Lines go through a bounded channel; when the writer falls behind, lines are dropped
//! and counted (`sluice_access_log_dropped_total`) rather than slowing requests down.
//!
//! Writers are process-wide, one per destination, so several listeners can share a file and a
//! reload keeps it open; SIGUSR1 reopens every file (logrotate's `postrotate`).
//!
//! A line's `time` is wall-clock (`SystemTime`), the one module allowed it throughout (see
//! `clock`): a log timestamp is read by people, never used to measure time passing.

#![allow(clippy::disallowed_types)]

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

const CHANNEL_LINES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Combined,
    Json,
}

/// Everything one line says about one request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    #[serde(skip)]
    pub time: SystemTime,
    pub ts: String,
    /// The client's IP, or `unix:` for a unix socket client without a PROXY header.
    pub client_ip: String,
    pub listener: Arc<str>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub proto: &'static str,
    pub status: u16,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub pool: Option<Arc<str>>,
    pub upstream_addr: Option<crate::config::BackendAddress>,
    pub request_id: String,
    pub user_agent: String,
    pub referer: String,
    /// `TLSv1.2` / `TLSv1.3` on TLS listeners (JSON format only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    /// The server name the TLS client asked for (JSON format only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The subject of the client's verified certificate (`tls.client_auth`; JSON format
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_subject: Option<String>,
    /// Why the request failed by its client's doing (`client aborted`, `malformed request
    /// body`...), JSON format only; the status says it too (499 for an aborted client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Set when the request left a backend that stopped answering and was sent to another
    /// (`upstream_addr`): from where, after how long, and why (JSON format only), e.g.
    /// `from 10.0.0.2:8080 after 612 ms: an active check of the backend timed out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<String>,
    /// The edge rule that refused the request (`rate_limited by login`), or that would have
    /// in a dry run (`dry run: access_denied by office`). Combined format: a quoted field
    /// after the user agent, on those lines only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Record {
    pub fn line(&self, format: Format) -> String {
        match format {
            Format::Combined => {
                // nginx: $remote_addr - $remote_user [$time_local] "$request" $status
                // $body_bytes_sent "$http_referer" "$http_user_agent"
                let mut line = format!(
                    "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                    self.client_ip,
                    clf_time(self.time),
                    self.method,
                    escape(&self.path),
                    self.proto,
                    self.status,
                    self.bytes_out,
                    escape_or_dash(&self.referer),
                    escape_or_dash(&self.user_agent),
                );
                // The refusing edge rule goes after everything combined defines, quoted, as
                // nginx's own `main` format adds "$http_x_forwarded_for": goaccess, awk on
                // the quotes and the usual combined patterns read the line as before. Only
                // on refused lines, so every other line stays nginx's byte for byte.
                if let Some(refused) = &self.refused {
                    line.push_str(" \"");
                    line.push_str(&escape(refused));
                    line.push('"');
                }
                line
            }
            Format::Json => serde_json::to_string(self).unwrap_or_default(),
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn escape_or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        escape(text)
    }
}

/// `24/Nov/2026:16:08:47 +0000` (UTC).
pub fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, hour, minute, second, _) = civil(time);
    format!(
        "{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000",
        MONTHS[month as usize - 1]
    )
}

/// RFC 3339 with milliseconds, UTC: `2026-11-24T16:08:47.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let (year, month, day, hour, minute, second, millis) = civil(time);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Calendar fields of a UTC time (Howard Hinnant's days-to-civil algorithm).
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rest / 3600) as u32,
        (rest % 3600 / 60) as u32,
        (rest % 60) as u32,
        since.subsec_millis(),
    )
}

/// One destination: a bounded queue of lines and the task that writes them.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::Sender<String>,
    dropped: AtomicU64,
    reopen: Arc<Notify>,
}

impl Sink {
    pub fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED_TOTAL).increment(1);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn sinks() -> &'static Mutex<HashMap<String, Arc<Sink>>> {
    // Process-wide on purpose: one writer per file, shared by listeners and kept across reloads.
    static SINKS: OnceLock<Mutex<HashMap<String, Arc<Sink>>>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

/// The writer for `path` (`stdout` or a file path), started on first use.
pub fn sink(path: &str) -> Arc<Sink> {
    let mut sinks = sinks().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(sink) = sinks.get(path) {
        return Arc::clone(sink);
    }
    let (tx, rx) = mpsc::channel(CHANNEL_LINES);
    let reopen = Arc::new(Notify::new());
    tokio::spawn(write_lines(path.to_owned(), rx, Arc::clone(&reopen)));
    let sink = Arc::new(Sink {
        tx,
        dropped: AtomicU64::new(0),
        reopen,
    });
    sinks.insert(path.to_owned(), Arc::clone(&sink));
    sink
}

/// SIGUSR1: every file writer closes and reopens its file (after logrotate moved it).
pub fn reopen_all() {
    let sinks = sinks().lock().unwrap_or_else(|p| p.into_inner());
    for sink in sinks.values() {
        sink.reopen.notify_one();
    }
}

/// Whether the writer could open `path` for appending, creating it if needed, without
/// changing anything: an existing file must open for appending; otherwise its directory must
/// exist and be writable (`access(2)`, so a read-only mount counts too). `sluice check` runs
/// it on every access log file (`config::check_access_log_files`); the `Err` says why not.
pub fn check_writable(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => return Err("is a directory, not a file".into()),
        Ok(_) => {
            return std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(drop)
                .map_err(|error| format!("cannot open the file for appending: {error}"));
        }
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read the file: {error}"));
        }
        Err(_) => {}
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(directory) {
        Ok(metadata) if metadata.is_dir() => {
            rustix::fs::access(directory, rustix::fs::Access::WRITE_OK).map_err(|error| {
                format!(
                    "cannot create the file: directory {} is not writable ({})",
                    directory.display(),
                    std::io::Error::from(error)
                )
            })
        }
        Ok(_) => Err(format!(
            "cannot create the file: {} is not a directory",
            directory.display()
        )),
        Err(error) => Err(format!(
            "cannot create the file: directory {}: {error}",
            directory.display()
        )),
    }
}

enum Output {
    Stdout(tokio::io::Stdout),
    File(tokio::fs::File),
}

async fn open(path: &str) -> Option<Output> {
    if path == "stdout" {
        return Some(Output::Stdout(tokio::io::stdout()));
    }
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        Ok(file) => Some(Output::File(file)),
        Err(error) => {
            warn!(path, %error, "cannot open the access log; lines are dropped until SIGUSR1");
            None
        }
    }
}

async fn write_lines(path: String, mut rx: mpsc::Receiver<String>, reopen: Arc<Notify>) {
    let mut output = open(&path).await;
    let mut batch = String::new();
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { return };
                batch.push_str(&line);
                batch.push('\n');
                // Take whatever else is queued, then write once.
                while let Ok(line) = rx.try_recv() {
                    batch.push_str(&line);
                    batch.push('\n');
                    if batch.len() > 64 * 1024 {
                        break;
                    }
                }
                let result = match &mut output {
                    Some(Output::Stdout(out)) => out.write_all(batch.as_bytes()).await.and(out.flush().await),
                    Some(Output::File(file)) => file.write_all(batch.as_bytes()).await,
                    None => Ok(()),
                };
                if let Err(error) = result {
                    warn!(path, %error, "access log write failed");
                }
                batch.clear();
            }
            () = reopen.notified() => {
                if path != "stdout" {
                    output = open(&path).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_writable_needs_an_existing_writable_directory() {
        let directory = tempfile::tempdir().unwrap();
        let new_file = directory.path().join("access.log");
        assert_eq!(check_writable(&new_file), Ok(()));
        std::fs::write(&new_file, "old line\n").unwrap();
        assert_eq!(check_writable(&new_file), Ok(()));
        assert_eq!(std::fs::read_to_string(&new_file).unwrap(), "old line\n");
        let missing = directory.path().join("nope").join("access.log");
        let error = check_writable(&missing).unwrap_err();
        assert!(
            error.starts_with("cannot create the file: directory ") && error.contains("nope"),
            "{error}"
        );
        assert_eq!(
            check_writable(directory.path()),
            Err("is a directory, not a file".into())
        );
        let under_a_file = new_file.join("access.log");
        let error = check_writable(&under_a_file).unwrap_err();
        assert!(error.contains("Not a directory"), "{error}");
    }

    fn record() -> Record {
        let time = UNIX_EPOCH + Duration::from_millis(1_795_968_527_123);
        Record {
            time,
            ts: rfc3339(time),
            client_ip: "192.0.2.7".into(),
            tls_version: None,
            sni: None,
            client_subject: None,
            error: None,
            moved: None,
            refused: None,
            listener: Arc::from("web"),
            method: "GET".into(),
            host: "shop.example".into(),
            path: "/cart?id=\"7\"".into(),
            proto: "HTTP/1.1",
            status: 200,
            bytes_out: 512,
            duration_ms: 1.5,
            pool: Some(Arc::from("app")),
            upstream_addr: Some("10.0.0.1:80".parse().unwrap()),
            request_id: "abc".into(),
            user_agent: "curl/8.0".into(),
            referer: String::new(),
        }
    }

    #[test]
    fn combined_matches_nginx_byte_for_byte() {
        assert_eq!(
            record().line(Format::Combined),
            r#"192.0.2.7 - - [29/Nov/2026:16:08:47 +0000] "GET /cart?id=\"7\" HTTP/1.1" 200 512 "-" "curl/8.0""#
        );
    }

    #[test]
    fn combined_names_the_refusing_rule_in_a_trailing_field() {
        let refused = Record {
            status: 429,
            refused: Some("rate_limited by login".into()),
            ..record()
        };
        let line = refused.line(Format::Combined);
        assert_eq!(
            line,
            r#"192.0.2.7 - - [29/Nov/2026:16:08:47 +0000] "GET /cart?id=\"7\" HTTP/1.1" 429 512 "-" "curl/8.0" "rate_limited by login""#
        );
        // What combined defines is unchanged: the line starts as an unrefused one would.
        let plain = Record {
            status: 429,
            ..record()
        }
        .line(Format::Combined);
        assert!(line.starts_with(&format!("{plain} ")), "{line}");
        // A quote in a rule name cannot end the field early.
        let odd = Record {
            refused: Some("dry run: access_denied by \"x\"".into()),
            ..record()
        };
        assert!(
            odd.line(Format::Combined)
                .ends_with(r#" "dry run: access_denied by \"x\"""#)
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let value: serde_json::Value = serde_json::from_str(&record().line(Format::Json)).unwrap();
        assert_eq!(value["ts"], "2026-11-29T16:08:47.123Z");
        assert_eq!(value["status"], 200);
        assert_eq!(value["upstream_addr"], "10.0.0.1:80");
        assert_eq!(value["pool"], "app");
        assert_eq!(value["request_id"], "abc");
        assert!(value.get("moved").is_none(), "absent unless moved");
        let moved = Record {
            moved: Some("from 10.0.0.2:80 after 600 ms: an active check timed out".into()),
            ..record()
        };
        let value: serde_json::Value = serde_json::from_str(&moved.line(Format::Json)).unwrap();
        assert_eq!(
            value["moved"],
            "from 10.0.0.2:80 after 600 ms: an active check timed out"
        );
    }

    #[test]
    fn civil_dates_cross_leap_years() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
    }
}
