//! The bcrypt bound: how long one login's password check takes at the configured cost, so that
//! the logins a machine can serve per second are at most `cores / that time`.
//!
//! `BCRYPT_COST=12 cargo bench -p common --bench bcrypt_cost`. A login is one `bcrypt::verify`
//! against the stored hash (an unknown email verifies against a dummy hash of the same cost),
//! which is what is timed. deploy/bench/run.sh reads criterion's estimate from
//! `target/criterion/bcrypt/verify/new/estimates.json`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

fn cost() -> u32 {
    std::env::var("BCRYPT_COST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

fn bcrypt_verify(c: &mut Criterion) {
    let cost = cost();
    let hash = bcrypt::hash("correct horse battery staple", cost).expect("hash");
    let mut group = c.benchmark_group("bcrypt");
    // One cost-12 verification is about a quarter of a second: ten samples of one each.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("verify", |b| {
        b.iter(|| {
            bcrypt::verify(black_box("correct horse battery staple"), &hash).expect("verify")
        });
    });
    group.finish();
}

criterion_group!(benches, bcrypt_verify);
criterion_main!(benches);
