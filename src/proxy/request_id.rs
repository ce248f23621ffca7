//! `X-Request-Id`: keeping a sane incoming one, or minting a new random one, so that the
//! backend, the client and the access log all see the same value.
//!
//! New ids are written into a per-thread block of memory shared by many of them: an id is a
//! slice of the block, so setting it on both the request and the response costs no
//! allocation (one block serves `IDS_PER_BLOCK` requests). Two allocations per request for
//! the id showed in allocation counts of the keep-alive path.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hex digits of a new id: 128 random bits.
const ID_LEN: usize = 32;
/// Ids cut from one block before the next is allocated. A block is freed when the last id
/// cut from it is dropped: ids live as long as their request, so a block outlives its
/// requests only behind a long one (a long poll), at most 2 KiB each.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    static BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Keeps a sane incoming `X-Request-Id` (so a trace spans several proxies) or sets a new
/// random one; returns the id in force.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID)
        && is_sane(id)
    {
        return id.clone();
    }
    let id = new_request_id(fastrand::u128(..));
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

fn is_sane(id: &HeaderValue) -> bool {
    (1..=128).contains(&id.len()) && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// `random` in lower-case hex, cut from this thread's block (without `format!`: it showed in
/// profiles).
fn new_request_id(random: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; ID_LEN];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((random >> (4 * i)) & 0xf) as usize];
    }
    let bytes = BLOCK.with_borrow_mut(|block| {
        if block.capacity() - block.len() < ID_LEN {
            *block = BytesMut::with_capacity(ID_LEN * IDS_PER_BLOCK);
        }
        block.extend_from_slice(&text);
        block.split().freeze()
    });
    // Hex digits are always a valid value.
    HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_the_random_bits_in_hex_and_ids_cut_from_one_block_stay_apart() {
        let ids: Vec<HeaderValue> = (0..3 * IDS_PER_BLOCK as u128)
            .map(|n| new_request_id(n << 64 | 0xabc))
            .collect();
        assert_eq!(ids[0].as_bytes(), b"cba00000000000000000000000000000");
        for (n, id) in ids.iter().enumerate() {
            let expected: String = format!("{:032x}", (n as u128) << 64 | 0xabc)
                .chars()
                .rev()
                .collect();
            assert_eq!(id.as_bytes(), expected.as_bytes(), "id {n}");
        }
    }

    #[test]
    fn a_sane_incoming_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("trace-42"));
        assert_eq!(ensure_request_id(&mut headers), "trace-42");

        for bad in ["", "has space", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = ensure_request_id(&mut headers);
            assert_eq!(id.len(), ID_LEN, "{bad:?} kept");
            assert_eq!(headers.get(&X_REQUEST_ID), Some(&id));
        }
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        assert_eq!(headers.get(&X_REQUEST_ID), Some(&id));
    }
}
