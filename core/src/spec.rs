//! The pipeline spec: one TOML file declaring the dataset, the paths and each layer's settings.
//!
//! It is parsed with serde (unknown keys are errors that name the key) into [`RawSpec`], then checked once by
//! [`RawSpec::check`] into a [`Spec`], the only form the layers use. Relative paths are resolved against the folder
//! of the spec file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::Metric;
use crate::time::{TimeFormat, TimeWindow};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Two classes; the model gives the probability of each.
    BinaryClassification,
    /// Three or more classes; the model gives the probability of each.
    MulticlassClassification,
    /// A real value.
    Regression,
}

impl Task {
    /// Whether the target is a class label.
    pub fn is_classification(self) -> bool {
        !matches!(self, Task::Regression)
    }
}

/// The type of a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A finite real number; standardized by the encoder.
    Numeric,
    /// A string from a vocabulary; one-hot encoded with an unknown bucket.
    Categorical,
    /// true or false.
    Boolean,
}

/// One feature as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Column name, in the master dataset and in events.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub kind: FeatureKind,
    /// When true, an event without this feature is rejected; otherwise a missing value is encoded explicitly.
    #[serde(default)]
    pub required: bool,
}

/// The `[dataset]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Event time column: RFC 3339 strings or epoch numbers in events (see `time_format`), integers or timestamps in
    /// Parquet.
    pub time_column: String,
    /// How events write their time: `auto` (the default: RFC 3339 strings, and epoch numbers in the one unit that
    /// puts them inside `time_window`), `rfc3339`, `epoch_s`, `epoch_ms`, `epoch_us` or `epoch_ns`.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Plausible event times, two RFC 3339 times `[from, until)`; by default 2000-01-01 to 2100-01-01. An event
    /// outside is refused with the time it was read as, so that seconds sent as milliseconds do not pass as 1970.
    #[serde(default)]
    pub time_window: TimeWindow,
    /// Entity key column; views are kept per key.
    pub key_column: String,
    /// Unique event id column; replays with a known id are de-duplicated.
    pub id_column: String,
    /// Label column. Absent or null in an event means the event is unlabelled.
    pub target: String,
    /// What the model predicts.
    pub task: Task,
    /// Whether live events may carry class labels the current model does not know (multiclass only). When false
    /// (the default) such an event is rejected with the reason; when true it is kept, counted in the views and
    /// archived, and the next batch run trains on the new class.
    #[serde(default)]
    pub allow_new_classes: bool,
    /// Longest event id, in bytes of UTF-8 (default 256); a longer one is rejected with the reason.
    #[serde(default = "default_max_id_bytes")]
    pub max_id_bytes: usize,
    /// Longest key, in bytes (default 256): each key is a row of the views, kept in memory and on disk.
    #[serde(default = "default_max_key_bytes")]
    pub max_key_bytes: usize,
    /// Longest string value of a categorical feature or a class label, in bytes (default 1,024).
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

fn default_max_id_bytes() -> usize {
    256
}

fn default_max_key_bytes() -> usize {
    256
}

fn default_max_value_bytes() -> usize {
    1024
}

/// The `[paths]` table. Relative paths are resolved against the spec file's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Master dataset: date-partitioned Parquet files, append-only.
    pub master: PathBuf,
    /// Model registry: versioned model folders and the pointer to the current one.
    pub registry: PathBuf,
    /// Batch views, one Parquet file per model version.
    pub views: PathBuf,
    /// Speed-layer state: write-ahead log, checkpoints, dead letters.
    pub state: PathBuf,
}

/// The `[batch]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Share of the most recent rows (by event time) held out for evaluation.
    pub holdout_fraction: f64,
    /// L2 strengths tried by the model search; the best on the holdout is published.
    pub alphas: Vec<f64>,
    /// Iteration cap of the solvers.
    pub max_iterations: u64,
    /// Categories kept per categorical feature (most frequent first); the rest share the unknown bucket.
    pub max_categories: usize,
    /// The holdout metric that ranks candidates and judges a challenger; by default `log_loss` for
    /// classification and `rmse` for regression.
    pub metric: Option<Metric>,
    /// A challenger replaces the champion only when it is better by at least this much on the metric, judged on
    /// the holdout rows the champion has not seen (negative: it may be that much worse).
    pub min_improvement: f64,
    /// A bar the winner must clear on the holdout (at most this for a loss, at least this for a score).
    pub min_metric: Option<f64>,
    /// Model families the search tries: `linear`, `naive_bayes` (classification), `decision_tree`,
    /// `random_forest`, `gradient_boosting`.
    pub families: Vec<String>,
    /// Seed of every random choice of the search (bootstrap samples, dimension draws).
    pub seed: u64,
    /// Model versions the registry keeps after each run: the newest this many, and always the current one, the one
    /// a rollback goes back to and the one the speed layer's state is built on (with their batch views). 0 keeps
    /// every version.
    pub keep_versions: usize,
    /// Wall time the search may take, e.g. "60s": no candidate starts after it (the manifest then says the search
    /// was cut by time).
    pub time_budget: String,
    /// Rows of the search's first round: every candidate is fitted on the most recent this many training rows,
    /// the better half goes on to four times as many rows, and so on until one is left or a round holds every
    /// training row.
    pub sample_rows: usize,
    /// Rolling-origin folds a trial is scored on when every training row fits in the search's first round
    /// (`sample_rows`, so small data): the last fold fits the training rows and scores the holdout; each earlier one
    /// fits the rows before the next block of holdout size back and scores that block. The trial's metrics are the
    /// folds' mean. 1: the holdout alone.
    pub folds: usize,
    /// Memory one candidate's training matrix may take, in MiB: a family fits on at most the most recent rows that
    /// fit in it (a dense row costs 8 bytes per encoded dimension, twice for linear models and boosting, a binned
    /// tree row one byte). Two candidates train at once.
    pub matrix_mb: u64,
    /// Settings tried for `decision_tree`: every combination of the listed values.
    pub decision_tree: TreeSpace,
    /// Settings tried for `random_forest`.
    pub random_forest: ForestSpace,
    /// Settings tried for `gradient_boosting`.
    pub gradient_boosting: BoostSpace,
    /// Settings tried for `naive_bayes`.
    pub naive_bayes: BayesSpace,
}

