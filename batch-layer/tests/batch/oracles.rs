//! The hand-written families checked against a crate that fits the same model.

use lambda_models::bayes::NaiveBayes;
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

/// Three classes of rows: `numeric` Gaussian-ish inputs (one constant within a class) and, when `categories` > 0, one
/// category of that many, drawn with class-dependent odds. Row-major numbers, category per row, class per row.
fn mixed_rows(n: usize, numeric: usize, categories: usize, seed: u64) -> (Vec<f64>, Vec<usize>, Vec<usize>) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut xs, mut cats, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let y = i % 3;
        for j in 0..numeric {
            xs.push(if y == 1 && j == 0 { 0.5 } else { (next() * 2.0 - 1.0) * (1.0 + j as f64) + (y * j) as f64 });
        }
        let skew = next();
        cats.push(if skew < 0.5 { y % categories.max(1) } else { (next() * categories as f64) as usize });
        ys.push(y);
    }
    (xs, cats, ys)
}

/// The online naive Bayes of `classes` over numeric features (standardized as given) and, when `categories` > 0, one
/// categorical feature of that many vocabulary slots, after learning every row one at a time.
fn learned_online(
    xs: &[f64],
    cats: &[usize],
    ys: &[usize],
    numeric: usize,
    categories: usize,
) -> (lambda_models::online_bayes::OnlineBayes, lambda_core::encoder::Encoder) {
    use lambda_core::encoder::{Encoder, FeatureEncoder};
    use lambda_models::online_bayes::OnlineBayes;
    let mut features: Vec<FeatureEncoder> = (0..numeric)
        .map(|j| FeatureEncoder::Numeric {
            name: format!("x{j}"),
            mean: 0.0,
            std: 1.0,
            min: -9.0,
            max: 9.0,
            trend: 0.0,
        })
        .collect();
    if categories > 0 {
        let vocabulary = (0..categories).map(|k| (format!("k{k}"), k)).collect();
        features.push(FeatureEncoder::Categorical { name: "c".into(), vocabulary });
    }
    let encoder = Encoder { features, target: None };
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut m = OnlineBayes::new(classes.clone(), &encoder, None);
    for (r, &y) in ys.iter().enumerate() {
        let x = encoded(&xs[r * numeric..(r + 1) * numeric], cats[r], categories);
        assert!(m.learn(&x, &lambda_core::schema::Target::Class(classes[y].clone())));
    }
    (m, encoder)
}

/// The encoder's layout of numbers (none missing) and a category slot: `[value, 0]` each, then the one-hot block.
fn encoded(numbers: &[f64], cat: usize, categories: usize) -> Vec<f64> {
    let mut x: Vec<f64> = numbers.iter().flat_map(|v| [*v, 0.0]).collect();
    if categories > 0 {
        let mut block = vec![0.0; categories + 2];
        block[cat] = 1.0;
        x.extend(block);
    }
    x
}

fn probabilities(p: lambda_models::model::Prediction) -> Vec<f64> {
    match p {
        lambda_models::model::Prediction::Probabilities(p) => p,
        lambda_models::model::Prediction::Value(v) => panic!("a value {v} from a classifier"),
    }
}

#[test]
fn online_naive_bayes_learned_row_by_row_matches_linfa_gaussian_nb_fitted_on_the_rows() {
    let (n, d) = (900, 4);
    let (xs, cats, ys) = mixed_rows(n, d, 0, 23);
    let (online, _) = learned_online(&xs, &cats, &ys, d, 0);
    // linfa's default var_smoothing is scikit-learn's 1e-9, the online learner's too.
    assert_eq!(online.var_smoothing, 1e-9);
    let x = Array2::from_shape_vec((n, d), xs.clone()).unwrap();
    let theirs = GaussianNb::params().fit(&Dataset::new(x.clone(), Array1::from(ys.clone()))).unwrap();
    let (proba, order) = theirs.predict_proba(x.view());
    assert_eq!(order, vec![&0, &1, &2]);
    let mut worst: f64 = 0.0;
    for r in 0..n {
        let p = probabilities(online.predict(&encoded(&xs[r * d..(r + 1) * d], 0, 0)));
        for c in 0..3 {
            worst = worst.max((p[c] - proba[[r, c]]).abs());
        }
    }
    assert!(worst < 1e-9, "largest difference in a probability: {worst}");
}

