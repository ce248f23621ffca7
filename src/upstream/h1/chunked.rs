//! The chunked transfer coding (RFC 9112 7.1), pure: a decoder for backend response bodies
//! that works on whatever bytes have arrived so far, and the framing for request bodies.

use super::head::push_header;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// A chunk-size line (size plus extensions) longer than this is refused: nothing legitimate
/// needs more, and an endless line would otherwise grow the buffer without bound.
const MAX_LINE: usize = 4096;
/// Trailer section limit, as for a head (hyper's, refused from this many bytes on).
const MAX_TRAILERS: usize = 16 * 1024;
/// Extension bytes allowed in one body, all chunk-size lines together (hyper's limit): they
/// are read and dropped, so without a budget a backend could keep sluice parsing a stream of
/// one-byte chunks with kilobytes of extension each.
const MAX_EXTENSIONS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body from the backend ({0})")]
pub struct ChunkError(&'static str);

/// What the next step of decoding produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    /// The body ended with trailer fields.
    Trailers(HeaderMap),
    /// The body ended (no trailers).
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Extension bytes seen so far (`MAX_EXTENSIONS`).
    extensions: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            extensions: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line_end) = find_crlf(buf, MAX_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let (size, extension) = parse_size(&buf[..line_end])?;
                    self.extensions += extension;
                    if self.extensions >= MAX_EXTENSIONS {
                        return Err(ChunkError("chunk extensions too large"));
                    }
                    let _ = buf.split_to(line_end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("missing CRLF after chunk data"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            self.state = State::Done;
            return Ok(Decoded::End);
        }
        let mut slots = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((length, _))) if length >= MAX_TRAILERS => {
                Err(ChunkError("trailers too large"))
            }
            // httparse also ends lines at a bare LF; hyper, and the RFC's grammar, only at CRLF:
            // a section they would read on past is refused rather than ended early.
            Ok(httparse::Status::Complete((length, _))) if has_bare_lf(&buf[..length]) => {
                Err(ChunkError("bare LF in trailers"))
            }
            Ok(httparse::Status::Complete((length, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields {
                    let name = HeaderName::from_bytes(field.name.as_bytes())
                        .map_err(|_| ChunkError("bad trailer name"))?;
                    let value = HeaderValue::from_bytes(field.value)
                        .map_err(|_| ChunkError("bad trailer value"))?;
                    trailers.append(name, value);
                }
                let _ = buf.split_to(length);
                self.state = State::Done;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_TRAILERS => {
                Err(ChunkError("trailers too large"))
            }
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err(ChunkError("bad trailers")),
        }
    }
}

/// Position of the first CRLF, refusing lines longer than `limit`.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(limit + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(at)),
        None if buf.len() > limit => Err(ChunkError("chunk-size line too long")),
        None => Ok(None),
    }
}

/// `1a;ext=value` -> 26, with the length of what follows the digits. RFC 9112 7.1:
/// `chunk-size [ chunk-ext ] CRLF`; extensions are ignored, as it allows. The line is held to
/// what hyper accepts or less: hex digits first (no whitespace before them), then only spaces
/// or tabs before the `;` of an extension, and no control byte but a tab in an extension (a CR
/// or LF there would end the line early for a peer that splits lines differently, which is
/// how chunk boundaries get smuggled).
fn parse_size(line: &[u8]) -> Result<(u64, usize), ChunkError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(ChunkError("bad chunk size"));
    }
    let extension = rest.trim_ascii_start();
    let blank = &rest[..rest.len() - extension.len()];
    if blank.iter().any(|&b| b != b' ' && b != b'\t')
        || extension.first().is_some_and(|&b| b != b';')
    {
        return Err(ChunkError("bad chunk size"));
    }
    if extension
        .iter()
        .any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(ChunkError("bad chunk extension"));
    }
    let size = digits.iter().fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).unwrap_or_default();
        size * 16 + u64::from(digit)
    });
    Ok((size, rest.len()))
}

/// Whether a LF in `bytes` is not preceded by a CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'\n' && (at == 0 || bytes[at - 1] != b'\r'))
}

