//! Model search and fitting over the model zoo, scored on a time-ordered holdout:
//! - linear models with linfa: logistic regression (binary), multinomial logistic regression (multiclass) and
//!   L2-penalized linear regression (a Tweedie GLM with power 0), one candidate per `alpha` of the spec; their
//!   weights are copied into the core [`LinearModel`] format so that the speed layer can warm-start from them;
//! - Gaussian naive Bayes (classification);
//! - a decision tree and a random forest ([`crate::cart`]);
//! - gradient-boosted trees with forust-ml ([`crate::boost`]).

use lambda_core::bayes::NaiveBayes;
use lambda_core::encoder::Encoder;
use lambda_core::metrics::{evaluate, Metrics};
use lambda_core::model::{Family, LinearModel, Model};
use lambda_core::registry::{LeaderboardEntry, SearchReport};
use lambda_core::schema::{Columns, Target};
use lambda_core::spec::{Spec, Task};
use linfa::prelude::*;
use linfa::Dataset;
use linfa_linear::TweedieRegressor;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};

use crate::boost::{self, BoostParams};
use crate::cart::{self, Binned, Labels, TreeParams};
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
pub enum Candidate {
    /// A linear model with this L2 strength.
    Linear {
        /// L2 strength.
        alpha: f64,
    },
    /// Gaussian naive Bayes.
    NaiveBayes {
        /// Share of the largest variance added to every variance.
        var_smoothing: f64,
    },
    /// A decision tree (`trees == 1`) or a random forest.
    Trees(TreeParams),
    /// Gradient-boosted trees.
    Boosting(BoostParams),
}

impl Candidate {
    /// The family's name.
    pub fn family(&self, spec: &Spec) -> &'static str {
        match self {
            Candidate::Linear { .. } => algorithm(spec),
            Candidate::NaiveBayes { .. } => "naive_bayes",
            Candidate::Trees(p) if p.trees <= 1 => "decision_tree",
            Candidate::Trees(_) => "random_forest",
            Candidate::Boosting(_) => "gradient_boosting",
        }
    }

    /// Its settings, as the leaderboard shows them.
    pub fn params(&self) -> String {
        match self {
            Candidate::Linear { alpha } => format!("alpha={alpha}"),
            Candidate::NaiveBayes { var_smoothing } => format!("var_smoothing={var_smoothing}"),
            Candidate::Trees(p) if p.trees <= 1 => format!("max_depth={} min_leaf={}", p.max_depth, p.min_leaf),
            Candidate::Trees(p) => format!(
                "trees={} max_depth={} min_leaf={} feature_fraction={:.2}",
                p.trees, p.max_depth, p.min_leaf, p.feature_fraction
            ),
            Candidate::Boosting(p) => {
                format!("rounds={} learning_rate={} max_depth={} l2={}", p.rounds, p.learning_rate, p.max_depth, p.l2)
            }
        }
    }

    /// Whether the speed layer can update a model of this family online.
    pub fn incremental(&self) -> bool {
        matches!(self, Candidate::Linear { .. })
    }
}

/// Every candidate the spec allows for its task, cheapest families first.
pub fn candidates(spec: &Spec, dim: usize) -> Vec<Candidate> {
    let classification = spec.dataset.task.is_classification();
    let seed = spec.batch.seed;
    let mut out = Vec::new();
    for family in &spec.batch.families {
        match family.as_str() {
            "linear" => out.extend(spec.batch.alphas.iter().map(|&alpha| Candidate::Linear { alpha })),
            "naive_bayes" if classification => out.push(Candidate::NaiveBayes { var_smoothing: 1e-9 }),
            "decision_tree" => out.extend([4, 8, 12].map(|max_depth| {
                Candidate::Trees(TreeParams { trees: 1, max_depth, min_leaf: 20, feature_fraction: 1.0, seed })
            })),
            "random_forest" => {
                // sqrt(d) dimensions per split for classes, a third for values (Breiman's defaults).
                let share = if classification { (dim as f64).sqrt() / dim.max(1) as f64 } else { 1.0 / 3.0 };
                out.push(Candidate::Trees(TreeParams {
                    trees: 50,
                    max_depth: 16,
                    min_leaf: 2,
                    feature_fraction: share.clamp(0.05, 1.0),
                    seed,
                }))
            }
            "gradient_boosting" => {
                out.extend([(100, 0.1, 4), (200, 0.1, 6)].map(|(rounds, learning_rate, max_depth)| {
                    Candidate::Boosting(BoostParams { rounds, learning_rate, max_depth, l2: 1.0, min_leaf_weight: 1.0 })
                }))
            }
            _ => {}
        }
    }
    out
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
    pub model: Model,
    /// The best setting the speed layer can update online (the best itself when it is one).
    pub best_incremental: Option<Candidate>,
    /// How the search went.
    pub report: SearchReport,
}

