//! The `etcd` discovery source: every key `{prefix}IP:PORT` is a backend; its value is empty
//! or `{"weight": N}` (optionally `"max_connections": N`).
//!
//! One get of the prefix, then a watch from the next revision, so no change between the two
//! is lost. When the connection breaks, the task reconnects with a backoff (100 ms doubling to
//! 2 s) and resumes the watch from the last revision it saw; when etcd answers that the
//! revision was compacted away, it lists the prefix again. Meanwhile the last known set
//! stays: an unreachable registry never empties a pool. A backend registered with a lease
//! disappears when the lease expires (etcd deletes the key and the watch reports it).
//! Speaks etcd's JSON gateway through `etcd_gateway/` (why not gRPC: see there).
//!
//! Watch answers that have already arrived are folded into one publish (at most
//! `MAX_FOLDED`): a burst of 10,000 writes is a few pool updates, not 10,000 copies of the set.

use super::Publisher;
use super::etcd_gateway::{Client, Event, EventType, KeyValue};
use crate::config::BackendConfig;
use crate::config::discovery::EtcdSource;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Watch answers folded into one update at most, so a never-ending burst still publishes.
const MAX_FOLDED: usize = 1024;

/// The set as of `revision`, keyed by etcd key.
struct Mirror {
    entries: BTreeMap<String, BackendConfig>,
    /// `None` until a list succeeded, and again after a compaction: list before watching.
    revision: Option<i64>,
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
    // Connects per call: the timeout bounds each connection attempt, the list and the
    // watch's first answer (not the watch itself, which waits for changes).
    let client = match Client::new(&source.endpoints, source.timeout) {
        Ok(client) => client,
        Err(error) => return format!("cannot connect: {error}"),
    };
    loop {
        if mirror.revision.is_none() {
            let response = match client.get_prefix(&source.prefix).await {
                Ok(response) => response,
                Err(error) => return format!("list {}: {error}", source.prefix),
            };
            mirror.entries.clear();
            let mut problems = Vec::new();
            for kv in &response.kvs {
                match entry(&source.prefix, kv) {
                    Ok((key, backend)) => {
                        mirror.entries.insert(key, backend);
                    }
                    Err(problem) => problems.push(problem),
                }
            }
            mirror.revision = Some(response.header.revision);
            publish(publisher, mirror, &problems);
        }
        let start = mirror.revision.unwrap_or(0) + 1;
        let mut stream = match client.watch_prefix(&source.prefix, start).await {
            Ok(stream) => stream,
            Err(error) => return format!("watch {}: {error}", source.prefix),
        };
        *backoff = BACKOFF_MIN;
        loop {
            let mut problems = Vec::new();
            let mut changed = false;
            let mut next = stream.next().await;
            // Answers that are already here join this one: a burst of writes becomes one
            // update of the pool, not one per answer (each update copies the whole set).
            for _ in 0..MAX_FOLDED {
                let response = match next {
                    Ok(Some(response)) => response,
                    Ok(None) => return "watch stream ended".into(),
                    Err(error) => return format!("watch {}: {error}", source.prefix),
                };
                if response.compact_revision > 0 {
                    // The revision we resume from is gone: list again, then watch from there.
                    mirror.revision = None;
                    break;
                }
                if response.canceled {
                    return format!("watch canceled: {}", response.cancel_reason);
                }
                changed |= apply(&source.prefix, &response.events, mirror, &mut problems);
                match stream.next_ready() {
                    Some(ready) => next = ready,
                    None => break,
                }
            }
            if changed || !problems.is_empty() {
                publish(publisher, mirror, &problems);
            }
            if mirror.revision.is_none() {
                break;
            }
        }
    }
}

/// Applies one watch answer's events to the mirror; whether there were any, and each bad
/// entry in `problems`.
fn apply(prefix: &str, events: &[Event], mirror: &mut Mirror, problems: &mut Vec<String>) -> bool {
    for event in events {
        let Some(kv) = &event.kv else { continue };
        mirror.revision = Some(mirror.revision.unwrap_or(0).max(kv.mod_revision));
        match event.kind {
            EventType::Put => match entry(prefix, kv) {
                Ok((key, backend)) => {
                    mirror.entries.insert(key, backend);
                }
                Err(problem) => {
                    // A key rewritten with a bad value no longer counts.
                    mirror
                        .entries
                        .remove(&String::from_utf8_lossy(&kv.key).into_owned());
                    problems.push(problem);
                }
            },
            EventType::Delete => {
                mirror
                    .entries
                    .remove(&String::from_utf8_lossy(&kv.key).into_owned());
            }
        }
    }
    !events.is_empty()
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
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    let address = key.strip_prefix(prefix).unwrap_or(&key);
    let backend = super::entry::parse_entry(&format!("key {key:?}"), address, &kv.value)?;
    Ok((key, backend))
}
