//! Who is being refused: the most refused keys of a listener, for `/status` ("top limited
//! keys"), kept in bounded memory with the space-saving algorithm (Metwally et al.): at most
//! `CAPACITY` entries; a new key takes the place of the least counted one and inherits its
//! count plus one, so a key refused often is never pushed out by many keys refused once.
//! Counts are then upper bounds, exact for keys that stayed in the table. Only refusals
//! touch it (the allowed path never locks it).

use std::sync::Mutex;

const CAPACITY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// The rule's name (`access[0]`, `login`, `routes[1].rate_limit`, `max_connections_per_client`).
    pub rule: String,
    /// `access_denied`, `rate_limited`, `connection_limit`, or one of them with `_dry_run`.
    pub reason: &'static str,
    /// The client address, or a shortened header or cookie value (see `edge::describe_key`).
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Default)]
pub struct Refusals {
    top: Mutex<Vec<Refused>>,
}

impl Refusals {
    pub fn note(&self, rule: &str, reason: &'static str, key: String) {
        let mut top = self.top.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = top
            .iter_mut()
            .find(|e| e.key == key && e.rule == rule && e.reason == reason)
        {
            entry.count += 1;
            return;
        }
        let entry = Refused {
            rule: rule.to_owned(),
            reason,
            key,
            count: 1,
        };
        if top.len() < CAPACITY {
            top.push(entry);
            return;
        }
        if let Some(least) = top.iter_mut().min_by_key(|e| e.count) {
            let count = least.count + 1;
            *least = Refused { count, ..entry };
        }
    }

    /// The `n` most refused, most first.
    pub fn top(&self, n: usize) -> Vec<Refused> {
        let mut all = self.top.lock().unwrap_or_else(|p| p.into_inner()).clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_key_survives_many_light_ones() {
        let refusals = Refusals::default();
        for _ in 0..100 {
            refusals.note("login", "rate_limited", "192.0.2.1".into());
        }
        for i in 0..1000 {
            refusals.note("login", "rate_limited", format!("198.51.100.{}", i % 250));
        }
        let top = refusals.top(3);
        assert_eq!(top[0].key, "192.0.2.1");
        assert_eq!(top[0].count, 100);
        assert_eq!(top.len(), 3);
        assert!(refusals.top.lock().unwrap().len() <= CAPACITY);
    }
}
