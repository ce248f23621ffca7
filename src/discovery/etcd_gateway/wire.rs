//! etcd's JSON gateway on the wire, without sockets: the answers as serde types (the proto3
//! JSON mapping: base64 bytes, 64-bit integers as strings, zero values left out), error
//! bodies, the line framing of streamed answers, and the key range of a prefix. Pure; used
//! only by the client in `mod.rs`.

use super::EtcdError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// The store's revision when the answer was made.
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct KeyValue {
    #[serde(default, deserialize_with = "base64_bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default, alias = "modRevision", deserialize_with = "int64")]
    pub mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    /// The first answer of a watch: it is in place.
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, alias = "cancelReason")]
    pub cancel_reason: String,
    /// Not 0: the start revision was compacted away (the watch is cancelled).
    #[serde(default, alias = "compactRevision", deserialize_with = "int64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Event {
    #[serde(default, rename = "type")]
    pub kind: EventType,
    pub kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventType {
    #[default]
    Put,
    Delete,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds.
    pub ttl: i64,
}

#[derive(Deserialize)]
pub(super) struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub(super) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
    #[serde(default)]
    pub(super) error: String,
}

#[derive(Deserialize)]
pub(super) struct LeaseKeepAliveResponse {
    /// 0 when the lease is gone (expired or revoked).
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub(super) ttl: i64,
}

/// Cuts a byte stream into its non-blank lines, whatever the chunks it arrives in.
#[derive(Default)]
pub(super) struct Lines {
    buffer: BytesMut,
    /// Bytes at the start of `buffer` already searched for a line end.
    scanned: usize,
}

impl Lines {
    pub(super) fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete non-blank line, without its line end.
    pub(super) fn next_line(&mut self) -> Option<BytesMut> {
        while let Some(end) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            let mut line = self.buffer.split_to(self.scanned + end + 1);
            self.scanned = 0;
            line.truncate(line.len() - 1);
            if !line.trim_ascii().is_empty() {
                return Some(line);
            }
        }
        self.scanned = self.buffer.len();
        None
    }

    /// What is left at the end of the stream, if not blank: a last line without a line end.
    pub(super) fn finish(&mut self) -> Option<BytesMut> {
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buffer);
        (!rest.trim_ascii().is_empty()).then_some(rest)
    }
}

/// One line of a stream: `{"result": T}` or `{"error": {"message": ...}}`.
pub(super) fn parse_frame<T: DeserializeOwned>(line: &[u8]) -> Result<T, EtcdError> {
    #[derive(Deserialize)]
    struct Frame<T> {
        result: Option<T>,
        error: Option<Value>,
    }
    let frame: Frame<T> = serde_json::from_slice(line).map_err(|e| {
        let text = String::from_utf8_lossy(line);
        EtcdError::Malformed(format!("{e} in {:?}", text.trim()))
    })?;
    match (frame.result, frame.error) {
        (_, Some(error)) => Err(EtcdError::Server(
            error_message(&error).unwrap_or_else(|| error.to_string()),
        )),
        (Some(result), None) => Ok(result),
        (None, None) => Err(EtcdError::Malformed(
            "an answer with neither result nor error".into(),
        )),
    }
}

/// etcd's error body (`{"error": "...", "message": "...", "code": N}`) as its message.
pub(super) fn server_error(status: StatusCode, body: &[u8]) -> EtcdError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| error_message(&value));
    EtcdError::Server(message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        match (status, text.is_empty()) {
            // Older than v3.4 (`/v3beta/` only), or not etcd at all.
            (StatusCode::NOT_FOUND, _) => format!("HTTP {status}: not an etcd v3.4+ client URL?"),
            (_, true) => format!("HTTP {status}"),
            (_, false) => format!("HTTP {status}: {text}"),
        }
    }))
}

fn error_message(error: &Value) -> Option<String> {
    [&error["message"], &error["error"]]
        .into_iter()
        .find_map(|text| text.as_str().filter(|text| !text.is_empty()))
        .map(str::to_owned)
}

/// The end of the key range that holds every key starting with `prefix` (what etcd's
/// `--prefix` sends): the prefix with its last byte below 0xff incremented and the bytes after
/// it dropped; `\0`, meaning "to the end of the key space", when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventType, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(0) => Ok(EventType::Put),
            Raw::Number(1) => Ok(EventType::Delete),
            Raw::Name(name) if name == "PUT" => Ok(EventType::Put),
            Raw::Name(name) if name == "DELETE" => Ok(EventType::Delete),
            Raw::Number(n) => Err(serde::de::Error::custom(format!("unknown event type {n}"))),
            Raw::Name(name) => Err(serde::de::Error::custom(format!(
                "unknown event type {name:?}"
            ))),
        }
    }
}

