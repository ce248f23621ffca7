//! `sluice register --consul`: registers one service instance with the local Consul agent
//! (`PUT /v1/agent/service/register`) with a TTL check that starts passing, passes it every
//! TTL/3 (`PUT /v1/agent/check/pass/service:ID`), and deregisters it
//! (`PUT /v1/agent/service/deregister/ID`) when stopped.
//!
//! A registrant killed outright stops passing the check: Consul turns it critical when the
//! TTL runs out (the consul source then drops the instance, saying so in `/status`) and
//! removes the instance after `DeregisterCriticalServiceAfter` (`--deregister-critical-after`,
//! default 1 min, Consul's minimum).
//! A refresh that fails (the agent restarted and forgot the service) registers again.

use super::super::consul::client::{Agent, ConsulError};
use super::{BACKOFF_MAX, RegisterError, TIMEOUT, check_common};
use crate::config::PemCertificates;
use crate::config::consul::{parse_agent_address, read_token};
use crate::error::Chain;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// How long a critical instance stays listed before Consul removes it, by default: Consul's
/// minimum, so that an instance killed outright does not linger in the catalog.
pub const DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ConsulOptions {
    address: String,
    authority: String,
    https: bool,
    service: String,
    id: String,
    backend: SocketAddr,
    tags: Vec<String>,
    weight: u32,
    ttl: Duration,
    deregister_after: Duration,
    token_file: Option<PathBuf>,
    /// With https: trust only this CA bundle (default: the bundled public roots).
    ca: Option<PemCertificates>,
}

