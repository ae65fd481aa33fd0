//! How large the speed layer's tree learners grow and what checkpointing one costs: each learner learns a stream of
//! ten numeric features (encoded as the speed layer encodes them: value and missing flag) until it stops growing,
//! then is encoded as a checkpoint record and written and synced to a file, timed.
//!   learner_size [EVENTS]   (default 300,000)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Instant;

use lambda_core::encoder::{Encoder, FeatureEncoder};
use lambda_core::schema::Target;
use lambda_models::online::OnlineLearner;

/// A 64-bit linear congruential generator, uniform in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let events: usize = std::env::args().nth(1).map_or(300_000, |v| v.parse().expect("a number of events"));
    let features = (0..10)
        .map(|j| FeatureEncoder::Numeric {
            name: format!("x{j}"),
            mean: 0.0,
            std: 1.0,
            min: -1.0,
            max: 1.0,
            trend: 0.0,
        })
        .collect();
    let encoder = Encoder { features, target: None };
    let classes: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    println!("| learner | task | events | size | bytes | encode ms | write and sync ms |");
    println!("|---|---|---|---|---|---|---|");
    for name in ["hoeffding_tree", "adaptive_random_forest"] {
        for task in ["classification", "regression"] {
            let cls: &[String] = if task == "classification" { &classes } else { &[] };
            let mut learner = OnlineLearner::new(name, cls, &encoder, None).unwrap();
            let mut r = Lcg(7);
            // Many small regions, so that the trees keep finding splits: a hard case for size.
            let centroids: Vec<Vec<f64>> = (0..64).map(|_| (0..10).map(|_| r.next() * 2.0 - 1.0).collect()).collect();
            for _ in 0..events {
                let x: Vec<f64> = (0..10).map(|_| r.next() * 2.0 - 1.0).collect();
                let dist = |c: &Vec<f64>| c.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                let near = (0..64).min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b]))).unwrap();
                let target = if task == "classification" {
                    Target::Class(classes[near % 4].clone())
                } else {
                    Target::Value(near as f64 + r.next())
                };
                let encoded: Vec<f64> = x.iter().flat_map(|v| [*v, 0.0]).collect();
                learner.learn(&encoded, &target);
            }
            let started = Instant::now();
            let bytes = postcard::to_allocvec(&learner).unwrap();
            let encode_ms = started.elapsed().as_secs_f64() * 1e3;
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let mut f = std::fs::File::create(dir.path().join("record")).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
            let write_ms = started.elapsed().as_secs_f64() * 1e3;
            println!(
                "| {name} | {task} | {events} | {} | {} | {encode_ms:.1} | {write_ms:.1} |",
                learner.describe(),
                bytes.len()
            );
        }
    }
}
