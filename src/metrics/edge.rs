//! The edge-protection families: refusals by listener, route, rule and reason, and every
//! HTTP answer of a listener by status class, sluice's own answers included (HAProxy's
//! `frontend http_responses_total`, Envoy's `downstream_rq_2xx`): backend answers alone miss
//! every 403, 413, 429 and 502-504 sluice makes itself.

pub const REQUESTS_REFUSED_TOTAL: &str = "sluice_requests_refused_total";
pub const HTTP_REQUESTS_TOTAL: &str = "sluice_http_requests_total";

pub(super) fn describe() {
    metrics::describe_counter!(
        REQUESTS_REFUSED_TOTAL,
        "Requests and connections refused by an edge rule (or that a dry-run rule would \
         have refused), by listener, route (empty: the listener's own rules), rule and \
         reason (access_denied, rate_limited, connection_limit; _dry_run when not enforced)."
    );
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered on a listener, by status class (1xx..5xx), whoever made \
         the answer: a backend or sluice itself."
    );
}

pub fn refused(listener: &str, route: &str, rule: &str, reason: &'static str) {
    metrics::counter!(
        REQUESTS_REFUSED_TOTAL,
        "listener" => listener.to_owned(),
        "route" => route.to_owned(),
        "rule" => rule.to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

/// The five class counters of a listener, `1xx` first (made once per listener).
pub(super) fn classes(listener: &str) -> [metrics::Counter; 5] {
    ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
        metrics::counter!(HTTP_REQUESTS_TOTAL, "listener" => listener.to_owned(), "class" => class)
    })
}
