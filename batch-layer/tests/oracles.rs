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

#[test]
fn boosted_trees_copied_into_the_core_format_predict_what_forust_ml_predicts() {
    use forust_ml::{GradientBooster, Matrix};
    use lambda_batch::boost::{fit, BoostParams};
    let (n, d) = (2000, 3);
    let mut xs = Vec::with_capacity(n * d);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b, c) = (((i * 37) % 101) as f64 / 50.0 - 1.0, ((i * 53) % 97) as f64 / 48.0 - 1.0, (i % 3) as f64);
        xs.extend([a, b, c]);
        ys.push(usize::from((a * b > 0.0) != (c == 2.0)));
    }
    let p = BoostParams { rounds: 30, learning_rate: 0.2, max_depth: 4, l2: 1.0, min_leaf_weight: 1.0 };
    let classes = ["no".to_string(), "yes".to_string()];
    let ours = fit(&xs, d, &classes, &ys, &[], &p, false).unwrap();
    ours.validate().unwrap();
    // forust-ml itself, with the same settings, on column-major data.
    let cols: Vec<f64> = (0..d).flat_map(|j| (0..n).map(move |r| (r, j))).map(|(r, j)| xs[r * d + j]).collect();
    let matrix = Matrix::new(&cols, n, d);
    let y: Vec<f64> = ys.iter().map(|&c| c as f64).collect();
    let mut theirs = GradientBooster::default()
        .set_iterations(30)
        .set_learning_rate(0.2)
        .set_max_depth(4)
        .set_l2(1.0)
        .set_min_leaf_weight(1.0)
        .set_parallel(false)
        .set_seed(0);
    theirs.fit(&matrix, &y, &vec![1.0; n], None).unwrap();
    let log_odds = theirs.predict(&matrix, false);
    let mut right = 0;
    for r in 0..n {
        let raw = ours.trees.raw(&xs[r * d..(r + 1) * d]);
        assert_eq!(raw[0].to_bits(), log_odds[r].to_bits(), "row {r}: {} vs {}", raw[0], log_odds[r]);
        right += usize::from((raw[0] > 0.0) == (ys[r] == 1));
    }
    // And it learned the interaction.
    assert!(right as f64 / n as f64 > 0.9, "{right} of {n}");
}
