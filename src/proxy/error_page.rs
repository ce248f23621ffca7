//! Error pages: the listener's page for the status of an answer sluice made itself (every one
//! goes through `http::error_response` and is marked `MadeUp`), in the format the client's
//! `Accept` prefers. Without a page, or when the client accepts neither format, the short
//! plain text stays.
//!
//! Applied once, where the answer leaves `respond`, so every path that makes up an answer
//! (refused heads, bad bodies, no route, no backend, timeouts, access and rate limits) gets
//! its page without knowing about pages.

use crate::config::error_pages::{ErrorPages, Page};
use crate::negotiate::media_weight_of;
use crate::proxy::body::ProxyBody;
use http::{HeaderValue, Response, header};

/// Puts the listener's page for the response's status in place of its plain text.
pub fn apply(
    response: &mut Response<ProxyBody>,
    pages: &ErrorPages,
    accept: Option<&HeaderValue>,
    listener: &str,
) {
    let status = response.status().as_u16();
    let Some(page) = pages.pages.get(&status) else {
        return;
    };
    let Some((chosen, format)) = choose(page.html.as_ref(), page.json.as_ref(), accept) else {
        return;
    };
    response.body_mut().set_fixed(chosen.body.clone());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, chosen.content_type.clone());
    crate::metrics::http_edge::error_page(listener, status, format);
}

/// The format the client prefers among those there are; HTML on a tie (browsers send
/// `*/*` too), nothing when it accepts neither.
fn choose<'p>(
    html: Option<&'p Page>,
    json: Option<&'p Page>,
    accept: Option<&HeaderValue>,
) -> Option<(&'p Page, &'static str)> {
    let weight = |media| media_weight_of(accept, media);
    let html_weight = html.map_or(0, |_| weight("text/html"));
    let json_weight = json.map_or(0, |_| weight("application/json"));
    match (html, json) {
        (Some(page), _) if html_weight > 0 && html_weight >= json_weight => Some((page, "html")),
        (_, Some(page)) if json_weight > 0 => Some((page, "json")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn page(body: &'static str) -> Page {
        Page {
            file: "/p".into(),
            body: Bytes::from_static(body.as_bytes()),
            content_type: HeaderValue::from_static("text/html"),
        }
    }

    #[test]
    fn accept_chooses_between_html_and_json() {
        let (html, json) = (page("h"), page("j"));
        let pick = |accept: Option<&'static str>, h: bool, j: bool| {
            let value = accept.map(HeaderValue::from_static);
            choose(h.then_some(&html), j.then_some(&json), value.as_ref()).map(|(_, f)| f)
        };
        assert_eq!(pick(None, true, true), Some("html"));
        assert_eq!(pick(Some("application/json"), true, true), Some("json"));
        assert_eq!(
            pick(
                Some("text/html,application/xhtml+xml,*/*;q=0.8"),
                true,
                true
            ),
            Some("html")
        );
        assert_eq!(pick(Some("application/json"), true, false), None);
        assert_eq!(pick(Some("*/*"), false, true), Some("json"));
        assert_eq!(
            pick(Some("application/json;q=0.9, text/html;q=0.1"), true, true),
            Some("json")
        );
    }
}
