//! A bounded account of a `ReloadPlan` for the info log and the reload history: counts per
//! kind of change, the first lines of the plan and how many more there are.
//!
//! One etcd change that moves 10,000 backends is a 10,000-line plan (about 1.6 MB of text);
//! logging it whole at info level for every discovery change, and keeping 20 of them in the
//! reload history, cost CPU and tens of MiB. The summary is built without ever holding the
//! full text (a writer that keeps the first lines and counts the rest); the full plan stays
//! available through `Display`, which the control plane logs at debug level.

use super::diff::ReloadPlan;
use std::fmt::{self, Write};

/// Lines of the plan the summary quotes before "... and K more".
pub const SUMMARY_LINES: usize = 50;

impl ReloadPlan {
    /// The plan as `Display` writes it when it has at most `max_lines` lines; otherwise a
    /// line of counts per kind of change, the first `max_lines` lines and "... and K more".
    pub fn summary(&self, max_lines: usize) -> String {
        let mut head = Head {
            kept: String::new(),
            lines: 0,
            max_lines,
        };
        // Writing into `Head` cannot fail; `Display` of a plan fails only when its writer does.
        let _ = write!(head, "{self}");
        if head.lines <= max_lines {
            return head.kept;
        }
        let counts: Vec<String> = (self.counts().into_iter())
            .filter(|&(_, count)| count > 0)
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        format!(
            "{} changes ({})\n{}... and {} more (the full plan is logged at debug level)\n",
            head.lines,
            counts.join(", "),
            head.kept,
            head.lines - max_lines
        )
    }

    /// Changes per kind, in the order `Display` lists them.
    fn counts(&self) -> [(&'static str, usize); 13] {
        let pools = &self.pools_changed;
        let sum = |count: fn(&super::diff::PoolChange) -> usize| pools.iter().map(count).sum();
        [
            ("listeners added", self.listeners_added.len()),
            ("listeners removed", self.listeners_removed.len()),
            ("listeners re-bound", self.listeners_rebound.len()),
            ("listeners changed", self.listeners_changed.len()),
            ("pools added", self.pools_added.len()),
            ("pools removed", self.pools_removed.len()),
            ("listener edge changes", self.listener_edge_changes.len()),
            ("admin re-bound", usize::from(self.admin_rebound)),
            ("edge rule changes", self.edge_changes.len()),
            ("backends added", sum(|c| c.backends_added.len())),
            ("backends removed", sum(|c| c.backends_removed.len())),
            ("backends reweighted", sum(|c| c.backends_reweighted.len())),
            (
                "pool settings or discovery changed",
                sum(|c| usize::from(c.settings_changed) + usize::from(c.discovery_changed)),
            ),
        ]
    }
}

/// Keeps the first `max_lines` lines written to it and counts all of them.
struct Head {
    kept: String,
    lines: usize,
    max_lines: usize,
}

impl Write for Head {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // `Display` writes each line in a few pieces; a piece is kept while its line is.
        for piece in text.split_inclusive('\n') {
            if self.lines < self.max_lines {
                self.kept.push_str(piece);
            }
            if piece.ends_with('\n') {
                self.lines += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diff::PoolChange;

    fn plan(backends: usize) -> ReloadPlan {
        let address = |i: usize| {
            let socket =
                std::net::SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 80));
            crate::config::BackendAddress::from(socket)
        };
        ReloadPlan {
            pools_added: vec!["fresh".into()],
            pools_changed: vec![PoolChange {
                pool: "app".into(),
                backends_added: (0..backends).map(address).collect(),
                backends_removed: vec![address(9_999)],
                ..PoolChange::default()
            }],
            ..ReloadPlan::default()
        }
    }

    #[test]
    fn a_short_plan_is_the_plan_itself() {
        let plan = plan(3);
        assert_eq!(plan.summary(SUMMARY_LINES), plan.to_string());
        assert_eq!(plan.summary(5), plan.to_string());
        let empty = ReloadPlan::default();
        assert_eq!(empty.summary(SUMMARY_LINES), "no changes\n");
    }

    #[test]
    fn a_long_plan_is_counts_the_first_lines_and_how_many_more() {
        let plan = plan(10_000);
        let full = plan.to_string();
        let summary = plan.summary(SUMMARY_LINES);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[0],
            "10002 changes (pools added: 1, backends added: 10000, backends removed: 1)"
        );
        assert_eq!(
            lines[1..=SUMMARY_LINES],
            full.lines().take(SUMMARY_LINES).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            lines[SUMMARY_LINES + 1],
            "... and 9952 more (the full plan is logged at debug level)"
        );
        assert_eq!(lines.len(), SUMMARY_LINES + 2);
        assert!(summary.len() < 4_000, "{} bytes", summary.len());
    }

    #[test]
    fn exactly_max_lines_is_not_cut() {
        let plan = plan(4);
        // pool added + 4 added + 1 removed.
        assert_eq!(plan.to_string().lines().count(), 6);
        assert_eq!(plan.summary(6), plan.to_string());
        assert!(
            plan.summary(5)
                .ends_with("... and 1 more (the full plan is logged at debug level)\n")
        );
    }
}
