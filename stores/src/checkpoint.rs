//! What the speed layer keeps on disk besides its log, and what the serving layer reads of it.
//!
//! A checkpoint is one small manifest (`state/checkpoint/CHECKPOINT`: counters, the incremental model, the list of
//! realtime view files, the de-duplication runs), replaced atomically, plus realtime view files under
//! `state/checkpoint/views/`: a full file of every key, then delta files of the keys changed since the one before.
//! A checkpoint costs the model plus what changed; when the deltas outgrow the full file, the next checkpoint writes
//! a new full file instead. Each adoption of a batch version starts a new generation of files.
//!
//! In one process the speed layer hands the serving layer a [`LiveState`] through a [`Live`] slot instead: the
//! batch side (model and view of the base version) and the speed side (the realtime view, read in place, and the
//! incremental model) of the same base version, swapped together when the base changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::realtime::{Chunk, Realtime};
use crate::registry::{Published, Registry};
use crate::state::{self, Kind};
use crate::views::{batch_view_path, ViewTable};
use lambda_core::error::{Error, Result};
use lambda_core::spec::Spec;
use lambda_models::blend::{Blend, Weights};
use lambda_models::metrics::Metrics;
use lambda_models::model::LinearModel;
use lambda_models::online::{NagState, OnlineLearner, Tracked};
use lambda_models::prequential::{DetectorStatus, Window};
use lambda_models::quality::{Frozen, Quality};

/// The checkpoint manifest's format.
/// Version 2 adds a second record: the adaptive update's state of the incremental model.
pub const MANIFEST: Kind = Kind { magic: *b"LMCK", version: 2, name: "speed checkpoint" };
/// The realtime view files' format.
pub const VIEWS: Kind = Kind { magic: *b"LMRV", version: 1, name: "realtime view file" };

/// Counters of the speed layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedStats {
    /// Events accepted since the state was created.
    pub accepted: u64,
    /// Records rejected (sent to the dead-letter file).
    pub rejected: u64,
    /// Replays of an already accepted event id.
    pub duplicates: u64,
    /// Labelled events scored before learning (prequential).
    pub labelled: u64,
    /// Sum of the speed model's loss on them, each predicted before it was learned.
    pub speed_loss_sum: f64,
    /// Sum of the batch model's loss on the same events.
    pub batch_loss_sum: f64,
    /// Updates skipped while warm-starting because they would have made the model non-finite.
    pub refused_updates: u64,
}

/// One realtime view file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewFile {
    /// File name under `state/checkpoint/views/`.
    pub name: String,
    /// Sequence number the file brings the view to.
    pub seq: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Whether it holds every key (else the keys changed since the file before).
    pub full: bool,
}

/// One sorted run of the de-duplication index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupRun {
    /// File name under `state/dedup/`.
    pub name: String,
    /// Ids it holds.
    pub entries: u64,
    /// Earliest ingestion time of an id in it (milliseconds).
    pub min_ms: i64,
    /// Latest ingestion time of an id in it.
    pub max_ms: i64,
}

