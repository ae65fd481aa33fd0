//! Model search and fitting over the model zoo, scored on a time-ordered holdout:
//! - linear models with linfa: logistic regression (binary), multinomial logistic regression (multiclass) and
//!   L2-penalized linear regression (a Tweedie GLM with power 0), one candidate per `alpha` of the spec; their
//!   weights are copied into the core [`LinearModel`] format so that the speed layer can warm-start from them;
//! - Gaussian naive Bayes (classification);
//! - a decision tree and a random forest ([`crate::cart`]);
//! - gradient-boosted trees with forust-ml ([`crate::boost`]).
//!
//! The search is successive halving over row samples: every candidate is fitted on the most recent
//! `batch.sample_rows` training rows, the better half on four times as many, and so on until one is left or a round
//! holds every training row. A family never fits on more rows than its matrix fits in `batch.matrix_mb`: there it
//! keeps its last fit. Matrices are encoded from the columns a chunk of rows at a time.

use lambda_core::encoder::{Encoder, FeatureEncoder};
use lambda_core::schema::{Columns, TargetRef, Targets};
use lambda_core::spec::{Spec, Task};
use lambda_models::bayes::NaiveBayes;
use lambda_models::metrics::{evaluate, Metric, Metrics};
use lambda_models::model::{Family, LinearModel, Model};
use lambda_stores::registry::{LeaderboardEntry, SearchReport};
use linfa::prelude::*;
use linfa::Dataset;
use linfa_linear::TweedieRegressor;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};

use crate::cart::{self, Binned, Group, Labels, TreeParams};
use crate::gbm::{self, BoostParams};
use crate::{Error, Result};

/// The labelled rows split by event time, as indices into the master dataset's [`Columns`].
#[derive(Debug, Clone)]
pub struct Split {
    /// Every labelled row, oldest first.
    pub labelled: Vec<usize>,
    /// Training rows (the older part), oldest first.
    pub train: Vec<usize>,
    /// Holdout rows (the most recent part), oldest first.
    pub holdout: Vec<usize>,
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
            Candidate::Boosting(p) => format!(
                "rounds={} learning_rate={} max_depth={} l2={} min_leaf={}",
                p.rounds, p.learning_rate, p.max_depth, p.l2, p.min_leaf
            ),
        }
    }

    /// Whether the speed layer can update a model of this family online.
    pub fn incremental(&self) -> bool {
        matches!(self, Candidate::Linear { .. })
    }
}

/// Every candidate the spec allows for its task, cheapest families first; `inputs` is the number of columns a
/// tree splits on (see [`tree_groups`]).
pub fn candidates(spec: &Spec, inputs: usize) -> Vec<Candidate> {
    let classification = spec.dataset.task.is_classification();
    let b = &spec.batch;
    let seed = b.seed;
    let mut out = Vec::new();
    for family in &b.families {
        match family.as_str() {
            "linear" => out.extend(spec.batch.alphas.iter().map(|&alpha| Candidate::Linear { alpha })),
            "naive_bayes" if classification => out.extend(
                b.naive_bayes.var_smoothing.iter().map(|&var_smoothing| Candidate::NaiveBayes { var_smoothing }),
            ),
            "decision_tree" => {
                let t = &b.decision_tree;
                for &max_depth in &t.max_depth {
                    for &min_leaf in &t.min_leaf {
                        out.push(Candidate::Trees(TreeParams {
                            trees: 1,
                            max_depth,
                            min_leaf,
                            feature_fraction: 1.0,
                            seed,
                        }));
                    }
                }
            }
            "random_forest" => {
                let f = &b.random_forest;
                // sqrt(d) columns per split for classes, a third for values (Breiman's defaults).
                let share = if classification { (inputs as f64).sqrt() / inputs.max(1) as f64 } else { 1.0 / 3.0 };
                let shares = if f.feature_fraction.is_empty() {
                    vec![share.clamp(0.05, 1.0)]
                } else {
                    f.feature_fraction.clone()
                };
                for &trees in &f.trees {
                    for &max_depth in &f.max_depth {
                        for &min_leaf in &f.min_leaf {
                            for &feature_fraction in &shares {
                                out.push(Candidate::Trees(TreeParams {
                                    trees,
                                    max_depth,
                                    min_leaf,
                                    feature_fraction,
                                    seed,
                                }));
                            }
                        }
                    }
                }
            }
            "gradient_boosting" => {
                let g = &b.gradient_boosting;
                let mut grid = Vec::new();
                for &rounds in &g.rounds {
                    for &learning_rate in &g.learning_rate {
                        for &max_depth in &g.max_depth {
                            for &l2 in &g.l2 {
                                for &min_leaf in &g.min_leaf {
                                    grid.push(BoostParams {
                                        rounds,
                                        learning_rate,
                                        max_depth,
                                        l2,
                                        min_leaf_weight: 1e-3,
                                        min_leaf,
                                        patience: g.early_stopping_rounds,
                                    });
                                }
                            }
                        }
                    }
                }
                // Cheapest first: the work grows with the rounds and the leaves.
                grid.sort_by_key(|p| p.rounds.saturating_mul(1 << p.max_depth.min(32)));
                out.extend(grid.into_iter().map(Candidate::Boosting));
            }
            _ => {}
        }
    }
    out
}

