//! The registry entry format shared by the etcd and ZooKeeper sources: a name `IP:PORT` (the
//! key suffix or the child znode) and a value that is empty or `{"weight": N}` (optionally
//! `"max_connections": N`). Pure: no I/O, unit-tested below.

use crate::config::{BackendAddress, BackendConfig, MAX_WEIGHT};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Value {
    weight: Option<u32>,
    max_connections: Option<u32>,
}

/// One entry as a backend. `what` names it in the error (`key "/a/x"`, `znode "/a/x"`), so an
/// operator can find the entry that was skipped.
pub fn parse_entry(what: &str, address: &str, value: &[u8]) -> Result<BackendConfig, String> {
    // etcd keys may name unix sockets (`/services/app/unix:/run/app.sock`); znode names
    // cannot hold a `/`, so ZooKeeper entries are IP:PORT in practice.
    let address: BackendAddress = address
        .parse()
        .map_err(|_| format!("{what}: {address:?} is not IP:PORT or unix:/PATH"))?;
    let value = String::from_utf8_lossy(value);
    let value = value.trim();
    let parsed = if value.is_empty() {
        Value::default()
    } else {
        serde_json::from_str::<Value>(value)
            .map_err(|error| format!("{what}: value {value:?}: {error}"))?
    };
    let weight = parsed.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(format!("{what}: weight {weight} over {MAX_WEIGHT}"));
    }
    Ok(BackendConfig {
        address,
        weight,
        max_connections: parsed.max_connections.filter(|&n| n > 0),
    })
}

/// The value `sluice register` writes: empty for the default weight, so the plain
/// `etcdctl put KEY ""` recipe and the command agree.
pub fn entry_value(weight: u32) -> String {
    if weight == 1 {
        String::new()
    } else {
        format!("{{\"weight\":{weight}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_json_values_give_a_backend() {
        let plain = parse_entry("k", "10.0.0.8:9000", b"").unwrap();
        assert_eq!(
            (plain.address.inet().unwrap().port(), plain.weight),
            (9000, 1)
        );
        let weighted =
            parse_entry("k", "[::1]:80", br#" {"weight": 2, "max_connections": 0} "#).unwrap();
        assert_eq!((weighted.weight, weighted.max_connections), (2, None));
        let written = entry_value(3);
        assert_eq!(
            parse_entry("k", "10.0.0.1:1", written.as_bytes())
                .unwrap()
                .weight,
            3
        );
        assert_eq!(entry_value(1), "");
    }

    #[test]
    fn bad_entries_say_which_and_why() {
        let cases: [(&str, &[u8], &str); 4] = [
            ("10.0.0.8", b"", "not IP:PORT"),
            ("host:80", b"", "not IP:PORT"),
            ("10.0.0.8:1", b"{\"wieght\": 2}", "unknown field"),
            ("10.0.0.8:1", b"{\"weight\": 100000}", "over"),
        ];
        for (address, value, message) in cases {
            let error = parse_entry("znode \"/s/x\"", address, value).unwrap_err();
            assert!(error.starts_with("znode \"/s/x\": "), "{error}");
            assert!(error.contains(message), "{error}");
        }
    }
}
