//! The lambda-ml batch layer: the nightly job.
//!
//! [`run`] scans every Parquet file of the master dataset with polars ([`read`]), splits the rows by event time into
//! training and holdout, fits the encoder, searches the model settings with linfa ([`train`]), refits the best on
//! all rows, aggregates every row into the batch view with polars ([`view`]), and publishes the view and then the
//! model (the registry pointer moves last) when the champion/challenger [`gate`] lets it. [`forecast`] scores a
//! whole Parquet table with the current model.

pub mod cart;
pub mod forecast;
pub mod gate;
pub mod gbm;
pub mod read;
pub mod train;
pub mod view;

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use lambda_core::encoder::Encoder;
use lambda_core::spec::Spec;
use lambda_models::online::GradientPrior;
use lambda_models::online_bayes::{self, BayesStats};
use lambda_stores::registry::{now_rfc3339, Manifest, ModelArtifact, Registry, FORMAT_VERSION};
use lambda_stores::views::batch_view_path;

/// Result with the batch [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a batch run. Each variant names the file or column at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared core (registry, spec, views).
    #[error(transparent)]
    Core(#[from] lambda_core::Error),
    /// A Parquet file or column does not fit the spec.
    #[error("{path}: {problem}")]
    Input {
        /// The file (or folder) at fault.
        path: PathBuf,
        /// What is wrong, naming the column.
        #[source]
        problem: read::Problem,
    },
    /// The data cannot train a model (empty, a single class, too few rows).
    #[error("{0}")]
    Data(String),
    /// Polars could not aggregate the batch view.
    #[error("computing the batch view: {0}")]
    View(#[source] polars::prelude::PolarsError),
    /// A step was asked for in a state where it cannot happen (a bug: nothing was published).
    #[error("{0}")]
    Internal(&'static str),
    /// The solver failed.
    #[error("training {algorithm} failed: {source}")]
    Train {
        /// The candidate that failed.
        algorithm: String,
        /// The solver's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

struct Phases {
    bar: ProgressBar,
}

impl Phases {
    fn new(total: u64) -> Self {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Phases { bar }
    }

    fn start(&self, phase: &str) {
        tracing::info!(phase, "batch");
        self.bar.set_message(phase.to_string());
    }

    fn done(&self) {
        self.bar.inc(1);
    }
}

/// What a batch run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new version's manifest; its `gate` says why it was or was not published.
    pub manifest: Manifest,
    /// Whether `CURRENT` moved to it. When not, the version is kept and can be promoted by hand.
    pub published: bool,
}

/// How a run chooses its training rows and budget.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Publish whatever the gate says.
    pub force: bool,
    /// Train on the labelled rows after this sequence number only (a retraining on the fly after a drift)...
    pub since_seq: Option<u64>,
    /// ...plus this many of the most recent labelled rows before it...
    pub history_rows: usize,
    /// ...each kept with this chance (their weight against the recent rows).
    pub history_weight: f64,
    /// The search's time budget instead of `batch.time_budget`.
    pub time_budget: Option<std::time::Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { force: false, since_seq: None, history_rows: 0, history_weight: 1.0, time_budget: None }
    }
}

/// Runs the batch layer once: read, split, fit, search, refit, view, then publish the new version if it is at
/// least as good as the champion (or `force`), else keep it without moving `CURRENT`. Writes nothing on error.
pub fn run(spec: &Spec, force: bool) -> Result<Outcome> {
    run_with(spec, &RunOptions { force, ..RunOptions::default() })
}

/// A retraining on the fly for the speed layer: the rows after `since_seq` (and `speed.retrain.history_rows`
/// before, weighed by `speed.retrain.history_weight`), within `speed.retrain.time_budget`, through the gate.
pub fn retrain(spec: &Spec, since_seq: u64) -> Result<Outcome> {
    let r = &spec.speed.retrain;
    let options = RunOptions {
        force: false,
        since_seq: Some(since_seq),
        history_rows: r.history_rows,
        history_weight: r.history_weight,
        time_budget: Some(spec.retrain_budget),
    };
    run_with(spec, &options)
}

/// [`run`] with options. The batch view always covers every row; the encoder is fitted on every row too.
pub fn run_with(spec: &Spec, options: &RunOptions) -> Result<Outcome> {
    let mut budgeted;
    let spec = match options.time_budget {
        Some(b) => {
            budgeted = spec.clone();
            budgeted.time_budget = b;
            &budgeted
        }
        None => spec,
    };
    let force = options.force;
    sweep(spec);
    let phases = Phases::new(6);
    phases.start("reading master dataset");
    let data = read::read_master(spec)?;
    phases.done();
    tracing::info!(rows = data.columns.len(), files = data.files, watermark = data.watermark, "master dataset read");

    phases.start("splitting by event time");
    let split = match options.since_seq {
        None => train::split(spec, &data.columns)?,
        Some(since) => train::split_recent(spec, &data.columns, since, options.history_rows, options.history_weight)?,
    };
    phases.done();

    phases.start("searching models on the holdout");
    let metric = spec.metric().name();
    let bar = &phases.bar;
    let mut search = train::search(spec, &data.columns, &split, &|p: &train::Progress| {
        let best = p.best.as_ref().map(|(name, v)| format!(", best {metric} {v:.4} ({name})")).unwrap_or_default();
        bar.set_message(format!(
            "searching, round {}: {}/{} trials{best}, {:.0} s of the budget left",
            p.round + 1,
            p.done,
            p.total,
            p.seconds_left
        ));
    })?;
    tracing::info!(
        tried = search.report.tried,
        candidates = search.report.candidates,
        seconds = search.report.seconds,
        stopped = %search.report.stopped,
        "search done"
    );
    let window = train::best_window(spec, &data.columns, &split, &mut search);
    if let Some(w) = window {
        tracing::info!(rows = w, "the newest training rows predict the holdout better than all of them: kept");
    }
    phases.done();
    let best = &search.leaderboard[0];
    tracing::info!(algorithm = %best.algorithm, params = %best.params, metrics = ?best.metrics, "best candidate");

    phases.start("refitting the best model");
    let c = &data.columns;
    let encoder = Encoder::fit(spec, c)?;
    // Each family refits on the most recent labelled rows its matrix budget allows (all of them, usually).
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let refit = |cand: &train::Candidate, most: usize| {
        let cap = train::max_rows(spec, cand, &encoder, split.classes.len()).min(most);
        let rows = &split.labelled[split.labelled.len().saturating_sub(cap)..];
        train::fit_rows(spec, cand, &encoder, c, rows, &split.classes, cores).map(|m| (m, rows.len()))
    };
    // A window of the newest training rows that won refits on the same span: those rows and the holdout after them.
    let most = window.map_or(usize::MAX, |w| w + split.holdout.len());
    let (model, training_rows) = refit(&search.best, most)?;
    // A champion the speed layer cannot update comes with the best linear candidate as its starting model. It is
    // a warm start the speed layer goes on learning from, so it refits on the newest rows as many as its furthest
    // search trial used (the winner's when no linear candidate was searched), not on all of them.
    let online = match (&model, search.best_incremental) {
        (lambda_models::model::Model::Linear(_), _) => None,
        (_, found) => {
            let (cand, rows) = found.unwrap_or((
                train::Candidate::Linear { alpha: spec.batch.alphas[0] },
                search.leaderboard[0].rows as usize,
            ));
            match refit(&cand, rows.min(most))? {
                (lambda_models::model::Model::Linear(m), rows) => Some((m, rows)),
                _ => None,
            }
        }
    };
    let online_rows = online.as_ref().map(|(_, rows)| *rows as u64);
    let online = online.map(|(m, _)| m);
    let start = match (&model, &online) {
        (lambda_models::model::Model::Linear(m), _) => Some((m, training_rows)),
        (_, Some(m)) => online_rows.map(|rows| (m, rows as usize)),
        _ => None,
    };
    let online_prior = start.map(|(m, rows)| gradient_prior(m, &encoder, c, &split.labelled, rows));
    let online_bayes = (!split.classes.is_empty()).then(|| bayes_stats(&encoder, &split.classes, c, &split.labelled));
    let artifact = ModelArtifact {
        format_version: FORMAT_VERSION,
        schema_hash: spec.schema_hash(),
        encoder,
        model,
        online,
        online_prior,
        online_bayes,
    };
    artifact.validate(spec)?;
    phases.done();

    phases.start("aggregating the batch view");
    let view = view::batch_view(spec, c).map_err(Error::View)?;
    phases.done();

    phases.start("publishing");
    let registry = Registry::open(&spec.paths.registry);
    // From the champion's reading to the publication: another run publishing meanwhile would be judged against a
    // champion that is no longer current, or take the same version name.
    let _lock = registry.lock()?;
    let champion = registry.current_version()?.map(|v| registry.load(&v).map_err(|e| (v, e.to_string())));
    let gate = gate::judge(spec, c, &split, &search, champion, force);
    let version = registry.next_version()?;
    // The view goes first so that a model is never current without its view.
    view.write_parquet(&batch_view_path(spec, &version))?;
    let manifest = Manifest {
        version,
        pipeline: spec.name.clone(),
        created: now_rfc3339(),
        watermark: data.watermark,
        training_rows: training_rows as u64,
        holdout_rows: split.holdout.len() as u64,
        metrics: best.metrics.clone(),
        schema_hash: spec.schema_hash(),
        algorithm: format!("{} {}", best.algorithm, best.params),
        leaderboard: search.leaderboard.clone(),
        gate: Some(gate.clone()),
        search: Some(search.report.clone()),
        online_rows,
        trained_since: options.since_seq,
    };
    let manifest =
        if gate.published { registry.publish(&artifact, manifest)? } else { registry.keep(&artifact, manifest)? };
    if let Err(e) = retain_versions(spec, &registry) {
        // The run's version is published; what is not removed now is removed after the next run.
        tracing::warn!(error = %e, "cannot remove the versions the registry no longer keeps");
    }
    phases.done();
    phases.bar.finish_and_clear();
    tracing::info!(
        version = %manifest.version,
        watermark = manifest.watermark,
        published = gate.published,
        reason = %gate.reason,
        "champion/challenger"
    );
    Ok(Outcome { manifest, published: gate.published })
}

/// Removes what crashed runs left in the registry and the views folder (staging folders, temporary files).
fn sweep(spec: &Spec) {
    let swept = Registry::open(&spec.paths.registry)
        .sweep()
        .and_then(|_| lambda_stores::state::sweep_temp_files(&spec.paths.views));
    if let Err(e) = swept {
        tracing::warn!(error = %e, "cannot remove what an earlier run left behind");
    }
}

/// Removes the versions past `batch.keep_versions` (never the current one, the rollback target or the speed
/// layer's base) with their batch views. Called under the registry's lock.
fn retain_versions(spec: &Spec, registry: &Registry) -> Result<()> {
    if spec.batch.keep_versions == 0 {
        return Ok(());
    }
    // A speed layer's state whose base cannot be read keeps everything: its restart will say what is wrong.
    let base = lambda_stores::checkpoint::base_version(&spec.paths.state)?;
    for version in registry.retain(spec.batch.keep_versions, &Vec::from_iter(base))? {
        let view = batch_view_path(spec, &version);
        match std::fs::remove_file(&view) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(lambda_core::Error::io(view, e).into()),
        }
        tracing::info!(%version, "removed a version the registry no longer keeps");
    }
    Ok(())
}