#[test]
fn online_naive_bayes_with_a_category_matches_linfa_gaussian_times_multinomial_nb() {
    // One categorical feature's smoothed categorical likelihood is linfa's MultinomialNb (alpha 1) over its one-hot
    // slots, so the online posterior is proportional to p_gaussian(c | x) * p_multinomial(c | x) / prior(c).
    use linfa_bayes::MultinomialNb;
    let (n, d, k) = (900, 2, 3);
    let (xs, cats, ys) = mixed_rows(n, d, k, 31);
    let (online, _) = learned_online(&xs, &cats, &ys, d, k);
    let x = Array2::from_shape_vec((n, d), xs.clone()).unwrap();
    let slots = Array2::from_shape_fn((n, k + 2), |(r, j)| f64::from(u8::from(cats[r] == j)));
    let labels = Array1::from(ys.clone());
    let gaussian = GaussianNb::params().fit(&Dataset::new(x.clone(), labels.clone())).unwrap();
    let multinomial = MultinomialNb::params().alpha(1.0).fit(&Dataset::new(slots.clone(), labels)).unwrap();
    let (pg, _) = gaussian.predict_proba(x.view());
    let (pm, _) = multinomial.predict_proba(slots.view());
    let prior: Vec<f64> = (0..3).map(|c| ys.iter().filter(|&&y| y == c).count() as f64 / n as f64).collect();
    let mut worst: f64 = 0.0;
    for r in 0..n {
        let joint: Vec<f64> = (0..3).map(|c| pg[[r, c]] * pm[[r, c]] / prior[c]).collect();
        let sum: f64 = joint.iter().sum();
        let p = probabilities(online.predict(&encoded(&xs[r * d..(r + 1) * d], cats[r], k)));
        for c in 0..3 {
            worst = worst.max((p[c] - joint[c] / sum).abs());
        }
    }
    assert!(worst < 1e-9, "largest difference in a probability: {worst}");
}

/// Rows of a non-linear binary target: a sine, a threshold interaction and a category effect, with label noise.
fn boosting_rows(n: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (a, b, c) = (next() * 4.0 - 2.0, next(), next() * 2.0 - 1.0);
        let slot = (next() * 4.0) as usize;
        let z =
            1.5 * (2.0 * a).sin() + 2.0 * f64::from(u8::from(b > 0.6 && c > 0.0)) - 1.0 + [0.8, -0.8, 0.3, 0.0][slot];
        xs.extend([a, b, c]);
        xs.extend((0..4).map(|s| f64::from(u8::from(s == slot))));
        ys.push(usize::from(next() < 1.0 / (1.0 + (-2.0 * z).exp())));
    }
    (xs, ys)
}

fn log_loss(p: impl Iterator<Item = f64>, ys: &[usize]) -> f64 {
    p.zip(ys).map(|(p, &y)| -(if y == 1 { p } else { 1.0 - p }).clamp(1e-15, 1.0).ln()).sum::<f64>() / ys.len() as f64
}

#[test]
fn the_booster_fits_as_well_as_forust_ml_with_the_same_settings() {
    use forust_ml::{GradientBooster, Matrix};
    use lambda_batch::cart::{Binned, Group, Labels};
    use lambda_batch::gbm::{fit, BoostParams};
    let d = 7;
    let (xs, ys) = boosting_rows(8000, 5);
    let (test_x, test_y) = boosting_rows(4000, 6);
    let p = BoostParams {
        rounds: 60,
        learning_rate: 0.1,
        max_depth: 4,
        l2: 1.0,
        min_leaf_weight: 1.0,
        min_leaf: 1,
        patience: 0,
    };
    let classes = ["no".to_string(), "yes".to_string()];
    let groups = [Group::Dim(0), Group::Dim(1), Group::Dim(2), Group::OneHot { first: 3, width: 4 }];
    let binned = Binned::from_chunks(8000, d, &groups, &xs, |put| put(0, &xs));
    let ours = fit(&binned, &Labels::Classes(ys.clone(), 2), &classes, &p, 1, None);
    ours.validate().unwrap();
    // forust-ml itself, with the same settings, on column-major data.
    let n = ys.len();
    let cols: Vec<f64> = (0..d).flat_map(|j| (0..n).map(move |r| (r, j))).map(|(r, j)| xs[r * d + j]).collect();
    let y: Vec<f64> = ys.iter().map(|&c| c as f64).collect();
    let mut theirs = GradientBooster::default()
        .set_iterations(60)
        .set_learning_rate(0.1)
        .set_max_depth(4)
        .set_l2(1.0)
        .set_min_leaf_weight(1.0)
        .set_parallel(false)
        .set_seed(0);
    theirs.fit(&Matrix::new(&cols, n, d), &y, &vec![1.0; n], None).unwrap();
    let m = test_y.len();
    let test_cols: Vec<f64> =
        (0..d).flat_map(|j| (0..m).map(move |r| (r, j))).map(|(r, j)| test_x[r * d + j]).collect();
    let theirs_p = theirs.predict(&Matrix::new(&test_cols, m, d), false);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let ours_loss = log_loss((0..m).map(|r| sigmoid(ours.trees.raw(&test_x[r * d..(r + 1) * d])[0])), &test_y);
    let theirs_loss = log_loss(theirs_p.iter().map(|&z| sigmoid(z)), &test_y);
    let rate = test_y.iter().sum::<usize>() as f64 / m as f64;
    let base_loss = log_loss(std::iter::repeat_n(rate, m), &test_y);
    assert!(theirs_loss < 0.8 * base_loss, "the data has signal: forust {theirs_loss}, base rate {base_loss}");
    assert!(ours_loss <= theirs_loss * 1.01, "held-out log loss: ours {ours_loss}, forust-ml {theirs_loss}");
}
