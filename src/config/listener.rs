//! Validation of `listeners:`: each listener's name, bind address (TCP or `unix:` with its
//! mode), protocol, default pool, routes (HTTP) or SNI routes (TCP), TLS termination, PROXY
//! protocol, timeouts, connection cap and access log; and that no two listeners (or a
//! listener and the admin API) share an address. Pools are validated first, so references
//! to them can be checked here.

use super::file::RawListener;
use super::{
    AccessLogConfig, AccessLogFormat, AdminConfig, BindAddr, DEFAULT_CLIENT_BODY_TIMEOUT,
    DEFAULT_CLIENT_HEADER_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_TUNNEL_IDLE_TIMEOUT,
    ListenerConfig, ListenerTimeouts, PoolConfig, Protocol, UpstreamProtocol, Validator, bind,
    check_name, make_error,
};
use crate::error::ConfigError;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};

impl Validator<'_> {
    /// Every listener under `listeners:` (at least one), by name.
    pub(super) fn listeners(
        &self,
        raw: Option<Spanned<BTreeMap<String, RawListener>>>,
        pools: &BTreeMap<String, PoolConfig>,
        admin: Option<&AdminConfig>,
    ) -> Result<BTreeMap<String, ListenerConfig>, ConfigError> {
        let Some(raw_listeners) = raw else {
            return Err(make_error(
                self.text,
                self.file,
                None,
                "listeners".into(),
                "missing: at least one listener is needed".into(),
            ));
        };
        if raw_listeners.value.is_empty() {
            return Err(self.error_at(
                raw_listeners.referenced,
                "listeners".into(),
                "empty: at least one listener is needed".into(),
            ));
        }
        let mut listeners = BTreeMap::new();
        let mut binds: HashMap<BindAddr, String> = HashMap::new();
        if let Some(admin) = admin {
            binds.insert(BindAddr::Tcp(admin.bind), "admin".into());
        }
        for (name, listener) in raw_listeners.value {
            let validated = self.listener(&name, &listener, pools)?;
            // Port 0 asks the kernel for a fresh port each time, so it never clashes.
            let ephemeral = validated.bind.tcp().is_some_and(|a| a.port() == 0);
            if let Some(other) = binds.get(&validated.bind).filter(|_| !ephemeral) {
                return Err(self.error_at(
                    listener.bind.referenced,
                    format!("listeners.{name}.bind"),
                    format!("{} is already used by {other}", validated.bind),
                ));
            }
            binds.insert(validated.bind.clone(), format!("listener {name}"));
            listeners.insert(name, validated);
        }
        Ok(listeners)
    }

    fn listener(
        &self,
        name: &str,
        raw: &RawListener,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<ListenerConfig, ConfigError> {
        let path = format!("listeners.{name}");
        check_name(name)
            .map_err(|message| self.error_at(raw.bind.referenced, path.clone(), message))?;
        let bind = bind::parse_bind(&raw.bind.value)
            .map_err(|m| self.error_at(raw.bind.referenced, format!("{path}.bind"), m))?;
        let unix_mode = match &raw.mode {
            None => None,
            Some(_) if !matches!(bind, BindAddr::Unix(_)) => {
                return Err(self.error_at(
                    raw.bind.referenced,
                    format!("{path}.mode"),
                    "mode applies to unix: sockets only".into(),
                ));
            }
            Some(text) => Some(
                bind::parse_mode(&text.value)
                    .map_err(|m| self.error_at(text.referenced, format!("{path}.mode"), m))?,
            ),
        };
        let protocol = raw.protocol.unwrap_or(Protocol::Http);
        if let Some(pool) = &raw.pool {
            self.pool_name(pool, &format!("{path}.pool"), pools)?;
        }
        let (routes, sni_routes) = match &raw.routes {
            None => (Vec::new(), Vec::new()),
            Some(routes) if protocol == Protocol::Tcp => (
                Vec::new(),
                self.sni_routes(&format!("{path}.routes"), routes, pools)?,
            ),
            Some(routes) => (
                self.routes(&format!("{path}.routes"), routes, pools)?,
                Vec::new(),
            ),
        };
        let tls = match &raw.tls {
            None => None,
            Some(tls) if protocol == Protocol::Tcp => {
                return Err(self.error_at(
                    tls.referenced,
                    format!("{path}.tls"),
                    "tls termination needs protocol: http (a tcp listener passes TLS through; \
                     route it by name with routes: [{match: {sni: NAME}, pool: P}])"
                        .into(),
                ));
            }
            Some(tls) => Some(self.tls(&path, tls)?),
        };
        if tls.as_ref().is_none_or(|t| t.client_auth.is_none()) {
            self.no_client_cert_routes(&path, raw.routes.as_ref())?;
        }
        if protocol == Protocol::Tcp
            && let Some(pool) = &raw.pool
            && pools
                .get(&pool.value)
                .is_some_and(|p| p.protocol == UpstreamProtocol::H2)
        {
            return Err(self.error_at(
                pool.referenced,
                format!("{path}.pool"),
                format!(
                    "pool {:?} speaks protocol: h2, which only an http listener can use (a tcp listener forwards bytes)",
                    pool.value
                ),
            ));
        }
        if raw.pool.is_none() && routes.is_empty() && sni_routes.is_empty() {
            return Err(self.error_at(
                raw.bind.referenced,
                path.clone(),
                "needs a pool, or routes".into(),
            ));
        }
        let proxy_protocol = self.accept_proxy(&path, raw.proxy_protocol.as_ref())?;
        let limits = self.request_limits(name, raw.limits.as_ref())?;
        if protocol == Protocol::Tcp
            && let Some(spanned) = &raw.limits
        {
            return Err(self.error_at(
                spanned.referenced,
                format!("{path}.limits"),
                "request limits apply to protocol: http listeners only".into(),
            ));
        }
        let forwarded = self.forwarded(raw.forwarded.as_ref());
        if protocol == Protocol::Tcp && forwarded.is_some() {
            return Err(self.error_at(
                raw.bind.referenced,
                format!("{path}.forwarded"),
                "the Forwarded header is added by protocol: http listeners only".into(),
            ));
        }
        let edge = self.listener_edge(
            &path,
            protocol == Protocol::Tcp,
            raw.client_address.as_ref(),
            raw.access.as_ref(),
            raw.rate_limit.as_ref(),
            raw.max_connections_per_client.as_ref(),
        )?;
        let error_pages = self.error_pages(&path, raw.error_pages.as_ref())?;
        if protocol == Protocol::Tcp
            && let Some(spanned) = &raw.error_pages
        {
            return Err(self.error_at(
                spanned.referenced,
                format!("{path}.error_pages"),
                "error pages apply to protocol: http listeners only".into(),
            ));
        }
        let compression = self.compression(&path, raw.compression.as_ref())?;
        if protocol == Protocol::Tcp
            && let Some(spanned) = &raw.compression
        {
            return Err(self.error_at(
                spanned.referenced,
                format!("{path}.compression"),
                "compression applies to protocol: http listeners only".into(),
            ));
        }
        let timeouts = raw.timeouts.as_ref();
        Ok(ListenerConfig {
            edge,
            error_pages,
            compression: compression.flatten(),
            name: name.to_owned(),
            bind,
            unix_mode,
            protocol,
            sni_routes,
            tls,
            pool: raw.pool.as_ref().map(|p| p.value.clone()),
            routes,
            proxy_protocol,
            max_connections: raw.max_connections.filter(|&n| n > 0),
            access_log: raw.access_log.as_ref().map(|log| AccessLogConfig {
                format: log.format.unwrap_or(AccessLogFormat::Combined),
                path: log
                    .path
                    .as_ref()
                    .map_or_else(|| "stdout".to_owned(), |p| p.value.clone()),
            }),
            limits,
            forwarded,
            timeouts: ListenerTimeouts {
                client_header: self.duration(
                    timeouts.and_then(|t| t.client_header.as_ref()),
                    &format!("{path}.timeouts.client_header"),
                    DEFAULT_CLIENT_HEADER_TIMEOUT,
                )?,
                client_idle: self.duration(
                    timeouts.and_then(|t| t.client_idle.as_ref()),
                    &format!("{path}.timeouts.client_idle"),
                    DEFAULT_CLIENT_IDLE_TIMEOUT,
                )?,
                client_body: self.duration(
                    timeouts.and_then(|t| t.client_body.as_ref()),
                    &format!("{path}.timeouts.client_body"),
                    DEFAULT_CLIENT_BODY_TIMEOUT,
                )?,
                tunnel_idle: self.duration(
                    timeouts.and_then(|t| t.tunnel_idle.as_ref()),
                    &format!("{path}.timeouts.tunnel_idle"),
                    DEFAULT_TUNNEL_IDLE_TIMEOUT,
                )?,
            },
        })
    }
}
