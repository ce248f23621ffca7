//! Property tests of the invariants every algorithm promises, over random pools, weights,
//! loads and availability.

use super::testing::{backend, load};
use super::*;
use crate::backend::InFlight;
use crate::config::{HashKey, HashOptions, P2cLoad, P2cOptions};
use proptest::prelude::*;

fn all_algorithms() -> Vec<Algorithm> {
    let hash = |bounded_load| {
        Algorithm::Hash(HashOptions {
            key: HashKey::SourceIp,
            bounded_load,
            fallback: Box::new(Algorithm::LeastConn),
        })
    };
    vec![
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::LeastConn,
        Algorithm::P2c(P2cOptions {
            load: P2cLoad::InFlight,
        }),
        Algorithm::P2c(P2cOptions {
            load: P2cLoad::Ewma,
        }),
        hash(None),
        hash(Some(1.25)),
        Algorithm::First,
    ]
}

/// A pool from `(weight, load, full)` triples; `full` backends are at their `max_connections`.
fn build(specs: &[(u32, usize, bool)]) -> (Vec<Backend>, Vec<InFlight>) {
    let mut backends: Vec<Backend> = (0..specs.len()).map(|i| backend(i, specs[i].0)).collect();
    let loads: Vec<usize> = specs.iter().map(|s| s.1).collect();
    let guards = load(&backends, &loads);
    for (backend, &(_, in_flight, full)) in backends.iter_mut().zip(specs) {
        if full {
            backend.max_connections = Some(in_flight.max(1) as u32);
        }
    }
    let mut guards = guards;
    for (backend, &(_, in_flight, full)) in backends.iter().zip(specs) {
        if full && in_flight == 0 {
            guards.push(backend.state.acquire());
        }
    }
    (backends, guards)
}

fn score(backend: &Backend) -> (u64, u64) {
    (
        backend.state.in_flight() as u64 + 1,
        u64::from(backend.weight),
    )
}

fn spec() -> impl proptest::strategy::Strategy<Value = Vec<(u32, usize, bool)>> {
    prop::collection::vec((0u32..6, 0usize..6, prop::bool::weighted(0.3)), 0..12)
}

