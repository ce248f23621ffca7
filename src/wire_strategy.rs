//! Test-only: a proptest strategy for HTTP/1 message heads as peers write them, shared by the
//! request parser's and the response parser's split-invariance tests. Imports nothing of ours.

use proptest::prelude::*;

/// One or two heads, each a start line from `starts` and up to three fields from `fields`,
/// with CRLF or bare LF line endings, then up to 8 bytes of noise (a body, another message);
/// one byte sometimes replaced.
pub fn heads(
    starts: &'static [&'static str],
    fields: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    let head = (
        0..starts.len(),
        proptest::collection::vec(0..fields.len(), 0..4),
        any::<bool>(),
    )
        .prop_map(move |(start, chosen, bare_lf)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut text = format!("{}{eol}", starts[start]);
            for field in chosen {
                text.push_str(fields[field]);
                text.push_str(eol);
            }
            text.push_str(eol);
            text.into_bytes()
        });
    (
        proptest::collection::vec(head, 1..3),
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(heads, tail, replace)| {
            let mut out = heads.concat();
            out.extend_from_slice(&tail);
            if let Some((at, byte)) = replace {
                let at = at.index(out.len());
                out[at] = byte;
            }
            out
        })
}
