//! A small, pure parser for the start of a TLS connection: it finds the server name (SNI) in
//! the client's ClientHello without terminating TLS, for `protocol: tcp` listeners that route
//! by name (passthrough).
//!
//! Pure: no I/O, never panics on any input (a proptest feeds it random bytes). Like the PROXY
//! protocol parser it is incremental: `Incomplete { needed }` says how many bytes in total it
//! wants, so a ClientHello split over several TCP segments (or several TLS records, which
//! post-quantum key shares make common) is read until whole. It reads only what routing needs
//! and does not validate the rest of the handshake: the backend does that.

/// TLS record header: content type, legacy version, length.
const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// The most a ClientHello may take before we give up. Real ones are well under 2 KiB (up to
/// ~1.8 KiB with a post-quantum key share); 16 KiB is the largest single TLS record.
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Call again once at least `needed` bytes in total have arrived.
    Incomplete { needed: usize },
    /// The whole ClientHello was read; `sni` is the lowercased host name, if the client sent
    /// one.
    Complete { sni: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    #[error("not a TLS handshake")]
    NotTls,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
}

/// Parses the bytes a client sent first.
pub fn parse(buf: &[u8]) -> Result<Hello, SniError> {
    // Reassemble the handshake message from as many records as it spans.
    let mut handshake = Vec::new();
    let mut offset = 0;
    loop {
        let Some(header) = buf.get(offset..offset + RECORD_HEADER) else {
            return incomplete(offset + RECORD_HEADER);
        };
        if header[0] != CONTENT_HANDSHAKE || header[1] != 3 {
            return Err(if offset == 0 {
                SniError::NotTls
            } else {
                SniError::Malformed("a record other than handshake inside the ClientHello")
            });
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        let end = offset + RECORD_HEADER + length;
        let Some(fragment) = buf.get(offset + RECORD_HEADER..end) else {
            return incomplete(end);
        };
        handshake.extend_from_slice(fragment);
        offset = end;
        if let Some(&[kind, a, b, c]) = handshake.get(..4) {
            if kind != HANDSHAKE_CLIENT_HELLO {
                return Err(SniError::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
            let body_length = u32::from_be_bytes([0, a, b, c]) as usize;
            if body_length + 4 > MAX_HELLO {
                return Err(SniError::TooLarge);
            }
            if let Some(body) = handshake.get(4..4 + body_length) {
                return client_hello(body).map(|sni| Hello::Complete { sni });
            }
        }
    }
}

fn incomplete(needed: usize) -> Result<Hello, SniError> {
    // Record headers count too, so a hello fragmented into tiny records is bounded as well.
    if needed > MAX_HELLO + RECORD_HEADER * 4 {
        return Err(SniError::TooLarge);
    }
    Ok(Hello::Incomplete { needed })
}

/// A cursor that refuses to read past the end instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        if self.rest.len() < n {
            return Err(SniError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A length-prefixed vector (`prefix` is 1 or 2 bytes), as a reader of its own.
    fn vector(&mut self, prefix: usize, what: &'static str) -> Result<Reader<'a>, SniError> {
        let length = if prefix == 1 {
            usize::from(self.u8(what)?)
        } else {
            usize::from(self.u16(what)?)
        };
        Ok(Reader {
            rest: self.take(length, what)?,
        })
    }
}

fn client_hello(body: &[u8]) -> Result<Option<String>, SniError> {
    let mut hello = Reader { rest: body };
    hello.take(2 + 32, "version and random")?;
    hello.vector(1, "session id")?;
    hello.vector(2, "cipher suites")?;
    hello.vector(1, "compression methods")?;
    if hello.rest.is_empty() {
        // TLS 1.2 allows a hello without extensions: no SNI.
        return Ok(None);
    }
    let mut extensions = hello.vector(2, "extensions")?;
    while !extensions.rest.is_empty() {
        let kind = extensions.u16("extension type")?;
        let mut data = extensions.vector(2, "extension data")?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut names = data.vector(2, "server name list")?;
        while !names.rest.is_empty() {
            let name_type = names.u8("server name type")?;
            let name = names.vector(2, "server name")?.rest;
            if name_type == NAME_TYPE_HOST {
                return host_name(name).map(Some);
            }
        }
        return Ok(None);
    }
    Ok(None)
}

fn host_name(raw: &[u8]) -> Result<String, SniError> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(SniError::Malformed("server name is not a DNS name"));
    }
    let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
    let name = text.trim_end_matches('.');
    // Only dots ("." or "..", found by the fuzz target) would otherwise route as "".
    if name.is_empty() {
        return Err(SniError::Malformed("server name is not a DNS name"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
#[path = "sni_tests.rs"]
mod tests;