impl ConsulOptions {
    pub fn new(
        agent: &str,
        service: &str,
        backend: SocketAddr,
        weight: u32,
        ttl: Duration,
        tags: Vec<String>,
    ) -> Result<ConsulOptions, RegisterError> {
        let invalid = |flag, message: String| RegisterError::Invalid { flag, message };
        let (address, authority, https) =
            parse_agent_address(agent).map_err(|message| invalid("--consul", message))?;
        let name_ok = |name: &str| {
            !name.is_empty()
                && (name.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(service) {
            return Err(invalid(
                "--service",
                format!("{service:?}: letters, digits, '-', '_' and '.'"),
            ));
        }
        if let Some(tag) = tags.iter().find(|t| !name_ok(t)) {
            return Err(invalid(
                "--tag",
                format!("{tag:?}: letters, digits, '-', '_' and '.'"),
            ));
        }
        check_common(weight, ttl)?;
        Ok(ConsulOptions {
            address,
            authority,
            https,
            id: service_id(service, backend),
            service: service.to_owned(),
            backend,
            tags,
            weight,
            ttl,
            deregister_after: DEREGISTER_CRITICAL_AFTER,
            token_file: None,
            ca: None,
        })
    }

    /// The ACL token file (read at each call) and, with https, the CA bundle to trust.
    pub fn with_credentials(
        mut self,
        token_file: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<ConsulOptions, RegisterError> {
        let invalid = |flag, message: String| RegisterError::Invalid { flag, message };
        let https = self.https;
        if let Some(path) = &token_file {
            read_token(path).map_err(|message| invalid("--token-file", message))?;
        }
        if ca.is_some() && !https {
            return Err(invalid("--ca", "only with an https:// agent".into()));
        }
        self.ca = match ca {
            None => None,
            Some(path) => {
                let certificates = CertificateDer::pem_file_iter(&path)
                    .and_then(|all| all.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| invalid("--ca", format!("{}: {e}", path.display())))?;
                if certificates.is_empty() {
                    return Err(invalid(
                        "--ca",
                        format!("{}: no PEM certificate", path.display()),
                    ));
                }
                Some(PemCertificates {
                    path,
                    certificates: std::sync::Arc::new(certificates),
                })
            }
        };
        self.token_file = token_file;
        Ok(self)
    }

    /// How long the instance may stay critical (its TTL check not passed: the registrant was
    /// killed or hung) before Consul removes it. Consul applies at least a minute whatever it
    /// is sent, so less is refused here rather than silently lengthened there.
    pub fn with_deregister_after(
        mut self,
        after: Duration,
    ) -> Result<ConsulOptions, RegisterError> {
        if after < DEREGISTER_CRITICAL_AFTER {
            return Err(RegisterError::Invalid {
                flag: "--deregister-critical-after",
                message: format!("{after:?}: Consul's minimum is 1m (it would apply 1m anyway)"),
            });
        }
        self.deregister_after = after;
        Ok(self)
    }

    /// The instance's service ID (`web-10.0.0.7-8080`): one per backend address, so two
    /// registrants of one backend replace rather than duplicate each other.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn check_id(&self) -> String {
        format!("service:{}", self.id)
    }

    /// What `PUT /v1/agent/service/register` is sent.
    fn definition(&self) -> serde_json::Value {
        json!({
            "ID": self.id,
            "Name": self.service,
            "Address": self.backend.ip().to_string(),
            "Port": self.backend.port(),
            "Tags": self.tags,
            "Weights": {"Passing": self.weight, "Warning": 1},
            "Check": {
                "CheckID": self.check_id(),
                "Name": "sluice register TTL",
                "TTL": format!("{}ms", self.ttl.as_millis()),
                // Routable as soon as registered, not after the first refresh.
                "Status": "passing",
                "DeregisterCriticalServiceAfter": go_duration(self.deregister_after),
            },
        })
    }
}

/// A duration as Go's `time.ParseDuration` reads it: `1m`, `90s`, `1500ms`.
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

fn service_id(service: &str, backend: SocketAddr) -> String {
    let ip = backend.ip().to_string().replace(':', "-");
    format!("{service}-{ip}-{}", backend.port())
}

pub struct Registration {
    options: ConsulOptions,
}

impl Registration {
    pub async fn register(options: ConsulOptions) -> Result<Registration, RegisterError> {
        let registration = Registration { options };
        registration.put().await?;
        Ok(registration)
    }

    /// A client with the token read now (a rotated token file is picked up).
    fn agent(&self) -> Result<Agent, RegisterError> {
        let options = &self.options;
        let token = match &options.token_file {
            None => None,
            Some(path) => Some(read_token(path).map_err(|message| RegisterError::Invalid {
                flag: "--token-file",
                message,
            })?),
        };
        let tls = options.https.then_some(crate::config::UpstreamTls {
            verify: true,
            ca: options.ca.clone(),
            sni: None,
            client_auth: None,
        });
        Agent::new(&options.address, &options.authority, tls, TIMEOUT, token)
            .map_err(consul("connect"))
    }

    async fn put(&self) -> Result<(), RegisterError> {
        let body = self.options.definition().to_string();
        let agent = self.agent()?;
        agent
            .put("/v1/agent/service/register", Some(body))
            .await
            .map_err(consul("service register"))?;
        info!(service = %self.options.service, id = %self.options.id,
            ttl = ?self.options.ttl, "registered with Consul");
        Ok(())
    }

    async fn pass(&self) -> Result<(), RegisterError> {
        let path = format!("/v1/agent/check/pass/{}", self.options.check_id());
        let agent = self.agent()?;
        agent.put(&path, None).await.map_err(consul("check pass"))?;
        Ok(())
    }

    /// Passes the TTL check every TTL/3; a failed pass registers again (with a backoff), so
    /// an agent that restarted and forgot the service gets it back.
    pub async fn keep_alive(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(self.options.ttl / 3).await;
            loop {
                let refreshed = match self.pass().await {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        warn!(error = %Chain(&error), "TTL check not passed; registering again");
                        self.put().await
                    }
                };
                match refreshed {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(error) => {
                        warn!(error = %Chain(&error), "registration not refreshed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    pub async fn deregister(self) -> Result<(), RegisterError> {
        let path = format!("/v1/agent/service/deregister/{}", self.options.id);
        let agent = self.agent()?;
        agent
            .put(&path, None)
            .await
            .map_err(consul("service deregister"))?;
        info!(id = %self.options.id, "deregistered from Consul");
        Ok(())
    }
}

fn consul(action: &str) -> impl FnOnce(ConsulError) -> RegisterError {
    let action = action.to_owned();
    move |source| RegisterError::Consul { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(agent: &str, service: &str, weight: u32) -> Result<ConsulOptions, RegisterError> {
        ConsulOptions::new(
            agent,
            service,
            "10.0.0.7:8080".parse().unwrap(),
            weight,
            Duration::from_secs(10),
            vec!["v2".into()],
        )
    }

    #[test]
    fn the_definition_has_a_passing_ttl_check_and_the_weight() {
        let options = options("http://127.0.0.1:8500", "web", 3).unwrap();
        assert_eq!(options.id(), "web-10.0.0.7-8080");
        let definition = options.definition();
        assert_eq!(definition["Address"], "10.0.0.7");
        assert_eq!(definition["Port"], 8080);
        assert_eq!(definition["Weights"]["Passing"], 3);
        assert_eq!(definition["Check"]["TTL"], "10000ms");
        assert_eq!(definition["Check"]["Status"], "passing");
        assert_eq!(definition["Check"]["CheckID"], "service:web-10.0.0.7-8080");
        assert_eq!(service_id("web", "[::1]:80".parse().unwrap()), "web---1-80");
        // Removed a minute after turning critical unless told otherwise.
        assert_eq!(definition["Check"]["DeregisterCriticalServiceAfter"], "1m");
    }

    #[test]
    fn how_long_a_critical_instance_stays_is_an_option_of_at_least_a_minute() {
        let after = |seconds: u64| {
            options("http://127.0.0.1:8500", "web", 1)
                .unwrap()
                .with_deregister_after(Duration::from_secs(seconds))
        };
        let definition = after(90).unwrap().definition();
        assert_eq!(definition["Check"]["DeregisterCriticalServiceAfter"], "90s");
        let definition = after(3600).unwrap().definition();
        assert_eq!(definition["Check"]["DeregisterCriticalServiceAfter"], "60m");
        match after(30) {
            Err(RegisterError::Invalid { flag, message }) => {
                assert_eq!(flag, "--deregister-critical-after");
                assert!(message.contains("minimum is 1m"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(go_duration(Duration::from_millis(61_500)), "61500ms");
    }

    #[test]
    fn bad_flags_are_named() {
        let flag = |result: Result<ConsulOptions, RegisterError>| match result {
            Err(RegisterError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(options("127.0.0.1:8500", "web", 1)), "--consul");
        assert_eq!(
            flag(options("http://127.0.0.1:8500", "a b", 1)),
            "--service"
        );
        assert_eq!(flag(options("http://127.0.0.1:8500", "web", 0)), "--weight");
    }
}
