//! The `zookeeper` discovery source: every child of the configured znode is a backend, named
//! `IP:PORT` (ephemeral znodes, so a registrant's backends vanish with its session); a child's
//! data is empty or `{"weight": N}` like an etcd value (`entry.rs`).
//!
//! ZooKeeper watches fire once, so each round lists the children with a child watch and reads
//! every child's data with a data watch (a weight change is followed too), then waits for the
//! first of them to fire and lists again. A change between two rounds is never lost: the new
//! listing happens after the watch fired, and the server reports a change made before the
//! watch was set in the listing itself.
//!
//! Decided edge cases:
//! - The znode does not exist: that is ZooKeeper's answer, not a failure to reach it, so the
//!   set is empty (the pool keeps its static backends) and `/status` says the znode is
//!   missing; an existence watch lists again as soon as it is created.
//! - Connection lost: the client reconnects on its own within the session; meanwhile the last
//!   set stays and `/status` shows the error. Once connected again, the task lists again.
//! - Session expired or closed (the server was gone longer than the session timeout): a new
//!   session is opened with a backoff (100 ms doubling to 2 s), the set still kept, and the
//!   first listing of the new session replaces it.

use super::Publisher;
use super::entry::parse_entry;
use crate::config::BackendConfig;
use crate::config::discovery::ZooKeeperSource;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub async fn run(source: ZooKeeperSource, publisher: Publisher, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let error = tokio::select! {
            error = follow(&source, &publisher, &mut backoff) => error,
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

/// What one round read, and the watches that end it.
struct Round {
    backends: Vec<BackendConfig>,
    problems: Vec<String>,
    watches: JoinSet<zk::WatchedEvent>,
}

/// One session: list, wait for a watch or a state change, list again; returns why the session
/// is no longer usable.
async fn follow(source: &ZooKeeperSource, publisher: &Publisher, backoff: &mut Duration) -> String {
    let connector = zk::Client::connector()
        .with_session_timeout(source.session_timeout)
        // With every host refused, fail now and let our backoff (and `/status`) handle it,
        // instead of the client retrying silently for a whole session timeout.
        .with_fail_eagerly();
    let hosts = source.connect_string();
    let client = match tokio::time::timeout(source.session_timeout, connector.connect(&hosts)).await
    {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return format!("cannot connect to {hosts}: {error}"),
        Err(_) => {
            let timeout = source.session_timeout;
            return format!("cannot connect to {hosts}: no session within {timeout:?}");
        }
    };
    let mut state = client.state_watcher();
    *backoff = BACKOFF_MIN;
    loop {
        let mut round = match list(&client, &source.path).await {
            Ok(round) => round,
            Err(error) => return format!("list {}: {error}", source.path),
        };
        publisher.publish(round.backends);
        // Bad children are skipped, not fatal: report them after the good ones went out.
        if !round.problems.is_empty() {
            publisher.fail(&round.problems.join("; "));
        }
        loop {
            tokio::select! {
                fired = round.watches.join_next() => match fired {
                    Some(Ok(event)) if event.event_type == zk::EventType::Session => {
                        return format!("session {:?}", event.session_state);
                    }
                    // A change (or a watch task that could not finish): list again.
                    Some(_) => break,
                    // No watch at all cannot happen (a listing sets at least one); list again
                    // rather than wait for ever.
                    None => break,
                },
                changed = state.changed() => match changed {
                    zk::SessionState::Disconnected => {
                        publisher.fail("connection to ZooKeeper lost; reconnecting, \
                                        keeping the last known backends");
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => break,
                    terminal => return format!("session {terminal:?}"),
                },
            }
        }
    }
}

/// Children of `path` with their data, and the watches set on them. A missing znode is an
/// empty set with an existence watch (and a problem saying so).
async fn list(client: &zk::Client, path: &str) -> Result<Round, zk::Error> {
    let mut watches = JoinSet::new();
    loop {
        let (children, _, children_watch) = match client.get_and_watch_children(path).await {
            Ok(listing) => listing,
            Err(zk::Error::NoNode) => {
                let (stat, created) = client.check_and_watch_stat(path).await?;
                if stat.is_some() {
                    // Created between the two requests: list it.
                    continue;
                }
                watches.spawn(created.changed());
                return Ok(Round {
                    backends: Vec::new(),
                    problems: vec![format!(
                        "znode {path} does not exist; no backends until it is created"
                    )],
                    watches,
                });
            }
            Err(error) => return Err(error),
        };
        watches.spawn(children_watch.changed());
        // All requests go out before the first answer is awaited (the client orders them at
        // creation), so a large set costs one round trip, not one per child.
        let reads: Vec<_> = children
            .iter()
            .map(|child| client.get_and_watch_data(&format!("{path}/{child}")))
            .collect();
        let mut entries = Vec::with_capacity(children.len());
        for (child, read) in children.into_iter().zip(reads) {
            match read.await {
                Ok((data, _, data_watch)) => {
                    watches.spawn(data_watch.changed());
                    entries.push((child, data));
                }
                // Gone since the listing: the child watch has fired already.
                Err(zk::Error::NoNode) => {}
                Err(error) => return Err(error),
            }
        }
        let (backends, problems) = parse_children(path, &entries);
        return Ok(Round {
            backends,
            problems,
            watches,
        });
    }
}

/// The backends named by `(child, data)` pairs, and what was wrong with the others.
fn parse_children(path: &str, entries: &[(String, Vec<u8>)]) -> (Vec<BackendConfig>, Vec<String>) {
    let mut backends = Vec::new();
    let mut problems = Vec::new();
    for (child, data) in entries {
        match parse_entry(&format!("znode \"{path}/{child}\""), child, data) {
            Ok(backend) => backends.push(backend),
            Err(problem) => problems.push(problem),
        }
    }
    (backends, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_become_backends_and_bad_ones_are_reported() {
        let entries = vec![
            ("10.0.0.8:9000".to_owned(), Vec::new()),
            ("10.0.0.9:9000".to_owned(), br#"{"weight": 2}"#.to_vec()),
            ("lock-0001".to_owned(), Vec::new()),
            ("10.0.0.10:9000".to_owned(), b"not json".to_vec()),
        ];
        let (backends, problems) = parse_children("/services/jobs", &entries);
        let got: Vec<(String, u32)> = backends
            .iter()
            .map(|b| (b.address.to_string(), b.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.8:9000".to_owned(), 1),
                ("10.0.0.9:9000".to_owned(), 2)
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("/services/jobs/lock-0001"),
            "{problems:?}"
        );
        assert!(problems[1].contains("not json"), "{problems:?}");
    }
}
