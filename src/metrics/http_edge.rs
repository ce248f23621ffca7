//! Metrics of the HTTP edge features: direct answers and redirects, error pages, traffic
//! splits, mirrored requests and response compression. Names and `# HELP` text here;
//! `metrics.rs` calls `describe` once.

pub const ROUTE_ANSWERS_TOTAL: &str = "sluice_route_answers_total";
pub const ERROR_PAGES_TOTAL: &str = "sluice_error_pages_total";
pub const SPLIT_REQUESTS_TOTAL: &str = "sluice_split_requests_total";
pub const MIRROR_REQUESTS_TOTAL: &str = "sluice_mirror_requests_total";
pub const MIRROR_IN_FLIGHT: &str = "sluice_mirror_in_flight_requests";
pub const COMPRESSED_RESPONSES_TOTAL: &str = "sluice_compressed_responses_total";
pub const COMPRESSION_BYTES_TOTAL: &str = "sluice_compression_bytes_total";

pub(super) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        ROUTE_ANSWERS_TOTAL,
        "Requests a route answered itself, by kind (redirect, respond): no pool was involved."
    );
    describe_counter!(
        ERROR_PAGES_TOTAL,
        "Answers made by sluice sent with a configured error page, by status and format."
    );
    describe_counter!(
        SPLIT_REQUESTS_TOTAL,
        "Requests of a traffic split by the pool they went to, and by how it was chosen (key, cookie, weight)."
    );
    describe_counter!(
        MIRROR_REQUESTS_TOTAL,
        "Mirrored copies of requests by shadow pool and result (answered, failed, body_too_large, busy)."
    );
    describe_gauge!(
        MIRROR_IN_FLIGHT,
        "Mirrored requests in flight to the shadow pool."
    );
    describe_counter!(
        COMPRESSED_RESPONSES_TOTAL,
        "Responses compressed by sluice, by listener and encoding (gzip, br, zstd)."
    );
    describe_counter!(
        COMPRESSION_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes through response compression, by listener, encoding and stage (in, out)."
    );
}

/// A route answered with a redirect or a direct response.
pub fn route_answer(listener: &str, kind: &'static str) {
    metrics::counter!(ROUTE_ANSWERS_TOTAL, "listener" => listener.to_owned(), "kind" => kind)
        .increment(1);
}

/// One of sluice's own answers went out with the listener's page for its status.
pub fn error_page(listener: &str, status: u16, format: &'static str) {
    metrics::counter!(ERROR_PAGES_TOTAL, "listener" => listener.to_owned(),
        "status" => status.to_string(), "format" => format)
    .increment(1);
}

/// A request of a split went to `pool`; `by` is `key`, `cookie` or `weight`.
pub fn split(listener: &str, pool: &str, by: &'static str) {
    metrics::counter!(SPLIT_REQUESTS_TOTAL, "listener" => listener.to_owned(),
        "pool" => pool.to_owned(), "by" => by)
    .increment(1);
}

/// A mirrored copy ended (or was not sent): `result` is `answered`, `failed`,
/// `body_too_large` or `busy`.
pub fn mirror(pool: &str, result: &'static str) {
    metrics::counter!(MIRROR_REQUESTS_TOTAL, "pool" => pool.to_owned(), "result" => result)
        .increment(1);
}

pub fn mirror_in_flight(pool: &str, in_flight: usize) {
    metrics::gauge!(MIRROR_IN_FLIGHT, "pool" => pool.to_owned()).set(in_flight as f64);
}

/// The counters one compressed response feeds: responses, bytes in, bytes out.
pub fn compression(listener: &str, encoding: &'static str) -> [metrics::Counter; 3] {
    let listener = listener.to_owned();
    [
        metrics::counter!(COMPRESSED_RESPONSES_TOTAL, "listener" => listener.clone(), "encoding" => encoding),
        metrics::counter!(COMPRESSION_BYTES_TOTAL, "listener" => listener.clone(), "encoding" => encoding, "stage" => "in"),
        metrics::counter!(COMPRESSION_BYTES_TOTAL, "listener" => listener, "encoding" => encoding, "stage" => "out"),
    ]
}