/// The outcome of the search.
#[derive(Debug, Clone)]
pub struct Search {
    /// The best setting, as the refit uses it (boosting: the rounds early stopping kept, without stopping again).
    pub best: Candidate,
    /// The best setting as it was searched (boosting: with its rounds and early stopping).
    pub searched: Candidate,
    /// Every setting with its holdout metrics, best first.
    pub leaderboard: Vec<LeaderboardEntry>,
    /// The encoder fitted on the training rows.
    pub encoder: Encoder,
    /// The best setting's model fitted on the training rows (not the holdout): what the gate judges.
    pub model: Model,
    /// The best setting the speed layer can update online (the best itself when it is one), with the rows of its
    /// furthest trial.
    pub best_incremental: Option<(Candidate, usize)>,
    /// How the search went.
    pub report: SearchReport,
    /// The best setting of each other family, as searched, with its leaderboard line: tried on a training window
    /// too, since on history that holds a change a family can win on all the rows and lose on the newest.
    pub runners_up: Vec<(Candidate, usize)>,
}

/// What the search tells its caller after each trial.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Trials finished.
    pub done: usize,
    /// Trials planned (when no candidate fails and the budget lasts).
    pub total: usize,
    /// The search round (0 first).
    pub round: usize,
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

/// Holdout rows a search trial (and the gate) scores, spread evenly over the holdout: enough to rank models to
/// about a tenth of a point of AUC, while scoring two million rows would cost more than a fit on a sample.
pub const SCORED_ROWS: usize = 200_000;

/// At most `at_most` of `rows`, evenly spread, in order (all of them when there are few).
pub fn spread(rows: &[usize], at_most: usize) -> Vec<usize> {
    let step = rows.len().div_ceil(at_most.max(1)).max(1);
    rows.iter().step_by(step).copied().collect()
}

/// Rows encoded per chunk when a matrix is built from columns.
const CHUNK: usize = 8192;

/// Rows sampled to place the bin edges of a large binned matrix (LightGBM samples 200,000 too).
const EDGE_SAMPLE: usize = 200_000;

/// Fewest rows a boosting fit needs before it holds out its newest tenth to stop early on (scikit-learn's
/// HistGradientBoosting stops early from the same size by default).
const EARLY_STOP_ROWS: usize = 10_000;

/// Orders labelled rows by event time (then ingestion order) and holds out the most recent share.
pub fn split(spec: &Spec, columns: &Columns) -> Result<Split> {
    split_recent(spec, columns, 0, usize::MAX, 1.0)
}