/// The checkpoint manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Realtime generation: one per adopted batch version.
    pub generation: u64,
    /// Batch model version the incremental model and the realtime view are built on.
    pub base_version: String,
    /// Watermark of that version: the realtime view covers the events after it.
    pub base_watermark: u64,
    /// Highest ingestion sequence number applied.
    pub last_seq: u64,
    /// Highest sequence number archived into the master dataset.
    pub archived_through: u64,
    /// SGD updates since the warm start.
    pub updates: u64,
    /// Counters.
    pub stats: SpeedStats,
    /// Realtime view files, a full one first, then deltas in order.
    pub views: Vec<ViewFile>,
    /// Runs of the de-duplication index.
    pub dedup_runs: Vec<DedupRun>,
    /// Sequence number through which the runs hold every accepted id.
    pub dedup_through: u64,
    /// When it was written (milliseconds since the Unix epoch).
    pub written_ms: i64,
    /// The incremental model (its encoder is the base version's).
    pub model: LinearModel,
    /// The adaptive update's state beside the model: the manifest's second record (absent from version 1).
    #[serde(skip)]
    pub online: Option<NagState>,
    /// The speed layer's other online learners: the third record, written only after the second (absent from
    /// checkpoints written before them). With a [`Checkpoint::learner_file`] the record is empty and [`read`] takes
    /// them from that file: they are then as of its sequence number, not [`Checkpoint::last_seq`].
    #[serde(skip)]
    pub learners: Option<Vec<Tracked>>,
    /// The speed and the batch model's windowed records: the fourth record, written only after the third.
    #[serde(skip)]
    pub windows: Option<[Window; 2]>,
    /// The live blend's weights and record: the fifth record, written only after the fourth.
    #[serde(skip)]
    pub blend: Option<Blend>,
    /// The input's quality and the freeze: the sixth record, written only after the fifth.
    #[serde(skip)]
    pub quality: Option<Quality>,
    /// Where retraining on the fly stands: the seventh record, written only after the sixth.
    #[serde(skip)]
    pub retrain: Option<RetrainStatus>,
    /// The good online states kept for a freeze and the dead letters counted: the eighth record, written only
    /// after the seventh.
    #[serde(skip)]
    pub freeze: Option<FreezeRecord>,
    /// How far each external event log (a NATS JetStream stream) was taken in: the ninth record, written only
    /// after the eighth. A redelivery at or below its position is a duplicate, ids or not.
    #[serde(skip)]
    pub sources: Option<Vec<SourceState>>,
    /// The file the online learners are kept in: the tenth record, written only after the ninth. A forest is
    /// megabytes that change with every event, so it is written every few seconds, not at each checkpoint; a
    /// restart learns the logged events after its sequence number again, into the learners alone.
    #[serde(skip)]
    pub learner_file: Option<LearnerFile>,
    /// The blend as of the learners' file (its second record): the manifest's blend and model are newer than
    /// the learners there, so a reader serves these with them. Absent without a learners' file or from one
    /// written before it.
    #[serde(skip)]
    pub learners_weighed: Option<WeighedAt>,
}

/// The online learners' own file, exact through the event of sequence `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerFile {
    /// Its name under [`learners_dir`].
    pub name: String,
    /// Sequence number of the last event the learners had learned (or scored, while frozen) when it was written.
    pub seq: u64,
}

/// A message of an external event log: which log (a hash of its name and creation, so that a stream deleted and
/// made again under the same name starts afresh), its sequence number there, and the log's settled point as the
/// reader last saw it (every message at or below it acknowledged, so never delivered again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The log.
    pub source: u64,
    /// Sequence number in it.
    pub seq: u64,
    /// Every message at or below this one is settled.
    pub settled: u64,
}

/// Which messages of an external event log are held (logged): all at or below `through`, and the runs in `held`
/// above it. Exact rather than a high-water mark, since a log redelivers out of order: messages handed to a reader
/// that crashed come again after the acknowledgement timeout, behind newer ones. Bounded by the messages not yet
/// acknowledged, since `through` follows the log's settled point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// The log.
    pub source: u64,
    /// Every message at or below it is held or settled.
    pub through: u64,
    /// Runs `(first, last)` of held messages above `through`, in order, neither touching nor overlapping.
    pub held: Vec<(u64, u64)>,
}

impl SourceState {
    /// A log of which nothing is held.
    pub fn new(source: u64) -> SourceState {
        SourceState { source, through: 0, held: Vec::new() }
    }