/// The search space of decision trees (`[batch.decision_tree]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TreeSpace {
    /// Deepest split levels.
    pub max_depth: Vec<usize>,
    /// Fewest rows in a leaf.
    pub min_leaf: Vec<usize>,
}

impl Default for TreeSpace {
    fn default() -> Self {
        TreeSpace { max_depth: vec![4, 8, 12], min_leaf: vec![20] }
    }
}

/// The search space of random forests (`[batch.random_forest]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestSpace {
    /// Trees per forest.
    pub trees: Vec<usize>,
    /// Deepest split levels.
    pub max_depth: Vec<usize>,
    /// Fewest rows in a leaf.
    pub min_leaf: Vec<usize>,
    /// Shares of the columns tried at each split; empty: sqrt(columns) for classes, a third for values.
    pub feature_fraction: Vec<f64>,
}

impl Default for ForestSpace {
    fn default() -> Self {
        ForestSpace { trees: vec![50], max_depth: vec![16], min_leaf: vec![2], feature_fraction: Vec::new() }
    }
}

/// The search space of gradient-boosted trees (`[batch.gradient_boosting]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoostSpace {
    /// Boosting rounds.
    pub rounds: Vec<usize>,
    /// Shrinkage of each tree.
    pub learning_rate: Vec<f64>,
    /// Deepest split levels.
    pub max_depth: Vec<usize>,
    /// L2 penalties on leaf values.
    pub l2: Vec<f64>,
    /// Fewest rows in a leaf.
    pub min_leaf: Vec<usize>,
    /// A fit on 10,000 rows or more holds out its newest tenth and stops after this many rounds without a lower
    /// loss on it, keeping the rounds up to the lowest; the refit then boosts that many rounds. 0 turns it off.
    pub early_stopping_rounds: usize,
}

impl Default for BoostSpace {
    fn default() -> Self {
        BoostSpace {
            rounds: vec![100, 300],
            learning_rate: vec![0.1, 0.3],
            max_depth: vec![4, 6, 8],
            l2: vec![1.0],
            min_leaf: vec![20],
            early_stopping_rounds: 20,
        }
    }
}

/// The search space of Gaussian naive Bayes (`[batch.naive_bayes]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayesSpace {
    /// Shares of the largest variance added to every variance.
    pub var_smoothing: Vec<f64>,
}

impl Default for BayesSpace {
    fn default() -> Self {
        BayesSpace { var_smoothing: vec![1e-9] }
    }
}

/// Checks that a search-space list is non-empty with every value in `[min, max]`.
fn check_space(values: &[f64], name: &str, min: f64, max: f64) -> Result<(), String> {
    match values.iter().find(|x| !(min..=max).contains(*x)) {
        _ if values.is_empty() => Err(format!("`batch.{name}` must list at least one value")),
        Some(v) => Err(format!("`batch.{name}` has {v}; each value must be between {min} and {max}")),
        None => Ok(()),
    }
}

fn counts(values: &[usize]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// Model families the search knows.
pub const FAMILIES: [&str; 5] = ["linear", "naive_bayes", "decision_tree", "random_forest", "gradient_boosting"];

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            holdout_fraction: 0.2,
            alphas: vec![0.01, 0.1, 1.0],
            max_iterations: 200,
            max_categories: 100,
            metric: None,
            min_improvement: 0.0,
            min_metric: None,
            families: FAMILIES.iter().map(|f| f.to_string()).collect(),
            seed: 0,
            keep_versions: 20,
            time_budget: "60s".into(),
            sample_rows: 10_000,
            folds: 3,
            matrix_mb: 512,
            decision_tree: TreeSpace::default(),
            random_forest: ForestSpace::default(),
            gradient_boosting: BoostSpace::default(),
            naive_bayes: BayesSpace::default(),
        }
    }
}