/// Whether the row of sequence number `seq` is in a fixed sample of `share` of all rows: a hash of the number, so
/// that the same rows are drawn on every run and the draw does not follow time or keys.
pub fn sampled(seq: u64, share: f64) -> bool {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// [`split`] over the labelled rows ingested after `since_seq` and the `history_rows` most recent before them, of
/// which a fixed sample of `history_weight` is kept (weighing history down against the recent rows).
pub fn split_recent(
    spec: &Spec,
    columns: &Columns,
    since_seq: u64,
    history_rows: usize,
    history_weight: f64,
) -> Result<Split> {
    let mut labelled: Vec<usize> = (0..columns.len()).filter(|&r| columns.targets.is_set(r)).collect();
    labelled.sort_by_key(|&r| (columns.times[r], columns.seqs[r]));
    if since_seq > 0 {
        let before = labelled.iter().filter(|&&r| columns.seqs[r] <= since_seq).count();
        let mut kept = 0;
        // Of the rows before the window, the most recent (in event time) `history_rows`.
        labelled.retain(|&r| {
            if columns.seqs[r] > since_seq {
                return true;
            }
            kept += 1;
            before - kept < history_rows && sampled(columns.seqs[r], history_weight)
        });
    }
    if labelled.len() < 10 {
        return Err(Error::Data(format!(
            "the master dataset has {} labelled rows (`{}` set); at least 10 are needed to train and evaluate",
            labelled.len(),
            spec.dataset.target
        )));
    }
    let mut classes: Vec<String> = Vec::new();
    if let Targets::Classes(codes) = &columns.targets {
        let mut counts = vec![0usize; codes.values.len()];
        for &r in &labelled {
            counts[codes.codes[r] as usize] += 1;
        }
        let mut runs: Vec<(&str, usize)> =
            codes.values.iter().zip(counts).filter(|(_, n)| *n > 0).map(|(c, n)| (c.as_str(), n)).collect();
        runs.sort_unstable();
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
    Ok(Split { train: labelled[..cut].to_vec(), holdout: labelled[cut..].to_vec(), labelled, classes })
}

/// The labels of `rows` (all labelled) as the fitters take them.
pub fn labels(columns: &Columns, rows: &[usize], classes: &[String]) -> Labels {
    match &columns.targets {
        Targets::Classes(codes) => {
            let index: Vec<usize> =
                codes.values.iter().map(|v| classes.iter().position(|c| c == v).unwrap_or(0)).collect();
            Labels::Classes(
                rows.iter().map(|&r| index.get(codes.codes[r] as usize).copied().unwrap_or(0)).collect(),
                classes.len(),
            )
        }
        Targets::Values(v) => Labels::Values(rows.iter().map(|&r| v[r]).collect()),
    }
}

/// How trees bin the encoded dimensions: a categorical feature's one-hot block as one column of slots.
pub fn tree_groups(encoder: &Encoder) -> Vec<Group> {
    let mut out = Vec::new();
    let mut at = 0;
    for f in &encoder.features {
        let width = f.width();
        match f {
            FeatureEncoder::Categorical { .. } if width <= cart::MAX_BINS + 1 => {
                out.push(Group::OneHot { first: at, width })
            }
            _ => out.extend((at..at + width).map(Group::Dim)),
        }
        at += width;
    }
    out
}

/// Bytes one training row of `cand` takes: dense rows are 8 bytes a dimension (twice that where linfa copies
/// them); binned rows a byte a column plus the forest's weights and indices, or boosting's gradients, hessians and
/// scores.
fn row_bytes(cand: &Candidate, encoder: &Encoder, classes: usize) -> usize {
    let dim = encoder.dim();
    match cand {
        Candidate::Trees(_) => tree_groups(encoder).len() + 32,
        Candidate::Boosting(_) => tree_groups(encoder).len() + 32 + 16 * classes.max(1),
        Candidate::NaiveBayes { .. } => dim * 8,
        Candidate::Linear { .. } => dim * 16,
    }
}

/// Most rows `cand` fits on within `batch.matrix_mb`.
pub fn max_rows(spec: &Spec, cand: &Candidate, encoder: &Encoder, classes: usize) -> usize {
    let budget = usize::try_from(spec.batch.matrix_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    (budget / row_bytes(cand, encoder, classes).max(1)).max(1)
}

/// Row-major encoding of `rows`, built chunk by chunk and handed to `put(first_row, chunk)`.
fn encode_chunks(encoder: &Encoder, columns: &Columns, rows: &[usize], put: &mut dyn FnMut(usize, &[f64])) {
    for (i, chunk) in rows.chunks(CHUNK).enumerate() {
        put(i * CHUNK, &encoder.encode_rows(columns, chunk.iter().copied()));
    }
}

/// Fits one candidate on the given rows (all labelled) of `columns`, encoded by `encoder`. Trees and boosting get
/// a binned matrix filled a chunk at a time; the others a row-major matrix. Boosting sums its histograms on
/// `threads` threads (its result does not depend on how many).
pub fn fit_rows(
    spec: &Spec,
    cand: &Candidate,
    encoder: &Encoder,
    columns: &Columns,
    rows: &[usize],
    classes: &[String],
    threads: usize,
) -> Result<Model> {
    let dim = encoder.dim();
    let binned = |rows: &[usize]| {
        // Edges from rows spread evenly over the set (all of them when there are few).
        let sample = encoder.encode_rows(columns, spread(rows, EDGE_SAMPLE).into_iter());
        Binned::from_chunks(rows.len(), dim, &tree_groups(encoder), &sample, |put| {
            encode_chunks(encoder, columns, rows, put)
        })
    };
    let all_labels = || labels(columns, rows, classes);
    match cand {
        Candidate::Trees(p) => Ok(Model::Trees(cart::fit(&binned(rows), &all_labels(), classes, p))),
        Candidate::Boosting(p) => {
            // Early stopping watches the newest tenth of the rows, when that is enough to judge by.
            let keep =
                if p.patience > 0 && rows.len() >= EARLY_STOP_ROWS { rows.len() - rows.len() / 10 } else { rows.len() };
            let (fit, watch) = rows.split_at(keep);
            let on = binned(fit);
            let valid = (!watch.is_empty()).then(|| {
                let watched = on.like(watch.len(), |put| encode_chunks(encoder, columns, watch, put));
                (watched, labels(columns, watch, classes))
            });
            let valid = valid.as_ref().map(|(b, l)| (b, l));
            Ok(Model::Trees(gbm::fit(&on, &labels(columns, fit, classes), classes, p, threads, valid)))
        }
        Candidate::Linear { alpha } => {
            let xs = encoder.encode_rows(columns, rows.iter().copied());
            fit_linear(spec, *alpha, &xs, dim, &all_labels(), classes).map(Model::Linear)
        }
        Candidate::NaiveBayes { var_smoothing } => {
            let xs = encoder.encode_rows(columns, rows.iter().copied());
            let labels = all_labels();
            let ys: &[usize] = match &labels {
                Labels::Classes(ys, _) => ys,
                Labels::Values(_) => &[],
            };
            Ok(Model::NaiveBayes(NaiveBayes::fit(classes.to_vec(), dim, &xs, ys, *var_smoothing)))
        }
    }
}

fn fit_linear(
    spec: &Spec,
    alpha: f64,
    xs: &[f64],
    dim: usize,
    labels: &Labels,
    classes: &[String],
) -> Result<LinearModel> {
    let n = xs.len().checked_div(dim).unwrap_or(0);
    let x = Array2::from_shape_vec((n, dim), xs.to_vec())
        .map_err(|e| lambda_core::Error::Encode { what: "the encoded matrix", source: e.into() })?;
    let name = format!("{} alpha={alpha}", algorithm(spec));
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| Error::Train { algorithm: name.clone(), source: e };
    let iterations = spec.batch.max_iterations;
    // linfa's objective sums the loss over rows; scale the stopping tolerance so that it means the same per row
    // whatever the data size (scikit-learn's lbfgs does the same on its averaged loss).
    let tolerance = GRADIENT_TOLERANCE * n.max(1) as f64;
    match (spec.dataset.task, labels) {
        (Task::BinaryClassification, Labels::Classes(ys, _)) => {
            let y: Array1<bool> = ys.iter().map(|&c| c == 1).collect();
            let fitted = LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(iterations)
                .gradient_tolerance(tolerance)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(e.into()))?;
            // linfa picks its own positive class; ours is always classes[1].
            let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
            let mut m = LinearModel::zeros(Family::Logistic, classes.to_vec(), dim);
            m.weights = fitted.params().iter().map(|w| sign * w).collect();
            m.bias = vec![sign * fitted.intercept()];
            Ok(m)
        }
        (Task::MulticlassClassification, Labels::Classes(ys, _)) => {
            let y = Array1::from(ys.clone());
            let fitted = MultiLogisticRegression::default()
                .alpha(alpha)
                .max_iterations(iterations)
                .gradient_tolerance(tolerance)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(e.into()))?;
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
        (_, Labels::Values(v)) => {
            let y = Array1::from(v.clone());
            let fitted = TweedieRegressor::params()
                .power(0.0)
                .alpha(alpha)
                .max_iter(iterations as usize)
                .fit(&Dataset::new(x, y))
                .map_err(|e| fail(e.into()))?;
            let mut m = LinearModel::zeros(Family::Linear, Vec::new(), dim);
            m.weights = fitted.coef.to_vec();
            m.bias = vec![fitted.intercept];
            Ok(m)
        }
        (task, _) => Err(Error::Data(format!("labels do not fit the task {task:?}"))),
    }
}

/// Predicts `rows` a chunk at a time and scores the predictions against their labels.
pub fn score(model: &Model, encoder: &Encoder, columns: &Columns, rows: &[usize]) -> Metrics {
    let mut predictions = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(CHUNK) {
        predictions.extend(model.predict_batch(&encoder.encode_rows(columns, chunk.iter().copied())));
    }
    let targets: Vec<TargetRef<'_>> = rows.iter().filter_map(|&r| columns.target(r)).collect();
    evaluate(model.classes(), &predictions, &targets)
}

/// The rolling-origin folds before the holdout, oldest first: for fold k of `folds` (the holdout being the
/// last), the training rows before the k-th block of `block` rows back from the holdout, and that block. A fold
/// that would fit fewer rows than it scores is left out.
pub fn rolling_folds(train: &[usize], block: usize, folds: usize) -> Vec<(&[usize], &[usize])> {
    (1..folds)
        .rev()
        .filter_map(|k| {
            let end = train.len().checked_sub((k - 1) * block)?;
            let start = end.checked_sub(block)?;
            (block > 0 && start >= block).then(|| (&train[..start], &train[start..end]))
        })
        .collect()
}

/// The mean of each metric over the folds that have it (AUC has no value on rows of one class; `rows`, the rows
/// scored, is their sum).
fn mean_metrics(folds: &[Metrics]) -> Metrics {
    let mut sums: std::collections::BTreeMap<String, (f64, f64)> = std::collections::BTreeMap::new();
    for m in folds {
        for (k, v) in m.iter().filter(|(_, v)| v.is_finite()) {
            let e = sums.entry(k.clone()).or_insert((0.0, 0.0));
            e.0 += v;
            e.1 += 1.0;
        }
    }
    sums.into_iter()
        .map(|(k, (sum, n))| {
            let v = if k == "rows" { sum } else { sum / n };
            (k, v)
        })
        .collect()
}

/// One fit of the search.
struct Trial {
    cand: usize,
    round: usize,
    rows: usize,
    result: Result<Metrics>,
    seconds: f64,
    /// Boosting rounds the model kept.
    kept: Option<usize>,
}

/// Boosting rounds a boosted model holds.
fn rounds_of(model: &Model) -> Option<usize> {
    match model {
        Model::Trees(m) if m.family == lambda_models::model::TreeFamily::GradientBoosting => {
            Some(m.trees.trees.len() / m.trees.outputs.max(1))
        }
        _ => None,
    }
}

/// Tries the candidates by successive halving over row samples until one is left, a round holds every training
/// row, or the time budget is spent: encoder fitted on the training rows, each model fitted on the most recent
/// rows of its round and scored on the holdout (an even spread of [`SCORED_ROWS`] when it is larger). `progress`
/// hears of each finished trial.
pub fn search(spec: &Spec, columns: &Columns, split: &Split, progress: &(dyn Fn(&Progress) + Sync)) -> Result<Search> {
    let started = std::time::Instant::now();
    let budget = spec.time_budget;
    let encoder = Encoder::fit_rows(spec, columns, &split.train)?;
    let cands = candidates(spec, tree_groups(&encoder).len());
    if cands.is_empty() {
        return Err(Error::Data(format!("`batch.families` = {:?} has no family for this task", spec.batch.families)));
    }
    let metric = spec.metric();
    let n_train = split.train.len();
    let mut sizes = vec![spec.batch.sample_rows.min(n_train)];
    while sizes[sizes.len() - 1] < n_train {
        sizes.push((sizes[sizes.len() - 1] * 4).min(n_train));
    }
    let planned = {
        let (mut alive, mut total) = (cands.len(), 0);
        for _ in &sizes {
            total += alive;
            if alive <= 1 {
                break;
            }
            alive = alive.div_ceil(2);
        }
        total
    };
    let caps: Vec<usize> = cands.iter().map(|c| max_rows(spec, c, &encoder, split.classes.len())).collect();
    // Small data (one round holds every training row) is judged on rolling-origin folds too: one holdout of a
    // few hundred rows is a noisy judge.
    let folds = if n_train <= spec.batch.sample_rows {
        rolling_folds(&split.train, split.holdout.len(), spec.batch.folds)
    } else {
        Vec::new()
    };
    let mut trials: Vec<Trial> = Vec::new();
    // Per candidate: its latest trial and model.
    let mut latest: Vec<Option<(usize, Model)>> = vec![None; cands.len()];
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    let board: std::sync::Mutex<(usize, Option<(String, f64)>)> = std::sync::Mutex::new((0, None));
    let mut cut_by_time = false;
    let mut stopped = String::new();
    let mut rounds = 0;
    for (round, &size) in sizes.iter().enumerate() {
        rounds = round + 1;
        // A candidate already fitted on all the rows its cap allows keeps that fit.
        let jobs: Vec<(usize, usize)> = alive
            .iter()
            .map(|&c| (c, size.min(caps[c])))
            .filter(|&(c, rows)| latest[c].as_ref().is_none_or(|(t, _)| trials[*t].rows != rows))
            .collect();
        // What each fit should take: its last fit's time scaled by the rows (FLAML's cost estimate); a fit that would
        // end past the budget does not start.
        let estimates: Vec<Option<f64>> = jobs
            .iter()
            .map(|&(c, rows)| {
                latest[c].as_ref().map(|(t, _)| trials[*t].seconds * rows as f64 / trials[*t].rows.max(1) as f64)
            })
            .collect();
        let done = run_round(
            spec,
            columns,
            split,
            &encoder,
            &cands,
            &jobs,
            &estimates,
            round,
            started,
            trials.is_empty(),
            &folds,
            &board,
            planned,
            progress,
        );
        let finished = done.len();
        for (c, rows, result, seconds) in done {
            let (result, model) = match result {
                Ok((model, metrics)) => (Ok(metrics), Some(model)),
                Err(e) => (Err(e), None),
            };
            let kept = model.as_ref().and_then(rounds_of);
            trials.push(Trial { cand: c, round, rows, result, seconds, kept });
            latest[c] = model.map(|m| (trials.len() - 1, m));
        }
        // A candidate without a job this round was at its row cap: its last fit stands in this round too.
        for &c in &alive {
            if let (false, Some((t, _))) = (jobs.iter().any(|&(j, _)| j == c), &latest[c]) {
                trials[*t].round = round;
            }
        }
        // Still in the race: candidates with a fit in this round, best first (stable: cheaper first on ties).
        let mut ranked: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&c| latest[c].as_ref().is_some_and(|(t, _)| trials[*t].round == round))
            .collect();
        ranked.sort_by(|&a, &b| rank_of(&trials, &latest, metric, a).total_cmp(&rank_of(&trials, &latest, metric, b)));
        if finished < jobs.len() {
            cut_by_time = true;
            stopped = format!(
                "the time budget ({}) was spent in round {} ({} rows), after {} trials",
                spec.batch.time_budget,
                round + 1,
                size,
                trials.len()
            );
            break;
        }
        if ranked.len() <= 1 || size >= n_train {
            stopped = if size >= n_train {
                format!("round {} held every training row ({size}); {} trials", round + 1, trials.len())
            } else {
                format!("one candidate was left after round {} ({size} rows); {} trials", round + 1, trials.len())
            };
            break;
        }
        alive = ranked[..ranked.len().div_ceil(2)].to_vec();
    }
    let failed = trials.iter().filter(|t| t.result.is_err()).count();
    for t in trials.iter().filter(|t| t.result.is_err()) {
        if let Err(e) = &t.result {
            tracing::warn!(candidate = %cands[t.cand].params(), error = %e, "candidate failed");
        }
    }
    let report = SearchReport {
        candidates: cands.len(),
        tried: trials.len(),
        failed,
        budget_seconds: budget.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        cut_by_time,
        stopped: format!("{stopped} in {rounds} round{}", if rounds == 1 { "" } else { "s" }),
        folds: folds.len() + 1,
        window_rows: None,
    };
    // Leaderboard: furthest round first, then by the metric; on ties the earlier (cheaper) candidate.
    let mut order: Vec<usize> = (0..trials.len()).filter(|&t| trials[t].result.is_ok()).collect();
    order.sort_by(|&a, &b| {
        trials[b].round.cmp(&trials[a].round).then_with(|| {
            let m = |t: usize| trials[t].result.as_ref().map(|m| metric.rank(m)).unwrap_or(f64::INFINITY);
            m(a).total_cmp(&m(b))
        })
    });
    let leaderboard: Vec<LeaderboardEntry> = order
        .iter()
        .map(|&t| {
            let tr = &trials[t];
            LeaderboardEntry {
                algorithm: cands[tr.cand].family(spec).into(),
                params: cands[tr.cand].params(),
                metrics: tr.result.as_ref().cloned().unwrap_or_default(),
                rows: tr.rows as u64,
                fit_seconds: tr.seconds,
                round: tr.round,
                rounds_kept: tr.kept,
            }
        })
        .collect();
    let best_incremental =
        order.iter().map(|&t| (cands[trials[t].cand], trials[t].rows)).find(|(c, _)| c.incremental());
    let Some(&winner) = order.first() else {
        let last = trials.into_iter().rev().find_map(|t| t.result.err());
        return Err(last.unwrap_or_else(|| Error::Internal("no candidate to train")));
    };
    let best = trials[winner].cand;
    let model = latest[best].take().map(|(_, m)| m).ok_or_else(|| Error::Internal("the winner's model was lost"))?;
    let searched = cands[best];
    let best = kept_rounds(searched, trials[winner].kept);
    let mut families = vec![searched.family(spec)];
    let mut runners_up = Vec::new();
    for (line, &t) in order.iter().enumerate() {
        let c = cands[trials[t].cand];
        if !families.contains(&c.family(spec)) {
            families.push(c.family(spec));
            runners_up.push((c, line));
        }
    }
    Ok(Search { best, searched, leaderboard, encoder, model, best_incremental, report, runners_up })
}

/// The refit boosts as many rounds as early stopping kept, without holding rows out again.
fn kept_rounds(c: Candidate, kept: Option<usize>) -> Candidate {
    match (c, kept) {
        (Candidate::Boosting(p), Some(kept)) => {
            Candidate::Boosting(BoostParams { rounds: kept.max(1), patience: 0, ..p })
        }
        (c, _) => c,
    }
}

/// Fewest training rows a window is tried on.
const MIN_WINDOW_ROWS: usize = 1_000;

/// How much better than all the training rows (relative to the metric's value) a window must score to be kept: a
/// shorter window that is only as good costs rows for nothing.
const WINDOW_MARGIN: f64 = 0.02;

/// Whether the newest part of history predicts the holdout better than more of it, as when history holds a concept
/// change: the winner and the best setting of each other family refitted on the newest eighth, quarter and half
/// of the rows of the winner's last trial (the most recent ones; all the training rows when the search got that
/// far), each while the budget lasts, each scored on the holdout. The best (setting, window) that beats the winner on
/// its trial's rows by [`WINDOW_MARGIN`] becomes the winner, its model and its leaderboard line first, and its rows
/// are returned (the refit then uses that span of the newest rows). Not tried on small data (scored on folds).
pub fn best_window(spec: &Spec, columns: &Columns, split: &Split, search: &mut Search) -> Option<usize> {
    let started = std::time::Instant::now();
    let metric = spec.metric();
    let first = search.leaderboard.first()?;
    let full = first.metrics.get(metric.name()).copied().filter(|v| v.is_finite())?;
    let n = (first.rows as usize).min(split.train.len());
    if search.report.folds > 1 {
        return None;
    }
    let left = spec.time_budget.as_secs_f64() - search.report.seconds;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let scored = spread(&split.holdout, SCORED_ROWS);
    // The winner fitted as its trial was (boosting: the rounds early stopping kept there), so that only the rows
    // differ; each other family's best as searched. On history that mixes two concepts a family can win on all the
    // rows and lose by far on the newest (a linear model against boosting, on Friedman with a recurring change).
    // The rounds early stopping kept on all the rows (their newest tenth straddling the change, say) are not the
    // window's: boosting is also fitted as it was searched, with early stopping on the window.
    let mut tried: Vec<(Candidate, Option<usize>, f64, u64)> = vec![(search.best, None, first.fit_seconds, first.rows)];
    if search.searched != search.best {
        tried.push((search.searched, None, first.fit_seconds, first.rows));
    }
    for &(cand, line) in &search.runners_up {
        let e = &search.leaderboard[line];
        tried.push((cand, Some(line), e.fit_seconds, e.rows));
    }
    let mut best: Option<(usize, usize, Model, Metrics, f64)> = None;
    // The smallest windows first: they cost least, and after a change the newest rows say the most.
    for w in [n / 8, n / 4, n / 2].into_iter().filter(|&w| w >= MIN_WINDOW_ROWS) {
        let rows = &split.train[split.train.len() - w..];
        for (k, (cand, _, fit_seconds, fit_rows_n)) in tried.iter().enumerate() {
            let estimate = fit_seconds * w as f64 / (*fit_rows_n).max(1) as f64;
            if started.elapsed().as_secs_f64() + estimate > left {
                continue;
            }
            let t0 = std::time::Instant::now();
            let Ok(model) = fit_rows(spec, cand, &search.encoder, columns, rows, &split.classes, cores) else {
                continue;
            };
            let metrics = score(&model, &search.encoder, columns, &scored);
            let seconds = t0.elapsed().as_secs_f64();
            let Some(v) = metrics.get(metric.name()).copied().filter(|v| v.is_finite()) else { continue };
            let gain = metric.gain(full, v);
            let family = cand.family(spec);
            tracing::info!(
                rows = w,
                family,
                metric = metric.name(),
                value = v,
                all_rows = full,
                seconds,
                "training window tried"
            );
            if gain > WINDOW_MARGIN * full.abs().max(1e-12) && best.as_ref().is_none_or(|b| gain > b.4) {
                best = Some((w, k, model, metrics, gain));
            }
        }
    }
    let (w, k, model, metrics, _) = best?;
    if let (cand, Some(line), _, _) = tried[k] {
        // Another family won: its line moves to the top, with the window's figures.
        search.searched = cand;
        let entry = search.leaderboard.remove(line);
        search.leaderboard.insert(0, entry);
    }
    search.best = kept_rounds(search.searched, rounds_of(&model));
    search.model = model;
    let line = &mut search.leaderboard[0];
    (line.metrics, line.rows, line.rounds_kept) = (metrics, w as u64, rounds_of(&search.model));
    search.report.window_rows = Some(w as u64);
    Some(w)
}

fn rank_of(trials: &[Trial], latest: &[Option<(usize, Model)>], metric: Metric, c: usize) -> f64 {
    latest[c]
        .as_ref()
        .and_then(|(t, _)| trials[*t].result.as_ref().ok())
        .map(|m| metric.rank(m))
        .unwrap_or(f64::INFINITY)
}

type Done = (usize, usize, Result<(Model, Metrics)>, f64);

/// Fits one round's jobs (candidate, rows) on two workers, none starting when its estimated end is past the budget
/// (except the very first trial of the search, so that even a spent budget gives a model); a cheaper later job may
/// still start. Results come back in job order.
#[allow(clippy::too_many_arguments)]
fn run_round(
    spec: &Spec,
    columns: &Columns,
    split: &Split,
    encoder: &Encoder,
    cands: &[Candidate],
    jobs: &[(usize, usize)],
    estimates: &[Option<f64>],
    round: usize,
    started: std::time::Instant,
    first: bool,
    folds: &[(&[usize], &[usize])],
    board: &std::sync::Mutex<(usize, Option<(String, f64)>)>,
    planned: usize,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Vec<Done> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let budget = spec.time_budget;
    let metric = spec.metric();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = cores.min(jobs.len()).max(1);
    let scored = spread(&split.holdout, SCORED_ROWS);
    // Cores no worker takes go to the fits (a last round of one candidate uses them all).
    let fit_threads = (cores / threads).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Done)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                let scored = &scored;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&(c, n)) = jobs.get(j) else { break };
                        let ends = started.elapsed().as_secs_f64() + estimates[j].unwrap_or(0.0);
                        if ends >= budget.as_secs_f64() && !(first && j == 0) {
                            break;
                        }
                        let rows = &split.train[split.train.len() - n..];
                        let t0 = std::time::Instant::now();
                        let fit = |rows: &[usize]| {
                            fit_rows(spec, &cands[c], encoder, columns, rows, &split.classes, fit_threads)
                        };
                        let r = fit(rows).map(|model| {
                            let mut each = vec![score(&model, encoder, columns, scored)];
                            // A fold the candidate cannot fit (its rows hold one class, say) is left out.
                            for (fit_on, scored_on) in folds {
                                if let Ok(m) = fit(fit_on) {
                                    each.push(score(&m, encoder, columns, &spread(scored_on, SCORED_ROWS)));
                                }
                            }
                            (model, if each.len() == 1 { each.remove(0) } else { mean_metrics(&each) })
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
                                    b.1 = Some((
                                        format!("{} {} ({n} rows)", cands[c].family(spec), cands[c].params()),
                                        v,
                                    ));
                                }
                            }
                            progress(&Progress {
                                done: b.0,
                                total: planned,
                                round,
                                best: b.1.clone(),
                                seconds_left: (budget.as_secs_f64() - started.elapsed().as_secs_f64()).max(0.0),
                            });
                        }
                        out.push((j, (c, n, r, seconds)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, (0, 0, Err(Error::Internal("a training thread panicked")), 0.0))]
                })
            })
            .collect()
    });
    results.sort_by_key(|(j, _)| *j);
    results.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_folds_fit_the_past_and_score_the_next_block() {
        let train: Vec<usize> = (0..100).collect();
        let folds = rolling_folds(&train, 20, 3);
        let spans: Vec<(usize, usize, usize)> =
            folds.iter().map(|(fit, scored)| (fit.len(), scored[0], scored[scored.len() - 1])).collect();
        assert_eq!(spans, vec![(60, 60, 79), (80, 80, 99)]);
        // Blocks of 30 in 100 rows: a fold fitting 10 rows to score 30 is left out, and there is no room for more.
        let spans: Vec<(usize, usize)> =
            rolling_folds(&train, 30, 5).iter().map(|(fit, scored)| (fit.len(), scored.len())).collect();
        assert_eq!(spans, vec![(40, 30), (70, 30)]);
        assert!(rolling_folds(&train, 20, 1).is_empty());
    }

    #[test]
    fn history_is_weighed_by_a_fixed_sample_of_the_share_asked_for() {
        for share in [0.1, 0.3, 0.75] {
            let kept: Vec<u64> = (1..=100_000u64).filter(|&s| sampled(s, share)).collect();
            let got = kept.len() as f64 / 100_000.0;
            assert!((got - share).abs() < 0.01, "{share}: {got}");
            // Not bunched in time: each tenth of the rows holds its share too.
            for tenth in 0..10u64 {
                let n = kept.iter().filter(|&&s| (s - 1) / 10_000 == tenth).count() as f64 / 10_000.0;
                assert!((n - share).abs() < 0.03, "{share}, tenth {tenth}: {n}");
            }
        }
        // The same rows on every run, a smaller share within a larger one, and all of them at 1.
        assert!((1..=10_000u64).all(|s| !sampled(s, 0.2) || sampled(s, 0.5)));
        assert!((1..=10_000u64).all(|s| sampled(s, 1.0)));
    }

    #[test]
    fn a_spread_keeps_at_most_so_many_rows_evenly_from_first_to_last() {
        let rows: Vec<usize> = (100..110).collect();
        assert_eq!(spread(&rows, 3), [100, 104, 108]);
        assert_eq!(spread(&rows, 10), rows);
        assert_eq!(spread(&rows, 50), rows);
        let big: Vec<usize> = (0..1_000_003).collect();
        let s = spread(&big, SCORED_ROWS);
        // A whole step between rows: between half and all of the allowance.
        assert!(s.len() <= SCORED_ROWS && s.len() > SCORED_ROWS / 2, "{}", s.len());
        assert!(s.windows(2).all(|w| w[1] - w[0] == 6));
    }
}
