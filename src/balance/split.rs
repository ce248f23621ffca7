//! Traffic splitting between pools (`routes[].pools: [{pool, weight}]`): which pool of a
//! weighted split a request goes to. Pure: the key and the randomness are passed in.
//!
//! Decisions. A request with a key (the route's `split_key`, or the hash key of a split pool)
//! lands on a fixed point of the weight line, so a client stays on its pool for as long as
//! the weights stay; pools are laid out in config order, so moving weight to the last pool
//! (ramping a canary up) only moves clients towards it, never one that was on it already
//! back off it. Without a key the draw is random by weight; a pool's sticky cookie, checked
//! by the caller before this, keeps such a client where its first answer came from.

/// Which entry of `weights` a request goes to; `None` when every weight is 0.
pub fn pick(weights: &[u32], key: Option<u64>, rng: &mut fastrand::Rng) -> Option<usize> {
    pick_by(weights, |&w| w, key, rng)
}

/// `pick` over any entries, `weight` reading each one's weight (no copy of the weights).
pub fn pick_by<T>(
    entries: &[T],
    weight: impl Fn(&T) -> u32,
    key: Option<u64>,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let total: u64 = entries.iter().map(|e| u64::from(weight(e))).sum();
    if total == 0 {
        return None;
    }
    let point = match key {
        // The key is already a well-mixed 64-bit hash (`hash_bytes`); `%` on a total this
        // small is as even as a draw.
        Some(key) => key % total,
        None => rng.u64(0..total),
    };
    let mut end = 0u64;
    for (index, entry) in entries.iter().enumerate() {
        end += u64::from(weight(entry));
        if point < end {
            return Some(index);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash_bytes;

    #[test]
    fn random_draws_follow_the_weights() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 2];
        for _ in 0..100_000 {
            counts[pick(&[95, 5], None, &mut rng).expect("a pool")] += 1;
        }
        let share = f64::from(counts[1]) / 100_000.0;
        assert!((0.045..0.055).contains(&share), "canary share {share}");
    }

    #[test]
    fn keyed_picks_follow_the_weights_and_never_change_for_a_key() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = [0u32; 3];
        for user in 0..30_000u32 {
            let key = hash_bytes(format!("user-{user}").as_bytes());
            let first = pick(&[50, 30, 20], Some(key), &mut rng).expect("a pool");
            for _ in 0..3 {
                assert_eq!(pick(&[50, 30, 20], Some(key), &mut rng), Some(first));
            }
            counts[first] += 1;
        }
        let shares: Vec<f64> = counts.iter().map(|&c| f64::from(c) / 30_000.0).collect();
        assert!((shares[0] - 0.5).abs() < 0.02, "{shares:?}");
        assert!((shares[1] - 0.3).abs() < 0.02, "{shares:?}");
        assert!((shares[2] - 0.2).abs() < 0.02, "{shares:?}");
    }

    #[test]
    fn ramping_a_canary_up_never_moves_a_canary_user_back() {
        let mut rng = fastrand::Rng::with_seed(1);
        for user in 0..10_000u32 {
            let key = Some(hash_bytes(format!("u{user}").as_bytes()));
            if pick(&[95, 5], key, &mut rng) == Some(1) {
                assert_eq!(
                    pick(&[80, 20], key, &mut rng),
                    Some(1),
                    "user {user} flapped"
                );
            }
        }
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..1000 {
            assert_eq!(pick(&[0, 4, 0], None, &mut rng), Some(1));
        }
        assert_eq!(pick(&[0, 0], None, &mut rng), None);
        assert_eq!(pick(&[], Some(9), &mut rng), None);
    }
}
