//! Recovery: a start opens every stage from the last checkpoint, then replays the log after it through the same
//! steps as ingest.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use lambda_core::schema::Target;
use lambda_core::spec::Spec;
use lambda_stores::checkpoint::{self, LearnerFile, Live, SourceState, SpeedSide, SpeedStats, ViewFile};
use lambda_stores::lock::FolderLock;
use lambda_stores::master;
use lambda_stores::realtime::Realtime;
use lambda_stores::registry::{now_millis, Registry};
use lambda_stores::state::create_dir_synced;

use super::archive;
use super::dead_letters::DeadLetters;
use super::dedup::{id_hash, Dedup};
use super::log::{Log, Record};
use super::records::Records;
use crate::{Error, Result};
use lambda_models::quality::Quality;

use super::adoption::{fresh_records, Adoptions};
use super::archiving::Archiving;
use super::checkpointing::Checkpoints;
use super::freeze::{read_snapshot, Freeze, Good};
use super::intake::{filter_budget, Intake};
use super::learning::{learn, resume_model, Learning, Unlearnable};
use super::retraining::Retraining;
use super::views::{side, template, warm_start, Views};
use super::{remove_if_present, snapshot, Learner};

/// The first generation of a new state folder: its upper half is drawn afresh, so that a serving layer that followed
/// an earlier state in the same folder never applies this one's files onto that one's view.
pub(super) fn first_generation(state: &Path) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{nanos}-{}-{}", std::process::id(), state.display());
    (xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) >> 33) << 32
}

