//! Checkpointing: what changed written (a delta or a full view file, the snapshot, the learners' file), then the
//! manifest, then what it no longer lists deleted.

use std::path::PathBuf;

use lambda_stores::checkpoint::{self, Checkpoint, FreezeRecord, LearnerFile, WeighedAt};
use lambda_stores::registry::now_millis;

use super::worker::{Job, Worker};
use crate::Result;

use super::freeze::SNAPSHOT_WINDOWS;
use super::views::template;
use super::{checkpoint_files, remove_if_present, snapshot, Learner};

/// Checkpointing: what the last checkpoint holds and what it cost.
pub(super) struct Checkpoints {
    /// The sequence number the last checkpoint is exact through.
    pub(super) seq: u64,
    /// Whether anything changed since it.
    pub(super) dirty: bool,
    pub(super) timing: Timing,
    /// Files the checkpoint no longer lists, deleted once due: a serving layer in another process may still be
    /// reading them.
    retired: Vec<(i64, PathBuf)>,
}

impl Checkpoints {
    pub(super) fn new(seq: u64, dirty: bool) -> Checkpoints {
        Checkpoints { seq, dirty, timing: Timing::default(), retired: Vec::new() }
    }

    /// Retires a file the checkpoint no longer lists.
    pub(super) fn retire(&mut self, path: PathBuf) {
        self.retired.push((now_millis() + RETIRE_AFTER_MS, path));
    }

    /// Deletes the retired files that are due.
    fn remove_due(&mut self) -> Result<()> {
        let now = now_millis();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retired).into_iter().partition(|(t, _)| *t <= now);
        self.retired = later;
        for (_, path) in due {
            remove_if_present(&path)?;
        }
        Ok(())
    }
}

/// Files dropped from a checkpoint stay this long for readers still on it.
pub(super) const RETIRE_AFTER_MS: i64 = 2_000;

/// A checkpoint that takes this long is logged with the time of each step.
pub(super) const SLOW_CHECKPOINT_MS: u128 = 200;

#[derive(Debug, Default)]
pub(super) struct Timing {
    /// Checkpoints written since start.
    pub(super) checkpoints: u64,
    pub(super) last_ms: f64,
    pub(super) max_ms: f64,
    pub(super) last_bytes: u64,
    pub(super) manifest_bytes: u64,
    /// Size of the online learners' file last written.
    pub(super) learner_bytes: u64,
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

impl Learner {
    /// Checkpoints with the online learners as they are now, however recently they were written (a stop, the end
    /// of a replay, a caller that asks): a restart then has nothing to learn again.
    pub fn checkpoint_whole(&mut self) -> Result<CheckpointReport> {
        if self.learning.file.as_ref().is_none_or(|f| f.seq != self.intake.last_seq) {
            self.learning.need_write = true;
        }
        self.checkpoint()
    }

    /// Whether anything happened since the last checkpoint.
    pub fn needs_checkpoint(&self) -> bool {
        self.checkpoints.dirty
            || self.views.need_full
            || self.intake.last_seq != self.checkpoints.seq
            || self.learners_due(now_millis())
    }

    /// Whether the next checkpoint writes the online learners: when asked to, or when they have learned events
    /// since they were written and `speed.learner_checkpoint_interval` or `_events` has passed.
    pub(super) fn learners_due(&self, now: i64) -> bool {
        let Some(f) = &self.learning.file else { return true };
        let interval = self.spec.learner_checkpoint_interval.as_millis() as i64;
        self.learning.need_write
            || (f.seq < self.intake.last_seq
                && (now - self.learning.written_ms >= interval
                    || self.intake.last_seq - f.seq >= self.spec.speed.learner_checkpoint_events))
    }

    /// Writes what changed since the last checkpoint (a delta view file, or a full one when the deltas have grown
    /// past it) and the manifest, then deletes what the new checkpoint no longer needs.
    pub fn checkpoint(&mut self) -> Result<CheckpointReport> {
        if let Some(done) = self.worker.as_mut().map(Worker::finished_compactions) {
            self.take_finished(done)?;
        }
        if self.checkpoints.dirty {
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
                let t = &mut self.checkpoints.timing;
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
            Err(_) => self.views.need_full = true,
        }
        r
    }