    /// Whether message `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        if seq <= self.through {
            return true;
        }
        let i = self.held.partition_point(|&(_, last)| last < seq);
        self.held.get(i).is_some_and(|&(first, _)| first <= seq)
    }

    /// Takes in a logged message.
    pub fn insert(&mut self, p: &SourcePosition) {
        if p.settled > self.through {
            self.through = p.settled;
            let keep = self.held.partition_point(|&(_, last)| last <= self.through);
            self.held.drain(..keep);
            if let Some(first) = self.held.first_mut() {
                first.0 = first.0.max(self.through + 1);
            }
        }
        let seq = p.seq;
        if self.contains(seq) {
            return;
        }
        let i = self.held.partition_point(|&(_, last)| last < seq);
        let joins_before = i > 0 && self.held[i - 1].1 + 1 == seq;
        let joins_after = self.held.get(i).is_some_and(|&(first, _)| first == seq + 1);
        match (joins_before, joins_after) {
            (true, true) => {
                self.held[i - 1].1 = self.held[i].1;
                self.held.remove(i);
            }
            (true, false) => self.held[i - 1].1 = seq,
            (false, true) => self.held[i].0 = seq,
            (false, false) => self.held.insert(i, (seq, seq)),
        }
        if self.held.first().is_some_and(|&(first, _)| first == self.through + 1) {
            self.through = self.held.remove(0).1;
        }
    }
}

/// What a restart needs to freeze as the run before it would have: the good online states kept while the input
/// was clean, and how far the dead letters were counted into the input's quality. The good states are not written
/// each time (a forest is megabytes, and they change every window of events): one of them, the snapshot, is
/// written once in a file of its own, and a restart learns the logged events after it again to take the others
/// where the run took them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// Sequence number of the snapshot's event; its file under [`goods_dir`] is named by [`good_name`] with the
    /// checkpoint's generation.
    pub snapshot: Option<u64>,
    /// The sequence numbers the good states kept were taken after, oldest first (what the restart checks it took).
    pub goods: Vec<u64>,
    /// Number of the last dead letter written before the checkpoint.
    pub dead_letters: u64,
}

/// The first record of a realtime view file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewHead {
    /// The generation the file belongs to.
    pub generation: u64,
    /// Sequence number the file brings the view to.
    pub seq: u64,
    /// Whether it holds every key.
    pub full: bool,
    /// The view's aggregated features, which must be the spec's.
    pub features: Vec<String>,
}

/// The online learners' file format.
/// Version 2 adds a second record: the blend's weights and the linear model as of the same event ([`WeighedAt`]).
pub const LEARNERS: Kind = Kind { magic: *b"LMOL", version: 2, name: "online learners" };

/// The folder of the online learners' files.
pub fn learners_dir(state: &Path) -> PathBuf {
    dir(state).join("learners")
}

/// Reads the online learners' file the speed layer writes, with the blend as of the same event (absent from a
/// file of version 1).
pub fn read_learners(state: &Path, name: &str) -> Result<(Vec<Tracked>, Option<WeighedAt>)> {
    let path = learners_dir(state).join(name);
    let (_, frames) = state::read_document(&path, LEARNERS)?;
    match frames.as_slice() {
        [learners] => Ok((state::decode(&path, learners)?, None)),
        [learners, weighed] => Ok((state::decode(&path, learners)?, Some(state::decode(&path, weighed)?))),
        _ => Err(Error::Format { path, message: format!("{} records, expected 1 or 2", frames.len()) }),
    }
}

/// The blend's weights with the linear model they weighed, as of one event: what the blend answers with, beside
/// the online learners copied at the same event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeighedAt {
    /// Sequence number of the last event the models had learned (or scored, while frozen).
    pub seq: u64,
    /// The linear speed model then.
    pub linear: LinearModel,
    /// Its updates since the warm start then.
    pub updates: u64,
    /// The blend's weights over the batch model, `linear` and the online learners then.
    pub weights: Weights,
}

/// What the blend and the online learners named in a request answer with: the models copied at one event with the
/// weights their records gave then, so that the blend weighs the models it serves, never newer records of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The weights and the linear model.
    pub at: WeighedAt,
    /// The other online learners' models.
    pub learners: Vec<OnlineLearner>,
    /// Their records.
    pub statuses: Vec<LearnerStatus>,
}

/// The checkpoint folder.
pub fn dir(state: &Path) -> PathBuf {
    state.join("checkpoint")
}

/// The manifest's path.
pub fn manifest_path(state: &Path) -> PathBuf {
    dir(state).join("CHECKPOINT")
}

