//! Access rules: an ordered list of `allow`/`deny` address blocks; the first rule whose
//! blocks hold the client decides, and a client no rule names is allowed (nginx's
//! `allow`/`deny`, HAProxy's `http-request deny if { src ... }`). Pure.
//!
//! A rule in `dry_run` that would deny does not decide: it is reported (counted and logged)
//! and the walk goes on, so the answer is what it would be without the rule, which is what
//! an operator trying a rule out needs to see. A client without an address (a unix socket
//! peer without a PROXY header) is judged by no rule: it is a local process that passed the
//! socket file's permissions.

use crate::config::edge::{AccessAction, AccessRule};
use std::net::IpAddr;

/// What the rules say about one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'r> {
    /// The rule that denies, if any.
    pub denied_by: Option<&'r AccessRule>,
    /// A `dry_run` rule that would have denied (the first one), if any.
    pub would_deny: Option<&'r AccessRule>,
}

pub fn check(rules: &[AccessRule], client: Option<IpAddr>) -> Verdict<'_> {
    let mut verdict = Verdict {
        denied_by: None,
        would_deny: None,
    };
    let Some(ip) = client else {
        return verdict;
    };
    for rule in rules {
        if !rule.networks.iter().any(|cidr| cidr.contains(ip)) {
            continue;
        }
        match (rule.action, rule.dry_run) {
            (AccessAction::Allow, false) => return verdict,
            (AccessAction::Deny, false) => {
                verdict.denied_by = Some(rule);
                return verdict;
            }
            // A dry-run allow decides nothing either: the walk goes on as without it.
            (AccessAction::Allow, true) => {}
            (AccessAction::Deny, true) => {
                verdict.would_deny = verdict.would_deny.or(Some(rule));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn rule(name: &str, action: AccessAction, blocks: &[&str], dry_run: bool) -> AccessRule {
        AccessRule {
            name: name.into(),
            action,
            networks: blocks.iter().map(|b| Cidr::parse(b).unwrap()).collect(),
            dry_run,
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn first_match_wins_and_default_is_allow() {
        let rules = [
            rule("office", AccessAction::Allow, &["192.0.2.10"], false),
            rule(
                "lab",
                AccessAction::Deny,
                &["192.0.2.0/24", "2001:db8::/32"],
                false,
            ),
        ];
        assert_eq!(check(&rules, ip("192.0.2.10")).denied_by, None);
        assert_eq!(
            check(&rules, ip("192.0.2.11")).denied_by.map(|r| &*r.name),
            Some("lab")
        );
        assert_eq!(
            check(&rules, ip("2001:db8::1")).denied_by.map(|r| &*r.name),
            Some("lab")
        );
        assert_eq!(check(&rules, ip("198.51.100.1")).denied_by, None);
        assert_eq!(check(&rules, None).denied_by, None);
    }

    #[test]
    fn allow_list_then_deny_all() {
        let rules = [
            rule("inside", AccessAction::Allow, &["10.0.0.0/8"], false),
            rule("rest", AccessAction::Deny, &["0.0.0.0/0", "::/0"], false),
        ];
        assert!(check(&rules, ip("10.1.2.3")).denied_by.is_none());
        assert!(check(&rules, ip("::ffff:10.1.2.3")).denied_by.is_none());
        assert!(check(&rules, ip("11.0.0.1")).denied_by.is_some());
        assert!(check(&rules, ip("::1")).denied_by.is_some());
    }

    #[test]
    fn dry_run_reports_and_decides_nothing() {
        let rules = [
            rule("try", AccessAction::Deny, &["192.0.2.0/24"], true),
            rule("real", AccessAction::Deny, &["192.0.2.128/25"], false),
        ];
        let low = check(&rules, ip("192.0.2.1"));
        assert_eq!(low.denied_by, None);
        assert_eq!(low.would_deny.map(|r| &*r.name), Some("try"));
        let high = check(&rules, ip("192.0.2.200"));
        assert_eq!(high.denied_by.map(|r| &*r.name), Some("real"));
        assert_eq!(high.would_deny.map(|r| &*r.name), Some("try"));
    }
}