/// Appends one chunk's size line; the data and a CRLF follow it.
pub fn push_chunk_header(out: &mut Vec<u8>, size: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = size;
    loop {
        at -= 1;
        digits[at] = HEX[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk, with trailer fields if any.
pub fn push_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Trailers(trailers) => return Ok((body, Some(trailers))),
                Decoded::End => return Ok((body, None)),
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        return Err(ChunkError("input ended"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n7;name=v\r\n, world\r\n0\r\n\r\n";
        for step in 1..=input.len() {
            let (body, trailers) = decode_all(input, step).expect("valid");
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(trailers.is_none());
        }
    }

    #[test]
    fn keeps_trailers() {
        let input = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n";
        for step in [1, 4, input.len()] {
            let (body, trailers) = decode_all(input, step).expect("valid");
            assert_eq!(body, b"abc");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["grpc-message"], "ok");
        }
    }

    #[test]
    fn refuses_bad_sizes_and_missing_crlf() {
        assert!(decode_all(b"zz\r\n", 64).is_err());
        assert!(decode_all(b"\r\n", 64).is_err());
        assert!(decode_all(b"1000000000000000\r\n", 64).is_err());
        assert!(decode_all(b"3\r\nabcX\r\n0\r\n\r\n", 64).is_err());
        let long = [b'1'; MAX_LINE + 10];
        assert!(decode_all(&long, long.len()).is_err());
    }

    /// Found by the differential fuzz target (`fuzz/fuzz_targets/chunked.rs`): bodies sluice
    /// decoded and hyper refuses, where a peer splitting lines differently would see other
    /// chunk boundaries or a longer message.
    #[test]
    fn refuses_what_hyper_refuses_in_size_lines_and_trailers() {
        for input in [
            &b"0\r\n\n"[..],
            b"5;name=value\r\nhmllo\r\n3 ;\n0;last\r\nabc\r\n0;last\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;\0\r\nhello\r\n0\r\n\r\n",
            b"0\r\nx: y\n\n",
            b"0\r\nx: y\r\n\n",
        ] {
            for step in [1, input.len()] {
                assert!(
                    decode_all(input, step).is_err(),
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Blanks before an extension or the end of the line are fine (hyper takes them too).
        let (body, _) = decode_all(b"5 \t;a=b\r\nhello\r\n2\t\r\nok\r\n0 \r\n\r\n", 3).unwrap();
        assert_eq!(body, b"hellook");
    }

    #[test]
    fn limits_extensions_per_body_and_the_trailer_section() {
        let extension = format!(";{}", "e".repeat(1000));
        let mut input = Vec::new();
        for _ in 0..16 {
            input.extend_from_slice(format!("1{extension}\r\nx\r\n").as_bytes());
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert!(
            decode_all(&input, input.len()).is_ok(),
            "16,016 bytes of extensions"
        );
        let mut more = format!("1{extension}\r\nx\r\n").into_bytes();
        more.extend_from_slice(&input);
        assert_eq!(
            decode_all(&more, more.len()).unwrap_err(),
            ChunkError("chunk extensions too large")
        );
        let mut trailers = b"0\r\nx: ".to_vec();
        trailers.resize(3 + MAX_TRAILERS - 2, b'a');
        trailers.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            decode_all(&trailers, trailers.len()).unwrap_err(),
            ChunkError("trailers too large")
        );
    }

    #[test]
    fn leaves_the_bytes_after_the_body() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"1\r\nx\r\n0\r\n\r\nHTTP/1.1 200"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"x")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert!(decoder.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1 200");
    }

    #[test]
    fn encoding_round_trips() {
        let mut out = Vec::new();
        for chunk in [&b"hello"[..], &[b'x'; 300][..]] {
            push_chunk_header(&mut out, chunk.len());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("7"));
        push_last_chunk(&mut out, Some(&trailers));
        let (body, decoded) = decode_all(&out, 7).expect("valid");
        assert_eq!(body.len(), 305);
        assert_eq!(decoded.expect("trailers")["x-sum"], "7");
    }

    /// The body, trailers and bytes taken (from `input`) when the body ended; `Ok(None)` when
    /// `input` ended first. `input` is fed in pieces ending at `cuts` (positions in it), each
    /// when the decoder asks for more, as reads from the backend arrive.
    type Outcome = Option<(Vec<u8>, Option<HeaderMap>, usize)>;

    fn decode_pieces(input: &[u8], cuts: &[usize]) -> Result<Outcome, ChunkError> {
        let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
        ends.push(input.len());
        ends.sort_unstable();
        ends.dedup();
        let mut ends = ends.into_iter();
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            let trailers = match decoder.decode(&mut buf)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                    continue;
                }
                Decoded::Trailers(trailers) => Some(trailers),
                Decoded::End => None,
                Decoded::NeedMore => {
                    let Some(end) = ends.next() else {
                        return Ok(None);
                    };
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                    continue;
                }
            };
            assert!(decoder.is_done());
            return Ok(Some((body, trailers, fed - buf.len())));
        }
    }

    /// Chunked bodies as backends write them (sizes in either case, some with leading zeros,
    /// extensions, trailers, bytes after the body), one byte of them sometimes replaced.
    fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
        const EXTENSIONS: [&str; 5] = ["", ";a=b", " ;x", ";q=\"v; w\"", "\t; a = b"];
        const TRAILERS: [&str; 3] = ["", "x-sum: 7\r\n", "a: 1\r\nB: two words\r\n"];
        let chunk = (
            proptest::collection::vec(any::<u8>(), 1..24),
            0..EXTENSIONS.len(),
            any::<bool>(),
            any::<bool>(),
        );
        (
            proptest::collection::vec(chunk, 0..4),
            0..EXTENSIONS.len(),
            0..TRAILERS.len(),
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        )
            .prop_map(|(chunks, last_ext, trailers, tail, replace)| {
                let mut out = Vec::new();
                for (data, ext, upper, zero) in chunks {
                    let size = format!("{}{:x}", if zero { "0" } else { "" }, data.len());
                    let size = if upper { size.to_uppercase() } else { size };
                    out.extend_from_slice(size.as_bytes());
                    out.extend_from_slice(EXTENSIONS[ext].as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0");
                out.extend_from_slice(EXTENSIONS[last_ext].as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(TRAILERS[trailers].as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&tail);
                if let Some((at, byte)) = replace {
                    let at = at.index(out.len());
                    out[at] = byte;
                }
                out
            })
    }

    fn body_or_noise() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => chunked_body(),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        /// Whatever TCP splits: the same body, trailers, end and verdict as the body fed
        /// whole (the fuzz target `fuzz/fuzz_targets/chunked.rs` checks the same, and
        /// compares with hyper's decoder).
        #[test]
        fn any_split_decodes_the_same(
            input in body_or_noise(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            let whole = decode_pieces(&input, &[]);
            let split = decode_pieces(&input, &cuts);
            match (&whole, &split) {
                (Err(_), Err(_)) => {}
                _ => prop_assert_eq!(&whole, &split, "cuts {:?}", cuts),
            }
            let byte_by_byte: Vec<usize> = (1..input.len()).collect();
            let fine = decode_pieces(&input, &byte_by_byte);
            prop_assert_eq!(whole.is_err(), fine.is_err());
            if whole.is_ok() {
                prop_assert_eq!(&whole, &fine);
            }
        }
    }
}
