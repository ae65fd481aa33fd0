//! Prequential (predict, then learn) run of lambda-ml's online learners over a CSV stream, for `bench/online`.
//!   prequential classification|regression FILE.csv
//! The CSV has a header, numeric inputs, and the label last. Inputs are standardized with the first 1,000 rows'
//! mean and deviation, as the batch encoder would from history. Prints one JSON line per learner. `FROM=N` scores
//! the events from the N-th on only (every event is learned): a stream's tail after its history. For comparisons
//! with other settings: `TREES`, `MAX_FEATURES`, `DRIFT_DELTA` and `WARNING_DELTA` (the forest's), `GRACE` and
//! `DELTA` (the plain tree's).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use lambda_core::encoder::{Encoder, FeatureEncoder};
use lambda_core::schema::Target;
use lambda_models::hoeffding::{
    AdaptiveRandomForest, AdaptiveSettings, ForestSettings, HoeffdingAdaptiveTree, HoeffdingTree, TreeSettings,
};
use lambda_models::model::{argmax, Family, LinearModel, Prediction};
use lambda_models::online::AdaptiveLinear;
use lambda_models::online_bayes::OnlineBayes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let classification = args[1] == "classification";
    let text = std::fs::read_to_string(&args[2]).expect("the stream file");
    let mut rows: Vec<(Vec<f64>, String)> = Vec::new();
    for line in text.lines().skip(1) {
        let mut cells: Vec<&str> = line.split(',').collect();
        let label = cells.pop().unwrap().to_string();
        rows.push((cells.iter().map(|c| c.parse::<f64>().unwrap()).collect(), label));
    }
    let dim = rows[0].0.len();
    let head = &rows[..rows.len().min(1000)];
    let mean: Vec<f64> = (0..dim).map(|j| head.iter().map(|r| r.0[j]).sum::<f64>() / head.len() as f64).collect();
    let std: Vec<f64> = (0..dim)
        .map(|j| {
            let v = head.iter().map(|r| (r.0[j] - mean[j]).powi(2)).sum::<f64>() / head.len() as f64;
            if v > 0.0 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let mut classes: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    classes.sort();
    classes.dedup();
    if !classification {
        classes.clear();
    }
    let data: Vec<(Vec<f64>, Target)> = rows
        .into_iter()
        .map(|(x, y)| {
            let x = x.iter().enumerate().map(|(j, v)| (v - mean[j]) / std[j]).collect();
            let t = if classification { Target::Class(y) } else { Target::Value(y.parse().unwrap()) };
            (x, t)
        })
        .collect();
    let family = match classes.len() {
        0 => Family::Linear,
        2 => Family::Logistic,
        _ => Family::Softmax,
    };
    let mut linear = AdaptiveLinear::warm(LinearModel::zeros(family, classes.clone(), dim), vec![0.0; dim], None, 0.0);
    run("lambda-ml NAG linear", &data, &classes, |x, y| {
        let p = linear.predict(x);
        let _ = linear.learn(x, y, 0.5, 0.0);
        p
    });
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let mut settings = TreeSettings::default();
    settings.grace_period = env("GRACE").map_or(settings.grace_period, |v| v as u32);
    settings.delta = env("DELTA").unwrap_or(settings.delta);
    let mut tree = HoeffdingTree::new(classes.clone(), dim, settings);
    run("lambda-ml Hoeffding tree", &data, &classes, |x, y| {
        let p = tree.predict(x);
        tree.learn(x, y);
        p
    });
    eprintln!("tree: {} leaves, depth {}", tree.leaves(), tree.depth());
    let mut hat = HoeffdingAdaptiveTree::new(classes.clone(), dim, AdaptiveSettings::default());
    run("lambda-ml Hoeffding adaptive tree", &data, &classes, |x, y| {
        let p = hat.predict(x);
        hat.learn(x, y);
        p
    });
    let (started, switched, dropped) = hat.history();
    eprintln!(
        "adaptive tree: {} leaves, depth {}, {} alternates; {started} started, {switched} switched, {dropped} dropped",
        hat.leaves(),
        hat.depth(),
        hat.alternates()
    );
    let mut set = ForestSettings::default();
    set.n_models = env("TREES").map_or(set.n_models, |v| v as u32);
    set.drift_delta = env("DRIFT_DELTA").unwrap_or(set.drift_delta);
    set.warning_delta = env("WARNING_DELTA").unwrap_or(set.warning_delta);
    set.max_features = env("MAX_FEATURES").map(|v| v as u32).or(set.max_features);
    set.lambda = env("LAMBDA").unwrap_or(set.lambda);
    set.seed = env("SEED").map_or(set.seed, |v| v as u64);
    set.tree.max_leaves = env("MAX_LEAVES").map_or(set.tree.max_leaves, |v| v as u32);
    let trees = set.n_models;
    let mut forest = AdaptiveRandomForest::new(classes.clone(), dim, set);
    run(&format!("lambda-ml adaptive random forest ({trees} trees)"), &data, &classes, |x, y| {
        let p = forest.predict(x);
        forest.learn(x, y);
        p
    });
    let (warnings, replaced) = forest.history();
    eprintln!(
        "forest: {} leaves, depth {}, {} background trees ({} leaves), {warnings} warnings, {replaced} trees replaced",
        forest.leaves(),
        forest.depth(),
        forest.backgrounds(),
        forest.all_leaves() - forest.leaves()
    );
    if !classes.is_empty() {
        // Every input numeric and never missing: the encoder's layout is each value, then a zero missing flag.
        let features = (0..dim)
            .map(|j| FeatureEncoder::Numeric {
                name: format!("x{j}"),
                mean: 0.0,
                std: 1.0,
                min: 0.0,
                max: 0.0,
                trend: 0.0,
            })
            .collect();
        let encoder = Encoder { features, target: None };
        let mut bayes = OnlineBayes::new(classes.clone(), &encoder, None);
        let mut encoded = vec![0.0; 2 * dim];
        run("lambda-ml naive Bayes", &data, &classes, |x, y| {
            for (j, v) in x.iter().enumerate() {
                encoded[2 * j] = *v;
            }
            let p = bayes.predict(&encoded);
            bayes.learn(&encoded, y);
            p
        });
    }
}

fn run(
    name: &str,
    data: &[(Vec<f64>, Target)],
    classes: &[String],
    mut step: impl FnMut(&[f64], &Target) -> Prediction,
) {
    let started = Instant::now();
    let (mut right, mut abs, mut loss) = (0usize, 0.0, 0.0);
    let from: usize = std::env::var("FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for (i, (x, y)) in data.iter().enumerate() {
        let p = step(x, y);
        if i < from {
            continue;
        }
        match (&p, y) {
            (Prediction::Probabilities(p), Target::Class(c)) => {
                let i = classes.iter().position(|k| k == c).unwrap();
                right += usize::from(argmax(p) == i);
                loss -= p[i].clamp(1e-15, 1.0).ln();
            }
            (Prediction::Value(v), Target::Value(t)) => abs += (v - t).abs(),
            _ => unreachable!("prediction of the other task"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let n = (data.len() - from) as f64;
    let metric = if classes.is_empty() {
        format!("\"mae\": {:.4}", abs / n)
    } else {
        format!("\"accuracy\": {:.4}, \"log_loss\": {:.4}", right as f64 / n, loss / n)
    };
    println!("{{\"system\": \"{name}\", {metric}, \"seconds\": {seconds:.3}, \"events_per_s\": {:.0}}}", n / seconds);
}
