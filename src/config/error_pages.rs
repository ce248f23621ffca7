//! `listeners.NAME.error_pages`: the pages sluice sends with the answers it makes itself
//! (400, 403, 404, 408, 413, 429, 431, 500, 502, 503, 504...), one file per status, in HTML
//! or JSON or both, read at validation into the config (so into the snapshot).
//!
//! A missing or unreadable file refuses the config with its position, so a reload never
//! swaps in a page it cannot send. The short form `503: /path/503.html` picks the format by
//! extension (`.json` is JSON, anything else fills the HTML slot); the long form
//! `503: { html: ..., json: ... }` gives both, and the client's `Accept` chooses.

use super::Validator;
use super::direct_answer::{content_type_of, read_page};
use super::file::Text;
use crate::error::ConfigError;
use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawErrorPage {
    File(Text),
    Formats {
        html: Option<Text>,
        json: Option<Text>,
    },
}

pub type RawErrorPages = Spanned<BTreeMap<u16, Spanned<RawErrorPage>>>;

/// A listener's pages by status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorPages {
    pub pages: BTreeMap<u16, ErrorPage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorPage {
    pub html: Option<Page>,
    pub json: Option<Page>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub file: PathBuf,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

impl Validator<'_> {
    pub(super) fn error_pages(
        &self,
        path: &str,
        raw: Option<&RawErrorPages>,
    ) -> Result<ErrorPages, ConfigError> {
        let Some(raw) = raw else {
            return Ok(ErrorPages::default());
        };
        let path = format!("{path}.error_pages");
        let mut pages = BTreeMap::new();
        for (&status, entry) in &raw.value {
            let here = format!("{path}.{status}");
            if !(400..=599).contains(&status) {
                return Err(self.error_at(
                    entry.referenced,
                    here,
                    format!("{status} is not an error status (400-599)"),
                ));
            }
            let read = |text: &Text, field: &str| -> Result<Page, ConfigError> {
                let file = PathBuf::from(text.value.trim());
                let body = read_page(&file).map_err(|m| {
                    // Inside an untagged enum the value's own span is lost: the entry's is kept.
                    self.error_at(entry.referenced, format!("{here}{field}"), m)
                })?;
                Ok(Page {
                    content_type: HeaderValue::from_static(content_type_of(&file)),
                    file,
                    body,
                })
            };
            let page = match &entry.value {
                RawErrorPage::File(text) => {
                    let page = read(text, "")?;
                    if page.file.extension().is_some_and(|e| e == "json") {
                        ErrorPage {
                            html: None,
                            json: Some(page),
                        }
                    } else {
                        ErrorPage {
                            html: Some(page),
                            json: None,
                        }
                    }
                }
                RawErrorPage::Formats { html, json } => {
                    if html.is_none() && json.is_none() {
                        return Err(self.error_at(
                            entry.referenced,
                            here,
                            "give html, json or both".into(),
                        ));
                    }
                    let html = html.as_ref().map(|t| read(t, ".html")).transpose()?;
                    let mut json = json.as_ref().map(|t| read(t, ".json")).transpose()?;
                    if let Some(page) = &mut json {
                        // The slot says JSON whatever the file is called.
                        page.content_type = HeaderValue::from_static("application/json");
                    }
                    ErrorPage { html, json }
                }
            };
            pages.insert(status, page);
        }
        Ok(ErrorPages { pages })
    }
}

impl ErrorPages {
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}