/// A 64-bit integer: a JSON string in the proto3 mapping, a number from some encoders.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(text) => text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid integer {text:?}"))),
    }
}

fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BASE64
        .decode(text.as_bytes())
        .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/services/app/"), b"/services/app0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn a_range_answer_as_etcd_writes_it() {
        // etcd 3.4: int64 as strings, base64 bytes, an empty value left out.
        let answer =
            br#"{"header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"2"},
            "kvs":[{"key":"L3MvYQ==","create_revision":"2","mod_revision":"5","version":"1"},
                   {"key":"L3MvYg==","mod_revision":6,"value":"eyJ3ZWlnaHQiOjJ9"}],"count":"2"}"#;
        let range: RangeResponse = serde_json::from_slice(answer).unwrap();
        assert_eq!(range.header.revision, 7);
        assert_eq!(range.kvs.len(), 2);
        assert_eq!(range.kvs[0].key, b"/s/a");
        assert_eq!(range.kvs[0].value, b"");
        assert_eq!(range.kvs[0].mod_revision, 5);
        assert_eq!(range.kvs[1].value, br#"{"weight":2}"#);
        assert_eq!(range.kvs[1].mod_revision, 6);
        let empty: RangeResponse = serde_json::from_slice(br#"{"header":{}}"#).unwrap();
        assert_eq!((empty.header.revision, empty.kvs.len()), (0, 0));
    }

    #[test]
    fn watch_frames_as_etcd_writes_them() {
        let put = br#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"L3MvYg==","mod_revision":"3","value":"eA=="}}]}}"#;
        let watch: WatchResponse = parse_frame(put).unwrap();
        assert_eq!(watch.events[0].kind, EventType::Put);
        assert_eq!(watch.events[0].kv.as_ref().unwrap().value, b"x");
        let delete = br#"{"result":{"events":[{"type":"DELETE","kv":{"key":"L3MvYQ==","mod_revision":"4"}}]}}"#;
        let watch: WatchResponse = parse_frame(delete).unwrap();
        assert_eq!(watch.events[0].kind, EventType::Delete);
        assert_eq!(watch.events[0].kv.as_ref().unwrap().mod_revision, 4);
        let compacted =
            br#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"}}"#;
        let watch: WatchResponse = parse_frame(compacted).unwrap();
        assert!(watch.canceled);
        assert_eq!(watch.compact_revision, 4);
        let created: WatchResponse = parse_frame(br#"{"result":{"created":true}}"#).unwrap();
        assert!(created.created && created.events.is_empty());
        let failed = parse_frame::<WatchResponse>(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#,
        );
        assert_eq!(failed.unwrap_err().to_string(), "etcdserver: no leader");
        assert!(matches!(
            parse_frame::<WatchResponse>(b"{\"result\":"),
            Err(EtcdError::Malformed(_))
        ));
    }

    #[test]
    fn stream_lines_are_cut_wherever_the_chunks_end() {
        let mut lines = Lines::default();
        lines.push(b"{\"a\":1}\n\n{\"b\"");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(lines.next_line(), None);
        lines.push(b":2}");
        assert_eq!(lines.next_line(), None);
        lines.push(b"\r\n  \n{\"c\":3}");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"b\":2}\r"[..]));
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.finish().as_deref(), Some(&b"{\"c\":3}"[..]));
        lines.push(b"\n ");
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn a_lapsed_lease_has_no_ttl_in_the_answer() {
        let gone: LeaseKeepAliveResponse =
            parse_frame(br#"{"result":{"header":{"revision":"2"},"ID":"12345"}}"#).unwrap();
        assert_eq!(gone.ttl, 0);
        let alive: LeaseKeepAliveResponse =
            parse_frame(br#"{"result":{"ID":"12345","TTL":"10"}}"#).unwrap();
        assert_eq!(alive.ttl, 10);
    }

    #[test]
    fn error_bodies_give_etcds_message() {
        let body = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        assert_eq!(
            server_error(StatusCode::NOT_FOUND, body).to_string(),
            "etcdserver: requested lease not found"
        );
        assert_eq!(
            server_error(StatusCode::NOT_FOUND, b"404 page not found\n").to_string(),
            "HTTP 404 Not Found: not an etcd v3.4+ client URL?"
        );
        assert_eq!(
            server_error(StatusCode::BAD_GATEWAY, b"").to_string(),
            "HTTP 502 Bad Gateway"
        );
    }
}
