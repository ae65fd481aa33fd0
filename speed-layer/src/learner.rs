//! All speed-layer state, owned by one thread: the incremental model, the realtime view, the log, the
//! de-duplication index, the dead letters, and where archiving and checkpointing stand.
//!
//! An ingest call validates each record, checks it against the model (ranges, classes, a trial of its update
//! that must stay finite), logs and syncs the accepted ones, and only then applies them: a failure before the sync
//! leaves no trace. A restart loads the checkpoint and replays the log after it through the same learning step,
//! so it ends in the same state as a run that never stopped. A new batch version (or a rollback of `CURRENT`) is
//! adopted by rebuilding the realtime view and the warm-started model from every event after its watermark, read
//! back from the master dataset and the log.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lambda_core::schema::{Event, Target};
use lambda_core::spec::{LinearUpdate, Spec};
use lambda_models::blend::Weights;
use lambda_models::model::{LinearModel, NonFinite, Prediction};
use lambda_models::online::{AdaptiveLinear, NagState, OnlineLearner};
use lambda_stores::checkpoint::{
    self, BatchSide, Checkpoint, FreezeRecord, LearnerFile, LearnerStatus, Live, LiveState, RetrainState,
    RetrainStatus, SourcePosition, SourceState, SpeedModel, SpeedSide, SpeedStats, ViewFile, WindowStatuses,
};
use lambda_stores::lock::FolderLock;
use lambda_stores::master;
use lambda_stores::realtime::Realtime;
use lambda_stores::registry::{now_millis, ModelArtifact, Published, Registry};
use lambda_stores::state::create_dir_synced;
use lambda_stores::views::ViewTable;
use serde::Serialize;

use crate::archive;
use crate::dedup::{id_hash, Dedup};
use crate::ingest::Incoming;
use crate::log::{GroupMark, Log, LogView, Record};
use crate::records::Records;
use crate::retrain::{Retrained, Retrainer};
use crate::stages::dead_letters::{rejected_key, DeadLetters};
use crate::worker::{Done, Job, Worker};
use crate::{Error, Result};
use lambda_models::quality::{Frozen, Quality, Rates};

/// What one ingest call did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// Events accepted (durable in the log).
    pub accepted: u64,
    /// Events whose id was already accepted; ignored.
    pub duplicates: u64,
    /// Records rejected, with their line and reason.
    pub rejected: Vec<RejectedLine>,
    /// Sequence number of the first accepted event.
    pub first_seq: Option<u64>,
    /// Sequence number of the last accepted event.
    pub last_seq: Option<u64>,
}

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RejectedLine {
    /// Line (or array position), 1-based.
    pub line: usize,
    /// Why it was rejected.
    pub error: String,
}

/// Files dropped from a checkpoint stay this long for readers still on it.
const RETIRE_AFTER_MS: i64 = 2_000;

/// A checkpoint that takes this long is logged with the time of each step.
const SLOW_CHECKPOINT_MS: u128 = 200;

/// The input's verdict turned inside a request group, after its accepted record `after`.
struct Turn {
    after: usize,
    seq: u64,
    /// A resume, with the linear model then (the good state it keeps); `None`: a freeze.
    resume: Option<AdaptiveLinear>,
    why: String,
}

/// Why a labelled event cannot be learned.
enum Unlearnable {
    /// The model has no output for its class; allowed when the spec says so.
    UnknownClass,
    /// The loss or the update would not be finite.
    NonFinite(String),
}

/// One update of the incremental model, by the spec's rule. Nothing changes on `Err`.
fn update(
    model: &mut AdaptiveLinear,
    x: &[f64],
    target: &Target,
    spec: &Spec,
    batch: &ModelArtifact,
) -> std::result::Result<bool, NonFinite> {
    let (rate, l2) = (spec.speed.step_size(), spec.speed.l2);
    match spec.speed.update {
        // NAG's steps are free of the inputs' scales but move a prediction by about the step size whatever the
        // target's: in the target's deviations, a value in dollars adapts as fast as one in thousands of dollars.
        LinearUpdate::Adaptive => {
            model.learn(x, target, rate * lambda_models::online::target_scale(&batch.encoder), l2)
        }
        LinearUpdate::Sgd => model.model.sgd_update_checked(x, target, rate, l2),
    }
}

/// Predicts (speed and batch model), then takes one update step: prequential evaluation. Nothing changes on `Err`.
fn learn(
    model: &mut AdaptiveLinear,
    batch: &ModelArtifact,
    x: &[f64],
    target: &Target,
    spec: &Spec,
    stats: &mut SpeedStats,
    frozen: bool,
) -> std::result::Result<(bool, Prediction, Prediction), Unlearnable> {
    let ps = model.predict(x);
    let pb = batch.model.predict(x);
    let (Some(ls), Some(lb)) = (model.model.loss(&ps, target), batch.model.loss(&pb, target)) else {
        return Err(Unlearnable::UnknownClass);
    };
    if !ls.is_finite() || !lb.is_finite() {
        return Err(Unlearnable::NonFinite(format!("its loss is not finite (speed {ls}, batch {lb})")));
    }
    let sums = (stats.speed_loss_sum + ls, stats.batch_loss_sum + lb);
    if !sums.0.is_finite() || !sums.1.is_finite() {
        return Err(Unlearnable::NonFinite("the summed loss would overflow".into()));
    }
    // Frozen: scored (the windows tell when the input is clean again), not learned.
    let learned = if frozen { Ok(false) } else { update(model, x, target, spec, batch) };
    match learned {
        Ok(updated) => {
            stats.labelled += 1;
            (stats.speed_loss_sum, stats.batch_loss_sum) = sums;
            Ok((updated, ps, pb))
        }
        Err(e) => Err(Unlearnable::NonFinite(e.to_string())),
    }
}

/// The speed layer's state.
pub struct Learner {
    spec: Spec,
    state: PathBuf,
    /// The state folder's lock, held for the learner's life.
    _lock: FolderLock,
    log: Log,
    dedup: Dedup,
    dead: DeadLetters,
    batch: Published,
    side: Arc<SpeedSide>,
    model: AdaptiveLinear,
    /// The other learners, the windows and the blend.
    records: Records,
    /// What the windows said at the last refresh.
    window_status: Arc<WindowStatuses>,
    /// The other learners' models as of the last refresh.
    learner_models: Arc<Vec<OnlineLearner>>,
    /// The input's quality and whether updates are frozen.
    quality: Quality,
    /// Online states taken while the input was clean, at the end of the first request group a
    /// `speed.freeze.window` of events after the one before, newest last: a freeze goes back to the oldest.
    good: VecDeque<Good>,
    /// The good state written for a restart: its sequence number and file name.
    snapshot: Option<(u64, String)>,
    /// At a restart, until the replay reaches the checkpoint: the snapshot learning the logged events after it
    /// again, to take the good states the run took.
    relearn: Option<Relearn>,
    /// Snapshots' files the next checkpoint no longer lists.
    goods_retired: Vec<PathBuf>,
    /// When the last snapshot was written (milliseconds since the Unix epoch).
    snapshot_written_ms: i64,
    /// Number of the last dead letter written.
    dead_n: u64,
    /// The online learners' file the last checkpoint lists (they are exact through its sequence number).
    learner_file: Option<LearnerFile>,
    /// When the learners were last written (milliseconds since the Unix epoch).
    learners_written_ms: i64,
    /// Whether the next checkpoint must write the learners: they changed other than by learning the logged events
    /// in order (a start, an adoption, a freeze's restore), or learning changes its kind (a freeze, a resume).
    need_learners: bool,
    /// Which messages of each external event log are held (see [`SourceState`]).
    sources: BTreeMap<u64, SourceState>,
    /// Retraining on the fly.
    retraining: Retraining,
    /// A batch version being adopted in the background.
    adoption: Option<Adoption>,
    /// After a failed build: no new one before this time (milliseconds since the Unix epoch), and the pause.
    adoption_retry_ms: i64,
    adoption_backoff: i64,
    updates: u64,
    stats: SpeedStats,
    generation: u64,
    last_seq: u64,
    archived_through: u64,
    open_first_ms: Option<i64>,
    views: Vec<ViewFile>,
    need_full: bool,
    retired: Vec<(i64, PathBuf)>,
    dedup_retired: Vec<PathBuf>,
    checkpointed_seq: u64,
    dirty: bool,
    live: Option<Arc<Live>>,
    x: Vec<f64>,
    timing: Timing,
    worker: Option<Worker>,
}

#[derive(Debug, Default)]
struct Timing {
    checkpoints: u64,
    last_ms: f64,
    max_ms: f64,
    last_bytes: u64,
    manifest_bytes: u64,
    archive_files: u64,
    dedup_max_ms: f64,
    learner_bytes: u64,
    adoption_failures: u64,
}

/// What the speed layer reports about itself (`GET /v1/status`), refreshed at every tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Batch version the state is built on.
    pub base_version: String,
    /// Realtime generation.
    pub generation: u64,
    /// Highest sequence number applied.
    pub last_seq: u64,
    /// Highest sequence number archived into the master dataset.
    pub archived_through: u64,
    /// Counters.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Replays of known ids.
    pub duplicates: u64,
    /// SGD updates since the warm start.
    pub updates: u64,
    /// Keys in the realtime view.
    pub keys: usize,
    /// Heap bytes of the realtime view (approximate).
    pub realtime_bytes: usize,
    /// Bytes of the log on disk, and its segment files.
    pub log_bytes: u64,
    /// Log segment files.
    pub log_segments: usize,
    /// Ids the de-duplication index holds in memory, its runs on disk and their bytes.
    pub dedup_in_memory: usize,
    /// Bytes of the id runs' in-memory filters.
    pub dedup_filter_bytes: usize,
    /// Runs of the id index.
    pub dedup_runs: usize,
    /// Bytes of the runs.
    pub dedup_bytes: u64,
    /// Slowest write (and merge) of an id run since start, on the learner thread (milliseconds).
    pub dedup_flush_max_ms: f64,
    /// Checkpoints written since start, and how long the last and the slowest took (milliseconds).
    pub checkpoints: u64,
    /// Duration of the last checkpoint (milliseconds).
    pub checkpoint_last_ms: f64,
    /// Duration of the slowest checkpoint since start (milliseconds).
    pub checkpoint_max_ms: f64,
    /// Bytes the last checkpoint wrote.
    pub checkpoint_last_bytes: u64,
    /// Bytes of the files the current checkpoint consists of.
    pub checkpoint_bytes: u64,
    /// Sequence number the online learners' file is exact through (written every few seconds, not at each
    /// checkpoint), and its size.
    pub learners_checkpointed_seq: u64,
    /// Size of the online learners' file last written.
    pub learners_bytes: u64,
    /// Archive files written since start.
    pub archive_files: u64,
    /// Mean prequential loss of the speed model on the labelled events (each scored before it was learned).
    pub speed_loss: Option<f64>,
    /// Mean loss of the batch model on the same events.
    pub batch_loss: Option<f64>,
    /// Resident memory of the process, when the platform tells.
    pub resident_bytes: Option<u64>,
    /// The other online learners, each with its mean prequential loss.
    #[schema(value_type = Vec<Object>)]
    pub learners: Vec<LearnerStatus>,
    /// Each model's metrics over its latest labelled events, and its drift detectors.
    #[schema(value_type = Object)]
    pub windows: WindowStatuses,
    /// The shares of bad records over the latest ones received (since the last restart).
    #[schema(value_type = Object)]
    pub input: Rates,
    /// Set while bad input keeps the online updates frozen.
    #[schema(value_type = Option<Object>)]
    pub frozen: Option<Frozen>,
    /// Freezes since the state was created.
    pub freezes: u64,
    /// Retraining on the fly.
    #[schema(value_type = Object)]
    pub retrain: RetrainStatus,
    /// A batch version being adopted in the background (ingest goes on on `base_version` meanwhile).
    pub adopting: Option<String>,
    /// Background adoptions that failed since start (each is tried again).
    pub adoption_failures: u64,
}

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What a checkpoint wrote, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointReport {
    /// Bytes of realtime view files written.
    pub view_bytes: u64,
    /// Whether a full view file was written (else a delta, or nothing).
    pub full: bool,
    /// Bytes of the manifest.
    pub manifest_bytes: u64,
    /// Bytes of good states' files written (each once).
    pub good_bytes: u64,
    /// Bytes of the online learners' file, when it was written.
    pub learner_bytes: u64,
}