/// Folder of the realtime view files.
pub fn views_dir(state: &Path) -> PathBuf {
    dir(state).join("views")
}

/// Reads the manifest, if one was written, with the online learners of the file it lists.
pub fn read(state: &Path) -> Result<Option<Checkpoint>> {
    read_reusing(state, None)
}

/// [`read`], taking the online learners from `earlier` when it lists the same file (a follower polls the manifest
/// several times a second; the learners' file changes every few seconds and is megabytes to decode).
pub fn read_reusing(state: &Path, earlier: Option<&Checkpoint>) -> Result<Option<Checkpoint>> {
    let path = manifest_path(state);
    if !path.exists() {
        return Ok(None);
    }
    let (_, frames) = state::read_document(&path, MANIFEST)?;
    let first = frames.first().ok_or_else(|| Error::Format { path: path.clone(), message: "no record".into() })?;
    let mut c: Checkpoint = state::decode(&path, first)?;
    // Every record a checkpoint holds must be read: one set aside would take the records after it (the NATS
    // positions, the freeze) along, and the next checkpoint would write the loss down for good. A manifest of an
    // older build has fewer records, which read as absent.
    c.online = record(&path, frames.get(1), "the adaptive update's state")?;
    c.learners = record(&path, frames.get(2), "the online learners")?;
    c.windows = record(&path, frames.get(3), "the windowed records")?;
    c.blend = record(&path, frames.get(4), "the blend")?;
    c.quality = record(&path, frames.get(5), "the input's quality")?;
    c.retrain = record(&path, frames.get(6), "the retraining status")?;
    c.freeze = record(&path, frames.get(7), "the good states kept for a freeze")?;
    c.sources = record(&path, frames.get(8), "the positions in the event logs")?;
    c.learner_file = record(&path, frames.get(9), "the online learners' file")?;
    if let Some(file) = &c.learner_file {
        let same = earlier.filter(|e| e.learner_file.as_ref() == Some(file) && e.learners.is_some());
        (c.learners, c.learners_weighed) = match same {
            Some(e) => (e.learners.clone(), e.learners_weighed.clone()),
            None => {
                let (learners, weighed) = read_learners(state, &file.name).map_err(|e| Error::Unreadable {
                    what: format!("the online learners' file {} that {} lists", file.name, path.display()),
                    source: Box::new(e),
                })?;
                (Some(learners), weighed)
            }
        };
    }
    Ok(Some(c))
}

/// Decodes a record of the manifest after the first, absent when the manifest has none there.
fn record<T: serde::de::DeserializeOwned>(path: &Path, frame: Option<&Vec<u8>>, what: &str) -> Result<Option<T>> {
    let Some(frame) = frame else { return Ok(None) };
    state::decode(path, frame)
        .map(Some)
        .map_err(|e| Error::Unreadable { what: format!("{what} in {}", path.display()), source: Box::new(e) })
}

/// The batch version a checkpoint in `state` is built on, reading its first record alone: what the registry must
/// keep for the speed layer to restart.
pub fn base_version(state: &Path) -> Result<Option<String>> {
    let path = manifest_path(state);
    if !path.exists() {
        return Ok(None);
    }
    let (_, mut frames) = state::open_document(&path, MANIFEST)?;
    let first = state::document_frame(&mut frames, MANIFEST)?
        .ok_or_else(|| Error::Format { path: path.clone(), message: "no record".into() })?;
    Ok(Some(state::decode::<Checkpoint>(&path, &first)?.base_version))
}