/// What the search tells its caller after each trial.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Trials finished.
    pub done: usize,
    /// Trials planned.
    pub total: usize,
    /// The best so far: family and metric value.
    pub best: Option<(String, f64)>,
    /// Seconds of the budget left.
    pub seconds_left: f64,
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
        // Sorted, each class is a run: its length is the class's row count.
        let runs: Vec<(&str, usize)> = seen.chunk_by(|a, b| a == b).map(|run| (run[0], run.len())).collect();
        let lonely: Vec<String> = runs.iter().filter(|(_, n)| *n < 2).take(10).map(|(c, _)| format!("`{c}`")).collect();
        classes = runs.iter().map(|(c, _)| c.to_string()).collect();
        let listed = classes.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        match (spec.dataset.task, classes.len()) {
            (_, 0 | 1) => {
                return Err(Error::Data(format!(
                    "target `{}` has a single class ({listed}); a classifier needs at least two",
                    spec.dataset.target
                )))
            }
            _ if !lonely.is_empty() => {
                return Err(Error::Data(format!(
                    "target `{}`: class {} has a single labelled row; each class needs at least two (or drop the row)",
                    spec.dataset.target,
                    lonely.join(", ")
                )));
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

/// Fits one candidate on row-major encoded rows `xs` of `dim` columns with their targets (all labelled).
pub fn fit_encoded(
    spec: &Spec,
    cand: &Candidate,
    xs: &[f64],
    dim: usize,
    targets: &[Option<Target>],
    classes: &[String],
) -> Result<Model> {
    match cand {
        Candidate::Linear { alpha } => fit_linear(spec, *alpha, xs, dim, targets, classes).map(Model::Linear),
        Candidate::NaiveBayes { var_smoothing } => {
            let ys = class_indices(targets, classes);
            Ok(Model::NaiveBayes(NaiveBayes::fit(classes.to_vec(), dim, xs, &ys, *var_smoothing)))
        }
        Candidate::Boosting(p) => {
            let ys = class_indices(targets, classes);
            Ok(Model::Trees(boost::fit(xs, dim, classes, &ys, &values(targets), p)?))
        }
        Candidate::Trees(p) => {
            let labels = if classes.is_empty() {
                Labels::Values(values(targets))
            } else {
                Labels::Classes(class_indices(targets, classes), classes.len())
            };
            Ok(Model::Trees(cart::fit(&Binned::new(xs, dim), &labels, classes, p)))
        }
    }
}

/// The index in `classes` of each row's label (0 for a row without one; rows are labelled here).
fn class_indices(targets: &[Option<Target>], classes: &[String]) -> Vec<usize> {
    targets
        .iter()
        .map(|t| match t {
            Some(Target::Class(c)) => classes.iter().position(|k| k == c).unwrap_or(0),
            _ => 0,
        })
        .collect()
}

/// Each row's regression target (0 for a row without one; rows are labelled here).
fn values(targets: &[Option<Target>]) -> Vec<f64> {
    targets
        .iter()
        .map(|t| match t {
            Some(Target::Value(v)) => *v,
            _ => 0.0,
        })
        .collect()
}

fn fit_linear(
    spec: &Spec,
    alpha: f64,
    xs: &[f64],
    dim: usize,
    targets: &[Option<Target>],
    classes: &[String],
) -> Result<LinearModel> {
    let n = targets.len();
    let x = Array2::from_shape_vec((n, dim), xs.to_vec()).map_err(|e| Error::Data(format!("encoded matrix: {e}")))?;
    let name = format!("{} alpha={alpha}", algorithm(spec));
    let fail = |e: &dyn std::fmt::Display| Error::Train { algorithm: name.clone(), message: e.to_string() };
    let iterations = spec.batch.max_iterations;
    // linfa's objective sums the loss over rows; scale the stopping tolerance so that it means the same per row
    // whatever the data size (scikit-learn's lbfgs does the same on its averaged loss).
    let tolerance = GRADIENT_TOLERANCE * n.max(1) as f64;
    match spec.dataset.task {
        Task::BinaryClassification => {
            let y: Array1<bool> =
                targets.iter().map(|t| matches!(t, Some(Target::Class(c)) if *c == classes[1])).collect();
            let fitted = LogisticRegression::default()
                .alpha(alpha)
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
            let y = Array1::from(class_indices(targets, classes));
            let fitted = MultiLogisticRegression::default()
                .alpha(alpha)
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
            let y = Array1::from(values(targets));
            let fitted = TweedieRegressor::params()
                .power(0.0)
                .alpha(alpha)
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

/// Tries the candidates, cheapest families first, until all are tried or the time budget is spent: encoder fitted
/// on the training rows, each model fitted on them and scored on the holdout. Best first. `progress` hears of each
/// finished trial.
pub fn search(spec: &Spec, split: &Split, progress: &(dyn Fn(&Progress) + Sync)) -> Result<Search> {
    let started = std::time::Instant::now();
    let budget = spec.time_budget;
    let encoder = Encoder::fit(spec, &split.train)?;
    let dim = encoder.dim();
    let x_train = encoder.encode_batch(&split.train);
    let x_holdout = encoder.encode_batch(&split.holdout);
    let targets: Vec<Target> = split.holdout.targets.iter().flatten().cloned().collect();
    let cands = candidates(spec, dim);
    if cands.is_empty() {
        return Err(Error::Data(format!("`batch.families` = {:?} has no family for this task", spec.batch.families)));
    }
    let metric = spec.metric();
    // Candidates are independent: each worker takes the next one unless the budget is spent; results are put back
    // in candidate order, so which worker fitted what does not matter.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(cands.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let board: std::sync::Mutex<(usize, Option<(String, f64)>)> = std::sync::Mutex::new((0, None));
    type Fitted = (usize, Result<(Model, Metrics)>, f64);
    let mut results: Vec<Fitted> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (cands, next, x_train, x_holdout, targets, board) =
                    (&cands, &next, &x_train, &x_holdout, &targets, &board);
                scope.spawn(move || {
                    let mut out: Vec<Fitted> = Vec::new();
                    // The first candidate always runs, so that even a spent budget gives a model.
                    while started.elapsed() < budget || next.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(c) = cands.get(i) else { break };
                        let t0 = std::time::Instant::now();
                        let r = fit_encoded(spec, c, x_train, dim, &split.train.targets, &split.classes).map(|model| {
                            let metrics = evaluate(model.classes(), &model.predict_batch(x_holdout), targets);
                            (model, metrics)
                        });
                        let seconds = t0.elapsed().as_secs_f64();
                        if let Ok(mut b) = board.lock() {
                            b.0 += 1;
                            if let Ok((_, m)) = &r {
                                let value = m.get(metric.name()).copied();
                                let better = match (&b.1, value) {
                                    (_, None) => false,
                                    (None, Some(_)) => true,
                                    (Some((_, best)), Some(v)) => metric.gain(*best, v) > 0.0,
                                };
                                if let (true, Some(v)) = (better, value) {
                                    b.1 = Some((format!("{} {}", c.family(spec), c.params()), v));
                                }
                            }
                            progress(&Progress {
                                done: b.0,
                                total: cands.len(),
                                best: b.1.clone(),
                                seconds_left: (budget.as_secs_f64() - started.elapsed().as_secs_f64()).max(0.0),
                            });
                        }
                        out.push((i, r, seconds));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err(Error::Data("a training thread panicked".into())), 0.0)])
            })
            .collect()
    });
    results.sort_by_key(|(i, _, _)| *i);
    let mut scored: Vec<(Candidate, LeaderboardEntry, Model)> = Vec::new();
    let mut last_error = None;
    let (tried, mut failed) = (results.len(), 0);
    for (i, result, seconds) in results {
        let Some(cand) = cands.get(i) else { continue };
        match result {
            Ok((model, metrics)) => {
                let entry = LeaderboardEntry {
                    algorithm: cand.family(spec).into(),
                    params: cand.params(),
                    metrics,
                    rows: split.train.len() as u64,
                    fit_seconds: seconds,
                };
                scored.push((*cand, entry, model));
            }
            Err(e) => {
                tracing::warn!(candidate = %cand.params(), error = %e, "candidate failed");
                failed += 1;
                last_error = Some(e);
            }
        }
    }
    let cut_by_time = tried < cands.len();
    let report = SearchReport {
        candidates: cands.len(),
        tried,
        failed,
        budget_seconds: budget.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        cut_by_time,
        stopped: if cut_by_time {
            format!(
                "the time budget ({}) was spent after {tried} of {} candidates",
                spec.batch.time_budget,
                cands.len()
            )
        } else {
            format!("every candidate was tried ({tried})")
        },
    };
    // A stable sort: on equal metrics the earlier (cheaper) candidate wins.
    scored.sort_by(|a, b| metric.rank(&a.1.metrics).total_cmp(&metric.rank(&b.1.metrics)));
    let leaderboard = scored.iter().map(|(_, e, _)| e.clone()).collect();
    let best_incremental = scored.iter().find(|(c, _, _)| c.incremental()).map(|(c, _, _)| *c);
    match scored.into_iter().next() {
        Some((best, _, model)) => Ok(Search { best, leaderboard, encoder, model, best_incremental, report }),
        None => Err(last_error.unwrap_or_else(|| Error::Data("no candidate to train".into()))),
    }
}
