//! What the speed layer reports about itself.

use std::fs;

use lambda_stores::checkpoint::{LearnerStatus, RetrainStatus, WindowStatuses};
use serde::Serialize;

use lambda_models::quality::{Frozen, Rates};

use super::Learner;

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
pub(super) fn resident_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

impl Learner {
    /// What the speed layer reports about itself.
    pub fn status(&self) -> Status {
        let t = &self.checkpoints.timing;
        Status {
            base_version: self.batch.manifest.version.clone(),
            generation: self.views.generation,
            last_seq: self.intake.last_seq,
            archived_through: self.archive.through,
            accepted: self.learning.stats.accepted,
            rejected: self.learning.stats.rejected,
            duplicates: self.learning.stats.duplicates,
            updates: self.learning.updates,
            keys: self.views.side.realtime.len(),
            realtime_bytes: self.views.side.realtime.heap_bytes(),
            log_bytes: self.intake.log.bytes(),
            log_segments: self.intake.log.segments(),
            dedup_in_memory: self.intake.dedup.in_memory(),
            dedup_filter_bytes: self.intake.dedup.filter_bytes(),
            dedup_runs: self.intake.dedup.runs().len(),
            dedup_bytes: self.intake.dedup.bytes(),
            dedup_flush_max_ms: self.intake.flush_max_ms,
            checkpoints: t.checkpoints,
            checkpoint_last_ms: t.last_ms,
            checkpoint_max_ms: t.max_ms,
            checkpoint_last_bytes: t.last_bytes,
            checkpoint_bytes: self.views.files.iter().map(|v| v.bytes).sum::<u64>()
                + t.manifest_bytes
                + t.learner_bytes,
            learners_checkpointed_seq: self.learning.file.as_ref().map_or(0, |f| f.seq),
            learners_bytes: t.learner_bytes,
            archive_files: self.archive.files,
            speed_loss: (self.learning.stats.labelled > 0)
                .then(|| self.learning.stats.speed_loss_sum / self.learning.stats.labelled as f64),
            batch_loss: (self.learning.stats.labelled > 0)
                .then(|| self.learning.stats.batch_loss_sum / self.learning.stats.labelled as f64),
            resident_bytes: resident_bytes(),
            learners: self.learning.records.learner_statuses(),
            windows: self.learning.records.statuses(),
            input: self.freeze.quality.rates(),
            frozen: self.freeze.quality.frozen.clone(),
            freezes: self.freeze.quality.freezes,
            retrain: self.retraining.status.clone(),
            adopting: self.adoption.running.as_ref().map(|a| a.version.clone()),
            adoption_failures: self.adoption.failures,
        }
    }
}
