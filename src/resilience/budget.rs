//! The retry budget: retries may add at most `ratio` of recent requests, plus a small floor
//! per second so a quiet service can still retry (tower's `TpsBudget`, Envoy's
//! `retry_budget`, Finagle's `RetryBudget`). This is what keeps a blip from becoming a
//! retry storm: when a backend fails everything, traffic grows by `ratio`, not by `attempts`.
//!
//! Pure: time passed in. Counts live in per-second slots over a sliding window; the caller
//! wraps it in a mutex (one short critical section per request).

use std::time::Duration;

const SLOTS: usize = 10;

#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    slot_length: Duration,
    /// (slot index since origin, requests, retries)
    slots: [(u64, u64, u64); SLOTS],
}

impl RetryBudget {
    /// `window` is split in ten slots; `ratio` is e.g. 0.2 for 20%.
    pub fn new(ratio: f64, min_per_second: f64, window: Duration) -> RetryBudget {
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_second: min_per_second.max(0.0),
            slot_length: (window / SLOTS as u32).max(Duration::from_millis(1)),
            slots: [(u64::MAX, 0, 0); SLOTS],
        }
    }

    fn slot(&mut self, elapsed: Duration) -> &mut (u64, u64, u64) {
        let index = (elapsed.as_nanos() / self.slot_length.as_nanos()) as u64;
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.0 != index {
            *slot = (index, 0, 0);
        }
        slot
    }

    fn totals(&self, elapsed: Duration) -> (u64, u64) {
        let current = (elapsed.as_nanos() / self.slot_length.as_nanos()) as u64;
        self.slots
            .iter()
            .filter(|(index, _, _)| {
                *index != u64::MAX && current.saturating_sub(*index) < SLOTS as u64
            })
            .fold((0, 0), |(requests, retries), slot| {
                (requests + slot.1, retries + slot.2)
            })
    }

    /// Records an original request (not a retry). `elapsed` is time since any fixed origin.
    pub fn deposit(&mut self, elapsed: Duration) {
        self.slot(elapsed).1 += 1;
    }

    /// Takes one retry from the budget if there is room; false means: do not retry.
    pub fn try_withdraw(&mut self, elapsed: Duration) -> bool {
        let (requests, retries) = self.totals(elapsed);
        let window_seconds = self.slot_length.as_secs_f64() * SLOTS as f64;
        let allowed = requests as f64 * self.ratio + self.min_per_second * window_seconds;
        if (retries as f64) + 1.0 <= allowed {
            self.slot(elapsed).2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn retries_are_capped_at_the_ratio_of_requests() {
        let mut budget = RetryBudget::new(0.2, 0.0, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit(at(0));
        }
        let granted = (0..100).filter(|_| budget.try_withdraw(at(0))).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn a_quiet_service_still_gets_the_floor() {
        let mut budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10));
        let granted = (0..50).filter(|_| budget.try_withdraw(at(500))).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        let mut budget = RetryBudget::new(0.5, 0.0, Duration::from_secs(10));
        for _ in 0..10 {
            budget.deposit(at(0));
        }
        assert!(budget.try_withdraw(at(1_000)));
        // 11 s later, the deposits have aged out: no budget left.
        assert!(!budget.try_withdraw(at(11_500)));
        budget.deposit(at(11_600));
        budget.deposit(at(11_700));
        assert!(budget.try_withdraw(at(11_800)));
        assert!(!budget.try_withdraw(at(11_900)));
    }
}
