//! The speed layer's stages. Each owns its state behind a few methods; the [`Learner`] runs them on one thread, in
//! the order an event goes through them:
//!
//! ```text
//!  requests ─► intake ──────────► trial ─────────► intake.commit ─► learning ─► views ─► (served side)
//!             screen: redelivery,  learn on copies, dead letters,    models,     realtime
//!             validation, known    the input's      then the log,    learners,   view
//!             id; sequence number  verdict (freeze) synced           windows
//!
//!  tick ─► adoption (new batch version, built on its own thread) ─► archiving (log → master dataset, on the
//!          worker) ─► checkpointing (view files, snapshot, learners' file, then the manifest) ─► retraining
//! ```
//!
//! - `intake`: sequence numbers, de-duplication by id (`dedup`: the id window) and by source position, the dead
//!   letters (`dead_letters`) and the log (`log`: segmented, framed, synced); a group is durable (`intake`'s
//!   `commit`) before anything is applied, so a failure before the sync leaves no trace.
//! - `trial`: a group's events learned and judged on copies of the linear model, its counters and the input's
//!   quality; a record whose update would not be finite is refused there.
//! - `learning`, `freeze`, `views`: the models and their records (`records`: the other learners, the windows,
//!   the blend), the freeze and its good states, the realtime view and the served side.
//! - `archiving` (`archive`: log → master-dataset file), `checkpointing`, `adoption`, `retraining`: the periodic
//!   work; `worker` writes archive files, compacts view files and merges id runs off the learner thread.
//! - `recovery`: a start opens every stage from the checkpoint and replays the log after it through the same
//!   steps, so it ends where a run that never stopped does.
//!
//! What crosses between stages is plain data (a logged `Record`, a group of them, a trial's models), so
//! that a stage can move to a thread of its own, and the per-key ones (views, de-duplication) can be split by key.

mod adoption;
mod archive;
mod archiving;
mod checkpoint_files;
mod checkpointing;
mod dead_letters;
mod dedup;
mod freeze;
mod intake;
mod learning;
mod log;
mod records;
mod recovery;
mod retraining;
mod snapshot;
mod status;
mod trial;
mod views;
mod worker;

pub use checkpointing::CheckpointReport;
pub use intake::{IngestReport, RejectedLine};
pub use status::Status;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lambda_core::spec::Spec;
use lambda_models::model::LinearModel;
use lambda_models::online::AdaptiveLinear;
use lambda_stores::checkpoint::{BatchSide, Live, LiveState, SpeedModel, SpeedSide, SpeedStats};
use lambda_stores::lock::FolderLock;
use lambda_stores::registry::{now_millis, Published};

use self::adoption::Adoptions;
use self::archiving::Archiving;
use self::checkpointing::Checkpoints;
use self::freeze::Freeze;
use self::intake::Intake;
use self::learning::Learning;
use self::retraining::Retraining;
use self::views::Views;
use self::worker::Worker;
use crate::ingest::Incoming;
use crate::{Error, Result};

/// The speed layer's state: its stages, run on one thread, in the order an event goes through them.
pub struct Learner {
    spec: Spec,
    state: PathBuf,
    /// The state folder's lock, held for the learner's life.
    _lock: FolderLock,
    /// The batch version the state is built on.
    batch: Published,
    intake: Intake,
    learning: Learning,
    freeze: Freeze,
    views: Views,
    archive: Archiving,
    checkpoints: Checkpoints,
    adoption: Adoptions,
    retraining: Retraining,
    /// Where an in-process serving layer reads the served pair.
    live: Option<Arc<Live>>,
    /// Writes archive files, compacts view files and merges id runs off this thread, once started.
    worker: Option<Worker>,
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl Learner {
    /// Highest sequence number applied.
    pub fn last_seq(&self) -> u64 {
        self.intake.last_seq
    }

    /// Highest sequence number archived into the master dataset.
    pub fn archived_through(&self) -> u64 {
        self.archive.through
    }

    /// The speed side now served (realtime view and model).
    pub fn side(&self) -> Arc<SpeedSide> {
        self.views.side.clone()
    }

    /// The incremental model.
    pub fn model(&self) -> &LinearModel {
        &self.learning.model.model
    }

    /// The incremental model with its adaptive update's state.
    pub fn adaptive(&self) -> &AdaptiveLinear {
        &self.learning.model
    }

    /// SGD updates since the warm start.
    pub fn updates(&self) -> u64 {
        self.learning.updates
    }

    /// Counters.
    pub fn stats(&self) -> &SpeedStats {
        &self.learning.stats
    }

    /// The batch version the state is built on.
    pub fn base_version(&self) -> &str {
        &self.batch.manifest.version
    }

    /// Bytes of the log on disk.
    pub fn log_bytes(&self) -> u64 {
        self.intake.log.bytes()
    }

    /// Ids the de-duplication index holds in memory.
    pub fn dedup_in_memory(&self) -> usize {
        self.intake.dedup.in_memory()
    }

    /// Accepts a batch of parsed records: rejections go to the dead-letter file, known ids are skipped, the rest
    /// get sequence numbers, are logged and synced, then applied.
    pub fn ingest(&mut self, items: Vec<Incoming>) -> Result<IngestReport> {
        let mut reports = self.ingest_many(vec![items])?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// Serves the linear model as it is now, with the last copy of the models the blend weighs.
    pub(super) fn publish_model(&self) {
        self.views.side.model.store(Arc::new(SpeedModel {
            model: self.learning.model.model.clone(),
            updates: self.learning.updates,
            seq: self.intake.last_seq,
            stats: self.learning.stats.clone(),
            windows: self.learning.window_status.clone(),
            served: self.learning.served.clone(),
            frozen: self.freeze.quality.frozen.clone(),
            retrain: self.retraining.status.clone(),
        }));
    }

    /// Recomputes what the windows say, copies the models and the blend's weights for serving, and serves them.
    pub(super) fn refresh_windows(&mut self) {
        self.learning.window_status = Arc::new(self.learning.records.statuses());
        self.learning.copy_served(self.intake.last_seq);
        self.publish_model();
    }

    /// Hands the served pair (batch side and speed side of the same version) to an in-process serving layer.
    pub(super) fn publish_live(&self) -> Result<()> {
        if let (Some(live), Some(batch)) = (&self.live, self.live_batch(&self.batch.manifest.version)?) {
            live.store(Some(Arc::new(LiveState { batch, speed: Some(self.views.side.clone()) })));
        }
        Ok(())
    }

    /// The batch side of `version` for an in-process serving layer (`None` without one).
    pub(super) fn live_batch(&self, version: &str) -> Result<Option<Arc<BatchSide>>> {
        let Some(live) = &self.live else { return Ok(None) };
        let current = live.load_full();
        Ok(Some(match current.as_ref().filter(|s| s.batch.version() == version) {
            Some(s) => s.batch.clone(),
            None => Arc::new(BatchSide::load(&self.spec, version)?),
        }))
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

    /// Writes archive files and compacts view files in a thread of their own from now on, so that ingest does not
    /// wait for them.
    pub fn work_in_background(&mut self) -> Result<()> {
        if self.worker.is_none() {
            self.worker = Some(Worker::start()?);
        }
        Ok(())
    }
}
