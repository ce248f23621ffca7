//! From YAML text to the serde mirror, and from a failure to a `ConfigError`: the serde pass
//! keeping the field path, the path shown without `Spanned` wrappers, and the source line
//! with a caret under the column. Every config error, from serde or from validation, is
//! built by `make_error` here, so they all read the same way.

use crate::error::{ConfigError, SourcePosition};
use serde_saphyr::Location;

/// Runs serde over the text, keeping the field path of a failure (serde-saphyr gives the
/// line and column; `serde_path_to_error` gives the path).
///
/// Two passes only when the text is wrong: the first runs serde-saphyr alone, because the
/// path tracking wraps every value and allocates a `String` for every map key it passes (a
/// fifth of the CPU of parsing a file of 10,000 backends in a profile, before its
/// allocations, and every reload parses the whole file); a failure runs again with the tracking, and
/// fails at the same place (deserializing is deterministic), so the error is the same.
pub(super) fn parse_raw<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    match serde_saphyr::from_str(text) {
        Ok(raw) => Ok(raw),
        Err(_) => parse_raw_tracking_path(text, file),
    }
}

fn parse_raw_tracking_path<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let mut failed_path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            failed_path = display_path(error.path());
            error.into_inner()
        })
    });
    result.map_err(|error| {
        let position = error.location().and_then(known_position);
        // serde-saphyr prefixes "error: line L column C: " and appends its own snippet; keep
        // the bare message so every config error reads the same way.
        let full = error.to_string();
        let first_line = full.lines().next().unwrap_or_default();
        let message = first_line
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("error"))
            .map(|(_, rest)| rest)
            .unwrap_or(first_line);
        let message = match message.split_once(": ") {
            Some((head, rest)) if head.starts_with("line ") => rest,
            _ => message,
        };
        // serde-saphyr's wording is for the programmer calling it; these two say what the
        // operator did and where.
        if let serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } =
            error.without_snippet()
        {
            let first = position
                .as_ref()
                .and_then(|at| first_occurrence(text, at, key));
            let message = match first {
                Some(line) => format!("duplicate key `{key}` (first at line {line})"),
                None => format!("duplicate key `{key}`"),
            };
            // The path ends at the mapping (`pools.?`); name the key itself.
            let parent = failed_path.strip_suffix(".?").unwrap_or(&failed_path);
            let mut path = parent.trim_end_matches('?').to_owned();
            push_key(&mut path, key);
            return make_error(text, file, position, path, message);
        }
        if message.contains("tab")
            && let Some(tab) = position.as_ref().and_then(|at| indenting_tab(text, at))
        {
            return make_error(
                text,
                file,
                Some(tab),
                failed_path,
                "a tab in the indentation: YAML forbids tabs for indentation, indent with spaces"
                    .into(),
            );
        }
        make_error(text, file, position, failed_path, message.to_owned())
    })
}

/// The tab that the parser complained about: the first one in the indentation of a line at or
/// after where the parser reports (it reports the start of the scalar or block it was reading,
/// which is often the line above the tab, or the column after it).
fn indenting_tab(text: &str, reported: &SourcePosition) -> Option<SourcePosition> {
    let first = reported.line.checked_sub(1)? as usize;
    text.lines()
        .enumerate()
        .skip(first)
        // A line of only whitespace may hold tabs.
        .filter(|(_, line)| !line.trim().is_empty())
        .find_map(|(index, line)| {
            let indentation = line.len() - line.trim_start_matches([' ', '\t']).len();
            let column = line[..indentation].find('\t')?;
            Some(SourcePosition {
                line: u32::try_from(index + 1).ok()?,
                column: u32::try_from(column + 1).ok()?,
            })
        })
}

/// The line where `key` first appears in the block mapping whose duplicate is at `duplicate`:
/// an earlier line with the key at the same column, before the mapping starts (a line that
/// begins left of that column). `None` when not found (a flow mapping, an unusual spelling).
fn first_occurrence(text: &str, duplicate: &SourcePosition, key: &str) -> Option<u32> {
    let column = duplicate.column.checked_sub(1)? as usize;
    let lines: Vec<&str> = text.lines().collect();
    let before = duplicate.line.checked_sub(1)? as usize;
    for index in (0..before.min(lines.len())).rev() {
        let line = lines[index];
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indentation = line.len() - content.len();
        // `- key: ...` starts a mapping inside a list: its key sits after the dashes.
        let mut key_at = indentation;
        let mut rest = content;
        while let Some(after) = rest.strip_prefix("- ") {
            let trimmed = after.trim_start_matches(' ');
            key_at += rest.len() - trimmed.len();
            rest = trimmed;
        }
        if key_at == column && starts_with_key(rest, key) {
            return u32::try_from(index + 1).ok();
        }
        if indentation < column {
            return None;
        }
    }
    None
}

/// Whether a line's content (from its key on) is `key:`, `"key":` or `'key':`.
fn starts_with_key(content: &str, key: &str) -> bool {
    [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|spelled| {
            content
                .strip_prefix(spelled.as_str())
                .is_some_and(|rest| rest.trim_start_matches(' ').starts_with(':'))
        })
}

/// `pools.value.app.backends.value[1].value.weight` -> `pools.app.backends[1].weight`.
///
/// serde sees every `Spanned` wrapper in `file.rs` as a struct with a field `value`, an
/// implementation detail the operator should not see. Every `value` segment is such a wrapper,
/// except a listener or pool that is itself named "value" (the segment right after the
/// wrapper of the `listeners`/`pools` map).
fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut last_key: Option<&str> = None;
    let mut after_wrapper = false;
    for segment in path.iter() {
        match segment {
            Segment::Map { key } if key == "value" => {
                let names_a_map_entry =
                    after_wrapper && matches!(last_key, Some("listeners" | "pools"));
                if !names_a_map_entry {
                    after_wrapper = true;
                    continue;
                }
                push_key(&mut out, key);
                last_key = Some(key);
            }
            Segment::Map { key } => {
                push_key(&mut out, key);
                last_key = Some(key);
            }
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                last_key = None;
            }
            Segment::Enum { variant } => push_key(&mut out, variant),
            Segment::Unknown => out.push_str(".?"),
        }
        after_wrapper = false;
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}

pub(super) fn known_position(location: Location) -> Option<SourcePosition> {
    (location.line() > 0).then(|| SourcePosition {
        line: location.line() as u32,
        column: location.column() as u32,
    })
}

pub(super) fn make_error(
    text: &str,
    file: &str,
    position: Option<SourcePosition>,
    path: String,
    message: String,
) -> ConfigError {
    let snippet = position.as_ref().and_then(|p| snippet(text, p));
    ConfigError {
        file: file.to_owned(),
        position,
        path,
        message,
        snippet,
    }
}

/// The source line with a caret under the column, as compilers print it.
fn snippet(text: &str, position: &SourcePosition) -> Option<String> {
    let line = text.lines().nth(position.line.checked_sub(1)? as usize)?;
    let gutter = position.line.to_string();
    let pad = " ".repeat(gutter.len());
    let caret_pad = " ".repeat(position.column.saturating_sub(1) as usize);
    Some(format!("{pad} |\n{gutter} | {line}\n{pad} | {caret_pad}^"))
}
