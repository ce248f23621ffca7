//! The test Consul agent's HTTP API: routing, the health endpoint with blocking queries, the
//! agent endpoints (register, deregister, checks, maintenance), TTL expiry, and the small
//! parsers (query strings, Go durations). The agent itself and its knobs are in `mod.rs`.

use super::{CheckState, NODE, Service, State};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone)]
pub(super) struct Server {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) changed: watch::Sender<u64>,
}

impl Server {
    /// A change: bumps the index and wakes the blocked queries.
    pub(super) fn write(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        state.index += 1;
        self.changed.send_replace(state.index);
    }

    /// TTL checks past their deadline turn critical; long-critical services with
    /// `DeregisterCriticalServiceAfter` go.
    pub(super) fn expire(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let mut changed = false;
        for service in state.services.values_mut() {
            for check in service.checks.values_mut() {
                if check.expires.is_some_and(|at| at <= now) && check.status != "critical" {
                    check.status = "critical".into();
                    check.output = "TTL expired".into();
                    check.critical_since = Some(now);
                    check.expires = None;
                    changed = true;
                }
            }
        }
        let before = state.services.len();
        state.services.retain(|_, service| {
            !service.checks.values().any(|check| {
                check.status == "critical"
                    && matches!((check.critical_since, check.deregister_after),
                        (Some(since), Some(after)) if now.duration_since(since) >= after)
            })
        });
        if changed || state.services.len() != before {
            state.index += 1;
            self.changed.send_replace(state.index);
        }
    }

    pub(super) async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = parse_query(request.uri().query().unwrap_or_default());
        let token = (request.headers().get("x-consul-token"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.unwrap_or_default();
        {
            let state = self.state.lock().unwrap();
            if state.token.is_some() && state.token != token {
                return text(StatusCode::FORBIDDEN, "Permission denied: token not found");
            }
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (Method::GET, ["v1", "health", "service", name]) => self.health(name, &query).await,
            (Method::PUT, ["v1", "agent", "service", "register"]) => {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(definition) => self.register(&definition),
                    Err(error) => text(
                        StatusCode::BAD_REQUEST,
                        &format!("Request decode failed: {error}"),
                    ),
                }
            }
            (Method::PUT, ["v1", "agent", "service", "deregister", id]) => {
                if !self.state.lock().unwrap().services.contains_key(*id) {
                    return text(StatusCode::NOT_FOUND, &format!("Unknown service ID {id:?}"));
                }
                self.write(|state| {
                    state.services.remove(*id);
                });
                text(StatusCode::OK, "")
            }
            (
                Method::PUT,
                [
                    "v1",
                    "agent",
                    "check",
                    verb @ ("pass" | "warn" | "fail"),
                    id,
                ],
            ) => {
                let status = match *verb {
                    "pass" => "passing",
                    "warn" => "warning",
                    _ => "critical",
                };
                let note = query.get("note").cloned().unwrap_or_default();
                self.update_check(id, status, &note)
            }
            (Method::PUT, ["v1", "agent", "check", "update", id]) => {
                let update: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let status = update["Status"].as_str().unwrap_or("").to_owned();
                let output = update["Output"].as_str().unwrap_or("").to_owned();
                if !matches!(status.as_str(), "passing" | "warning" | "critical") {
                    return text(StatusCode::BAD_REQUEST, "Invalid check status");
                }
                self.update_check(id, &status, &output)
            }
            (Method::PUT, ["v1", "agent", "maintenance"]) => {
                let enable = query.get("enable").map(String::as_str) == Some("true");
                let reason = query.get("reason").cloned().unwrap_or_default();
                self.write(|state| state.node_maintenance = enable.then_some(reason));
                text(StatusCode::OK, "")
            }
            (Method::PUT, ["v1", "agent", "service", "maintenance", id]) => {
                let enable = query.get("enable").map(String::as_str) == Some("true");
                let reason = query.get("reason").cloned().unwrap_or_default();
                if !self.state.lock().unwrap().services.contains_key(*id) {
                    return text(StatusCode::NOT_FOUND, &format!("Unknown service ID {id:?}"));
                }
                self.write(|state| {
                    state.services.get_mut(*id).expect("checked").maintenance =
                        enable.then_some(reason);
                });
                text(StatusCode::OK, "")
            }
            _ => text(StatusCode::NOT_FOUND, "not implemented by the test agent"),
        }
    }