/// Removes the online learners' files a checkpoint does not list (left by a crash between writing one and the
/// manifest, or retired by a run that stopped before deleting them).
pub(super) fn remove_unlisted_learners(state: &Path, listed: Option<&LearnerFile>) -> Result<()> {
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
pub(super) fn remove_unlisted_views(state: &Path, views: &[ViewFile]) -> Result<()> {
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
            snapshot::goods_dir(&state),
            state.join("dedup"),
        ] {
            lambda_stores::state::sweep_temp_files(&dir)?;
        }
        if state.join("checkpoints/CURRENT").exists() || state.join("wal.ndjson").exists() {
            return Err(Error::EarlierState(state));
        }
        let registry = Registry::open(&spec.paths.registry);
        let no_model = || Error::NoModel { registry: spec.paths.registry.clone(), spec: spec.source.clone() };
        let dead = DeadLetters::open(&state)?;
        let schema_hash = spec.schema_hash();
        let mut fresh_gap = false;
        let mut learner = match checkpoint::read(&state)? {
            Some(c) => {
                let batch = registry
                    .load(&c.base_version)
                    .map_err(|source| Error::Base { version: c.base_version.clone(), source })?;
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
                let sources = c.sources.iter().flatten().map(|s| (s.source, s.clone())).collect();
                let records = Records::resume(&spec, &batch.artifact, Some(&c));
                let quality = c.quality.clone().unwrap_or_else(|| Quality::new(spec.speed.freeze.window));
                let snapshot = relearn.as_ref().map(|r| (r.seq, snapshot::good_name(c.generation, r.seq)));
                Learner {
                    intake: Intake::new(log, dedup, dead, dead_n, sources, c.last_seq),
                    learning: Learning::new(model, records, c.updates, c.stats.clone(), c.learner_file.clone()),
                    freeze: Freeze::new(&spec, quality, snapshot, relearn),
                    views: Views::new(&state, side, c.generation, c.views.clone()),
                    archive: Archiving { through: c.archived_through, open_first_ms: None, files: 0 },
                    checkpoints: Checkpoints::new(c.last_seq, false),
                    adoption: Adoptions::default(),
                    retraining: Retraining::resume(c.retrain.clone()),
                    spec: spec.clone(),
                    state: state.clone(),
                    _lock: lock,
                    batch,
                    live: live.clone(),
                    worker: None,
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
                let side = side(generation, &batch, realtime, warm_start(model.model.clone(), start));
                let dedup = Dedup::open(&state.join("dedup"), spec.dedup_window, filter_budget(&spec), &[], start)?;
                let log = Log::open(&state.join("log"), &schema_hash, start + 1)?;
                remove_unlisted_views(&state, &[])?;
                remove_unlisted_learners(&state, None)?;
                read_snapshot(&state, generation, None)?;
                let dead_n = dead.last_n()?;
                // With a gap the warm start below starts the records (and reads the history rows) itself.
                let records =
                    if fresh_gap { Records::new(&spec, &batch.artifact) } else { fresh_records(&spec, &batch)? };
                let mut learning = Learning::new(model, records, 0, SpeedStats::default(), None);
                learning.need_write = true;
                Learner {
                    intake: Intake::new(log, dedup, dead, dead_n, BTreeMap::new(), start),
                    learning,
                    freeze: Freeze::new(&spec, Quality::new(spec.speed.freeze.window), None, None),
                    views: Views::new(&state, side, generation, Vec::new()),
                    archive: Archiving { through: start, open_first_ms: None, files: 0 },
                    checkpoints: Checkpoints::new(0, true),
                    adoption: Adoptions::default(),
                    retraining: Retraining::default(),
                    spec: spec.clone(),
                    state: state.clone(),
                    _lock: lock,
                    batch,
                    live: live.clone(),
                    worker: None,
                }
            }
        };
        archive::remove_partial_files(&learner.spec)?;
        learner.recover()?;
        if learner.freeze.good.is_empty() && learner.freeze.next_good().is_some() {
            // A first start, or a checkpoint written before the good states were kept in it.
            learner.keep_good(learner.intake.last_seq, learner.learning.model.clone());
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
    pub(super) fn recover(&mut self) -> Result<()> {
        let mut from = self.intake.dedup.through().min(self.intake.last_seq).min(self.archive.through);
        let (checkpointed, dedup_through, archived) =
            (self.intake.last_seq, self.intake.dedup.through(), self.archive.through);
        // The learners' file may be older than the checkpoint: they learn the logged events in between again, as
        // they did then (a freeze or a resume writes them, so it is the checkpoint's kind of learning throughout).
        let learners_seq = match &self.learning.file {
            Some(f) if f.seq < checkpointed => f.seq,
            _ => checkpointed,
        };
        let learn = !self.freeze.frozen();
        from = from.min(learners_seq);
        if let Some(rl) = &self.freeze.relearn {
            // The good states from the snapshot on are taken again as the events after it are learned again.
            let (model, learners) = (rl.model.clone(), rl.learners.clone());
            self.freeze.good = VecDeque::from([Good { seq: rl.seq, model, learners }]);
            from = from.min(rl.seq);
        }
        // Rejections of request groups that accepted nothing, in the input's quality where they came.
        let (alone, dead_n) = self.intake.dead.alone_after(self.intake.dead_n)?;
        let mut alone = alone.into_iter().peekable();
        let mut replayed = 0u64;
        let mut records = Vec::new();
        self.intake.log.replay(from, |r| {
            records.push(r);
            // Learn in bounded groups so that a long log is never held whole.
            Ok(records.len() < 65_536)
        })?;
        let mut after = from;
        while !records.is_empty() {
            for r in std::mem::take(&mut records) {
                after = r.seq;
                if r.seq > dedup_through {
                    self.intake.dedup.insert(id_hash(&r.event.id), r.ingest_ms);
                }
                if r.seq > archived && self.archive.open_first_ms.is_none() {
                    self.archive.open_first_ms = Some(r.ingest_ms);
                }
                if self.freeze.relearn.as_ref().is_some_and(|rl| r.seq > rl.seq) && r.seq <= checkpointed {
                    self.relearn(&r);
                }
                if r.seq > learners_seq && r.seq <= checkpointed {
                    self.learners_catch_up(&r, learn);
                }
                if r.seq > checkpointed {
                    self.freeze.finish_relearn();
                    while let Some(d) = alone.next_if(|d| d.after_seq < r.seq) {
                        self.freeze.quality.push_rejected(d.key());
                        self.learning.stats.rejected += 1;
                    }
                    self.apply_logged(r);
                    replayed += 1;
                }
            }
            self.intake.log.replay(after, |r| {
                records.push(r);
                Ok(records.len() < 65_536)
            })?;
        }
        self.freeze.finish_relearn();
        for d in alone {
            self.freeze.quality.push_rejected(d.key());
            self.learning.stats.rejected += 1;
        }
        if dead_n > self.intake.dead_n {
            self.intake.dead_n = dead_n;
            self.checkpoints.dirty = true;
        }
        self.views.side.realtime.set_applied(self.intake.last_seq);
        // A request of rejections alone is judged at its end: when that froze the updates and the crash came
        // before its checkpoint, its dead letters are the last thing replayed, and the verdict is taken here.
        if self.judge_input(now_millis()) {
            self.checkpoints.dirty = true;
        }
        // Served at once: the learners' models and the windows, not only the linear model.
        self.refresh_windows();
        if replayed > 0 {
            self.checkpoints.dirty = true;
            tracing::info!(replayed, last_seq = self.intake.last_seq, "replayed the log after the checkpoint");
        }
        for (first, last, path) in archive::recovered_ranges(&self.spec, self.archive.through)? {
            if first == self.archive.through + 1 && last <= self.intake.last_seq {
                tracing::info!(path = %path.display(), "archive file written before a crash is kept");
                self.archive.through = last;
                self.checkpoints.dirty = true;
            }
        }
        if self.archive.through >= self.intake.last_seq {
            self.archive.open_first_ms = None;
        } else if self.archive.through > archived {
            self.archive.open_first_ms = self.first_ms_after(self.archive.through)?;
        }
        Ok(())
    }

    /// Applies a logged event: the same learning step as at ingest (so replays are bit-identical), then the view.
    pub(super) fn apply_logged(&mut self, mut r: Record) {
        // The input's record goes on with the events and the rejections logged with them, in the order received,
        // and its verdicts are taken where the run took them (after each event, and after the group's last
        // rejections): a crash between a group's log write and the checkpoint after its turn turns here again.
        let mark = std::mem::take(&mut r.mark);
        if let Some(p) = r.source {
            self.intake.sources.entry(p.source).or_insert_with(|| SourceState::new(p.source)).insert(&p);
        }
        self.learning.stats.rejected += (mark.rejected_before.len() + mark.rejected_after.len()) as u64;
        for key in mark.rejected_before {
            self.freeze.quality.push_rejected(key);
        }
        let unknown =
            matches!(&r.event.target, Some(Target::Class(c)) if self.learning.model.model.class_index(c).is_none());
        self.freeze.quality.push(false, self.batch.artifact.encoder.outside_history(&r.event), unknown);
        if let Some(target) = &r.event.target {
            self.learning.x.resize(self.batch.artifact.encoder.dim(), 0.0);
            self.batch.artifact.encoder.encode_row(&r.event, &mut self.learning.x);
            let frozen = self.freeze.frozen();
            let (batch, spec) = (&self.batch.artifact, &self.spec);
            let predicted = match learn(
                &mut self.learning.model,
                batch,
                &self.learning.x,
                target,
                spec,
                &mut self.learning.stats,
                frozen,
            ) {
                Ok((updated, ps, pb)) => {
                    self.learning.updates += u64::from(updated);
                    Some((ps, pb))
                }
                Err(Unlearnable::UnknownClass) => None,
                Err(Unlearnable::NonFinite(_)) => {
                    self.learning.stats.refused_updates += 1;
                    None
                }
            };
            let predicted = predicted.as_ref().map(|(ps, pb)| (ps, pb));
            if let Some(gap) = predicted.and_then(|(ps, pb)| self.learning.records.gap(ps, pb, target)) {
                self.freeze.quality.observe_gap(gap, r.seq);
            }
            self.learning.records.observe(
                &self.learning.model.model.classes,
                &self.learning.x,
                predicted,
                target,
                r.seq,
                r.event.time,
                !frozen,
            );
        }
        self.views.side.realtime.observe(&r.event.key, r.event.time, r.seq, &r.event, r.event.target.as_ref());
        self.intake.last_seq = r.seq;
        self.learning.stats.accepted += 1;
        let mut turned = self.judge_input(r.ingest_ms);
        if mark.last {
            for key in mark.rejected_after {
                self.freeze.quality.push_rejected(key);
            }
            turned |= self.judge_input(r.ingest_ms);
            if self.freeze.next_good().is_some_and(|g| r.seq >= g) {
                self.keep_good(r.seq, self.learning.model.clone());
            }
        }
        if turned {
            self.checkpoints.dirty = true;
        }
    }
}