proptest! {
    #[test]
    fn every_algorithm_picks_only_available_and_none_only_when_none_is(
        specs in spec(), key in prop::option::of(any::<u64>()), seed in any::<u64>(),
    ) {
        let (backends, _guards) = build(&specs);
        let any_available = backends.iter().any(Backend::is_available);
        let mut rng = fastrand::Rng::with_seed(seed);
        for algorithm in all_algorithms() {
            let balancer = Balancer::new(&algorithm, &backends);
            let context = PickContext { key, sticky: None, now_micros: 0 };
            for _ in 0..8 {
                match balancer.pick(&backends, &context, &mut rng) {
                    Some(index) => prop_assert!(backends[index].is_available(), "{algorithm:?}"),
                    None => prop_assert!(!any_available, "{algorithm:?} said none"),
                }
            }
        }
    }

    #[test]
    fn round_robin_gives_exact_shares_over_whole_cycles(
        weights in prop::collection::vec(0u32..40, 1..10), cycles in 1usize..4,
    ) {
        let backends: Vec<_> = weights.iter().enumerate().map(|(i, &w)| backend(i, w)).collect();
        let divisor = weights.iter().fold(0, |a, &b| gcd(a, b)).max(1);
        let cycle: u32 = weights.iter().map(|w| w / divisor).sum();
        let balancer = Balancer::new(&Algorithm::RoundRobin, &backends);
        let mut counts = vec![0u32; weights.len()];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..cycle as usize * cycles {
            counts[balancer.pick(&backends, &PickContext::default(), &mut rng).unwrap()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| w / divisor * cycles as u32).collect();
        prop_assert_eq!(counts, expected);
    }

    #[test]
    fn least_conn_never_picks_a_busier_backend_than_an_available_one(specs in spec()) {
        let (backends, _guards) = build(&specs);
        let balancer = Balancer::new(&Algorithm::LeastConn, &backends);
        if let Some(picked) = balancer.pick(&backends, &PickContext::default(), &mut fastrand::Rng::new()) {
            let (load, weight) = score(&backends[picked]);
            for other in backends.iter().filter(|b| b.is_available()) {
                let (other_load, other_weight) = score(other);
                prop_assert!(load * other_weight <= other_load * weight);
            }
        }
    }

    #[test]
    fn p2c_never_picks_the_worse_of_its_two(
        loads in prop::collection::vec(0usize..8, 2..12), seed in any::<u64>(),
    ) {
        let backends: Vec<_> = (0..loads.len()).map(|i| backend(i, 1)).collect();
        let _guards = load(&backends, &loads);
        let p2c = p2c::P2c::new(P2cLoad::InFlight);
        let mut rng = fastrand::Rng::with_seed(seed);
        let (a, b) = p2c::candidates(backends.len(), &mut rng.clone());
        let picked = p2c.pick(&backends, 0, &mut rng);
        prop_assert!(picked == Some(a) || picked == Some(b));
        let other = if picked == Some(a) { b } else { a };
        prop_assert!(loads[picked.unwrap()] <= loads[other]);
    }

    #[test]
    fn hash_moves_only_the_removed_backends_keys(
        count in 2usize..30, removed in any::<prop::sample::Index>(), seed in any::<u64>(),
    ) {
        // Weights 1..=3 with the heaviest held by several backends: point counts are relative
        // to the heaviest weight, so removing any one backend changes no other's points.
        let weight = |i: usize| if i < 2 { 3 } else { 1 + (i % 3) as u32 };
        let backends: Vec<_> = (0..count).map(|i| backend(i, weight(i))).collect();
        let removed = removed.index(count);
        let mut smaller = backends.clone();
        let gone = smaller.remove(removed).address.clone();
        if smaller.iter().map(|b| b.weight).max() != Some(3) {
            return Ok(());
        }
        let algorithm = all_algorithms().swap_remove(5);
        let (before, after) = (Balancer::new(&algorithm, &backends), Balancer::new(&algorithm, &smaller));
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..200 {
            let context = PickContext { key: Some(rng.u64(..)), ..PickContext::default() };
            let old = backends[before.pick(&backends, &context, &mut rng).unwrap()].address.clone();
            let new = smaller[after.pick(&smaller, &context, &mut rng).unwrap()].address.clone();
            prop_assert!(old == new || old == gone);
        }
    }

    #[test]
    fn hash_keys_of_available_backends_stay_put_whatever_goes_down(
        weights in prop::collection::vec(1u32..6, 2..20), down in prop::collection::vec(any::<bool>(), 20),
        seed in any::<u64>(),
    ) {
        let mut backends: Vec<_> = weights.iter().enumerate().map(|(i, &w)| backend(i, w)).collect();
        let balancer = Balancer::new(&all_algorithms().swap_remove(5), &backends);
        let mut rng = fastrand::Rng::with_seed(seed);
        let contexts: Vec<_> = (0..200)
            .map(|_| PickContext { key: Some(rng.u64(..)), ..PickContext::default() })
            .collect();
        let before: Vec<_> = contexts.iter().map(|c| balancer.pick(&backends, c, &mut rng)).collect();
        let _full: Vec<_> = (0..backends.len())
            .filter(|&i| down[i])
            .map(|i| testing::fill(&mut backends, i))
            .collect();
        for (context, old) in contexts.iter().zip(before) {
            let new = balancer.pick(&backends, context, &mut rng);
            let old = old.unwrap();
            prop_assert!(new == Some(old) || down[old]);
        }
    }

    #[test]
    fn bounded_load_caps_every_backend(
        weights in prop::collection::vec(1u32..4, 2..12), factor in 1.0f64..3.0,
        hot in 0.0f64..1.0, seed in any::<u64>(),
    ) {
        let backends: Vec<_> = weights.iter().enumerate().map(|(i, &w)| backend(i, w)).collect();
        let algorithm = Algorithm::Hash(HashOptions {
            key: HashKey::SourceIp, bounded_load: Some(factor), fallback: Box::new(Algorithm::Random),
        });
        let balancer = Balancer::new(&algorithm, &backends);
        let total_weight: u32 = weights.iter().sum();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut guards = Vec::new();
        for _ in 0..200 {
            let key = if rng.f64() < hot { 7 } else { rng.u64(..) };
            let context = PickContext { key: Some(key), ..PickContext::default() };
            let index = balancer.pick(&backends, &context, &mut rng).unwrap();
            guards.push(backends[index].state.acquire());
            let total = guards.len() as f64;
            for backend in &backends {
                let cap = (factor * total * f64::from(backend.weight) / f64::from(total_weight)).ceil();
                prop_assert!(backend.state.in_flight() as f64 <= cap);
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[test]
fn hash_without_a_key_uses_the_fallback() {
    let backends: Vec<_> = (0..3).map(|i| backend(i, 1)).collect();
    let algorithm = Algorithm::Hash(HashOptions {
        key: HashKey::Path,
        bounded_load: None,
        fallback: Box::new(Algorithm::RoundRobin),
    });
    let balancer = Balancer::new(&algorithm, &backends);
    let mut rng = fastrand::Rng::with_seed(3);
    let keyless = PickContext::default();
    let picks: Vec<_> = (0..6)
        .map(|_| balancer.pick(&backends, &keyless, &mut rng).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    let keyed = PickContext {
        key: Some(99),
        ..PickContext::default()
    };
    let first = balancer.pick(&backends, &keyed, &mut rng);
    assert!((0..6).all(|_| balancer.pick(&backends, &keyed, &mut rng) == first));
}
