//! The gRPC health check (`health_check.type: grpc`): one `grpc.health.v1.Health/Check` call
//! over HTTP/2 on the pool's own dialer (so TLS, mutual TLS and unix sockets as for requests),
//! passing when the answer says SERVING.
//!
//! The messages are small enough to write by hand, with no protobuf compiler in the build:
//! a gRPC message is a 5-byte prefix (compressed flag, big-endian length) and the protobuf
//! bytes. `HealthCheckRequest` is `string service = 1` (tag 0x0a, varint length, UTF-8);
//! `HealthCheckResponse` is `ServingStatus status = 1` (tag 0x08, varint). Unknown fields of
//! the answer are skipped, as protobuf requires. A non-zero `grpc-status` (a trailers-only
//! answer such as NOT_FOUND for an unknown service, or in the trailers) fails the check with
//! its `grpc-message`.

use crate::config::BackendAddress;
use crate::config::health::GrpcCheck;
use crate::error::Chain;
use crate::upstream::connector::Conn;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, header};
use http_body_util::{BodyExt, Full, Limited};

pub const PATH: &str = "/grpc.health.v1.Health/Check";
/// The most of an answer a check reads (the real one is 7 bytes).
const ANSWER_LIMIT: usize = 16 * 1024;

/// `ServingStatus` values of grpc.health.v1.
const SERVING: u64 = 1;

pub async fn probe(
    conn: Conn,
    tls: bool,
    address: &BackendAddress,
    check: &GrpcCheck,
) -> Result<String, String> {
    let host = check.host.clone().unwrap_or_else(|| match address {
        BackendAddress::Inet(inet) => inet.to_string(),
        BackendAddress::Unix(_) => "localhost".to_owned(),
    });
    let scheme = if tls { "https" } else { "http" };
    let request = Request::post(format!("{scheme}://{host}{PATH}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(
            header::USER_AGENT,
            concat!("sluice-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(encode_request(&check.service)))
        .map_err(|e| format!("bad check request: {e}"))?;
    let mut sender = crate::upstream::h2::handshake(conn)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {}", Chain(&e)))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {}", Chain(&e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status} (a gRPC server answers 200)"));
    }
    grpc_status(response.headers())?;
    let collected = Limited::new(response.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {}", Chain(&*e)))?;
    if let Some(trailers) = collected.trailers() {
        grpc_status(trailers)?;
    }
    let body = collected.to_bytes();
    match decode_response(&body)? {
        SERVING => Ok(service_text(check, "SERVING")),
        2 => Err(service_text(check, "NOT_SERVING")),
        3 => Err(service_text(check, "SERVICE_UNKNOWN")),
        0 => Err(service_text(check, "UNKNOWN")),
        other => Err(format!("gRPC health status {other} (not SERVING)")),
    }
}

fn service_text(check: &GrpcCheck, status: &str) -> String {
    if check.service.is_empty() {
        format!("gRPC {status}")
    } else {
        format!("gRPC {status} for {:?}", check.service)
    }
}

/// `Err` with the status and message when `grpc-status` is there and not 0 (OK).
fn grpc_status(headers: &HeaderMap) -> Result<(), String> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code = code.to_str().unwrap_or("?").trim();
    if code == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    Err(format!("grpc-status {code} {message}")
        .trim_end()
        .to_owned())
}

/// One gRPC message holding `HealthCheckRequest { service }`.
pub fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

/// The `status` of the one `HealthCheckResponse` in `body` (0, UNKNOWN, when absent).
pub fn decode_response(body: &[u8]) -> Result<u64, String> {
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
        return Err(format!("answer of {} bytes is no gRPC message", body.len()));
    };
    if flag != 0 {
        return Err("answer is compressed; sluice asked for none".into());
    }
    let length = u32::from_be_bytes([a, b, c, d]) as usize;
    let Some(mut message) = rest.get(..length) else {
        return Err(format!(
            "gRPC message cut short ({} of {length} bytes)",
            rest.len()
        ));
    };
    let mut status = 0;
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = take_varint(&mut message)?;
                if field == 1 {
                    status = value;
                }
            }
            1 => message = message.get(8..).ok_or("truncated field")?,
            2 => {
                let len = take_varint(&mut message)? as usize;
                message = message.get(len..).ok_or("truncated field")?;
            }
            5 => message = message.get(4..).ok_or("truncated field")?,
            _ => return Err(format!("unexpected protobuf wire type {wire}")),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("truncated varint")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 64 bits".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_protobuf() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("app")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'p']
        );
        let long = "s".repeat(200);
        let framed = encode_request(&long);
        assert_eq!(&framed[5..8], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn answers_decode_and_skip_unknown_fields() {
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 0]),
            Ok(0),
            "absent status is UNKNOWN"
        );
        // field 2 (bytes "hi") before the status
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 2]),
            Ok(2)
        );
        assert!(decode_response(&[0, 0, 0]).is_err());
        assert!(decode_response(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(decode_response(&[1, 0, 0, 0, 2, 0x08, 1]).is_err());
    }

    #[test]
    fn a_non_zero_grpc_status_fails_with_its_message() {
        let mut headers = HeaderMap::new();
        assert!(grpc_status(&headers).is_ok());
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert("grpc-message", "unknown service".parse().unwrap());
        assert_eq!(
            grpc_status(&headers),
            Err("grpc-status 5 unknown service".to_owned())
        );
    }
}