    pub(super) fn write_checkpoint(&mut self) -> Result<CheckpointReport> {
        let started = std::time::Instant::now();
        let seq = self.intake.last_seq;
        let full_bytes: u64 = self.views.files.iter().filter(|v| v.full).map(|v| v.bytes).sum();
        let delta_bytes: u64 = self.views.files.iter().filter(|v| !v.full).map(|v| v.bytes).sum();
        let mut report = CheckpointReport::default();
        let realtime = &self.views.side.realtime;
        let must_full = self.views.need_full || self.views.files.is_empty() || self.views.files.len() > 512;
        // Deltas past the full file are merged into a new one, in the background when there is a worker.
        let compact = delta_bytes > full_bytes.max(64 << 10);
        if must_full || (compact && self.worker.is_none()) {
            let f = checkpoint_files::write_full(&self.state, self.views.generation, seq, realtime)?;
            report = CheckpointReport { view_bytes: f.bytes, full: true, ..report };
            for old in std::mem::take(&mut self.views.files) {
                if old.name != f.name {
                    self.checkpoints.retire(self.views.path(&old));
                }
            }
            self.views.files.push(f);
        } else {
            let chunks = realtime.take_changed();
            if !chunks.is_empty() {
                let f = checkpoint_files::write_delta(
                    &self.state,
                    self.views.generation,
                    seq,
                    realtime.features(),
                    &chunks,
                )?;
                report.view_bytes = f.bytes;
                self.views.files.push(f);
            }
            if let Some(w) = self.worker.as_mut().filter(|w| compact && !w.compacting()) {
                let template = Box::new(template(&self.spec, &self.learning.model.model));
                let (state, generation, files) = (self.state.clone(), self.views.generation, self.views.files.clone());
                w.submit(Job::Compact { state, generation, template, files })?;
            }
        }
        // The oldest good state becomes the snapshot when there is none yet, when it is all that keeps the log from
        // being cut, or when a restart would learn too many events again after the one there is: at most once per
        // `speed.learner_checkpoint_interval` unless `_events` have passed (it holds the learners too).
        let window = self.spec.speed.freeze.window as u64;
        let cut = self.archive.through.min(self.intake.dedup.through()).min(seq);
        let now = now_millis();
        if let Some(g0) = self.freeze.good.front() {
            let interval = self.spec.learner_checkpoint_interval.as_millis() as i64;
            let events = self.spec.speed.learner_checkpoint_events;
            let due = self.freeze.snapshot.as_ref().is_none_or(|(s, _)| {
                *s < cut
                    || (g0.seq >= s + SNAPSHOT_WINDOWS * window
                        && (now - self.freeze.written_ms >= interval || g0.seq >= s + events))
            });
            if due && self.freeze.snapshot.as_ref().is_none_or(|(s, _)| *s != g0.seq) {
                let name = snapshot::good_name(self.views.generation, g0.seq);
                report.good_bytes += snapshot::write_good(&self.state, &name, &g0.model, &g0.learners)?;
                self.freeze.written_ms = now;
                if let Some((_, old)) = self.freeze.snapshot.replace((g0.seq, name)) {
                    self.freeze.retired.push(snapshot::goods_dir(&self.state).join(old));
                }
            }
        }
        if self.learners_due(now) {
            let name = checkpoint_files::learners_name(self.views.generation, seq);
            let l = &self.learning;
            let weighed = WeighedAt {
                seq,
                linear: l.model.model.clone(),
                updates: l.updates,
                weights: l.records.blend.weights.clone(),
            };
            report.learner_bytes = checkpoint_files::write_learners(&self.state, &name, &l.records.extra, &weighed)?;
            let old = self.learning.file.replace(LearnerFile { name: name.clone(), seq });
            if let Some(old) = old.filter(|o| o.name != name) {
                // Kept a while: a serving layer in another process may have read the manifest that lists it.
                self.checkpoints.retire(checkpoint::learners_dir(&self.state).join(old.name));
            }
            (self.learning.written_ms, self.learning.need_write) = (now, false);
        }
        let view_done = std::time::Instant::now();
        let manifest = Checkpoint {
            generation: self.views.generation,
            base_version: self.batch.manifest.version.clone(),
            base_watermark: self.batch.manifest.watermark,
            last_seq: seq,
            archived_through: self.archive.through,
            updates: self.learning.updates,
            stats: self.learning.stats.clone(),
            views: self.views.files.clone(),
            dedup_runs: self.intake.dedup.runs(),
            dedup_through: self.intake.dedup.through(),
            written_ms: now_millis(),
            model: self.learning.model.model.clone(),
            online: Some(self.learning.model.state.clone()),
            // In their own file (the tenth record names it).
            learners: Some(Vec::new()),
            windows: Some(self.learning.records.windows.clone()),
            blend: Some(self.learning.records.blend.clone()),
            quality: Some(self.freeze.quality.clone()),
            retrain: Some(self.retraining.status.clone()),
            freeze: Some(FreezeRecord {
                snapshot: self.freeze.snapshot.as_ref().map(|(s, _)| *s),
                goods: self.freeze.good.iter().map(|g| g.seq).collect(),
                dead_letters: self.intake.dead_n,
            }),
            sources: Some(self.intake.sources.values().cloned().collect()),
            learner_file: self.learning.file.clone(),
            learners_weighed: None,
        };
        report.manifest_bytes = checkpoint_files::write(&self.state, &manifest)?;
        let manifest_done = std::time::Instant::now();
        self.checkpoints.seq = seq;
        self.checkpoints.dirty = false;
        self.views.need_full = false;
        // What the new checkpoint no longer refers to.
        for path in self.intake.retired.drain(..).chain(self.freeze.retired.drain(..)) {
            remove_if_present(&path)?;
        }
        self.checkpoints.remove_due()?;
        // The log keeps the events after the snapshot, for a restart to learn again, and the events after the
        // learners' file, for a restart to learn them again into the learners.
        let snapshot = self.freeze.snapshot.as_ref().map_or(u64::MAX, |(s, _)| *s);
        // And the segment where a background adoption starts reading (the one holding the event it reads after:
        // its view of the log may list no segment after that one).
        let learners = self.learning.file.as_ref().map_or(seq, |f| f.seq);
        let adopting = self.adoption.running.as_ref().map_or(seq, |a| a.keep_after.saturating_sub(1));
        let through = cut.min(snapshot).min(learners).min(adopting);
        self.intake.log.retire_through(through)?;
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
}
