//! What a listener change does at the HTTP edge, for the reload plan: which of redirects,
//! direct answers, traffic splits, mirrors, error pages and compression changed, so
//! `sluice check --diff` says more than "listener changed". Pure.

use super::{ListenerConfig, RouteAction, RouteConfig};

/// A kind of route action and what of a route it compares (`None`: not of that kind).
type Kind = (&'static str, fn(&RouteConfig) -> Option<String>);

/// The edge settings of `new` that differ from `old`, in a fixed order.
pub fn edge_changes(old: &ListenerConfig, new: &ListenerConfig) -> Vec<&'static str> {
    let mut changes = Vec::new();
    let kinds: [Kind; 4] = [
        ("redirects", |r| match &r.action {
            RouteAction::Redirect(redirect) => Some(format!("{:?}{redirect:?}", r.matcher)),
            _ => None,
        }),
        ("direct answers", |r| match &r.action {
            RouteAction::Respond(respond) => Some(format!("{:?}{respond:?}", r.matcher)),
            _ => None,
        }),
        ("traffic splits", |r| match &r.action {
            RouteAction::Forward(f) if f.pools.len() > 1 => {
                Some(format!("{:?}{:?}{:?}", r.matcher, f.pools, f.split_key))
            }
            _ => None,
        }),
        ("mirrors", |r| match &r.action {
            RouteAction::Forward(f) => f.mirror.as_ref().map(|m| format!("{:?}{m:?}", r.matcher)),
            _ => None,
        }),
    ];
    for (what, key) in kinds {
        let before: Vec<String> = old.routes.iter().filter_map(key).collect();
        let after: Vec<String> = new.routes.iter().filter_map(key).collect();
        if before != after {
            changes.push(what);
        }
    }
    if old.error_pages != new.error_pages {
        changes.push("error pages");
    }
    let route_compression =
        |l: &ListenerConfig| -> Vec<_> { l.routes.iter().map(|r| r.compression.clone()).collect() };
    if old.compression != new.compression || route_compression(old) != route_compression(new) {
        changes.push("compression");
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::diff::diff;

    const BASE: &str = "listeners:\n  web:\n    bind: 127.0.0.1:8080\n    pool: a\n    routes:\n      - match: { path: /x }\n        pool: a\npools:\n  a: { backends: [127.0.0.1:9001] }\n  b: { backends: [127.0.0.1:9002] }\n";

    fn plan(new: &str) -> String {
        let old = Config::parse(BASE, "t.yaml").expect("valid");
        let new = Config::parse(new, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        diff(&old, &new).to_string()
    }

    #[test]
    fn the_plan_names_what_changed_at_the_edge() {
        let split = BASE.replace(
            "        pool: a\n",
            "        pools: [{ pool: a, weight: 9 }, { pool: b, weight: 1 }]\n        mirror: { pool: b, percent: 5 }\n",
        );
        let text = plan(&split);
        assert!(
            text.contains("listener web: traffic splits, mirrors changed"),
            "{text}"
        );
        let redirect = BASE.replace("        pool: a\n", "        redirect: { scheme: https }\n");
        assert!(plan(&redirect).contains("listener web: redirects changed"));
        let compressed = BASE.replace(
            "    pool: a\n    routes",
            "    pool: a\n    compression: {}\n    routes",
        );
        assert!(plan(&compressed).contains("listener web: compression changed"));
    }
}
