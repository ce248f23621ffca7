//! One response's streaming compressor: bytes in as the backend sends them, compressed bytes
//! out, never the whole body in memory.
//!
//! Output is taken after every input chunk; when the backend pauses (its body is pending)
//! the caller flushes, so a slow stream (server-sent events, long polls) reaches the client
//! as it is produced rather than when the compressor's buffers fill.
//!
//! Memory per stream is bounded by each codec's state, fixed when the encoder is made, plus
//! the output of one chunk. Measured (peak heap of one encoder over 5 MB of JSON fed in 16 KiB
//! chunks; zstd's C context by `ZSTD_sizeof_CCtx`): gzip (zlib-rs, 32 KiB window) about
//! 420 KiB at levels 1 and 6; brotli level 4 about 3.5 MiB (its hash tables, whatever the
//! window); zstd level 3 about 1.8 MiB with the window capped at 2^18 (3.5 MiB with its
//! default window). The caps keep a slow client with a huge response from holding the 4-8 MiB
//! windows brotli and zstd use by default; for web responses the ratio hardly changes.

use crate::config::compression::{Coding, Compression};
use bytes::Bytes;
use std::io::{self, Write};

/// The window cap of brotli and zstd (log2 of bytes).
const WINDOW_LOG: u32 = 18;
/// Brotli's internal input buffer.
const BROTLI_BUFFER: usize = 4096;

pub struct Encoder {
    codec: Codec,
    /// Input written since the last flush: a pause of the backend then flushes it out.
    unflushed: bool,
    finished: bool,
    pub counters: Option<[metrics::Counter; 3]>,
}

enum Codec {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // Boxed: the writer holds the whole encoder state inline (several KiB).
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match self.codec {
            Codec::Gzip(_) => "gzip",
            Codec::Br(_) => "br",
            Codec::Zstd(_) => "zstd",
        };
        f.debug_struct("Encoder").field("coding", &coding).finish()
    }
}

impl Encoder {
    pub fn new(coding: Coding, config: &Compression) -> io::Result<Encoder> {
        let codec = match coding {
            Coding::Gzip => Codec::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(config.gzip_level),
            )),
            Coding::Br => Codec::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                config.br_level,
                WINDOW_LOG,
            )))),
            Coding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), config.zstd_level)?;
                encoder.window_log(WINDOW_LOG)?;
                Codec::Zstd(encoder)
            }
        };
        Ok(Encoder {
            codec,
            unflushed: false,
            finished: false,
            counters: None,
        })
    }

    /// Compresses `data`; the output produced so far, if any.
    pub fn write(&mut self, data: &[u8]) -> io::Result<Option<Bytes>> {
        if data.is_empty() {
            return Ok(None);
        }
        if let Some([_, bytes_in, _]) = &self.counters {
            bytes_in.increment(data.len() as u64);
        }
        match &mut self.codec {
            Codec::Gzip(encoder) => encoder.write_all(data)?,
            Codec::Br(encoder) => encoder
                .as_mut()
                .ok_or_else(finished_error)?
                .write_all(data)?,
            Codec::Zstd(encoder) => encoder.write_all(data)?,
        }
        self.unflushed = true;
        Ok(self.take())
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether input is waiting inside the compressor for more.
    pub fn needs_flush(&self) -> bool {
        self.unflushed && !self.finished
    }

    /// Pushes out everything written so far (the stream stays open).
    pub fn flush(&mut self) -> io::Result<Option<Bytes>> {
        match &mut self.codec {
            Codec::Gzip(encoder) => encoder.flush()?,
            Codec::Br(encoder) => encoder.as_mut().ok_or_else(finished_error)?.flush()?,
            Codec::Zstd(encoder) => encoder.flush()?,
        }
        self.unflushed = false;
        Ok(self.take())
    }

    /// Ends the compressed stream; its last bytes.
    pub fn finish(&mut self) -> io::Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        self.finished = true;
        self.unflushed = false;
        let tail = match &mut self.codec {
            Codec::Gzip(encoder) => {
                encoder.try_finish()?;
                std::mem::take(encoder.get_mut())
            }
            Codec::Br(encoder) => encoder
                .take()
                .map(|writer| writer.into_inner())
                .unwrap_or_default(),
            Codec::Zstd(encoder) => {
                encoder.do_finish()?;
                std::mem::take(encoder.get_mut())
            }
        };
        Ok(self.count(tail))
    }

    fn take(&mut self) -> Option<Bytes> {
        let out = match &mut self.codec {
            Codec::Gzip(encoder) => std::mem::take(encoder.get_mut()),
            Codec::Br(Some(encoder)) => std::mem::take(encoder.get_mut()),
            Codec::Br(None) => Vec::new(),
            Codec::Zstd(encoder) => std::mem::take(encoder.get_mut()),
        };
        self.count(out)
    }

    fn count(&self, out: Vec<u8>) -> Option<Bytes> {
        if out.is_empty() {
            return None;
        }
        if let Some([_, _, bytes_out]) = &self.counters {
            bytes_out.increment(out.len() as u64);
        }
        Some(Bytes::from(out))
    }
}

fn finished_error() -> io::Error {
    io::Error::other("compressed stream already finished")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn config() -> Compression {
        Compression {
            algorithms: vec![Coding::Gzip],
            min_size: 0,
            types: vec![],
            gzip_level: 6,
            br_level: 4,
            zstd_level: 3,
        }
    }

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .expect("gzip");
            }
            Coding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .expect("br");
            }
            Coding::Zstd => {
                out = zstd::stream::decode_all(data).expect("zstd");
            }
        }
        out
    }

    #[test]
    fn every_coding_round_trips_chunk_by_chunk_with_flushes() {
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item\"}},").into_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut encoder = Encoder::new(coding, &config()).expect("encoder");
            let mut wire = Vec::new();
            for (i, chunk) in text.chunks(16 * 1024).enumerate() {
                wire.extend(encoder.write(chunk).expect("write").unwrap_or_default());
                if i % 7 == 0 {
                    // What a pause of the backend does: everything so far goes out.
                    wire.extend(encoder.flush().expect("flush").unwrap_or_default());
                    assert!(!encoder.needs_flush());
                    let so_far = decode_prefix(coding, &wire);
                    assert_eq!(&text[..so_far.len()], &so_far[..]);
                    assert!(
                        so_far.len() >= (i + 1) * 16 * 1024 - 16 * 1024,
                        "{coding:?} held data back"
                    );
                }
            }
            wire.extend(encoder.finish().expect("finish").unwrap_or_default());
            assert_eq!(encoder.finish().expect("idempotent"), None);
            assert_eq!(decode(coding, &wire), text, "{coding:?}");
            assert!(wire.len() * 5 < text.len(), "{coding:?} barely compressed");
        }
    }

    /// Decodes what a flushed, unfinished stream holds so far.
    fn decode_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer = [0u8; 8192];
        let mut reader: Box<dyn Read> = match coding {
            Coding::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            Coding::Br => Box::new(brotli::Decompressor::new(data, 4096)),
            Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(data).expect("zstd")),
        };
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buffer[..n]),
            }
        }
        out
    }
}
