//! The hand-written families checked against a crate that fits the same model.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lambda_core::bayes::NaiveBayes;
use linfa::prelude::*;
use linfa_bayes::{GaussianNb, NaiveBayes as _};
use ndarray::{Array1, Array2};

#[test]
fn gaussian_naive_bayes_matches_linfa_bayes() {
    // Three classes over four dimensions, one of them constant within a class (the smoothing matters there).
    let mut state = 17u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let (n, d) = (600, 4);
    let mut xs = Vec::with_capacity(n * d);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let y = i % 3;
        xs.extend([next() + y as f64, 2.0 * next() - y as f64, if y == 1 { 0.5 } else { next() }, next() * 0.1]);
        ys.push(y);
    }
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let x = Array2::from_shape_vec((n, d), xs.clone()).unwrap();
    let dataset = Dataset::new(x.clone(), Array1::from(ys.clone()));
    // A large smoothing too, where how the smoothing is scaled shows in every probability.
    for smoothing in [1e-9, 0.05] {
        let ours = NaiveBayes::fit(classes.clone(), d, &xs, &ys, smoothing);
        let theirs = GaussianNb::params().var_smoothing(smoothing).fit(&dataset).unwrap();
        let (proba, order) = theirs.predict_proba(x.view());
        assert_eq!(order, vec![&0, &1, &2]);
        let mut worst: f64 = 0.0;
        for r in 0..n {
            let p = ours.predict(&xs[r * d..(r + 1) * d]);
            for c in 0..3 {
                worst = worst.max((p[c] - proba[[r, c]]).abs());
            }
        }
        assert!(worst < 1e-9, "var_smoothing {smoothing}: largest difference in a probability: {worst}");
    }
}