    async fn health(&self, name: &str, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
        if let Some(dc) = query.get("dc")
            && dc != "dc1"
        {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
        }
        let asked: u64 = query.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
        let wait = query
            .get("wait")
            .and_then(|w| parse_wait(w))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        let (ignore, current) = {
            let mut state = self.state.lock().unwrap();
            state.health_queries += 1;
            (state.ignore_index, state.index)
        };
        if asked > 0 && current <= asked && !ignore {
            let mut changed = self.changed.subscribe();
            let _ = tokio::time::timeout(wait, changed.wait_for(|index| *index != asked)).await;
        }
        let state = self.state.lock().unwrap();
        let tag = query.get("tag");
        let passing_only = query.contains_key("passing");
        let mut entries = Vec::new();
        for (id, service) in &state.services {
            if service.name != name || tag.is_some_and(|t| !service.tags.contains(t)) {
                continue;
            }
            let mut checks = vec![json!({
                "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "",
            })];
            if let Some(reason) = &state.node_maintenance {
                checks.push(json!({
                    "Node": NODE, "CheckID": "_node_maintenance", "Name": "Node Maintenance Mode",
                    "Status": "critical", "Notes": reason, "Output": "",
                    "ServiceID": "", "ServiceName": "",
                }));
            }
            if let Some(reason) = &service.maintenance {
                checks.push(json!({
                    "Node": NODE, "CheckID": format!("_service_maintenance:{id}"),
                    "Name": "Service Maintenance Mode", "Status": "critical", "Notes": reason,
                    "Output": "", "ServiceID": id, "ServiceName": service.name,
                }));
            }
            for (check_id, check) in &service.checks {
                checks.push(json!({
                    "Node": NODE, "CheckID": check_id, "Name": check.name,
                    "Status": check.status, "Notes": check.notes, "Output": check.output,
                    "ServiceID": id, "ServiceName": service.name,
                }));
            }
            if passing_only && checks.iter().any(|c| c["Status"] != "passing") {
                continue;
            }
            entries.push(json!({
                "Node": {"ID": "4a8c5b4e-0000-0000-0000-000000000001", "Node": NODE,
                         "Address": "127.0.0.1", "Datacenter": "dc1",
                         "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"}, "Meta": {}},
                "Service": {"ID": id, "Service": service.name, "Tags": service.tags,
                            "Address": service.address, "Port": service.port, "Meta": {},
                            "Weights": {"Passing": service.weights.0, "Warning": service.weights.1},
                            "EnableTagOverride": false},
                "Checks": checks,
            }));
        }
        let mut response = text(StatusCode::OK, &Value::Array(entries).to_string());
        let headers = response.headers_mut();
        headers.insert("x-consul-index", state.index.into());
        headers.insert(
            "x-consul-knownleader",
            http::HeaderValue::from_static("true"),
        );
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        response
    }

    fn register(&self, definition: &Value) -> Response<Full<Bytes>> {
        let Some(name) = definition["Name"].as_str().filter(|n| !n.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "Missing service name");
        };
        let id = definition["ID"]
            .as_str()
            .filter(|i| !i.is_empty())
            .unwrap_or(name);
        let weights = match &definition["Weights"] {
            Value::Null => (1, 1),
            w => (
                w["Passing"].as_u64().unwrap_or(1),
                w["Warning"].as_u64().unwrap_or(1),
            ),
        };
        if weights.0 == 0 {
            return text(StatusCode::BAD_REQUEST, "Passing must be greater than 0");
        }
        let mut definitions: Vec<&Value> = Vec::new();
        if definition["Check"].is_object() {
            definitions.push(&definition["Check"]);
        }
        if let Some(list) = definition["Checks"].as_array() {
            definitions.extend(list);
        }
        let several = definitions.len() > 1;
        let mut checks = BTreeMap::new();
        let now = Instant::now();
        for (number, check) in definitions.iter().enumerate() {
            let check_id = check["CheckID"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    if several {
                        format!("service:{id}:{}", number + 1)
                    } else {
                        format!("service:{id}")
                    }
                });
            let ttl = check["TTL"].as_str().and_then(parse_wait);
            let status = check["Status"].as_str().unwrap_or("critical").to_owned();
            checks.insert(
                check_id,
                CheckState {
                    name: check["Name"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("Service '{name}' check")),
                    critical_since: (status == "critical").then_some(now),
                    status,
                    notes: check["Notes"].as_str().unwrap_or("").to_owned(),
                    output: String::new(),
                    expires: ttl.map(|ttl| now + ttl),
                    ttl,
                    deregister_after: check["DeregisterCriticalServiceAfter"]
                        .as_str()
                        .and_then(parse_wait),
                },
            );
        }
        let service = Service {
            name: name.to_owned(),
            address: definition["Address"].as_str().unwrap_or("").to_owned(),
            port: definition["Port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            tags: (definition["Tags"].as_array().into_iter().flatten())
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            weights,
            checks,
            maintenance: None,
        };
        self.write(|state| {
            state.services.insert(id.to_owned(), service);
        });
        text(StatusCode::OK, "")
    }

    fn update_check(&self, check_id: &str, status: &str, output: &str) -> Response<Full<Bytes>> {
        let mut found = false;
        self.write(|state| {
            let now = Instant::now();
            for service in state.services.values_mut() {
                if let Some(check) = service.checks.get_mut(check_id) {
                    found = true;
                    if check.status != "critical" && status == "critical" {
                        check.critical_since = Some(now);
                    }
                    if status != "critical" {
                        check.critical_since = None;
                    }
                    check.status = status.to_owned();
                    check.output = output.to_owned();
                    check.expires = check.ttl.map(|ttl| now + ttl);
                }
            }
        });
        if !found {
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
                ),
            );
        }
        text(StatusCode::OK, "")
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key.to_owned(), decode(value)),
            None => (pair.to_owned(), String::new()),
        })
        .collect()
}

/// Percent-decoding of a query value (`+` is a space, as Go's url package reads it).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&value[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go durations as Consul takes them: `10s`, `500ms`, `5m`.
fn parse_wait(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = text.strip_suffix('s') {
        return s.parse::<f64>().ok().map(Duration::from_secs_f64);
    }
    if let Some(m) = text.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| Duration::from_secs(m * 60));
    }
    None
}