/// How the speed layer's linear model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearUpdate {
    /// Normalized adaptive gradient (NAG; [`lambda_models::online`]): free of feature scales.
    Adaptive,
    /// Plain stochastic gradient descent with a fixed step size.
    Sgd,
}

impl SpeedSettings {
    /// The step size: `learning_rate`, or the default of the update.
    pub fn step_size(&self) -> f64 {
        self.learning_rate.unwrap_or(match self.update {
            LinearUpdate::Adaptive => 0.5,
            LinearUpdate::Sgd => 0.01,
        })
    }
}

/// The `[speed]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeedSettings {
    /// Address of the event ingest endpoint (`POST /v1/events`).
    pub listen: String,
    /// How the incremental linear model learns: `adaptive` (normalized adaptive gradient, NAG) or plain `sgd`.
    pub update: LinearUpdate,
    /// Step size of the incremental model; unset: 0.5 for `adaptive` (Vowpal Wabbit's default), 0.01 for `sgd`.
    pub learning_rate: Option<f64>,
    /// L2 penalty of the incremental model.
    pub l2: f64,
    /// `adaptive` warm start: the online steps start as small as if the batch model had been learned online from
    /// this many of its training rows.
    pub prior_events: u64,
    /// Online learners beside the linear model (names in [`crate::names::LEARNERS`]): `hoeffding_tree`,
    /// `hoeffding_adaptive_tree` and `adaptive_random_forest` learn the latest `learner_history_rows` of history
    /// then the stream, `naive_bayes` (classification only) starts from history's exact statistics.
    pub learners: Vec<String>,
    /// Labelled rows before a batch version's watermark (the latest ones) that the tree learners learn when the
    /// speed layer starts on that version, so that they start where history leaves off; 0: the stream alone.
    /// Default 50,000.
    pub learner_history_rows: u64,
    /// Latest labelled events each model's windowed prequential metrics and drift state are taken over.
    pub window: usize,
    /// How often what changed (model, realtime views) is checkpointed and published to other processes, e.g.
    /// "200ms".
    pub checkpoint_interval: String,
    /// The online learners (a forest is megabytes) are written at a checkpoint once this much time has passed
    /// since they were last written, e.g. "5s"...
    pub learner_checkpoint_interval: String,
    /// ...or once this many events have been accepted since: a restart learns the logged events after them again,
    /// and a serving layer in another process serves them this much behind the linear model at most. The good
    /// state a freeze goes back to (a copy of the learners too) is written as rarely. Default 100,000.
    pub learner_checkpoint_events: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// An archive file of the master dataset is closed once it holds this many events...
    pub archive_max_rows: u64,
    /// ...or once its first event is this old (ingestion time), e.g. "1h".
    pub archive_max_age: String,
    /// Ids are de-duplicated over this much ingestion time, e.g. "7d".
    pub dedup_window: String,
    /// Memory for the filters of the id runs, in MiB (about a byte per id of the window); beyond it lookups read
    /// the runs on disk.
    pub dedup_filter_mb: usize,
    /// Request bodies parsed at once; further requests wait their turn.
    pub max_parsing: usize,
    /// Requests queued at the learner; further requests wait up to `ingest_wait`.
    pub max_queued: usize,
    /// How long a request waits for room at the learner before it is answered 503 with `Retry-After`.
    pub ingest_wait: String,
    /// When bad input freezes the online updates ([`lambda_models::quality`]).
    pub freeze: FreezeSettings,
    /// Retraining on the fly after a confirmed drift.
    pub retrain: RetrainSettings,
}

/// The `[speed.retrain]` table: the batch pipeline run by the speed layer on recent events after a drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainSettings {
    /// Whether a confirmed drift (both detectors on the batch model's errors) starts a run.
    pub on_drift: bool,
    /// Its search's time budget, e.g. "30s".
    pub time_budget: String,
    /// Events to wait for after the drift before starting, so that the new concept has rows to learn from.
    pub min_events: u64,
    /// Labelled rows from before the drift window kept for training (the most recent ones); 0 cuts history.
    pub history_rows: usize,
    /// Weight of those rows against the window's, in (0, 1]: each is kept with this chance (a fixed draw per row),
    /// which weighs history down by it for every model family, weights or not.
    pub history_weight: f64,
}

impl Default for RetrainSettings {
    fn default() -> Self {
        RetrainSettings {
            on_drift: true,
            time_budget: "30s".into(),
            min_events: 2000,
            history_rows: 0,
            history_weight: 1.0,
        }
    }
}