fn filter_budget(spec: &Spec) -> usize {
    spec.speed.dedup_filter_mb.saturating_mul(1 << 20)
}

/// The incremental model a checkpoint holds, with its adaptive state; a version-1 checkpoint has none, so it
/// starts from the batch model's warm-start state at the checkpoint's weights.
fn resume_model(spec: &Spec, batch: &Published, c: &Checkpoint) -> Result<AdaptiveLinear> {
    let state = c.online.clone().unwrap_or_else(|| {
        NagState::warm(
            &c.model,
            batch.artifact.encoder.scales(),
            batch.artifact.online_prior.as_ref(),
            spec.speed.prior_events as f64,
        )
    });
    let model = AdaptiveLinear { model: c.model.clone(), state };
    model.validate().map_err(|e| Error::State(format!("the checkpoint's incremental model: {e}")))?;
    Ok(model)
}

/// Retraining on the fly: what runs it, where it stands, the run in progress.
#[derive(Default)]
struct Retraining {
    /// Runs the batch pipeline after a confirmed drift, when given.
    retrainer: Option<Arc<dyn Retrainer>>,
    status: RetrainStatus,
    job: Option<std::thread::JoinHandle<std::result::Result<Retrained, crate::retrain::RetrainError>>>,
    /// The last confirmed drift acted on (its sequence number).
    drift: u64,
}

impl Retraining {
    /// Where a checkpoint left it: the drift acted on stays acted on; a run the stop interrupted is asked for again.
    fn resume(status: Option<RetrainStatus>) -> Retraining {
        let Some(mut status) = status else { return Retraining::default() };
        if status.state == RetrainState::Running {
            status.state = RetrainState::Waiting;
            status.reason = Some("the run in progress was interrupted by a restart; asked for again".into());
        }
        Retraining { retrainer: None, job: None, drift: status.drift_seq.unwrap_or(0), status }
    }
}

/// An online state taken while the input was clean.
struct Good {
    /// Sequence number of the event after which it was taken.
    seq: u64,
    model: AdaptiveLinear,
    learners: Vec<OnlineLearner>,
}

/// The snapshot's models learning the logged events after it again, up to the checkpoint.
struct Relearn {
    /// The snapshot's sequence number.
    seq: u64,
    model: AdaptiveLinear,
    learners: Vec<OnlineLearner>,
    stats: SpeedStats,
    /// The good states the checkpoint says the run kept.
    expected: Vec<u64>,
}

/// A new snapshot is written once the oldest good state is at least this many freeze windows past it (10,000
/// events with the defaults) and the learners' interval has passed (or once archiving would cut the log past it):
/// a busy stream writes a snapshot every few seconds instead of three good states at each checkpoint, and a restart
/// learns the events after it again (at most `speed.learner_checkpoint_events` or so).
const SNAPSHOT_WINDOWS: u64 = 50;

/// The speed and the batch model's predictions of an accepted labelled event, made before it was learned.
type Predicted = Option<(Prediction, Prediction)>;

fn template(spec: &Spec, model: &LinearModel) -> ViewTable {
    ViewTable::new(spec).with_classes(&model.classes)
}

/// The first generation of a new state folder: its upper half is drawn afresh, so that a serving layer that followed
/// an earlier state in the same folder never applies this one's files onto that one's view.
fn first_generation(state: &Path) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{nanos}-{}-{}", std::process::id(), state.display());
    (xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) >> 33) << 32
}

fn side(generation: u64, batch: &Published, realtime: Realtime, model: SpeedModel) -> Arc<SpeedSide> {
    Arc::new(SpeedSide {
        generation,
        base_version: batch.manifest.version.clone(),
        base_watermark: batch.manifest.watermark,
        realtime,
        model: ArcSwap::from_pointee(model),
    })
}

impl Learner {
    /// Opens the state under `spec.paths.state`: the last checkpoint, then the log after it. Without a checkpoint
    /// it warm-starts from the current batch model, which must exist. With `live`, the served pair is kept there.
    pub fn open(spec: Spec, live: Option<Arc<Live>>) -> Result<Learner> {
        let state = spec.paths.state.clone();
        create_dir_synced(&state)?;
        // Two writers would hand out the same sequence numbers and interleave their log frames.
        let lock = FolderLock::try_acquire(&state)?;
        for dir in [
            state.clone(),
            checkpoint::dir(&state),
            checkpoint::views_dir(&state),
            checkpoint::learners_dir(&state),
            checkpoint::goods_dir(&state),
            state.join("dedup"),
        ] {
            lambda_stores::state::sweep_temp_files(&dir)?;
        }
        if state.join("checkpoints/CURRENT").exists() || state.join("wal.ndjson").exists() {
            return Err(Error::State(format!(
                "{} holds the state of an earlier lambda-ml (checkpoints/, wal.ndjson). That version archived every \
                 accepted event into the master dataset at each checkpoint, so once its daemon has stopped cleanly \
                 (SIGTERM, or `speed --once`) move that folder away: this version starts from the master dataset \
                 and keeps its state in log/, checkpoint/ and dedup/",
                state.display()
            )));
        }
        let registry = Registry::open(&spec.paths.registry);
        let no_model = || {
            Error::State(format!(
                "no batch model is published in {}; run `lambda-ml batch --spec {}` first",
                spec.paths.registry.display(),
                spec.source.display()
            ))
        };
        let dead = DeadLetters::open(&state)?;
        let schema_hash = spec.schema_hash();
        let mut fresh_gap = false;
        let mut learner = match checkpoint::read(&state)? {
            Some(c) => {
                let batch = registry.load(&c.base_version).map_err(|e| {
                    Error::State(format!("the checkpoint is built on batch version {}: {e}", c.base_version))
                })?;
                batch.artifact.validate(&spec)?;
                let model = resume_model(&spec, &batch, &c)?;
                let side = Arc::new(SpeedSide::load(&spec, &state, &c)?);
                let dedup = Dedup::open(
                    &state.join("dedup"),
                    spec.dedup_window,
                    filter_budget(&spec),
                    &c.dedup_runs,
                    c.dedup_through,
                )?;
                let log = Log::open(&state.join("log"), &schema_hash, c.last_seq + 1)?;
                remove_unlisted_views(&state, &c.views)?;
                remove_unlisted_learners(&state, c.learner_file.as_ref())?;
                let relearn = read_snapshot(&state, c.generation, c.freeze.as_ref())?;
                let dead_n = match c.freeze.as_ref() {
                    Some(f) => f.dead_letters,
                    None => dead.last_n()?,
                };
                Learner {
                    spec: spec.clone(),
                    state: state.clone(),
                    _lock: lock,
                    log,
                    dedup,
                    dead,
                    records: Records::resume(&spec, &batch.artifact, Some(&c)),
                    batch,
                    window_status: Arc::default(),
                    learner_models: Arc::default(),
                    quality: c.quality.clone().unwrap_or_else(|| Quality::new(spec.speed.freeze.window)),
                    good: VecDeque::new(),
                    snapshot: relearn.as_ref().map(|r| (r.seq, checkpoint::good_name(c.generation, r.seq))),
                    relearn,
                    goods_retired: Vec::new(),
                    snapshot_written_ms: now_millis(),
                    dead_n,
                    learner_file: c.learner_file.clone(),
                    learners_written_ms: now_millis(),
                    need_learners: false,
                    sources: c.sources.iter().flatten().map(|s| (s.source, s.clone())).collect(),
                    retraining: Retraining::resume(c.retrain.clone()),
                    adoption: None,
                    adoption_retry_ms: 0,
                    adoption_backoff: 0,
                    model,
                    updates: c.updates,
                    stats: c.stats.clone(),
                    generation: c.generation,
                    last_seq: c.last_seq,
                    archived_through: c.archived_through,
                    open_first_ms: None,
                    views: c.views.clone(),
                    need_full: false,
                    retired: Vec::new(),
                    dedup_retired: Vec::new(),
                    checkpointed_seq: c.last_seq,
                    dirty: false,
                    live: live.clone(),
                    x: Vec::new(),
                    timing: Timing::default(),
                    worker: None,
                    side,
                }
            }
            None => {
                let batch = registry.load_current(&spec)?.ok_or_else(no_model)?;
                let start = master::max_seq(&spec.paths.master)?.max(batch.manifest.watermark);
                fresh_gap = start > batch.manifest.watermark;
                let model = batch.artifact.speed_start_adaptive(&spec);
                let realtime = Realtime::new(template(&spec, &model.model), batch.manifest.watermark);
                realtime.set_applied(start);
                let generation = first_generation(&state);
                let side = side(
                    generation,
                    &batch,
                    realtime,
                    SpeedModel {
                        model: model.model.clone(),
                        updates: 0,
                        seq: start,
                        stats: SpeedStats::default(),
                        learners: Vec::new(),
                        windows: Arc::default(),
                        weights: Arc::new(Weights::batch_only(Vec::new())),
                        learner_models: Arc::default(),
                        frozen: None,
                        retrain: RetrainStatus::default(),
                    },
                );
                let dedup = Dedup::open(&state.join("dedup"), spec.dedup_window, filter_budget(&spec), &[], start)?;
                let log = Log::open(&state.join("log"), &schema_hash, start + 1)?;
                remove_unlisted_views(&state, &[])?;
                remove_unlisted_learners(&state, None)?;
                read_snapshot(&state, generation, None)?;
                let dead_n = dead.last_n()?;
                Learner {
                    spec: spec.clone(),
                    state: state.clone(),
                    _lock: lock,
                    log,
                    dedup,
                    dead,
                    // With a gap the warm start below starts the records (and reads the history rows) itself.
                    records: if fresh_gap {
                        Records::new(&spec, &batch.artifact)
                    } else {
                        fresh_records(&spec, &batch)?
                    },
                    batch,
                    window_status: Arc::default(),
                    learner_models: Arc::default(),
                    quality: Quality::new(spec.speed.freeze.window),
                    good: VecDeque::new(),
                    snapshot: None,
                    relearn: None,
                    goods_retired: Vec::new(),
                    snapshot_written_ms: 0,
                    dead_n,
                    learner_file: None,
                    learners_written_ms: 0,
                    need_learners: true,
                    sources: BTreeMap::new(),
                    retraining: Retraining::default(),
                    adoption: None,
                    adoption_retry_ms: 0,
                    adoption_backoff: 0,
                    model,
                    updates: 0,
                    stats: SpeedStats::default(),
                    generation,
                    last_seq: start,
                    archived_through: start,
                    open_first_ms: None,
                    views: Vec::new(),
                    need_full: true,
                    retired: Vec::new(),
                    dedup_retired: Vec::new(),
                    checkpointed_seq: 0,
                    dirty: true,
                    live: live.clone(),
                    x: Vec::new(),
                    timing: Timing::default(),
                    worker: None,
                    side,
                }
            }
        };
        archive::remove_partial_files(&learner.spec)?;
        learner.recover()?;
        if learner.good.is_empty() && learner.next_good().is_some() {
            // A first start, or a checkpoint written before the good states were kept in it.
            learner.keep_good(learner.last_seq, learner.model.clone());
        }
        if fresh_gap {
            // A first start after events the last batch run did not cover (history appended since, or an earlier
            // speed layer's archive): the realtime view and the warm start take them in, and their ids the window.
            let batch = learner.batch.clone();
            learner.adopt(batch, true)?;
        }
        learner.checkpoint()?;
        learner.publish_live()?;
        if let Err(e) = learner.poll_batch() {
            tracing::error!(error = %e, "cannot adopt the current batch version; staying on {}", learner.batch.manifest.version);
        }
        Ok(learner)
    }