/// Identity of the manifest file as a cheap poll sees it: inode (each write is a new file), length and
/// modification time.
pub fn stamp(state: &Path) -> Option<(u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(manifest_path(state)).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// Applies one view file to `realtime`.
pub fn read_view_file(state: &Path, file: &ViewFile, realtime: &Realtime) -> Result<()> {
    let path = views_dir(state).join(&file.name);
    let (_, mut frames) = state::open_document(&path, VIEWS)?;
    let head: ViewHead = match state::document_frame(&mut frames, VIEWS)? {
        Some(f) => state::decode(&path, &f)?,
        None => return Err(Error::Format { path, message: "no header record".into() }),
    };
    if head.features != realtime.features() {
        return Err(Error::Format {
            path,
            message: format!("aggregates features {:?}, the spec {:?}", head.features, realtime.features()),
        });
    }
    while let Some(f) = state::document_frame(&mut frames, VIEWS)? {
        let chunk: Chunk = state::decode(&path, &f)?;
        realtime.put_chunk(&chunk, head.seq);
    }
    Ok(())
}

/// The model the speed layer serves, with what it has learned.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedModel {
    /// The incremental model (encoder: the base version's).
    pub model: LinearModel,
    /// SGD updates since the warm start.
    pub updates: u64,
    /// Highest sequence number it has seen.
    pub seq: u64,
    /// Counters.
    pub stats: SpeedStats,
    /// The models' windows, refreshed at each checkpoint tick (computing them costs more than a group commit).
    pub windows: Arc<WindowStatuses>,
    /// What the blend and the other online learners answer with, copied together with the blend's weights.
    pub served: Arc<Served>,
    /// Set while bad input keeps the online updates frozen.
    pub frozen: Option<Frozen>,
    /// The retraining on the fly (in the speed layer's process only).
    pub retrain: RetrainStatus,
}

impl SpeedModel {
    /// What makes the service degraded: each drift detector not stable, and a freeze of the online updates.
    pub fn alerts(&self) -> Vec<String> {
        let mut out = self.windows.alerts();
        if let Some(z) = &self.frozen {
            out.push(format!("online updates frozen since seq {}: {}", z.since_seq, z.reason));
        }
        out
    }

    /// The model a checkpoint describes. The blend weighs the learners of the learners' file with the weights
    /// written with them, not the manifest's newer ones.
    pub fn of(c: &Checkpoint) -> SpeedModel {
        let learners = c.learners.as_ref();
        let at = match (&c.learners_weighed, &c.blend) {
            (Some(at), _) => at.clone(),
            (None, blend) => WeighedAt {
                seq: c.last_seq,
                linear: c.model.clone(),
                updates: c.updates,
                weights: match blend {
                    Some(b) => b.weights.clone(),
                    None => Weights::batch_only(lambda_models::blend::component_names(
                        learners.into_iter().flatten().map(|t| t.learner.name()),
                    )),
                },
            },
        };
        SpeedModel {
            model: c.model.clone(),
            updates: c.updates,
            seq: c.last_seq,
            stats: c.stats.clone(),
            windows: Arc::new(WindowStatuses::of(c.windows.as_ref(), learners, c.blend.as_ref())),
            served: Arc::new(Served {
                at,
                learners: learners.into_iter().flatten().map(|t| t.learner.clone()).collect(),
                statuses: LearnerStatus::all(learners),
            }),
            frozen: c.quality.as_ref().and_then(|q| q.frozen.clone()),
            retrain: RetrainStatus::default(),
        }
    }
}

/// Where a retraining on the fly stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainState {
    /// None asked for.
    #[default]
    Idle,
    /// A confirmed drift asked for one; waiting for `speed.retrain.min_events` events after it.
    Waiting,
    /// The batch pipeline runs.
    Running,
    /// The last run published a new version (adopted as any other).
    Published,
    /// The last run's model did not pass the gate; kept, not published.
    Held,
    /// The last run failed.
    Failed,
}

/// The speed layer's retraining on the fly ([`lambda_core::spec::RetrainSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrainStatus {
    /// Where it stands.
    pub state: RetrainState,
    /// Runs started since the state was created.
    pub runs: u64,
    /// Sequence number at which the drift that asked for the last run was confirmed.
    pub drift_seq: Option<u64>,
    /// The run trains on the events after this sequence number (and `history_rows` before).
    pub since_seq: Option<u64>,
    /// When the last run started (milliseconds since the Unix epoch).
    pub started_ms: Option<i64>,
    /// How long it took.
    pub seconds: Option<f64>,
    /// The version it made.
    pub version: Option<String>,
    /// The gate's reason, or the error.
    pub reason: Option<String>,
}

