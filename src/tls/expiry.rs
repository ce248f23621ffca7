//! Certificate expiry in words: `sluice check`'s warnings over every store and the text the
//! store's watch logs, with the threshold both use. Pure: `now` is passed in.

use super::store::CertStore;

/// From how long before its expiry a certificate is warned about (log, `sluice check`).
pub const EXPIRY_WARNING_SECONDS: i64 = 14 * 24 * 3600;

/// `sluice check`'s warnings: one line per certificate of `stores` that expires within
/// `EXPIRY_WARNING_SECONDS` of `now` (or has expired).
pub fn expiry_warnings<'a>(
    stores: impl IntoIterator<Item = &'a CertStore>,
    now: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    for store in stores {
        for (index, cert) in store.status().iter().enumerate() {
            let left = cert.expires_at - now as i64;
            if left <= EXPIRY_WARNING_SECONDS {
                out.push(format!(
                    "listeners.{}.tls.certificates[{index}] ({}): {}",
                    store.listener(),
                    cert.cert,
                    expiry_text(left)
                ));
            }
        }
    }
    out
}

/// The warning for a certificate `left` seconds from its expiry (negative: expired).
pub fn expiry_text(left: i64) -> String {
    if left <= 0 {
        format!("TLS certificate EXPIRED {} days ago", -left / 86_400)
    } else {
        format!("TLS certificate expires in {} days", left / 86_400)
    }
}
