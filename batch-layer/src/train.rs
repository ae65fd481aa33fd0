//! Model search and fitting with linfa: logistic regression (binary), multinomial logistic regression
//! (multiclass) and L2-penalized linear regression (a Tweedie GLM with power 0), each tried with every `alpha` of
//! the spec, scored on a time-ordered holdout. The fitted weights are copied into the core [`LinearModel`] format
//! so that the speed layer can warm-start from them.

use lambda_core::encoder::Encoder;
use lambda_core::metrics::{evaluate, Metrics};
use lambda_core::model::{Family, LinearModel};
use lambda_core::registry::LeaderboardEntry;
use lambda_core::schema::{Columns, Target};
use lambda_core::spec::{Spec, Task};
use linfa::prelude::*;
use linfa::Dataset;
use linfa_linear::TweedieRegressor;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};

use crate::{Error, Result};

/// The labelled rows split by event time.
#[derive(Debug, Clone)]
pub struct Split {
    /// Indices of every labelled row, oldest first.
    pub labelled: Vec<usize>,
    /// Training rows (the older part).
    pub train: Columns,
    /// Holdout rows (the most recent part).
    pub holdout: Columns,
    /// Class labels seen, sorted (classification); empty for regression.
    pub classes: Vec<String>,
}

/// One setting of the search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// L2 strength.
    pub alpha: f64,
}

/// The outcome of the search.
#[derive(Debug, Clone)]
pub struct Search {
    /// The best setting.
    pub best: Candidate,
    /// Every setting with its holdout metrics, best first.
    pub leaderboard: Vec<LeaderboardEntry>,
    /// The encoder fitted on the training rows.
    pub encoder: Encoder,
    /// The best setting's model fitted on the training rows (not the holdout): what the gate judges.
    pub model: LinearModel,
}

/// Stopping tolerance on the gradient norm of the loss, per row.
const GRADIENT_TOLERANCE: f64 = 1e-4;

fn algorithm(spec: &Spec) -> &'static str {
    match spec.dataset.task {
        Task::BinaryClassification => "logistic_regression",
        Task::MulticlassClassification => "softmax_regression",
        Task::Regression => "ridge_regression",
    }
}