    /// Replays the log after the checkpoint (the model, the realtime view and the de-duplication index), and
    /// takes over archive files written just before a crash.
    fn recover(&mut self) -> Result<()> {
        let mut from = self.dedup.through().min(self.last_seq).min(self.archived_through);
        let (checkpointed, dedup_through, archived) = (self.last_seq, self.dedup.through(), self.archived_through);
        // The learners' file may be older than the checkpoint: they learn the logged events in between again, as
        // they did then (a freeze or a resume writes them, so it is the checkpoint's kind of learning throughout).
        let learners_seq = match &self.learner_file {
            Some(f) if f.seq < checkpointed => f.seq,
            _ => checkpointed,
        };
        let learn = !self.frozen();
        from = from.min(learners_seq);
        if let Some(rl) = &self.relearn {
            // The good states from the snapshot on are taken again as the events after it are learned again.
            let (model, learners) = (rl.model.clone(), rl.learners.clone());
            self.good = VecDeque::from([Good { seq: rl.seq, model, learners }]);
            from = from.min(rl.seq);
        }
        // Rejections of request groups that accepted nothing, in the input's quality where they came.
        let (alone, dead_n) = self.dead.alone_after(self.dead_n)?;
        let mut alone = alone.into_iter().peekable();
        let mut replayed = 0u64;
        let mut records = Vec::new();
        self.log.replay(from, |r| {
            records.push(r);
            // Learn in bounded groups so that a long log is never held whole.
            Ok(records.len() < 65_536)
        })?;
        let mut after = from;
        while !records.is_empty() {
            for r in std::mem::take(&mut records) {
                after = r.seq;
                if r.seq > dedup_through {
                    self.dedup.insert(id_hash(&r.event.id), r.ingest_ms);
                }
                if r.seq > archived && self.open_first_ms.is_none() {
                    self.open_first_ms = Some(r.ingest_ms);
                }
                if self.relearn.as_ref().is_some_and(|rl| r.seq > rl.seq) && r.seq <= checkpointed {
                    self.relearn(&r);
                }
                if r.seq > learners_seq && r.seq <= checkpointed {
                    self.learners_catch_up(&r, learn);
                }
                if r.seq > checkpointed {
                    self.finish_relearn();
                    while let Some(d) = alone.next_if(|d| d.after_seq < r.seq) {
                        self.quality.push_rejected(d.key());
                        self.stats.rejected += 1;
                    }
                    self.apply_logged(r);
                    replayed += 1;
                }
            }
            self.log.replay(after, |r| {
                records.push(r);
                Ok(records.len() < 65_536)
            })?;
        }
        self.finish_relearn();
        for d in alone {
            self.quality.push_rejected(d.key());
            self.stats.rejected += 1;
        }
        if dead_n > self.dead_n {
            self.dead_n = dead_n;
            self.dirty = true;
        }
        self.side.realtime.set_applied(self.last_seq);
        // A request of rejections alone is judged at its end: when that froze the updates and the crash came
        // before its checkpoint, its dead letters are the last thing replayed, and the verdict is taken here.
        if self.judge_input(now_millis()) {
            self.dirty = true;
        }
        // Served at once: the learners' models and the windows, not only the linear model.
        self.refresh_windows();
        if replayed > 0 {
            self.dirty = true;
            tracing::info!(replayed, last_seq = self.last_seq, "replayed the log after the checkpoint");
        }
        for (first, last, path) in archive::recovered_ranges(&self.spec, self.archived_through)? {
            if first == self.archived_through + 1 && last <= self.last_seq {
                tracing::info!(path = %path.display(), "archive file written before a crash is kept");
                self.archived_through = last;
                self.dirty = true;
            }
        }
        if self.archived_through >= self.last_seq {
            self.open_first_ms = None;
        } else if self.archived_through > archived {
            self.open_first_ms = self.first_ms_after(self.archived_through)?;
        }
        Ok(())
    }

    /// Applies a logged event: the same learning step as at ingest (so replays are bit-identical), then the view.
    fn apply_logged(&mut self, mut r: Record) {
        // The input's record goes on with the events and the rejections logged with them, in the order received,
        // and its verdicts are taken where the run took them (after each event, and after the group's last
        // rejections): a crash between a group's log write and the checkpoint after its turn turns here again.
        let mark = std::mem::take(&mut r.mark);
        if let Some(p) = r.source {
            self.sources.entry(p.source).or_insert_with(|| SourceState::new(p.source)).insert(&p);
        }
        self.stats.rejected += (mark.rejected_before.len() + mark.rejected_after.len()) as u64;
        for key in mark.rejected_before {
            self.quality.push_rejected(key);
        }
        let unknown = matches!(&r.event.target, Some(Target::Class(c)) if self.model.model.class_index(c).is_none());
        self.quality.push(false, self.batch.artifact.encoder.outside_history(&r.event), unknown);
        if let Some(target) = &r.event.target {
            self.x.resize(self.batch.artifact.encoder.dim(), 0.0);
            self.batch.artifact.encoder.encode_row(&r.event, &mut self.x);
            let frozen = self.frozen();
            let (batch, spec) = (&self.batch.artifact, &self.spec);
            let predicted = match learn(&mut self.model, batch, &self.x, target, spec, &mut self.stats, frozen) {
                Ok((updated, ps, pb)) => {
                    self.updates += u64::from(updated);
                    Some((ps, pb))
                }
                Err(Unlearnable::UnknownClass) => None,
                Err(Unlearnable::NonFinite(_)) => {
                    self.stats.refused_updates += 1;
                    None
                }
            };
            let predicted = predicted.as_ref().map(|(ps, pb)| (ps, pb));
            if let Some(gap) = predicted.and_then(|(ps, pb)| self.records.gap(ps, pb, target)) {
                self.quality.observe_gap(gap, r.seq);
            }
            self.records.observe(&self.model.model.classes, &self.x, predicted, target, r.seq, r.event.time, !frozen);
        }
        self.side.realtime.observe(&r.event.key, r.event.time, r.seq, &r.event, r.event.target.as_ref());
        self.last_seq = r.seq;
        self.stats.accepted += 1;
        let mut turned = self.judge_input(r.ingest_ms);
        if mark.last {
            for key in mark.rejected_after {
                self.quality.push_rejected(key);
            }
            turned |= self.judge_input(r.ingest_ms);
            if self.next_good().is_some_and(|g| r.seq >= g) {
                self.keep_good(r.seq, self.model.clone());
            }
        }
        if turned {
            self.dirty = true;
        }
    }