/// The `[speed.freeze]` table: limits on the latest records' quality past which online updates freeze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreezeSettings {
    /// Whether bad input freezes updates at all.
    pub enabled: bool,
    /// Latest records received that the shares are taken over; updates resume after this many clean ones. Short,
    /// so that bad input is caught before much of it is learned (10% bad records pass a 5% limit after about half
    /// a window).
    pub window: usize,
    /// Largest share of rejected records.
    pub max_rejected: f64,
    /// Largest share of accepted records with a numeric value outside the range seen in history.
    pub max_out_of_range: f64,
    /// Largest share of accepted labels the model does not know (`dataset.allow_new_classes`; otherwise they are
    /// rejected and count as such).
    pub max_unknown_labels: f64,
}

impl Default for FreezeSettings {
    fn default() -> Self {
        FreezeSettings {
            enabled: true,
            window: 200,
            max_rejected: 0.2,
            max_out_of_range: 0.05,
            max_unknown_labels: 0.05,
        }
    }
}

impl Default for SpeedSettings {
    fn default() -> Self {
        SpeedSettings {
            listen: "127.0.0.1:7071".into(),
            update: LinearUpdate::Adaptive,
            learning_rate: None,
            l2: 0.0,
            prior_events: 10_000,
            learners: vec!["hoeffding_tree".into(), "adaptive_random_forest".into()],
            learner_history_rows: 50_000,
            window: 1000,
            checkpoint_interval: "200ms".into(),
            learner_checkpoint_interval: "5s".into(),
            learner_checkpoint_events: 100_000,
            max_body_bytes: 16 * 1024 * 1024,
            archive_max_rows: 1_000_000,
            archive_max_age: "1h".into(),
            dedup_window: "7d".into(),
            dedup_filter_mb: 64,
            max_parsing: 4,
            max_queued: 64,
            ingest_wait: "1s".into(),
            freeze: FreezeSettings::default(),
            retrain: RetrainSettings::default(),
        }
    }
}

/// The `[serving]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingSettings {
    /// Address of the HTTP service.
    pub listen: String,
    /// How often the registry and the speed layer's state are polled for new versions, e.g. "1s".
    pub reload_interval: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most records in one prediction request.
    pub max_batch: usize,
    /// How long a request with `min_seq` waits for the speed layer to reach it before answering 409.
    pub min_seq_wait: String,
    /// Which model answers `/v1/predict`: "blend" (the batch champion, the speed layer's linear model and its
    /// online learners, weighted by their latest losses), "batch", "speed", or one of `speed.learners`. A request
    /// may ask for another with `?model=`.
    pub model: String,
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings {
            listen: "127.0.0.1:7070".into(),
            reload_interval: "1s".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 10_000,
            min_seq_wait: "1s".into(),
            model: crate::names::BLEND.into(),
        }
    }
}

/// The spec as written in the TOML file, before checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Pipeline name, shown in manifests and logs.
    pub name: String,
    /// Columns and task.
    pub dataset: Dataset,
    /// Typed features, in the order the encoder lays them out.
    pub features: Vec<Feature>,
    /// Where data lives.
    pub paths: Paths,
    /// Batch-layer settings.
    #[serde(default)]
    pub batch: BatchSettings,
    /// Speed-layer settings.
    #[serde(default)]
    pub speed: SpeedSettings,
    /// Serving-layer settings.
    #[serde(default)]
    pub serving: ServingSettings,
}

/// A checked pipeline spec: names are unique, settings in range, paths absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The spec file it came from.
    pub source: PathBuf,
    /// Pipeline name.
    pub name: String,
    /// Columns and task.
    pub dataset: Dataset,
    /// Typed features, in encoder order.
    pub features: Vec<Feature>,
    /// Where data lives (absolute).
    pub paths: Paths,
    /// Batch-layer settings.
    pub batch: BatchSettings,
    /// Speed-layer settings.
    pub speed: SpeedSettings,
    /// Time budget of the batch search.
    pub time_budget: Duration,
    /// Time budget of a retraining on the fly.
    pub retrain_budget: Duration,
    /// Checkpoint interval of the speed layer.
    pub checkpoint_interval: Duration,
    /// Longest time between two writes of the online learners.
    pub learner_checkpoint_interval: Duration,
    /// Age at which an archive file is closed.
    pub archive_max_age: Duration,
    /// De-duplication window.
    pub dedup_window: Duration,
    /// How long ingest waits for room at the learner.
    pub ingest_wait: Duration,
    /// How long a `min_seq` read waits.
    pub min_seq_wait: Duration,
    /// Serving-layer settings.
    pub serving: ServingSettings,
    /// Poll interval of the serving layer.
    pub reload_interval: Duration,
}

/// Name of the column that carries each event's ingestion sequence number in the master dataset.
pub const SEQ_COLUMN: &str = "_ingest_seq";