/// What the serving layer shows of one online learner besides the linear model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnerStatus {
    /// Its name in `speed.learners`.
    pub name: String,
    /// Labelled events it scored before learning them.
    pub labelled: u64,
    /// Their mean loss (log loss, or squared error).
    pub prequential_loss: Option<f64>,
    /// Their accuracy (classes) or mean absolute error (values).
    pub prequential_metric: Option<f64>,
    /// Its size.
    pub size: String,
}

/// The windows of the speed layer's models, as of the last refresh (each checkpoint tick).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStatuses {
    /// The speed (linear) model's.
    pub speed: Option<WindowStatus>,
    /// The batch model's, on the same events.
    pub batch: Option<WindowStatus>,
    /// Each other online learner's, by name.
    pub learners: Vec<(String, WindowStatus)>,
    /// The live blend's.
    pub blend: Option<WindowStatus>,
}

impl WindowStatuses {
    /// Each detector not stable, as "MODEL: DETECTOR STATE since seq N".
    pub fn alerts(&self) -> Vec<String> {
        let named = self
            .speed
            .iter()
            .map(|w| ("speed", w))
            .chain(self.batch.iter().map(|w| ("batch", w)))
            .chain(self.learners.iter().map(|(n, w)| (n.as_str(), w)))
            .chain(self.blend.iter().map(|w| ("blend", w)));
        let mut out = Vec::new();
        for (name, w) in named {
            for (detector, d) in [("ADWIN", &w.adwin), ("Page-Hinkley", &w.page_hinkley)] {
                if d.state != lambda_models::drift::DriftState::Stable {
                    let state = if d.state == lambda_models::drift::DriftState::Drift { "drift" } else { "warning" };
                    out.push(format!("{name} model: {detector} {state} since seq {}", d.changed_seq));
                }
            }
        }
        out
    }

    /// The statuses of these windows.
    pub fn of(windows: Option<&[Window; 2]>, learners: Option<&Vec<Tracked>>, blend: Option<&Blend>) -> WindowStatuses {
        WindowStatuses {
            speed: windows.map(|w| WindowStatus::of(&w[0])),
            batch: windows.map(|w| WindowStatus::of(&w[1])),
            learners: learners
                .map(|l| l.iter().map(|t| (t.learner.name().to_string(), WindowStatus::of(&t.window))).collect())
                .unwrap_or_default(),
            blend: blend.map(|b| WindowStatus::of(&b.window)),
        }
    }
}

/// What a window says: its metrics over the latest events and its detectors' states.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStatus {
    /// Metrics over the window (accuracy, log loss, AUC; or RMSE, MAE, R²), with `rows` the events it holds.
    pub metrics: Metrics,
    /// ADWIN on the error stream.
    pub adwin: DetectorStatus,
    /// Page-Hinkley on the error stream.
    pub page_hinkley: DetectorStatus,
}

impl WindowStatus {
    /// The status of a window.
    pub fn of(w: &Window) -> WindowStatus {
        WindowStatus {
            metrics: w.metrics(),
            adwin: w.adwin_status.clone(),
            page_hinkley: w.page_hinkley_status.clone(),
        }
    }
}

impl LearnerStatus {
    /// The record of a tracked learner.
    pub fn of(t: &Tracked) -> LearnerStatus {
        LearnerStatus {
            name: t.learner.name().into(),
            labelled: t.labelled,
            prequential_loss: t.mean_loss(),
            prequential_metric: t.mean_error(),
            size: t.learner.describe(),
        }
    }

    /// The records of a checkpoint's learners.
    pub fn all(learners: Option<&Vec<Tracked>>) -> Vec<LearnerStatus> {
        learners.map(|l| l.iter().map(LearnerStatus::of).collect()).unwrap_or_default()
    }
}

