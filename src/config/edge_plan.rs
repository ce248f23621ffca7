//! How edge rules read in the reload plan (`sluice check --diff`): each rule as one line of
//! text, and what a reload changes in a listener's rules.

use super::{AccessAction, AccessRule, ClientAddressConfig, RateKey, RateLimitConfig};

impl std::fmt::Display for AccessRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            AccessAction::Allow => "allow",
            AccessAction::Deny => "deny",
        };
        let blocks: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
        write!(f, "{} {action} {}", self.name, blocks.join(" "))?;
        if self.dry_run {
            write!(f, " (dry run)")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for RateLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        let key = match &self.key {
            RateKey::Client => "client".to_owned(),
            RateKey::Header(name) => format!("header:{name}"),
            RateKey::Cookie(name) => format!("cookie:{name}"),
            RateKey::Route => "route".to_owned(),
        };
        write!(
            f,
            "{}/{unit} burst {} key {key} max_keys {}",
            self.count, self.burst, self.max_keys
        )?;
        if self.dry_run {
            write!(f, " (dry run)")?;
        }
        Ok(())
    }
}

/// What a reload changes in a listener's edge rules, one line each, for the reload plan
/// (`sluice check --diff`): rules added, removed or changed, and whether a rate limit keeps
/// its buckets (same name, same rate, burst, key and max_keys) or starts every key full.
pub fn edge_changes(
    name: &str,
    old: &super::super::ListenerConfig,
    new: &super::super::ListenerConfig,
) -> Vec<String> {
    let mut lines = Vec::new();
    if old.edge.client_address != new.edge.client_address {
        let show = |c: &ClientAddressConfig| {
            let list: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
            format!("[{}]", list.join(", "))
        };
        lines.push(format!(
            "listener {name}: client_address.trusted_proxies {} -> {}",
            show(&old.edge.client_address),
            show(&new.edge.client_address)
        ));
    }
    if old.edge.max_connections_per_client != new.edge.max_connections_per_client {
        let show = |n: Option<u32>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
        lines.push(format!(
            "listener {name}: max_connections_per_client {} -> {} (open connections are kept)",
            show(old.edge.max_connections_per_client),
            show(new.edge.max_connections_per_client)
        ));
    }
    let access_scopes = |config: &super::super::ListenerConfig| {
        let mut scopes = vec![("".to_owned(), config.edge.access.clone())];
        for (index, route) in config.routes.iter().enumerate() {
            scopes.push((format!(" route {index}"), route.edge.access.clone()));
        }
        scopes
    };
    let (before, after) = (access_scopes(old), access_scopes(new));
    for (scope, rules) in &after {
        let old_rules = before
            .iter()
            .find(|(s, _)| s == scope)
            .map_or(&[][..], |(_, r)| &r[..]);
        if old_rules != &rules[..] {
            let show = |rules: &[AccessRule]| {
                let list: Vec<String> = rules.iter().map(ToString::to_string).collect();
                if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.join("; ")
                }
            };
            lines.push(format!(
                "listener {name}{scope}: access rules: {} -> {}",
                show(old_rules),
                show(rules)
            ));
        }
    }
    let limits = |config: &super::super::ListenerConfig| {
        let mut all: Vec<RateLimitConfig> = config.edge.rate_limit.iter().cloned().collect();
        all.extend(
            config
                .routes
                .iter()
                .filter_map(|r| r.edge.rate_limit.clone()),
        );
        all
    };
    let (before, after) = (limits(old), limits(new));
    for rule in &after {
        match before.iter().find(|b| b.name == rule.name) {
            None => lines.push(format!(
                "listener {name}: rate limit {} added: {rule}",
                rule.name
            )),
            Some(old_rule) if old_rule == rule => {}
            Some(old_rule) if old_rule.same_buckets(rule) => lines.push(format!(
                "listener {name}: rate limit {}: {old_rule} -> {rule} (buckets kept)",
                rule.name
            )),
            Some(old_rule) => lines.push(format!(
                "listener {name}: rate limit {}: {old_rule} -> {rule} (buckets start full)",
                rule.name
            )),
        }
    }
    for rule in &before {
        if !after.iter().any(|a| a.name == rule.name) {
            lines.push(format!(
                "listener {name}: rate limit {} removed (its buckets are dropped)",
                rule.name
            ));
        }
    }
    lines
}
