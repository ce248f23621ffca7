//! The `etcd` discovery source: every key `{prefix}IP:PORT` is a backend; its value is empty
//! or `{"weight": N}` (optionally `"max_connections": N`).
//!
//! One get of the prefix, then a watch from the next revision, so no change between the two
//! is lost. When the connection breaks, the task reconnects with a backoff (100 ms doubling to
//! 2 s) and resumes the watch from the last revision it saw; when etcd answers that the
//! revision was compacted away, it lists the prefix again. Meanwhile the last known set
//! stays: an unreachable registry never empties a pool. A backend registered with a lease
//! disappears when the lease expires (etcd deletes the key and the watch reports it).

use super::Publisher;
use crate::config::discovery::EtcdSource;
use crate::config::{BackendConfig, MAX_WEIGHT};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The set as of `revision`, keyed by etcd key.
struct Mirror {
    entries: BTreeMap<String, BackendConfig>,
    /// `None` until a list succeeded, and again after a compaction: list before watching.
    revision: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Value {
    weight: Option<u32>,
    max_connections: Option<u32>,
}

pub async fn run(source: EtcdSource, publisher: Publisher, stop: CancellationToken) {
    let mut mirror = Mirror {
        entries: BTreeMap::new(),
        revision: None,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let session = follow(&source, &publisher, &mut mirror, &mut backoff);
        let error = tokio::select! {
            error = session => error,
            () = stop.cancelled() => return,
        };
        publisher.fail(&error);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: list if needed, then watch until something fails. Returns the failure.
async fn follow(
    source: &EtcdSource,
    publisher: &Publisher,
    mirror: &mut Mirror,
    backoff: &mut Duration,
) -> String {
    let options = ConnectOptions::new()
        .with_connect_timeout(source.timeout)
        .with_keep_alive(Duration::from_secs(5), source.timeout);
    let mut client = match Client::connect(&source.endpoints, Some(options)).await {
        Ok(client) => client,
        Err(error) => return format!("cannot connect: {error}"),
    };
    loop {
        if mirror.revision.is_none() {
            let listing = client.get(
                source.prefix.as_str(),
                Some(GetOptions::new().with_prefix()),
            );
            let response = match tokio::time::timeout(source.timeout, listing).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return format!("list {}: {error}", source.prefix),
                Err(_) => {
                    return format!("list {}: no answer in {:?}", source.prefix, source.timeout);
                }
            };
            mirror.entries.clear();
            let mut problems = Vec::new();
            for kv in response.kvs() {
                match entry(&source.prefix, kv) {
                    Ok((key, backend)) => {
                        mirror.entries.insert(key, backend);
                    }
                    Err(problem) => problems.push(problem),
                }
            }
            mirror.revision = Some(response.header().map_or(0, |h| h.revision()));
            publish(publisher, mirror, &problems);
        }
        let start = mirror.revision.unwrap_or(0) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = match client.watch(source.prefix.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(error) => return format!("watch {}: {error}", source.prefix),
        };
        *backoff = BACKOFF_MIN;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return "watch stream ended".into(),
                Err(error) => return format!("watch {}: {error}", source.prefix),
            };
            if response.compact_revision() > 0 {
                // The revision we resume from is gone: list again, then watch from there.
                mirror.revision = None;
                break;
            }
            if response.canceled() {
                return format!("watch canceled: {}", response.cancel_reason());
            }
            let mut problems = Vec::new();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                mirror.revision = Some(mirror.revision.unwrap_or(0).max(kv.mod_revision()));
                match event.event_type() {
                    EventType::Put => match entry(&source.prefix, kv) {
                        Ok((key, backend)) => {
                            mirror.entries.insert(key, backend);
                        }
                        Err(problem) => {
                            // A key rewritten with a bad value no longer counts.
                            mirror
                                .entries
                                .remove(&String::from_utf8_lossy(kv.key()).into_owned());
                            problems.push(problem);
                        }
                    },
                    EventType::Delete => {
                        mirror
                            .entries
                            .remove(&String::from_utf8_lossy(kv.key()).into_owned());
                    }
                }
            }
            if !response.events().is_empty() {
                publish(publisher, mirror, &problems);
            }
        }
    }
}

fn publish(publisher: &Publisher, mirror: &Mirror, problems: &[String]) {
    publisher.publish(mirror.entries.values().cloned().collect());
    // Bad keys are skipped, not fatal: report them after the good ones went out.
    if !problems.is_empty() {
        publisher.fail(&problems.join("; "));
    }
}

/// Parses one key-value pair into `(key, backend)`.
fn entry(prefix: &str, kv: &KeyValue) -> Result<(String, BackendConfig), String> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let address_text = key.strip_prefix(prefix).unwrap_or(&key);
    let address: crate::config::BackendAddress = address_text
        .parse()
        .map_err(|_| format!("key {key:?}: expected {prefix}IP:PORT or {prefix}unix:/PATH"))?;
    let value = String::from_utf8_lossy(kv.value());
    let value = value.trim();
    let parsed = if value.is_empty() {
        Value {
            weight: None,
            max_connections: None,
        }
    } else {
        serde_json::from_str::<Value>(value)
            .map_err(|error| format!("key {key:?}: value {value:?}: {error}"))?
    };
    let weight = parsed.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(format!("key {key:?}: weight {weight} over {MAX_WEIGHT}"));
    }
    Ok((
        key,
        BackendConfig {
            address,
            weight,
            max_connections: parsed.max_connections.filter(|&n| n > 0),
        },
    ))
}