impl Spec {
    /// Reads and checks a spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Spec { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        Spec::from_toml(&text, path, &base)
    }

    /// Parses and checks spec text; `source` names it in errors, `base` resolves relative paths.
    pub fn from_toml(text: &str, source: &Path, base: &Path) -> Result<Spec> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| Error::Spec {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        raw.check(source, base)
    }

    /// The holdout metric of the search and of the champion/challenger gate.
    pub fn metric(&self) -> Metric {
        self.batch.metric.unwrap_or(if self.dataset.task.is_classification() { Metric::LogLoss } else { Metric::Rmse })
    }

    /// A stable hash of everything that shapes the encoded features and the target: models trained under one hash
    /// can be served under the same hash only.
    pub fn schema_hash(&self) -> String {
        let mut text = format!(
            "{}|{}|{}|{}|{:?}",
            self.dataset.time_column,
            self.dataset.key_column,
            self.dataset.id_column,
            self.dataset.target,
            self.dataset.task
        );
        for f in &self.features {
            text.push_str(&format!("|{}:{:?}:{}", f.name, f.kind, f.required));
        }
        format!("{:016x}", fnv1a(text.as_bytes()))
    }

    /// Index of a feature by name.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl RawSpec {
    /// The names `serving.model` and `?model=` accept.
    fn serving_models(&self) -> impl Iterator<Item = &str> {
        use crate::names::{BATCH, BLEND, SPEED};
        [BLEND, BATCH, SPEED].into_iter().chain(self.speed.learners.iter().map(String::as_str))
    }

    /// Checks the spec once; every error names the key at fault.
    pub fn check(self, source: &Path, base: &Path) -> Result<Spec> {
        let fail = |message: String| Error::Spec { path: source.to_path_buf(), message };
        if self.name.trim().is_empty() {
            return Err(fail("`name` must not be empty".into()));
        }
        let d = &self.dataset;
        let reserved = [
            ("dataset.time_column", &d.time_column),
            ("dataset.key_column", &d.key_column),
            ("dataset.id_column", &d.id_column),
            ("dataset.target", &d.target),
        ];
        let mut seen = BTreeSet::new();
        seen.insert(SEQ_COLUMN.to_string());
        for (key, name) in reserved {
            if name.trim().is_empty() {
                return Err(fail(format!("`{key}` must not be empty")));
            }
            if !seen.insert(name.clone()) {
                return Err(fail(format!("`{key}` = {name:?} is used twice or is reserved")));
            }
        }
        d.time_window.check(d.time_format).map_err(fail)?;
        if self.features.is_empty() {
            return Err(fail("`features` must declare at least one feature".into()));
        }
        for (i, f) in self.features.iter().enumerate() {
            if f.name.trim().is_empty() {
                return Err(fail(format!("`features[{i}].name` must not be empty")));
            }
            if !seen.insert(f.name.clone()) {
                return Err(fail(format!(
                    "`features[{i}].name` = {:?} is declared twice or collides with a dataset column",
                    f.name
                )));
            }
        }
        let b = &self.batch;
        if !(b.holdout_fraction > 0.0 && b.holdout_fraction < 1.0) {
            return Err(fail(format!("`batch.holdout_fraction` = {} must be in (0, 1)", b.holdout_fraction)));
        }
        if b.alphas.is_empty() || b.alphas.iter().any(|a| !a.is_finite() || *a < 0.0) {
            return Err(fail("`batch.alphas` must be a non-empty list of finite numbers >= 0".into()));
        }
        if b.max_iterations == 0 {
            return Err(fail("`batch.max_iterations` must be at least 1".into()));
        }
        if b.max_categories == 0 {
            return Err(fail("`batch.max_categories` must be at least 1".into()));
        }
        if b.folds == 0 {
            return Err(fail("`batch.folds` must be at least 1".into()));
        }
        if b.sample_rows < 100 {
            return Err(fail("`batch.sample_rows` must be at least 100".into()));
        }
        if b.matrix_mb == 0 {
            return Err(fail("`batch.matrix_mb` must be at least 1".into()));
        }
        check_space(&counts(&b.decision_tree.max_depth), "decision_tree.max_depth", 1.0, 64.0).map_err(&fail)?;
        check_space(&counts(&b.decision_tree.min_leaf), "decision_tree.min_leaf", 1.0, 1e12).map_err(&fail)?;
        check_space(&counts(&b.random_forest.trees), "random_forest.trees", 2.0, 10_000.0).map_err(&fail)?;
        check_space(&counts(&b.random_forest.max_depth), "random_forest.max_depth", 1.0, 64.0).map_err(&fail)?;
        check_space(&counts(&b.random_forest.min_leaf), "random_forest.min_leaf", 1.0, 1e12).map_err(&fail)?;
        if !b.random_forest.feature_fraction.is_empty() {
            check_space(&b.random_forest.feature_fraction, "random_forest.feature_fraction", 1e-6, 1.0)
                .map_err(&fail)?;
        }
        let g = &b.gradient_boosting;
        check_space(&counts(&g.rounds), "gradient_boosting.rounds", 1.0, 100_000.0).map_err(&fail)?;
        check_space(&g.learning_rate, "gradient_boosting.learning_rate", 1e-6, 1.0).map_err(&fail)?;
        check_space(&counts(&g.max_depth), "gradient_boosting.max_depth", 1.0, 32.0).map_err(&fail)?;
        check_space(&g.l2, "gradient_boosting.l2", 0.0, 1e12).map_err(&fail)?;
        check_space(&counts(&g.min_leaf), "gradient_boosting.min_leaf", 1.0, 1e12).map_err(&fail)?;
        check_space(&b.naive_bayes.var_smoothing, "naive_bayes.var_smoothing", 0.0, 1e6).map_err(&fail)?;
        if let Some(m) = b.metric {
            if m.is_classification() != self.dataset.task.is_classification() {
                let fits: Vec<&str> = Metric::ALL
                    .iter()
                    .filter(|k| k.is_classification() == self.dataset.task.is_classification())
                    .map(|k| k.name())
                    .collect();
                let task = if self.dataset.task.is_classification() { "classification" } else { "regression" };
                return Err(fail(format!(
                    "`batch.metric` = {:?} does not measure a {task} task; use one of {}",
                    m.name(),
                    fits.join(", ")
                )));
            }
        }
        if b.families.is_empty() {
            return Err(fail(format!("`batch.families` must name at least one of {}", FAMILIES.join(", "))));
        }
        if let Some(f) = b.families.iter().find(|f| !FAMILIES.contains(&f.as_str())) {
            return Err(fail(format!("`batch.families` has {f:?}; known families: {}", FAMILIES.join(", "))));
        }
        if !self.dataset.task.is_classification() && b.families.iter().all(|f| f == "naive_bayes") {
            return Err(fail(
                "`batch.families`: naive_bayes fits classification only; add a family for regression".into(),
            ));
        }
        if !b.min_improvement.is_finite() {
            return Err(fail(format!("`batch.min_improvement` = {} must be a finite number", b.min_improvement)));
        }
        if let Some(v) = b.min_metric.filter(|v| !v.is_finite()) {
            return Err(fail(format!("`batch.min_metric` = {v} must be a finite number")));
        }
        let s = &self.speed;
        if let Some(r) = s.learning_rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(fail(format!("`speed.learning_rate` = {r} must be a finite number > 0")));
        }
        if let Some(l) = s.learners.iter().find(|l| !crate::names::LEARNERS.contains(&l.as_str())) {
            return Err(fail(format!(
                "`speed.learners` has {l:?}; known learners: {}",
                crate::names::LEARNERS.join(", ")
            )));
        }
        if !self.dataset.task.is_classification() {
            if let Some(l) = s.learners.iter().find(|l| crate::names::CLASSIFIERS_ONLY.contains(&l.as_str())) {
                return Err(fail(format!("`speed.learners`: {l} classifies only; the task is regression")));
            }
        }
        if s.window == 0 {
            return Err(fail("`speed.window` = 0: the metrics window needs at least one event".into()));
        }
        let f = &s.freeze;
        if f.window == 0 {
            return Err(fail("`speed.freeze.window` = 0: the input's shares need at least one record".into()));
        }
        for (key, v) in [
            ("max_rejected", f.max_rejected),
            ("max_out_of_range", f.max_out_of_range),
            ("max_unknown_labels", f.max_unknown_labels),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(fail(format!("`speed.freeze.{key}` = {v} must be a share between 0 and 1")));
            }
        }
        let answering = &self.serving.model;
        if !self.serving_models().any(|m| m == answering) {
            return Err(fail(format!(
                "`serving.model` = {answering:?}; it can be {}",
                self.serving_models().collect::<Vec<_>>().join(", ")
            )));
        }
        if !(s.l2.is_finite() && s.l2 >= 0.0) {
            return Err(fail(format!("`speed.l2` = {} must be a finite number >= 0", s.l2)));
        }
        let w = self.speed.retrain.history_weight;
        if !(w > 0.0 && w <= 1.0) {
            return Err(fail(format!("`speed.retrain.history_weight` = {w} must be in (0, 1]")));
        }
        let time_budget = duration(&self.batch.time_budget).map_err(|m| fail(format!("`batch.time_budget`: {m}")))?;
        let retrain_budget =
            duration(&self.speed.retrain.time_budget).map_err(|m| fail(format!("`speed.retrain.time_budget`: {m}")))?;
        let checkpoint_interval =
            duration(&s.checkpoint_interval).map_err(|m| fail(format!("`speed.checkpoint_interval`: {m}")))?;
        let learner_checkpoint_interval = duration(&s.learner_checkpoint_interval)
            .map_err(|m| fail(format!("`speed.learner_checkpoint_interval`: {m}")))?;
        let reload_interval =
            duration(&self.serving.reload_interval).map_err(|m| fail(format!("`serving.reload_interval`: {m}")))?;
        let archive_max_age =
            duration(&s.archive_max_age).map_err(|m| fail(format!("`speed.archive_max_age`: {m}")))?;
        let dedup_window = duration(&s.dedup_window).map_err(|m| fail(format!("`speed.dedup_window`: {m}")))?;
        let ingest_wait = duration(&s.ingest_wait).map_err(|m| fail(format!("`speed.ingest_wait`: {m}")))?;
        let min_seq_wait =
            duration(&self.serving.min_seq_wait).map_err(|m| fail(format!("`serving.min_seq_wait`: {m}")))?;
        for (name, limit) in [
            ("max_id_bytes", d.max_id_bytes),
            ("max_key_bytes", d.max_key_bytes),
            ("max_value_bytes", d.max_value_bytes),
        ] {
            if limit == 0 {
                return Err(fail(format!("`dataset.{name}` must be at least 1")));
            }
        }
        if d.allow_new_classes && d.task != Task::MulticlassClassification {
            return Err(fail(format!(
                "`dataset.allow_new_classes` needs `task = \"multiclass_classification\"`, not {:?}",
                d.task
            )));
        }
        for (key, addr) in [("speed.listen", &s.listen), ("serving.listen", &self.serving.listen)] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(fail(format!("`{key}` = {addr:?} is not an address like 127.0.0.1:7070")));
            }
        }
        for (key, n) in [
            ("speed.max_body_bytes", s.max_body_bytes),
            ("serving.max_body_bytes", self.serving.max_body_bytes),
            ("serving.max_batch", self.serving.max_batch),
            ("speed.archive_max_rows", s.archive_max_rows as usize),
            ("speed.max_parsing", s.max_parsing),
            ("speed.max_queued", s.max_queued),
        ] {
            if n == 0 {
                return Err(fail(format!("`{key}` must be at least 1")));
            }
        }
        let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let paths = Paths {
            master: abs(&self.paths.master),
            registry: abs(&self.paths.registry),
            views: abs(&self.paths.views),
            state: abs(&self.paths.state),
        };
        Ok(Spec {
            source: source.to_path_buf(),
            name: self.name,
            dataset: self.dataset,
            features: self.features,
            paths,
            batch: self.batch,
            speed: self.speed,
            time_budget,
            retrain_budget,
            checkpoint_interval,
            learner_checkpoint_interval,
            archive_max_age,
            dedup_window,
            ingest_wait,
            min_seq_wait,
            serving: self.serving,
            reload_interval,
        })
    }
}

