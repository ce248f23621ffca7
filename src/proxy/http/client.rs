//! Who the client of a request is: its one address (`edge::client_address`) and the
//! verified client certificate header sent on to the backend.

use super::ConnContext;
use crate::edge::{self, ClientAddress};

/// The one client address of a request (`edge::client_address`): the connection's, unless
/// the connection comes from one of the listener's trusted proxies.
pub(super) fn client_of(
    context: &ConnContext,
    snapshot: &crate::state::Snapshot,
    headers: &http::HeaderMap,
) -> ClientAddress {
    let peer = context.client().map(|c| c.ip());
    let trusted = snapshot
        .listener(&context.listener)
        .map_or(&[][..], |l| &l.edge.client_address.trusted_proxies[..]);
    if trusted.is_empty() {
        return ClientAddress::peer(peer);
    }
    edge::client_address::resolve(
        peer,
        headers.get_all(crate::headers::X_FORWARDED_FOR).iter(),
        trusted,
    )
}

/// The verified client certificate header: what the client sent under its name is always
/// removed (Envoy's default, sanitize: a client must not forge it), on every listener for the
/// default name, then the listener's verified certificate, if any, is set.
pub(super) fn client_cert_header(
    headers: &mut http::HeaderMap,
    listener: &crate::config::ListenerConfig,
    peer: &crate::proxy::Peer,
) {
    const DEFAULT: http::HeaderName =
        http::HeaderName::from_static(crate::config::tls::DEFAULT_CLIENT_CERT_HEADER);
    headers.remove(DEFAULT);
    let Some(auth) = listener.tls.as_ref().and_then(|t| t.client_auth.as_ref()) else {
        return;
    };
    headers.remove(&auth.header);
    if let Some(client) = peer.tls.as_ref().and_then(|t| t.client.as_ref()) {
        headers.insert(auth.header.clone(), client.header.clone());
    }
}