/// The speed layer's side of a served pair: built on one batch version.
#[derive(Debug)]
pub struct SpeedSide {
    /// Realtime generation.
    pub generation: u64,
    /// The batch version it is built on.
    pub base_version: String,
    /// That version's watermark.
    pub base_watermark: u64,
    /// Per-key views of the events after the watermark.
    pub realtime: Realtime,
    /// The incremental model.
    pub model: ArcSwap<SpeedModel>,
}

impl SpeedSide {
    /// Sequence number through which the side is exact.
    pub fn seq(&self) -> u64 {
        self.realtime.applied()
    }

    /// Rebuilds the side a checkpoint describes from its files.
    pub fn load(spec: &Spec, state: &Path, c: &Checkpoint) -> Result<SpeedSide> {
        let realtime = Realtime::new(ViewTable::new(spec).with_classes(&c.model.classes), c.base_watermark);
        for f in &c.views {
            read_view_file(state, f, &realtime)?;
        }
        realtime.set_applied(c.last_seq);
        Ok(SpeedSide {
            generation: c.generation,
            base_version: c.base_version.clone(),
            base_watermark: c.base_watermark,
            realtime,
            model: ArcSwap::from_pointee(SpeedModel::of(c)),
        })
    }
}

/// The batch side of a served pair: a published model and its batch view.
#[derive(Debug)]
pub struct BatchSide {
    /// Model, encoder and manifest.
    pub published: Published,
    /// The batch view of that version.
    pub view: ViewTable,
}

impl BatchSide {
    /// Loads a published version and its batch view.
    pub fn load(spec: &Spec, version: &str) -> Result<BatchSide> {
        let published = Registry::open(&spec.paths.registry).load(version)?;
        published.artifact.validate(spec)?;
        let view = ViewTable::read_parquet(spec, &batch_view_path(spec, version))?;
        Ok(BatchSide { published, view })
    }

    /// The version's name.
    pub fn version(&self) -> &str {
        &self.published.manifest.version
    }
}

/// What the serving layer answers from: a batch side and, when present, the speed side built on the same version.
#[derive(Debug)]
pub struct LiveState {
    /// Batch model and view.
    pub batch: Arc<BatchSide>,
    /// Realtime view and incremental model built on `batch`'s version.
    pub speed: Option<Arc<SpeedSide>>,
}

impl LiveState {
    /// Sequence number through which answers from this pair are exact.
    pub fn seq(&self) -> u64 {
        match &self.speed {
            Some(s) => s.seq(),
            None => self.batch.published.manifest.watermark,
        }
    }
}

/// The slot through which the current pair is handed to readers.
pub type Live = arc_swap::ArcSwapOption<LiveState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_log_s_held_messages_are_exact_out_of_order_and_bounded_by_its_settled_point() {
        let mut s = SourceState::new(1);
        let at = |seq, settled| SourcePosition { source: 1, seq, settled };
        for seq in [1, 2, 5, 6, 9, 7, 3] {
            s.insert(&at(seq, 0));
        }
        // 4 and 8 were handed to a reader that crashed: not held, whatever came after them.
        assert_eq!((s.through, s.held.clone()), (3, vec![(5, 7), (9, 9)]));
        assert!([1, 2, 3, 5, 6, 7, 9].iter().all(|&q| s.contains(q)));
        assert!(![4, 8, 10].iter().any(|&q| s.contains(q)));
        s.insert(&at(8, 0));
        assert_eq!((s.through, s.held.clone()), (3, vec![(5, 9)]));
        s.insert(&at(4, 0));
        assert_eq!((s.through, s.held.clone()), (9, vec![]));
        // A filtered consumer's log has gaps; the settled point closes them.
        s.insert(&at(20, 0));
        s.insert(&at(30, 0));
        assert_eq!(s.held, vec![(20, 20), (30, 30)]);
        s.insert(&at(31, 25));
        assert_eq!((s.through, s.held.clone()), (25, vec![(30, 31)]));
        assert!(s.contains(24) && !s.contains(26));
        s.insert(&at(40, 35));
        assert_eq!((s.through, s.held.clone()), (35, vec![(40, 40)]));
    }
}