fn duration(text: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration like \"2s\" ({e})"))?;
    if d.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(d)
}

/// A small spec (three features, a binary target), for tests and examples.
#[doc(hidden)]
pub const SAMPLE: &str = r#"
name = "t"
[dataset]
time_column = "ts"
key_column = "user"
id_column = "id"
target = "label"
task = "binary_classification"
[[features]]
name = "amount"
type = "numeric"
[[features]]
name = "country"
type = "categorical"
[[features]]
name = "mobile"
type = "boolean"
[paths]
master = "master"
registry = "run/registry"
views = "run/views"
state = "run/state"
"#;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::SAMPLE;

    fn parse(text: &str) -> Result<Spec> {
        Spec::from_toml(text, Path::new("spec.toml"), Path::new("/base"))
    }

    /// What a spec error says, failing the test on any other result.
    fn refused(text: &str) -> String {
        match parse(text) {
            Err(Error::Spec { message, .. }) => message,
            other => panic!("expected a spec error, got {other:?}"),
        }
    }

    #[test]
    fn sample_parses_with_defaults_and_absolute_paths() {
        let spec = parse(SAMPLE).unwrap();
        assert_eq!(spec.features.len(), 3);
        assert_eq!(spec.paths.registry, PathBuf::from("/base/run/registry"));
        assert_eq!(spec.checkpoint_interval, Duration::from_millis(200));
        assert_eq!(spec.dedup_window, Duration::from_secs(7 * 86_400));
        assert_eq!(spec.batch.holdout_fraction, 0.2);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = SAMPLE.replace("task = ", "colour = \"red\"\ntask = ");
        let err = refused(&text);
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let text = SAMPLE.replace("target = \"label\"\n", "");
        let err = refused(&text);
        assert!(err.contains("target"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = SAMPLE.replace("type = \"numeric\"", "type = \"complex\"");
        let err = refused(&text);
        assert!(err.contains("complex"), "{err}");
        let text = SAMPLE.to_string() + "[batch]\nholdout_fraction = \"half\"\n";
        let err = refused(&text);
        assert!(err.contains("holdout_fraction"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (extra, key) in [
            ("[batch]\nholdout_fraction = 1.5\n", "batch.holdout_fraction"),
            ("[batch]\nalphas = []\n", "batch.alphas"),
            ("[speed]\nlearning_rate = -1.0\n", "speed.learning_rate"),
            ("[speed]\nupdate = \"newton\"\n", "update"),
            ("[speed]\nlearners = [\"forest\"]\n", "speed.learners"),
            ("[speed]\nwindow = 0\n", "speed.window"),
            ("[serving]\nmodel = \"forest\"\n", "serving.model"),
            ("[speed.freeze]\nmax_out_of_range = 1.5\n", "speed.freeze.max_out_of_range"),
            ("[speed.freeze]\nwindow = 0\n", "speed.freeze.window"),
            ("[speed.retrain]\nhistory_weight = 0.0\n", "speed.retrain.history_weight"),
            ("[speed.retrain]\nhistory_weight = nan\n", "speed.retrain.history_weight"),
            ("[speed]\ncheckpoint_interval = \"soon\"\n", "speed.checkpoint_interval"),
            ("[speed]\nlearner_checkpoint_interval = \"-1s\"\n", "speed.learner_checkpoint_interval"),
            ("[speed]\nlearner_checkpoint_events = -3\n", "learner_checkpoint_events"),
            ("[serving]\nlisten = \"nowhere\"\n", "serving.listen"),
            ("[speed]\ndedup_window = \"0s\"\n", "speed.dedup_window"),
            ("[speed]\narchive_max_rows = 0\n", "speed.archive_max_rows"),
            ("[batch]\nsample_rows = 10\n", "batch.sample_rows"),
            ("[batch]\nfolds = 0\n", "batch.folds"),
            ("[batch]\nmatrix_mb = 0\n", "batch.matrix_mb"),
            ("[batch.gradient_boosting]\nlearning_rate = [0.0]\n", "batch.gradient_boosting.learning_rate"),
            ("[batch.gradient_boosting]\nrounds = []\n", "batch.gradient_boosting.rounds"),
            ("[batch.random_forest]\nfeature_fraction = [1.5]\n", "batch.random_forest.feature_fraction"),
            ("[batch.random_forest]\ntrees = [1]\n", "batch.random_forest.trees"),
            ("[batch.decision_tree]\nmax_depth = [0]\n", "batch.decision_tree.max_depth"),
            ("[batch.naive_bayes]\nvar_smoothing = [-1.0]\n", "batch.naive_bayes.var_smoothing"),
            ("[batch.gradient_boosting]\ndepth = [3]\n", "depth"),
        ] {
            let err = refused(&(SAMPLE.to_string() + extra));
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_search_space_set_in_the_spec_replaces_only_what_it_names() {
        let s = parse(&(SAMPLE.to_string() + "[batch.gradient_boosting]\nrounds = [50, 500]\n")).unwrap();
        assert_eq!(s.batch.gradient_boosting.rounds, [50, 500]);
        assert_eq!(s.batch.gradient_boosting.max_depth, BoostSpace::default().max_depth);
        assert_eq!(s.batch.random_forest, ForestSpace::default());
    }

    #[test]
    fn naive_bayes_as_an_online_learner_of_a_regression_task_is_refused() {
        let learners = "[speed]\nlearners = [\"hoeffding_tree\", \"naive_bayes\"]\n";
        assert_eq!(parse(&(SAMPLE.to_string() + learners)).unwrap().speed.learners, ["hoeffding_tree", "naive_bayes"]);
        let regression = SAMPLE.replace("task = \"binary_classification\"", "task = \"regression\"") + learners;
        let err = refused(&regression);
        assert!(err.contains("speed.learners") && err.contains("naive_bayes") && err.contains("regression"), "{err}");
        let tree_only = regression.replace(", \"naive_bayes\"", "");
        assert_eq!(parse(&tree_only).unwrap().speed.learners, ["hoeffding_tree"]);
    }

    #[test]
    fn new_classes_need_a_multiclass_task() {
        let text = SAMPLE.replace("task = ", "allow_new_classes = true\ntask = ");
        let err = refused(&text);
        assert!(err.contains("allow_new_classes") && err.contains("multiclass"), "{err}");
        let text = text.replace("binary_classification", "multiclass_classification");
        assert!(parse(&text).unwrap().dataset.allow_new_classes);
    }

    #[test]
    fn duplicate_and_colliding_names_are_errors() {
        let text = SAMPLE.replace("name = \"country\"", "name = \"amount\"");
        assert!(refused(&text).contains("features[1].name"));
        let text = SAMPLE.replace("name = \"country\"", "name = \"user\"");
        assert!(refused(&text).contains("collides"));
    }

    #[test]
    fn empty_and_unreadable_files_are_errors() {
        assert!(matches!(parse(""), Err(Error::Spec { .. })));
        match Spec::from_file("/nonexistent/spec.toml") {
            Err(Error::Spec { path, .. }) => assert_eq!(path, Path::new("/nonexistent/spec.toml")),
            other => panic!("expected a spec error, got {other:?}"),
        }
    }

    #[test]
    fn schema_hash_follows_features() {
        let a = parse(SAMPLE).unwrap().schema_hash();
        let b = parse(&SAMPLE.replace("\"boolean\"", "\"numeric\"")).unwrap().schema_hash();
        assert_ne!(a, b);
        assert_eq!(a, parse(SAMPLE).unwrap().schema_hash());
    }
}