/// Orders labelled rows by event time (then ingestion order) and holds out the most recent share.
pub fn split(spec: &Spec, columns: &Columns) -> Result<Split> {
    let mut labelled: Vec<usize> = (0..columns.len()).filter(|&r| columns.targets[r].is_some()).collect();
    labelled.sort_by_key(|&r| (columns.times[r], columns.seqs[r]));
    if labelled.len() < 10 {
        return Err(Error::Data(format!(
            "the master dataset has {} labelled rows (`{}` set); at least 10 are needed to train and evaluate",
            labelled.len(),
            spec.dataset.target
        )));
    }
    let mut classes: Vec<String> = Vec::new();
    if spec.dataset.task.is_classification() {
        let mut seen: Vec<&str> = labelled
            .iter()
            .filter_map(|&r| match &columns.targets[r] {
                Some(Target::Class(c)) => Some(c.as_str()),
                _ => None,
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        classes = seen.into_iter().map(str::to_string).collect();
        let listed = classes.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        match (spec.dataset.task, classes.len()) {
            (_, 0 | 1) => {
                return Err(Error::Data(format!(
                    "target `{}` has a single class ({listed}); a classifier needs at least two",
                    spec.dataset.target
                )))
            }
            (Task::BinaryClassification, n) if n > 2 => {
                return Err(Error::Data(format!(
                    "task is binary_classification but target `{}` has {n} classes ({listed})",
                    spec.dataset.target
                )))
            }
            _ => {}
        }
    }
    let holdout_len =
        ((labelled.len() as f64 * spec.batch.holdout_fraction).ceil() as usize).clamp(1, labelled.len() - 1);
    let cut = labelled.len() - holdout_len;
    Ok(Split { train: columns.take(&labelled[..cut]), holdout: columns.take(&labelled[cut..]), labelled, classes })
}

fn matrix(encoder: &Encoder, rows: &Columns) -> Result<Array2<f64>> {
    Array2::from_shape_vec((rows.len(), encoder.dim()), encoder.encode_batch(rows))
        .map_err(|e| Error::Data(format!("encoded matrix: {e}")))
}

/// Fits one candidate on `rows` (all labelled) behind `encoder`.
pub fn fit(
    spec: &Spec,
    cand: &Candidate,
    encoder: &Encoder,
    rows: &Columns,
    classes: &[String],
) -> Result<LinearModel> {
    let x = matrix(encoder, rows)?;
    let dim = encoder.dim();
    let name = format!("{} alpha={}", algorithm(spec), cand.alpha);
    let fail = |e: &dyn std::fmt::Display| Error::Train { algorithm: name.clone(), message: e.to_string() };
    let iterations = spec.batch.max_iterations;
    // linfa's objective sums the loss over rows; scale the stopping tolerance so that it means the same per row
    // whatever the data size (scikit-learn's lbfgs does the same on its averaged loss).
    let tolerance = GRADIENT_TOLERANCE * rows.len().max(1) as f64;
    match spec.dataset.task {
        Task::BinaryClassification => {
            let y: Array1<bool> =
                rows.targets.iter().map(|t| matches!(t, Some(Target::Class(c)) if *c == classes[1])).collect();
            let fitted = LogisticRegression::default()
                .alpha(cand.alpha)
                .max_iterations(iterations)
                .gradient_tolerance(tolerance)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(&e))?;
            // linfa picks its own positive class; ours is always classes[1].
            let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
            let mut m = LinearModel::zeros(Family::Logistic, classes.to_vec(), dim);
            m.weights = fitted.params().iter().map(|w| sign * w).collect();
            m.bias = vec![sign * fitted.intercept()];
            Ok(m)
        }
        Task::MulticlassClassification => {
            let y: Array1<usize> = rows
                .targets
                .iter()
                .map(|t| match t {
                    Some(Target::Class(c)) => classes.iter().position(|k| k == c).unwrap_or(0),
                    _ => 0,
                })
                .collect();
            let fitted = MultiLogisticRegression::default()
                .alpha(cand.alpha)
                .max_iterations(iterations)
                .gradient_tolerance(tolerance)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(&e))?;
            let mut m = LinearModel::zeros(Family::Softmax, classes.to_vec(), dim);
            // A class absent from these rows keeps zero weights and a low intercept.
            m.bias.iter_mut().for_each(|b| *b = -10.0);
            let params = fitted.params();
            for (j, &class) in fitted.classes().iter().enumerate() {
                for d in 0..dim {
                    m.weights[class * dim + d] = params[[d, j]];
                }
                m.bias[class] = fitted.intercept()[j];
            }
            Ok(m)
        }
        Task::Regression => {
            let y: Array1<f64> = rows
                .targets
                .iter()
                .map(|t| match t {
                    Some(Target::Value(v)) => *v,
                    _ => 0.0,
                })
                .collect();
            let fitted = TweedieRegressor::params()
                .power(0.0)
                .alpha(cand.alpha)
                .max_iter(iterations as usize)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(&e))?;
            let mut m = LinearModel::zeros(Family::Linear, Vec::new(), dim);
            m.weights = fitted.coef.to_vec();
            m.bias = vec![fitted.intercept];
            Ok(m)
        }
    }
}

/// Tries every candidate: encoder and model fitted on the training rows, scored on the holdout. Best first.
pub fn search(spec: &Spec, split: &Split) -> Result<Search> {
    let encoder = Encoder::fit(spec, &split.train)?;
    let x_holdout = encoder.encode_batch(&split.holdout);
    let targets: Vec<Target> = split.holdout.targets.iter().flatten().cloned().collect();
    // Candidates are independent: fit them on all cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let alphas = &spec.batch.alphas;
    let results: Vec<(f64, Result<LinearModel>)> = std::thread::scope(|scope| {
        let chunks: Vec<&[f64]> = alphas.chunks(alphas.len().div_ceil(threads)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (encoder, train, classes) = (&encoder, &split.train, &split.classes);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&alpha| (alpha, fit(spec, &Candidate { alpha }, encoder, train, classes)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| vec![(f64::NAN, Err(Error::Data("a training thread panicked".into())))])
            })
            .collect()
    });
    let mut scored: Vec<(Candidate, LeaderboardEntry, LinearModel)> = Vec::new();
    let mut last_error = None;
    for (alpha, result) in results {
        match result {
            Ok(model) => {
                let metrics: Metrics = evaluate(&model.classes, &model.predict_batch(&x_holdout), &targets);
                scored.push((
                    Candidate { alpha },
                    LeaderboardEntry { algorithm: algorithm(spec).into(), params: format!("alpha={alpha}"), metrics },
                    model,
                ));
            }
            Err(e) => {
                tracing::warn!(alpha, error = %e, "candidate failed");
                last_error = Some(e);
            }
        }
    }
    let metric = spec.metric();
    scored.sort_by(|a, b| metric.rank(&a.1.metrics).total_cmp(&metric.rank(&b.1.metrics)));
    let leaderboard = scored.iter().map(|(_, e, _)| e.clone()).collect();
    match scored.into_iter().next() {
        Some((best, _, model)) => Ok(Search { best, leaderboard, encoder, model }),
        None => Err(last_error.unwrap_or_else(|| Error::Data("no candidate to train".into()))),
    }
}