/// Rows the speed layer's gradient prior is measured on, at most: a mean over this many is exact enough.
const PRIOR_ROWS: usize = 100_000;

/// The speed layer's starting model's gradient statistics on the newest of the `rows` newest labelled rows it was
/// fitted on ([`lambda_models::online`]).
fn gradient_prior(
    model: &lambda_models::model::LinearModel,
    encoder: &Encoder,
    columns: &lambda_core::schema::Columns,
    labelled: &[usize],
    rows: usize,
) -> GradientPrior {
    let fitted = &labelled[labelled.len().saturating_sub(rows)..];
    let scales = encoder.scales();
    let mut prior = GradientPrior::new(model);
    let mut x = vec![0.0; encoder.dim()];
    for &row in &fitted[fitted.len().saturating_sub(PRIOR_ROWS)..] {
        if let Some(t) = columns.target(row) {
            encoder.encode_row(&columns.row(row), &mut x);
            prior.add(model, &scales, &x, &t.to_target());
        }
    }
    prior
}

/// Rows encoded at once for the naive Bayes statistics.
const BAYES_CHUNK: usize = 8192;

/// Naive Bayes' statistics over every labelled row in time order, exactly as the speed layer would hold them had it
/// learned each row ([`lambda_models::online_bayes`]): its warm start. `classes` are the speed layer's starting model's.
fn bayes_stats(
    encoder: &Encoder,
    classes: &[String],
    columns: &lambda_core::schema::Columns,
    labelled: &[usize],
) -> BayesStats {
    let (layout, dim) = (online_bayes::layout(encoder), encoder.dim());
    let mut stats = BayesStats::empty(classes.len(), &layout);
    let cart::Labels::Classes(ys, _) = train::labels(columns, labelled, classes) else { return stats };
    for (rows, ys) in labelled.chunks(BAYES_CHUNK).zip(ys.chunks(BAYES_CHUNK)) {
        // Bit for bit what encoding each row alone gives.
        let xs = encoder.encode_rows(columns, rows.iter().copied());
        for (x, &y) in xs.chunks_exact(dim.max(1)).zip(ys) {
            stats.add(&layout, dim, x, y);
        }
    }
    stats
}