    fn first_ms_after(&self, seq: u64) -> Result<Option<i64>> {
        let mut out = None;
        self.log.replay(seq, |r| {
            out = Some(r.ingest_ms);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Highest sequence number applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Highest sequence number archived into the master dataset.
    pub fn archived_through(&self) -> u64 {
        self.archived_through
    }

    /// The speed side now served (realtime view and model).
    pub fn side(&self) -> Arc<SpeedSide> {
        self.side.clone()
    }

    /// The incremental model.
    pub fn model(&self) -> &LinearModel {
        &self.model.model
    }

    /// The incremental model with its adaptive update's state.
    pub fn adaptive(&self) -> &AdaptiveLinear {
        &self.model
    }

    /// SGD updates since the warm start.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Counters.
    pub fn stats(&self) -> &SpeedStats {
        &self.stats
    }

    /// The batch version the state is built on.
    pub fn base_version(&self) -> &str {
        &self.batch.manifest.version
    }

    /// Bytes of the log on disk.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Ids the de-duplication index holds in memory.
    pub fn dedup_in_memory(&self) -> usize {
        self.dedup.in_memory()
    }

    /// Accepts a batch of parsed records: rejections go to the dead-letter file, known ids are skipped, the rest
    /// get sequence numbers, are logged and synced, then applied.
    pub fn ingest(&mut self, items: Vec<Incoming>) -> Result<IngestReport> {
        let mut reports = self.ingest_many(vec![items])?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// [`Learner::ingest`] for several requests at once, with one sync of the log for all (group commit).
    pub fn ingest_many(&mut self, requests: Vec<Vec<Incoming>>) -> Result<Vec<IngestReport>> {
        let now = now_millis();
        let mut reports = Vec::with_capacity(requests.len());
        // Rejections: line, reason, raw text, the sequence number accepted before it, its key.
        let mut dead: Vec<(usize, String, String, u64, u64)> = Vec::new();
        let mut accepted: Vec<(usize, u128, Record, Predicted, bool)> = Vec::new();
        let mut group_ids: HashSet<u128> = HashSet::new();
        let mut group_sources: Vec<SourcePosition> = Vec::new();
        let mut working: Option<AdaptiveLinear> = None;
        // Learning runs on copies, committed only once the log is synced; the same additions in the same order as a
        // replay, so that a restart ends bit for bit where this run does.
        let mut stats = self.stats.clone();
        let mut updates = 0u64;
        let mut x = std::mem::take(&mut self.x);
        let encoder = &self.batch.artifact.encoder;
        let target_field = &self.spec.dataset.target;
        // The input's verdict is taken after every accepted record, as a replay of the log takes it, so that bad
        // records inside a large request freeze the updates where they come, not at the request's end.
        let judging = self.spec.speed.freeze.enabled;
        let mut quality = self.quality.clone();
        let mut frozen = self.frozen();
        let mut turns: Vec<Turn> = Vec::new();
        // The good states' linear models, taken when the verdict first turns (a freeze goes back to the oldest).
        let mut goods: Option<VecDeque<(u64, AdaptiveLinear)>> = None;
        // Keys of the records rejected since the last accepted one, logged with the next (or the last) one.
        let mut rejected_keys: Vec<u64> = Vec::new();
        for (request, items) in requests.into_iter().enumerate() {
            let mut report = IngestReport::default();
            for item in items {
                let (line, error, raw, key) = match item {
                    Incoming::Rejected { line, error, raw } => {
                        let key = rejected_key(&raw);
                        (line, error, raw, key)
                    }
                    Incoming::Accepted { line, event, raw, source } => {
                        // A redelivery from an event log: this position or an earlier one is already held.
                        if let Some(p) = source {
                            let held = self.sources.get(&p.source).is_some_and(|s| s.contains(p.seq));
                            if held || group_sources.iter().any(|g| (g.source, g.seq) == (p.source, p.seq)) {
                                report.duplicates += 1;
                                continue;
                            }
                        }
                        let unknown = matches!(&event.target,
                            Some(Target::Class(c)) if self.model.model.class_index(c).is_none());
                        let check = encoder.check_ranges(&event).map_err(|r| r.to_string()).and_then(|()| match &event
                            .target
                        {
                            Some(t @ Target::Value(_)) => {
                                encoder.check_target(target_field, t).map_err(|r| r.to_string())
                            }
                            Some(Target::Class(c))
                                if self.model.model.class_index(c).is_none()
                                    && !self.spec.dataset.allow_new_classes =>
                            {
                                Err(format!(
                                    "field `{target_field}`: class {c:?} is not one of the model's classes {:?} \
                                         (set `dataset.allow_new_classes` to accept new classes)",
                                    self.model.model.classes
                                ))
                            }
                            _ => Ok(()),
                        });
                        if let Err(e) = check {
                            (line, e, raw.to_string(), rejected_key(&event.id))
                        } else {
                            let h = id_hash(&event.id);
                            if group_ids.contains(&h) || self.dedup.contains(h)? {
                                report.duplicates += 1;
                                continue;
                            }
                            let learned = match &event.target {
                                None => Ok(None),
                                Some(target) => {
                                    x.resize(encoder.dim(), 0.0);
                                    encoder.encode_row(&event, &mut x);
                                    let m = working.get_or_insert_with(|| self.model.clone());
                                    let mut s = stats.clone();
                                    let r = learn(m, &self.batch.artifact, &x, target, &self.spec, &mut s, frozen);
                                    if r.is_ok() {
                                        stats = s;
                                    }
                                    match r {
                                        Ok(done) => Ok(Some(done)),
                                        Err(Unlearnable::UnknownClass) => Ok(None),
                                        Err(Unlearnable::NonFinite(why)) => Err(why),
                                    }
                                }
                            };
                            match learned {
                                Err(why) => (line, format!("refused: {why}"), raw.to_string(), rejected_key(&event.id)),
                                Ok(done) => {
                                    let seq = self.last_seq + 1 + accepted.len() as u64;
                                    quality.push(false, encoder.outside_history(&event), unknown);
                                    if let (Some((_, ps, pb)), Some(target)) = (&done, &event.target) {
                                        if let Some(gap) = self.records.gap(ps, pb, target) {
                                            quality.observe_gap(gap, seq);
                                        }
                                    }
                                    updates += u64::from(matches!(done, Some((true, _, _))));
                                    group_ids.insert(h);
                                    let predicted = done.map(|(_, ps, pb)| (ps, pb));
                                    let rejected_before = std::mem::take(&mut rejected_keys);
                                    let mark = GroupMark { rejected_before, ..GroupMark::default() };
                                    if let Some(p) = source {
                                        group_sources.push(p);
                                    }
                                    let record = Record { seq, ingest_ms: now, event, mark, source };
                                    accepted.push((request, h, record, predicted, frozen));
                                    let limits = &self.spec.speed.freeze;
                                    let turn = if judging { quality.judge(limits, seq, now) } else { None };
                                    if let Some(freeze) = turn {
                                        let goods = goods.get_or_insert_with(|| {
                                            self.good.iter().map(|g| (g.seq, g.model.clone())).collect()
                                        });
                                        let after = accepted.len() - 1;
                                        if freeze {
                                            if let Some((_, m)) = goods.pop_front() {
                                                working = Some(m);
                                            }
                                            goods.clear();
                                            let why = quality.frozen.as_ref().map(|z| z.reason.clone());
                                            turns.push(Turn { after, seq, resume: None, why: why.unwrap_or_default() });
                                        } else {
                                            let m = working.get_or_insert_with(|| self.model.clone()).clone();
                                            if goods.len() == 3 {
                                                goods.pop_front();
                                            }
                                            goods.push_back((seq, m.clone()));
                                            turns.push(Turn { after, seq, resume: Some(m), why: String::new() });
                                        }
                                        frozen = freeze;
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                };
                quality.push_rejected(key);
                rejected_keys.push(key);
                dead.push((line, error.clone(), raw, self.last_seq + accepted.len() as u64, key));
                report.rejected.push(RejectedLine { line, error });
            }
            reports.push(report);
        }
        self.x = x;
        if let Some((_, _, last, _, _)) = accepted.last_mut() {
            last.mark.rejected_after = rejected_keys;
            last.mark.last = true;
        }
        // Nothing is applied unless it is durable: dead letters first, then the log.
        if !dead.is_empty() {
            let alone = accepted.is_empty();
            let mut text = String::new();
            for (i, (line, error, raw, after_seq, key)) in dead.iter().enumerate() {
                let n = self.dead_n + 1 + i as u64;
                let d = serde_json::json!({"received_ms": now, "line": line, "error": error, "raw": raw, "n": n,
                    "after_seq": after_seq, "alone": alone, "key": format!("{key:016x}")});
                text.push_str(&d.to_string());
                text.push('\n');
            }
            self.dead.append(&text)?;
            self.dead_n += dead.len() as u64;
        }
        fail::fail_point!("learner::after_dead_letters");
        let records: Vec<Record> = accepted.iter().map(|(_, _, r, _, _)| r.clone()).collect();
        self.log.append(&records)?;
        for p in &group_sources {
            self.sources.entry(p.source).or_insert_with(|| SourceState::new(p.source)).insert(p);
        }
        if let Some(m) = working {
            self.model = m;
        }
        self.updates += updates;
        self.quality = quality;
        self.stats.labelled = stats.labelled;
        self.stats.speed_loss_sum = stats.speed_loss_sum;
        self.stats.batch_loss_sum = stats.batch_loss_sum;
        for report in &reports {
            self.stats.rejected += report.rejected.len() as u64;
            self.stats.duplicates += report.duplicates;
        }
        let any = !accepted.is_empty();
        let turned = !turns.is_empty();
        let mut turns = turns.into_iter().peekable();
        for (i, (_, _, r, predicted, frozen)) in accepted.iter().enumerate() {
            if let Some(target) = &r.event.target {
                let encoder = &self.batch.artifact.encoder;
                self.x.resize(encoder.dim(), 0.0);
                encoder.encode_row(&r.event, &mut self.x);
                let predicted = predicted.as_ref().map(|(ps, pb)| (ps, pb));
                let classes = &self.model.model.classes;
                self.records.observe(classes, &self.x, predicted, target, r.seq, r.event.time, !frozen);
            }
            // The other learners turn where the linear model did (it is already the group's last: the good state's
            // model a freeze hands back was taken in the first pass).
            while let Some(t) = turns.next_if(|t| t.after == i) {
                self.turn(t.seq, t.resume, &t.why);
            }
        }
        for (request, h, r, _, _) in accepted {
            let report = &mut reports[request];
            report.first_seq.get_or_insert(r.seq);
            report.last_seq = Some(r.seq);
            report.accepted += 1;
            self.dedup.insert(h, r.ingest_ms);
            self.open_first_ms.get_or_insert(r.ingest_ms);
            self.side.realtime.observe(&r.event.key, r.event.time, r.seq, &r.event, r.event.target.as_ref());
            self.last_seq = r.seq;
            self.stats.accepted += 1;
        }
        if any {
            self.side.realtime.set_applied(self.last_seq);
        }
        self.dirty = true;
        // Rejections after the group's last accepted record are in the window now.
        if self.judge_input(now) || turned {
            // A replay after a crash learns exactly what this run learned only from a state past the turn.
            self.need_learners = true;
            self.publish_model();
            self.checkpoint()?;
        } else {
            self.publish_model();
        }
        // A group the verdict found clean ends with a good state when one is due (a replay takes it at the
        // group's last event: a group that froze or resumed was checkpointed, so no replay goes through it).
        if any && self.next_good().is_some_and(|g| self.last_seq >= g) {
            self.keep_good(self.last_seq, self.model.clone());
        }
        // Counted in events, not ticks, so that a fast replay starts a retraining where a live stream would.
        if let Err(e) = self.retrain_step(false) {
            tracing::error!(error = %e, "retraining on the fly could not start");
        }
        Ok(reports)
    }

    /// Whether online updates are frozen now.
    fn frozen(&self) -> bool {
        self.spec.speed.freeze.enabled && self.quality.frozen.is_some()
    }

    /// Takes the input's verdict after the event `last_seq` (at `ms`): freezes the online updates when the input
    /// went bad (back to the oldest good state kept), or resumes them once it is clean again. Whether it turned.
    fn judge_input(&mut self, ms: i64) -> bool {
        let limits = &self.spec.speed.freeze;
        if !limits.enabled {
            return false;
        }
        let Some(freeze) = self.quality.judge(limits, self.last_seq, ms) else { return false };
        if freeze {
            let why = self.quality.frozen.as_ref().map(|z| z.reason.clone()).unwrap_or_default();
            if let Some(model) = self.turn(self.last_seq, None, &why) {
                self.model = model;
            }
        } else {
            self.turn(self.last_seq, Some(self.model.clone()), "");
        }
        true
    }

    /// Turns the online updates after the event `seq`. A freeze (`resume` none) puts the other learners back to
    /// the oldest good state and returns its linear model; a resume keeps `resume` and the learners as they are
    /// now as a good state.
    fn turn(&mut self, seq: u64, resume: Option<AdaptiveLinear>, why: &str) -> Option<AdaptiveLinear> {
        self.need_learners = true;
        match resume {
            None => {
                let good = self.good.pop_front();
                self.clear_goods();
                tracing::warn!(seq, reason = %why, "bad input: online updates frozen, last good state restored");
                good.map(|g| {
                    self.records.restore(g.learners);
                    g.model
                })
            }
            Some(model) => {
                tracing::info!(seq, "the input is clean again: online updates resume");
                self.keep_good(seq, model);
                None
            }
        }
    }

    /// The sequence number from which the next good state is due, at the end of a request group: a window of
    /// events after the newest (none while frozen, or with the freeze off). A replay knows the groups' ends from
    /// the log, so it keeps the states the run kept; once per group, since a grown forest takes milliseconds to
    /// copy (one every 200 events halved a file replay's throughput on friedman_lea).
    fn next_good(&self) -> Option<u64> {
        let f = &self.spec.speed.freeze;
        (f.enabled && self.quality.frozen.is_none()).then(|| self.good.back().map_or(0, |g| g.seq + f.window as u64))
    }

    /// Keeps `model` and the other learners now as the good state after the event `seq` (three at most: a
    /// freeze goes back two to three windows).
    fn keep_good(&mut self, seq: u64, model: AdaptiveLinear) {
        let learners = self.records.models();
        push_good(&mut self.good, Good { seq, model, learners });
    }

    /// Drops the good states and the snapshot (a freeze, an adoption): learning the events after it again would
    /// no longer give the states kept.
    fn clear_goods(&mut self) {
        self.good.clear();
        if let Some((_, name)) = self.snapshot.take() {
            self.goods_retired.push(checkpoint::goods_dir(&self.state).join(name));
        }
    }

    /// At a restart, learns a logged event up to the checkpoint again from the snapshot, and takes a good state
    /// where the run took one.
    fn relearn(&mut self, r: &Record) {
        let Some(rl) = self.relearn.as_mut() else { return };
        if let Some(target) = &r.event.target {
            let encoder = &self.batch.artifact.encoder;
            self.x.resize(encoder.dim(), 0.0);
            encoder.encode_row(&r.event, &mut self.x);
            let _ = learn(&mut rl.model, &self.batch.artifact, &self.x, target, &self.spec, &mut rl.stats, false);
            for l in &mut rl.learners {
                l.learn(&self.x, target);
            }
        }
        let window = self.spec.speed.freeze.window as u64;
        if r.mark.last && self.good.back().is_some_and(|g| r.seq >= g.seq + window) {
            push_good(&mut self.good, Good { seq: r.seq, model: rl.model.clone(), learners: rl.learners.clone() });
        }
    }

    /// At a restart, has the other learners learn a logged event between their file and the checkpoint again.
    fn learners_catch_up(&mut self, r: &Record, learn: bool) {
        let Some(target) = &r.event.target else { return };
        let encoder = &self.batch.artifact.encoder;
        self.x.resize(encoder.dim(), 0.0);
        encoder.encode_row(&r.event, &mut self.x);
        self.records.observe_learners(&self.model.model.classes, &self.x, target, r.seq, r.event.time, learn);
        self.dirty = true;
    }

    /// Ends learning again at the checkpoint: the good states taken must be the ones it lists.
    fn finish_relearn(&mut self) {
        if let Some(rl) = self.relearn.take() {
            let took: Vec<u64> = self.good.iter().map(|g| g.seq).collect();
            if took != rl.expected {
                tracing::warn!(?took, expected = ?rl.expected, "the good states taken again differ from the checkpoint's");
            }
        }
    }

    fn publish_model(&self) {
        self.side.model.store(Arc::new(SpeedModel {
            model: self.model.model.clone(),
            updates: self.updates,
            seq: self.last_seq,
            stats: self.stats.clone(),
            learners: self.records.learner_statuses(),
            windows: self.window_status.clone(),
            weights: Arc::new(self.records.blend.weights.clone()),
            learner_models: self.learner_models.clone(),
            frozen: self.quality.frozen.clone(),
            retrain: self.retraining.status.clone(),
        }));
    }

    /// Recomputes what the windows say, copies the other learners for serving, and serves both.
    fn refresh_windows(&mut self) {
        self.window_status = Arc::new(self.records.statuses());
        self.learner_models = Arc::new(self.records.models());
        self.publish_model();
    }

    /// Hands the served pair (batch side and speed side of the same version) to an in-process serving layer.
    fn publish_live(&self) -> Result<()> {
        if let (Some(live), Some(batch)) = (&self.live, self.live_batch(&self.batch.manifest.version)?) {
            live.store(Some(Arc::new(LiveState { batch, speed: Some(self.side.clone()) })));
        }
        Ok(())
    }

    /// The batch side of `version` for an in-process serving layer (`None` without one).
    fn live_batch(&self, version: &str) -> Result<Option<Arc<BatchSide>>> {
        let Some(live) = &self.live else { return Ok(None) };
        let current = live.load_full();
        Ok(Some(match current.as_ref().filter(|s| s.batch.version() == version) {
            Some(s) => s.batch.clone(),
            None => Arc::new(BatchSide::load(&self.spec, version)?),
        }))
    }

    /// Hands over what runs the batch pipeline after a confirmed drift (`speed.retrain.on_drift`).
    pub fn set_retrainer(&mut self, retrainer: Arc<dyn Retrainer>) {
        self.retraining.retrainer = Some(retrainer);
    }

    /// Where retraining on the fly stands.
    pub fn retrain_status(&self) -> &RetrainStatus {
        &self.retraining.status
    }

    /// Takes the result of a finished run; notices a new confirmed drift; starts a run once enough events have
    /// come after it (archiving first, so that the run reads them).
    fn retrain_step(&mut self, wait: bool) -> Result<()> {
        let done = self.retraining.job.take_if(|j| wait || j.is_finished());
        if let Some(job) = done {
            let out = job.join().unwrap_or_else(|_| Err("the retraining thread panicked".into()));
            let r = &mut self.retraining.status;
            r.seconds = r.started_ms.map(|t| (now_millis() - t) as f64 / 1000.0);
            match out {
                Ok(x) => {
                    r.state = if x.published { RetrainState::Published } else { RetrainState::Held };
                    (r.version, r.reason) = (Some(x.version), Some(x.reason));
                }
                Err(e) => (r.state, r.reason) = (RetrainState::Failed, Some(crate::retrain::with_causes(&*e))),
            }
            tracing::info!(state = ?r.state, version = ?r.version, reason = ?r.reason, "retraining on the fly finished");
            self.dirty = true;
            self.publish_model();
        }
        let Some(retrainer) = self.retraining.retrainer.clone() else { return Ok(()) };
        if self.retraining.job.is_some() || !self.spec.speed.retrain.on_drift {
            return Ok(());
        }
        let w = &self.records.windows[1];
        let (a, p) = (&w.adwin_status, &w.page_hinkley_status);
        let confirmed = a.last_drift_seq.max(p.last_drift_seq);
        if a.drifts > 0 && p.drifts > 0 && confirmed > self.retraining.drift {
            self.retraining.drift = confirmed;
            // ADWIN's window after its cut holds the events since the change (labelled ones: at least that recent).
            let since = self.last_seq.saturating_sub(w.adwin.width());
            self.retraining.status.state = RetrainState::Waiting;
            (self.retraining.status.drift_seq, self.retraining.status.since_seq) = (Some(confirmed), Some(since));
            tracing::warn!(
                drift_seq = confirmed,
                "confirmed drift of the batch model: retraining once enough events are in"
            );
        }
        let due =
            self.retraining.status.drift_seq.is_some_and(|d| self.last_seq >= d + self.spec.speed.retrain.min_events);
        if self.retraining.status.state == RetrainState::Waiting && due {
            // The run reads the master dataset: everything accepted so far goes there first.
            self.archive_due(now_millis(), true)?;
            let since = self.retraining.status.since_seq.unwrap_or(0);
            let spec = self.spec.clone();
            let job = std::thread::Builder::new()
                .name("speed-retrain".into())
                .spawn(move || retrainer.retrain(&spec, since))
                .map_err(|e| Error::State(format!("cannot start the retraining thread: {e}")))?;
            self.retraining.job = Some(job);
            self.retraining.status.state = RetrainState::Running;
            self.retraining.status.runs += 1;
            self.retraining.status.started_ms = Some(now_millis());
            (self.retraining.status.version, self.retraining.status.reason, self.retraining.status.seconds) =
                (None, None, None);
            tracing::info!(since_seq = since, "retraining on the fly started");
            self.dirty = true;
            self.publish_model();
        }
        Ok(())
    }

    /// Waits for a retraining in progress, then adopts what it published.
    pub fn finish_retraining(&mut self) -> Result<()> {
        if self.retraining.job.is_some() {
            self.retrain_step(true)?;
            self.poll_batch()?;
        }
        Ok(())
    }

    /// Periodic work: adopt a new batch version, archive what is due, checkpoint what changed.
    pub fn tick(&mut self) -> Result<()> {
        if let Err(e) = self.retrain_step(false) {
            tracing::error!(error = %e, "retraining on the fly could not start");
        }
        if let Err(e) = self.poll_batch_in_background() {
            tracing::error!(error = %e, "cannot adopt the current batch version; staying on {}", self.batch.manifest.version);
        }
        let now = now_millis();
        self.archive_due(now, false)?;
        self.checkpoint()?;
        Ok(())
    }

    /// Archives every logged event into the master dataset now (at the end of a replay), then checkpoints.
    pub fn archive_all(&mut self) -> Result<()> {
        self.archive_due(now_millis(), true)?;
        self.checkpoint_whole()?;
        Ok(())
    }

    /// Checkpoints with the online learners as they are now, however recently they were written (a stop, the end
    /// of a replay, a caller that asks): a restart then has nothing to learn again.
    pub fn checkpoint_whole(&mut self) -> Result<CheckpointReport> {
        if self.learner_file.as_ref().is_none_or(|f| f.seq != self.last_seq) {
            self.need_learners = true;
        }
        self.checkpoint()
    }

    /// Whether anything happened since the last checkpoint.
    pub fn needs_checkpoint(&self) -> bool {
        self.dirty || self.need_full || self.last_seq != self.checkpointed_seq || self.learners_due(now_millis())
    }

    /// Whether the next checkpoint writes the online learners: when asked to, or when they have learned events
    /// since they were written and `speed.learner_checkpoint_interval` or `_events` has passed.
    fn learners_due(&self, now: i64) -> bool {
        let Some(f) = &self.learner_file else { return true };
        let interval = self.spec.learner_checkpoint_interval.as_millis() as i64;
        self.need_learners
            || (f.seq < self.last_seq
                && (now - self.learners_written_ms >= interval
                    || self.last_seq - f.seq >= self.spec.speed.learner_checkpoint_events))
    }

    /// Writes archive files and compacts view files in a thread of their own from now on, so that ingest does not
    /// wait for them.
    pub fn work_in_background(&mut self) -> Result<()> {
        if self.worker.is_none() {
            self.worker = Some(Worker::start()?);
        }
        Ok(())
    }

    /// Takes over what the background thread finished. Returns whether an archive file was added.
    fn take_finished(&mut self, done: Vec<Done>) -> Result<bool> {
        let mut sealed = false;
        let mut failure = None;
        for d in done {
            match d {
                Done::Archived(Ok(Some(s)), seconds) => {
                    self.took_sealed(s, seconds)?;
                    sealed = true;
                }
                Done::Archived(Ok(None), _) => {}
                Done::Archived(Err(e), _) => failure = Some(e),
                Done::Compacted(r, generation, files, seconds) => {
                    self.took_compacted(r, generation, &files, seconds)?
                }
                Done::Merged(Ok(m), seconds) => {
                    let retired = self.dedup.take_merge(m)?;
                    tracing::debug!(seconds, runs = self.dedup.runs().len(), "merged id runs");
                    self.dedup_retired.extend(retired);
                    self.dirty = true;
                }
                Done::Merged(Err(e), _) => {
                    tracing::error!(error = %e, "merging id runs failed; retrying later");
                    self.dedup.merge_failed();
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(sealed),
        }
    }

    /// Replaces the view files a compaction merged by its full file, unless the list moved on meanwhile.
    fn took_compacted(
        &mut self,
        r: Result<ViewFile>,
        generation: u64,
        merged: &[ViewFile],
        seconds: f64,
    ) -> Result<()> {
        let f = match r {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "compacting realtime view files failed; the deltas stay");
                return Ok(());
            }
        };
        let dir = checkpoint::views_dir(&self.state);
        let still = generation == self.generation
            && self.views.len() >= merged.len()
            && self.views.iter().zip(merged).all(|(a, b)| a.name == b.name);
        if !still {
            // Superseded; a full file of the same name the learner wrote meanwhile holds the same state and stays.
            if self.views.iter().all(|v| v.name != f.name) {
                remove_if_present(&dir.join(&f.name))?;
            }
            return Ok(());
        }
        tracing::debug!(files = merged.len(), bytes = f.bytes, seconds, "compacted realtime view files");
        let due = now_millis() + RETIRE_AFTER_MS;
        let rest = self.views.split_off(merged.len());
        for old in std::mem::replace(&mut self.views, vec![f]) {
            self.retired.push((due, dir.join(old.name)));
        }
        self.views.extend(rest);
        self.dirty = true;
        Ok(())
    }

    fn took_sealed(&mut self, s: archive::Sealed, seconds: f64) -> Result<()> {
        if s.first != self.archived_through + 1 {
            // Written for a stretch the state has moved past: the file is there under its own name and is taken
            // over when its turn comes (or recognised at the next start).
            tracing::warn!(
                first = s.first,
                archived_through = self.archived_through,
                "archive result out of turn, ignored"
            );
            return Ok(());
        }
        tracing::info!(first = s.first, last = s.last, path = %s.path.display(), recovered = s.recovered, seconds, "archived");
        self.archived_through = s.last;
        self.timing.archive_files += 1;
        self.open_first_ms = self.first_ms_after(self.archived_through)?;
        Ok(())
    }

    fn archive_due(&mut self, now: i64, force: bool) -> Result<()> {
        let max_rows = self.spec.speed.archive_max_rows;
        let max_age = self.spec.archive_max_age.as_millis().min(i64::MAX as u128) as i64;
        let mut sealed_any = false;
        // What the background thread finished is taken over first (the archive waited for when everything must be
        // archived now).
        let mut done = self.worker.as_mut().map(Worker::finished).unwrap_or_default();
        if force {
            if let Some(d) = self.worker.as_mut().and_then(Worker::wait_archive) {
                done.push(d);
            }
        }
        if self.take_finished(done)? {
            sealed_any = true;
        }
        loop {
            let open = self.last_seq.saturating_sub(self.archived_through);
            if open == 0 {
                self.open_first_ms = None;
                break;
            }
            let aged = self.open_first_ms.is_some_and(|t| now.saturating_sub(t) >= max_age);
            let through = if open >= max_rows {
                self.archived_through + max_rows
            } else if force || aged {
                self.last_seq
            } else {
                break;
            };
            if let Some(w) = self.worker.as_mut().filter(|_| !force) {
                if !w.archiving() {
                    let (spec, log, after) = (Arc::new(self.spec.clone()), self.log.view(), self.archived_through);
                    w.submit(Job::Archive { spec, log, after, through })?;
                }
                break;
            }
            let started = std::time::Instant::now();
            match archive::seal(&self.spec, &self.log.view(), self.archived_through, through)? {
                Some(s) => self.took_sealed(s, started.elapsed().as_secs_f64())?,
                None => break,
            }
            sealed_any = true;
        }
        if sealed_any || self.dedup.wants_flush() {
            // A new segment and a de-duplication run let the archived part of the log go at the next checkpoint.
            self.log.roll(self.last_seq + 1)?;
            let started = std::time::Instant::now();
            let retired = self.dedup.flush(self.last_seq, now, self.worker.is_none())?;
            let seconds = started.elapsed().as_secs_f64();
            tracing::debug!(
                seconds,
                runs = self.dedup.runs().len(),
                merged = retired.len(),
                "wrote a de-duplication run"
            );
            self.timing.dedup_max_ms = self.timing.dedup_max_ms.max(seconds * 1000.0);
            self.dedup_retired.extend(retired);
            self.dirty = true;
            if let Some(w) = self.worker.as_mut().filter(|w| !w.merging()) {
                if let Some(plan) = self.dedup.plan_merge(now) {
                    w.submit(Job::Merge(plan))?;
                }
            }
        } else {
            self.log.roll_if_large(self.last_seq + 1)?;
        }
        Ok(())
    }

    /// Writes what changed since the last checkpoint (a delta view file, or a full one when the deltas have grown
    /// past it) and the manifest, then deletes what the new checkpoint no longer needs.
    pub fn checkpoint(&mut self) -> Result<CheckpointReport> {
        if let Some(done) = self.worker.as_mut().map(Worker::finished_compactions) {
            self.take_finished(done)?;
        }
        if self.dirty {
            self.refresh_windows();
        }
        if !self.needs_checkpoint() {
            return Ok(CheckpointReport::default());
        }
        let started = std::time::Instant::now();
        let r = self.write_checkpoint();
        match &r {
            Ok(report) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                metrics::histogram!("lambda_speed_checkpoint_duration_seconds").record(ms / 1000.0);
                let t = &mut self.timing;
                t.checkpoints += 1;
                t.last_ms = ms;
                t.max_ms = t.max_ms.max(ms);
                t.last_bytes = report.view_bytes + report.manifest_bytes + report.good_bytes + report.learner_bytes;
                if report.learner_bytes > 0 {
                    t.learner_bytes = report.learner_bytes;
                }
                t.manifest_bytes = report.manifest_bytes;
            }
            // Changed keys were taken for the delta that failed: only a full file is complete again.
            Err(_) => self.need_full = true,
        }
        r
    }

    /// What the speed layer reports about itself.
    pub fn status(&self) -> Status {
        let t = &self.timing;
        Status {
            base_version: self.batch.manifest.version.clone(),
            generation: self.generation,
            last_seq: self.last_seq,
            archived_through: self.archived_through,
            accepted: self.stats.accepted,
            rejected: self.stats.rejected,
            duplicates: self.stats.duplicates,
            updates: self.updates,
            keys: self.side.realtime.len(),
            realtime_bytes: self.side.realtime.heap_bytes(),
            log_bytes: self.log.bytes(),
            log_segments: self.log.segments(),
            dedup_in_memory: self.dedup.in_memory(),
            dedup_filter_bytes: self.dedup.filter_bytes(),
            dedup_runs: self.dedup.runs().len(),
            dedup_bytes: self.dedup.bytes(),
            dedup_flush_max_ms: t.dedup_max_ms,
            checkpoints: t.checkpoints,
            checkpoint_last_ms: t.last_ms,
            checkpoint_max_ms: t.max_ms,
            checkpoint_last_bytes: t.last_bytes,
            checkpoint_bytes: self.views.iter().map(|v| v.bytes).sum::<u64>() + t.manifest_bytes + t.learner_bytes,
            learners_checkpointed_seq: self.learner_file.as_ref().map_or(0, |f| f.seq),
            learners_bytes: t.learner_bytes,
            archive_files: t.archive_files,
            speed_loss: (self.stats.labelled > 0).then(|| self.stats.speed_loss_sum / self.stats.labelled as f64),
            batch_loss: (self.stats.labelled > 0).then(|| self.stats.batch_loss_sum / self.stats.labelled as f64),
            resident_bytes: resident_bytes(),
            learners: self.records.learner_statuses(),
            windows: self.records.statuses(),
            input: self.quality.rates(),
            frozen: self.quality.frozen.clone(),
            freezes: self.quality.freezes,
            retrain: self.retraining.status.clone(),
            adopting: self.adoption.as_ref().map(|a| a.version.clone()),
            adoption_failures: t.adoption_failures,
        }
    }

    fn write_checkpoint(&mut self) -> Result<CheckpointReport> {
        let started = std::time::Instant::now();
        let seq = self.last_seq;
        let full_bytes: u64 = self.views.iter().filter(|v| v.full).map(|v| v.bytes).sum();
        let delta_bytes: u64 = self.views.iter().filter(|v| !v.full).map(|v| v.bytes).sum();
        let mut report = CheckpointReport::default();
        let realtime = &self.side.realtime;
        let must_full = self.need_full || self.views.is_empty() || self.views.len() > 512;
        // Deltas past the full file are merged into a new one, in the background when there is a worker.
        let compact = delta_bytes > full_bytes.max(64 << 10);
        if must_full || (compact && self.worker.is_none()) {
            let f = checkpoint::write_full(&self.state, self.generation, seq, realtime)?;
            report = CheckpointReport { view_bytes: f.bytes, full: true, ..report };
            let now = now_millis();
            for old in self.views.drain(..) {
                if old.name != f.name {
                    self.retired.push((now + RETIRE_AFTER_MS, checkpoint::views_dir(&self.state).join(old.name)));
                }
            }
            self.views.push(f);
        } else {
            let chunks = realtime.take_changed();
            if !chunks.is_empty() {
                let f = checkpoint::write_delta(&self.state, self.generation, seq, realtime.features(), &chunks)?;
                report.view_bytes = f.bytes;
                self.views.push(f);
            }
            if let Some(w) = self.worker.as_mut().filter(|w| compact && !w.compacting()) {
                let template = Box::new(template(&self.spec, &self.model.model));
                let (state, generation, files) = (self.state.clone(), self.generation, self.views.clone());
                w.submit(Job::Compact { state, generation, template, files })?;
            }
        }
        // The oldest good state becomes the snapshot when there is none yet, when it is all that keeps the log from
        // being cut, or when a restart would learn too many events again after the one there is: at most once per
        // `speed.learner_checkpoint_interval` unless `_events` have passed (it holds the learners too).
        let window = self.spec.speed.freeze.window as u64;
        let cut = self.archived_through.min(self.dedup.through()).min(seq);
        let now = now_millis();
        if let Some(g0) = self.good.front() {
            let interval = self.spec.learner_checkpoint_interval.as_millis() as i64;
            let events = self.spec.speed.learner_checkpoint_events;
            let due = self.snapshot.as_ref().is_none_or(|(s, _)| {
                *s < cut
                    || (g0.seq >= s + SNAPSHOT_WINDOWS * window
                        && (now - self.snapshot_written_ms >= interval || g0.seq >= s + events))
            });
            if due && self.snapshot.as_ref().is_none_or(|(s, _)| *s != g0.seq) {
                let name = checkpoint::good_name(self.generation, g0.seq);
                report.good_bytes += checkpoint::write_good(&self.state, &name, &g0.model, &g0.learners)?;
                self.snapshot_written_ms = now;
                if let Some((_, old)) = self.snapshot.replace((g0.seq, name)) {
                    self.goods_retired.push(checkpoint::goods_dir(&self.state).join(old));
                }
            }
        }
        if self.learners_due(now) {
            let name = checkpoint::learners_name(self.generation, seq);
            report.learner_bytes = checkpoint::write_learners(&self.state, &name, &self.records.extra)?;
            let old = self.learner_file.replace(LearnerFile { name: name.clone(), seq });
            if let Some(old) = old.filter(|o| o.name != name) {
                // Kept a while: a serving layer in another process may have read the manifest that lists it.
                self.retired.push((now + RETIRE_AFTER_MS, checkpoint::learners_dir(&self.state).join(old.name)));
            }
            (self.learners_written_ms, self.need_learners) = (now, false);
        }
        let view_done = std::time::Instant::now();
        let manifest = Checkpoint {
            generation: self.generation,
            base_version: self.batch.manifest.version.clone(),
            base_watermark: self.batch.manifest.watermark,
            last_seq: seq,
            archived_through: self.archived_through,
            updates: self.updates,
            stats: self.stats.clone(),
            views: self.views.clone(),
            dedup_runs: self.dedup.runs(),
            dedup_through: self.dedup.through(),
            written_ms: now_millis(),
            model: self.model.model.clone(),
            online: Some(self.model.state.clone()),
            // In their own file (the tenth record names it).
            learners: Some(Vec::new()),
            windows: Some(self.records.windows.clone()),
            blend: Some(self.records.blend.clone()),
            quality: Some(self.quality.clone()),
            retrain: Some(self.retraining.status.clone()),
            freeze: Some(FreezeRecord {
                snapshot: self.snapshot.as_ref().map(|(s, _)| *s),
                goods: self.good.iter().map(|g| g.seq).collect(),
                dead_letters: self.dead_n,
            }),
            sources: Some(self.sources.values().cloned().collect()),
            learner_file: self.learner_file.clone(),
        };
        report.manifest_bytes = checkpoint::write(&self.state, &manifest)?;
        let manifest_done = std::time::Instant::now();
        self.checkpointed_seq = seq;
        self.dirty = false;
        self.need_full = false;
        // What the new checkpoint no longer refers to.
        for path in self.dedup_retired.drain(..).chain(self.goods_retired.drain(..)) {
            remove_if_present(&path)?;
        }
        let now = now_millis();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retired).into_iter().partition(|(t, _)| *t <= now);
        self.retired = later;
        for (_, path) in due {
            remove_if_present(&path)?;
        }
        // The log keeps the events after the snapshot, for a restart to learn again, and the events after the
        // learners' file, for a restart to learn them again into the learners.
        let snapshot = self.snapshot.as_ref().map_or(u64::MAX, |(s, _)| *s);
        // And the segment where a background adoption starts reading (the one holding the event it reads after:
        // its view of the log may list no segment after that one).
        let learners = self.learner_file.as_ref().map_or(seq, |f| f.seq);
        let adopting = self.adoption.as_ref().map_or(seq, |a| a.keep_after.saturating_sub(1));
        let through = cut.min(snapshot).min(learners).min(adopting);
        self.log.retire_through(through)?;
        let all = started.elapsed();
        if all.as_millis() >= SLOW_CHECKPOINT_MS {
            // Which step was slow: the view file, the manifest (both synced), or deleting what it retired.
            tracing::warn!(
                ms = all.as_millis() as u64,
                view_ms = (view_done - started).as_millis() as u64,
                manifest_ms = (manifest_done - view_done).as_millis() as u64,
                cleanup_ms = manifest_done.elapsed().as_millis() as u64,
                view_bytes = report.view_bytes,
                "slow checkpoint"
            );
        }
        Ok(report)
    }

    /// Adopts the registry's current batch version when it differs from the one the state is built on (a new
    /// version, or a rollback), on this thread: ingest waits. Returns whether it did.
    pub fn poll_batch(&mut self) -> Result<bool> {
        match self.version_to_adopt()? {
            Some(published) => {
                self.adoption = None;
                self.adopt(published, false)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The registry's current version, loaded and checked, when the state is built on another.
    fn version_to_adopt(&self) -> Result<Option<Published>> {
        let registry = Registry::open(&self.spec.paths.registry);
        match registry.current_version()? {
            Some(v) if v != self.batch.manifest.version => {
                let published = registry.load(&v)?;
                published.artifact.validate(&self.spec)?;
                let w = published.manifest.watermark;
                if w > self.last_seq {
                    // The master dataset holds events this speed layer did not write: jumping over them would lose
                    // the ones it holds that are not archived yet.
                    return Err(Error::State(format!(
                        "batch version {v} has watermark {w}, past the last event this speed layer accepted ({}): \
                         the master dataset holds events from another writer; staying on {}",
                        self.last_seq, self.batch.manifest.version
                    )));
                }
                Ok(Some(published))
            }
            _ => Ok(None),
        }
    }

    /// [`Learner::poll_batch`] without stopping ingest: the new version's state is built on a thread of its own
    /// from the events accepted so far while this one goes on answering and learning on the old version; each
    /// call takes a finished build, has it learn the events accepted meanwhile (on another round of the thread
    /// while they are many, here once they are few) and switches to it. Returns whether it switched.
    pub fn poll_batch_in_background(&mut self) -> Result<bool> {
        if let Some(a) = self.adoption.take_if(|a| a.job.is_finished()) {
            let built = a.job.join().unwrap_or_else(|_| Err(Error::State("the adoption thread panicked".into())));
            let current = Registry::open(&self.spec.paths.registry).current_version()?;
            match built {
                Err(e) => {
                    // Tried again after a pause that doubles with each failure in a row (5 s to 5 min): a build
                    // that cannot succeed must not take a core every tick.
                    self.timing.adoption_failures += 1;
                    self.adoption_backoff = (self.adoption_backoff * 2).clamp(5_000, 300_000);
                    self.adoption_retry_ms = now_millis() + self.adoption_backoff;
                    tracing::error!(version = %a.version, error = %e, retry_in_ms = self.adoption_backoff, "building the state of a batch version failed");
                }
                Ok(b) if current.as_deref() != Some(a.version.as_str()) => {
                    tracing::info!(version = %a.version, current = ?current, "the version being adopted is no longer the registry's current one");
                    drop(b);
                }
                Ok(mut b) => {
                    let behind = self.last_seq.saturating_sub(b.through);
                    if behind <= CATCH_UP_HERE || a.rounds >= CATCH_UP_ROUNDS {
                        let started = std::time::Instant::now();
                        b.learn_log(&self.spec, &self.log.view(), b.through, self.last_seq)?;
                        self.switch(b);
                        self.adoption_backoff = 0;
                        let seconds = started.elapsed().as_secs_f64();
                        tracing::info!(
                            events = behind,
                            seconds,
                            rounds = a.rounds,
                            "caught up and switched on the learner thread"
                        );
                        self.checkpoint()?;
                        return Ok(true);
                    }
                    let (spec, view, last, from) = (self.spec.clone(), self.log.view(), self.last_seq, b.through);
                    let job = spawn_adoption(move || b.learn_log(&spec, &view, from, last).map(|()| b))?;
                    let rounds = a.rounds + 1;
                    self.adoption = Some(Adoption { version: a.version, keep_after: from, job, rounds });
                    return Ok(false);
                }
            }
        }
        if self.adoption.is_some() || now_millis() < self.adoption_retry_ms {
            return Ok(false);
        }
        let Some(published) = self.version_to_adopt()? else { return Ok(false) };
        let version = published.manifest.version.clone();
        let (spec, view, archived, last) = (self.spec.clone(), self.log.view(), self.archived_through, self.last_seq);
        let keep_after = published.manifest.watermark.max(archived);
        let live = self.live.is_some();
        let job = spawn_adoption(move || {
            fail::fail_point!("learner::adoption_build", |_| Err(Error::State("injected: the build failed".into())));
            Built::through(&spec, published, live, archived, &view, last, None)
        })?;
        tracing::info!(version = %version, through = last, "adopting a batch version in the background");
        self.adoption = Some(Adoption { version, keep_after, job, rounds: 0 });
        self.dirty = true;
        Ok(false)
    }

    /// Rebuilds the realtime view and the warm-started model on `published` from every event after its watermark
    /// (archived ones read back from the master dataset, the rest from the log), then switches to them at once.
    fn adopt(&mut self, published: Published, seed_ids: bool) -> Result<()> {
        let seed = seed_ids.then_some((&mut self.dedup, now_millis()));
        let (view, live) = (self.log.view(), self.live.is_some());
        let b = Built::through(&self.spec, published, live, self.archived_through, &view, self.last_seq, seed)?;
        self.switch(b);
        if seed_ids {
            // The seeded ids come from the master dataset, which no replay of the log reads again: a run must hold
            // them before the checkpoint does, or a crash before the next flush forgets them.
            let retired = self.dedup.flush(self.last_seq, now_millis(), self.worker.is_none())?;
            self.dedup_retired.extend(retired);
            self.dirty = true;
        }
        self.checkpoint()?;
        Ok(())
    }

    /// Switches to a state built on a new batch version through the last event accepted.
    fn switch(&mut self, b: Built) {
        let Built {
            published,
            live_batch,
            model,
            realtime,
            mut records,
            updates,
            refused,
            from_master,
            from_log,
            started,
            ..
        } = b;
        let w = published.manifest.watermark;
        realtime.set_applied(self.last_seq);
        self.generation += 1;
        let stats = SpeedStats { refused_updates: self.stats.refused_updates + refused, ..self.stats.clone() };
        let new_side = side(
            self.generation,
            &published,
            realtime,
            SpeedModel {
                model: model.model.clone(),
                updates,
                seq: self.last_seq,
                stats: stats.clone(),
                learners: records.learner_statuses(),
                windows: Arc::new(records.statuses()),
                weights: Arc::new(records.blend.weights.clone()),
                learner_models: Arc::new(records.models()),
                frozen: self.quality.frozen.clone(),
                retrain: self.retraining.status.clone(),
            },
        );
        tracing::info!(
            version = %published.manifest.version,
            watermark = w,
            from_master,
            from_log,
            updates,
            seconds = started.elapsed().as_secs_f64(),
            "warm-started the speed layer on the batch version"
        );
        self.side = new_side;
        self.model = model;
        // The blend's record since it started is of what it answered live; the replay above re-scored events it
        // had already counted.
        let old = &self.records.blend;
        (records.blend.scored, records.blend.errors, records.blend.loss) = (old.scored, old.errors, old.loss);
        self.records = records;
        self.learner_models = Arc::new(self.records.models());
        // The good states kept were of the old version's encoding, and the speed model is compared with a new
        // batch model.
        self.clear_goods();
        self.quality.restart_gap();
        if self.spec.speed.freeze.enabled {
            self.keep_good(self.last_seq, self.model.clone());
        }
        self.updates = updates;
        self.stats = stats;
        self.batch = published;
        self.need_full = true;
        self.need_learners = true;
        self.dirty = true;
        if let (Some(live), Some(batch)) = (&self.live, live_batch) {
            live.store(Some(Arc::new(LiveState { batch, speed: Some(self.side.clone()) })));
        }
    }
}

/// Events a finished background build may be behind by and still learn here, on the learner thread (ingest
/// waits for them: a few milliseconds)...
const CATCH_UP_HERE: u64 = 2_000;
/// ...or after this many rounds on its own thread, whatever it is behind by (a stream as fast as learning).
const CATCH_UP_ROUNDS: u32 = 4;

/// Runs `build` on a thread of its own.
fn spawn_adoption(
    build: impl FnOnce() -> Result<Built> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<Built>>> {
    std::thread::Builder::new()
        .name("speed-adopt".into())
        .spawn(build)
        .map_err(|e| Error::State(format!("cannot start the adoption thread: {e}")))
}

/// A batch version being adopted on a thread of its own.
struct Adoption {
    version: String,
    /// The thread's log reading starts after this sequence number: the log keeps the events after it.
    keep_after: u64,
    job: std::thread::JoinHandle<Result<Built>>,
    /// Rounds of catching up done on the thread.
    rounds: u32,
}

/// The speed layer's state on a new batch version, built from the events after its watermark.
struct Built {
    published: Published,
    /// Its batch side, for an in-process serving layer.
    live_batch: Option<Arc<BatchSide>>,
    model: AdaptiveLinear,
    realtime: Realtime,
    records: Records,
    x: Vec<f64>,
    updates: u64,
    refused: u64,
    /// Sequence number of the last event taken in.
    through: u64,
    from_master: u64,
    from_log: u64,
    started: std::time::Instant,
}

impl Built {
    /// The warm start on `published`, with its tree learners having learned history (and, with `live`, its batch
    /// side loaded: if its batch view cannot be read, nothing changes and the next poll retries).
    fn start(spec: &Spec, published: Published, live: bool) -> Result<Built> {
        let started = std::time::Instant::now();
        let live_batch = if live { Some(Arc::new(BatchSide::load(spec, &published.manifest.version)?)) } else { None };
        let model = published.artifact.speed_start_adaptive(spec);
        let w = published.manifest.watermark;
        let realtime = Realtime::new(template(spec, &model.model), w);
        // The other learners, the windows and the blend start over on the new version's encoding, from the same
        // events: the new batch model and its speed model, scored on the events after its watermark.
        let records = fresh_records(spec, &published)?;
        let x = vec![0.0; published.artifact.encoder.dim()];
        Ok(Built {
            published,
            live_batch,
            model,
            realtime,
            records,
            x,
            updates: 0,
            refused: 0,
            through: w,
            from_master: 0,
            from_log: 0,
            started,
        })
    }

    fn apply(&mut self, spec: &Spec, seq: u64, e: &Event) {
        self.realtime.observe(&e.key, e.time, seq, e, e.target.as_ref());
        if let Some(t) = &e.target {
            let artifact = &self.published.artifact;
            artifact.encoder.encode_row(e, &mut self.x);
            let (ps, pb) = (self.model.predict(&self.x), artifact.model.predict(&self.x));
            let learned = match update(&mut self.model, &self.x, t, spec, artifact) {
                Ok(updated) => {
                    self.updates += u64::from(updated);
                    true
                }
                Err(_) => {
                    self.refused += 1;
                    false
                }
            };
            let classes = &self.model.model.classes;
            self.records.observe(classes, &self.x, learned.then_some((&ps, &pb)), t, seq, e.time, true);
        }
        self.through = seq;
    }

    /// The state on `published` through the event `last`: the archived events after its watermark through
    /// `archived` from the master dataset (their ids into `seed`, when given), the rest from `log`.
    fn through(
        spec: &Spec,
        published: Published,
        live: bool,
        archived: u64,
        log: &LogView,
        last: u64,
        seed: Option<(&mut Dedup, i64)>,
    ) -> Result<Built> {
        let after = published.manifest.watermark.max(archived);
        let mut b = Built::start(spec, published, live)?;
        b.learn_master(spec, archived, seed)?;
        b.learn_log(spec, log, after, last)?;
        Ok(b)
    }

    /// Takes in the archived events after the watermark through `archived` (their ids into `seed`, when given).
    fn learn_master(&mut self, spec: &Spec, archived: u64, mut seed: Option<(&mut Dedup, i64)>) -> Result<()> {
        let w = self.published.manifest.watermark;
        let mut n = 0u64;
        master::for_each_event_after(spec, w, |seq, e| {
            if seq <= archived {
                self.apply(spec, seq, &e);
                n += 1;
                if let Some((dedup, now)) = seed.as_mut() {
                    dedup.insert(id_hash(&e.id), *now);
                }
            }
            Ok(())
        })?;
        self.from_master += n;
        Ok(())
    }

    /// Takes in the logged events after `after` through `last`.
    fn learn_log(&mut self, spec: &Spec, log: &LogView, after: u64, last: u64) -> Result<()> {
        let mut n = 0u64;
        log.replay(after, |r| {
            if r.seq > last {
                return Ok(false);
            }
            self.apply(spec, r.seq, &r.event);
            n += 1;
            Ok(true)
        })?;
        self.from_log += n;
        self.through = self.through.max(last);
        Ok(())
    }
}

/// Records started afresh on `batch`, the tree learners having learned the latest `speed.learner_history_rows`
/// rows of history up to its watermark, none from before the drift window a retraining on the fly trained on
/// (read from the master dataset, in sequence order, so that every start on the same version gives the same
/// learners).
fn fresh_records(spec: &Spec, batch: &Published) -> Result<Records> {
    let mut records = Records::new(spec, &batch.artifact);
    let (n, w) = (spec.speed.learner_history_rows, batch.manifest.watermark);
    let after = w.saturating_sub(n).max(batch.manifest.trained_since.unwrap_or(0));
    if n == 0 || records.extra.iter().all(|t| matches!(t.learner, OnlineLearner::NaiveBayes(_))) {
        return Ok(records);
    }
    let started = std::time::Instant::now();
    let encoder = &batch.artifact.encoder;
    let mut x = vec![0.0; encoder.dim()];
    let mut learned = 0u64;
    master::for_each_event_after(spec, after, |seq, e| {
        if let Some(t) = e.target.as_ref().filter(|_| seq <= w) {
            encoder.encode_row(&e, &mut x);
            records.learn_history(&x, t);
            learned += 1;
        }
        Ok(())
    })?;
    tracing::info!(
        rows = learned,
        seconds = started.elapsed().as_secs_f64(),
        "online learners learned the latest history"
    );
    Ok(records)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Keeps a good state, three at most.
fn push_good(goods: &mut VecDeque<Good>, good: Good) {
    if goods.len() == 3 {
        goods.pop_front();
    }
    goods.push_back(good);
}

/// The snapshot a checkpoint lists, ready to learn the events after it again; removes the snapshots' files it
/// does not list (left by a crash between writing one and the manifest). None when it cannot be read: a freeze
/// then goes back to a state taken after the restart.
fn read_snapshot(state: &Path, generation: u64, record: Option<&FreezeRecord>) -> Result<Option<Relearn>> {
    let dir = checkpoint::goods_dir(state);
    create_dir_synced(&dir)?;
    let listed = record.and_then(|r| r.snapshot).map(|seq| (seq, checkpoint::good_name(generation, seq)));
    for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if listed.as_ref().is_none_or(|(_, name)| entry.file_name().to_string_lossy() != name.as_str()) {
            remove_if_present(&entry.path())?;
        }
    }
    let (Some((seq, name)), Some(record)) = (listed, record) else { return Ok(None) };
    match checkpoint::read_good(state, &name) {
        Ok((model, learners)) => {
            let expected = record.goods.clone();
            Ok(Some(Relearn { seq, model, learners, stats: SpeedStats::default(), expected }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the snapshot of a good state cannot be read; keeping none");
            Ok(None)
        }
    }
}

/// Removes the online learners' files a checkpoint does not list (left by a crash between writing one and the
/// manifest, or retired by a run that stopped before deleting them).
fn remove_unlisted_learners(state: &Path, listed: Option<&LearnerFile>) -> Result<()> {
    let dir = checkpoint::learners_dir(state);
    create_dir_synced(&dir)?;
    for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if listed.is_none_or(|f| entry.file_name().to_string_lossy() != f.name.as_str()) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes realtime view files a checkpoint does not list (left by a crash between writing one and the manifest).
fn remove_unlisted_views(state: &Path, views: &[ViewFile]) -> Result<()> {
    let dir = checkpoint::views_dir(state);
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(()) };
    let listed: HashSet<&str> = views.iter().map(|v| v.name.as_str()).collect();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}
