//! The freeze: the input's verdict after each event, the good states a freeze goes back to, and learning again
//! from the snapshot at a restart to take the good states the run took.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use lambda_core::spec::Spec;
use lambda_models::online::{AdaptiveLinear, OnlineLearner};
use lambda_stores::checkpoint::{FreezeRecord, SpeedStats};
use lambda_stores::registry::now_millis;
use lambda_stores::state::create_dir_synced;

use super::log::Record;
use crate::{Error, Result};
use lambda_models::quality::Quality;

use super::learning::learn;
use super::{remove_if_present, snapshot, Learner};

/// The freeze: the input's quality, the good states a freeze goes back to, and the snapshot of one a restart
/// learns from again.
pub(super) struct Freeze {
    /// The input's quality and whether updates are frozen.
    pub(super) quality: Quality,
    /// Online states taken while the input was clean, at the end of the first request group a
    /// `speed.freeze.window` of events after the one before, newest last: a freeze goes back to the oldest.
    pub(super) good: VecDeque<Good>,
    /// The good state written for a restart: its sequence number and file name.
    pub(super) snapshot: Option<(u64, String)>,
    /// At a restart, until the replay reaches the checkpoint: the snapshot learning the logged events after it
    /// again, to take the good states the run took.
    pub(super) relearn: Option<Relearn>,
    /// Snapshots' files the next checkpoint no longer lists.
    pub(super) retired: Vec<PathBuf>,
    /// When the last snapshot was written (milliseconds since the Unix epoch).
    pub(super) written_ms: i64,
    /// `speed.freeze.enabled` and `.window`.
    enabled: bool,
    window: u64,
    /// Where the snapshots are.
    dir: PathBuf,
}

impl Freeze {
    pub(super) fn new(
        spec: &Spec,
        quality: Quality,
        snapshot: Option<(u64, String)>,
        relearn: Option<Relearn>,
    ) -> Freeze {
        Freeze {
            quality,
            good: VecDeque::new(),
            snapshot,
            relearn,
            retired: Vec::new(),
            written_ms: now_millis(),
            enabled: spec.speed.freeze.enabled,
            window: spec.speed.freeze.window as u64,
            dir: snapshot::goods_dir(&spec.paths.state),
        }
    }

    /// Whether online updates are frozen now.
    pub(super) fn frozen(&self) -> bool {
        self.enabled && self.quality.frozen.is_some()
    }

    /// The sequence number from which the next good state is due, at the end of a request group: a window of
    /// events after the newest (none while frozen, or with the freeze off). A replay knows the groups' ends from
    /// the log, so it keeps the states the run kept; once per group, since a grown forest takes milliseconds to
    /// copy (one every 200 events halved a file replay's throughput on friedman_lea).
    pub(super) fn next_good(&self) -> Option<u64> {
        (self.enabled && self.quality.frozen.is_none()).then(|| self.good.back().map_or(0, |g| g.seq + self.window))
    }

    /// Ends learning again at the checkpoint: the good states taken must be the ones it lists.
    pub(super) fn finish_relearn(&mut self) {
        if let Some(rl) = self.relearn.take() {
            let took: Vec<u64> = self.good.iter().map(|g| g.seq).collect();
            if took != rl.expected {
                tracing::warn!(?took, expected = ?rl.expected, "the good states taken again differ from the checkpoint's");
            }
        }
    }

    /// Keeps a good state (three at most: a freeze goes back two to three windows).
    pub(super) fn keep(&mut self, good: Good) {
        if self.good.len() == 3 {
            self.good.pop_front();
        }
        self.good.push_back(good);
    }

    /// Drops the good states and the snapshot (a freeze, an adoption): learning the events after it again would
    /// no longer give the states kept.
    pub(super) fn clear(&mut self) {
        self.good.clear();
        if let Some((_, name)) = self.snapshot.take() {
            self.retired.push(self.dir.join(name));
        }
    }

    /// Whether the logged event `r`, learned again from the snapshot, ends a group where the run took a good state.
    fn good_again(&self, r: &Record) -> bool {
        r.mark.last && self.good.back().is_some_and(|g| r.seq >= g.seq + self.window)
    }
}

/// The input's verdict turned inside a request group, after its accepted record `after`.
pub(super) struct Turn {
    pub(super) after: usize,
    pub(super) seq: u64,
    /// A resume, with the linear model then (the good state it keeps); `None`: a freeze.
    pub(super) resume: Option<AdaptiveLinear>,
    pub(super) why: String,
}

/// An online state taken while the input was clean.
pub(super) struct Good {
    /// Sequence number of the event after which it was taken.
    pub(super) seq: u64,
    pub(super) model: AdaptiveLinear,
    pub(super) learners: Vec<OnlineLearner>,
}

/// The snapshot's models learning the logged events after it again, up to the checkpoint.
pub(super) struct Relearn {
    /// The snapshot's sequence number.
    pub(super) seq: u64,
    pub(super) model: AdaptiveLinear,
    pub(super) learners: Vec<OnlineLearner>,
    pub(super) stats: SpeedStats,
    /// The good states the checkpoint says the run kept.
    expected: Vec<u64>,
}

/// A new snapshot is written once the oldest good state is at least this many freeze windows past it (10,000
/// events with the defaults) and the learners' interval has passed (or once archiving would cut the log past it):
/// a busy stream writes a snapshot every few seconds instead of three good states at each checkpoint, and a restart
/// learns the events after it again (at most `speed.learner_checkpoint_events` or so).
pub(super) const SNAPSHOT_WINDOWS: u64 = 50;

/// The snapshot a checkpoint lists, ready to learn the events after it again; removes the snapshots' files it
/// does not list (left by a crash between writing one and the manifest). None when it cannot be read: a freeze
/// then goes back to a state taken after the restart.
pub(super) fn read_snapshot(state: &Path, generation: u64, record: Option<&FreezeRecord>) -> Result<Option<Relearn>> {
    let dir = snapshot::goods_dir(state);
    create_dir_synced(&dir)?;
    let listed = record.and_then(|r| r.snapshot).map(|seq| (seq, snapshot::good_name(generation, seq)));
    for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if listed.as_ref().is_none_or(|(_, name)| entry.file_name().to_string_lossy() != name.as_str()) {
            remove_if_present(&entry.path())?;
        }
    }
    let (Some((seq, name)), Some(record)) = (listed, record) else { return Ok(None) };
    match snapshot::read_good(state, &name) {
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

impl Learner {
    /// Takes the input's verdict after the event `last_seq` (at `ms`): freezes the online updates when the input
    /// went bad (back to the oldest good state kept), or resumes them once it is clean again. Whether it turned.
    pub(super) fn judge_input(&mut self, ms: i64) -> bool {
        let limits = &self.spec.speed.freeze;
        if !limits.enabled {
            return false;
        }
        let Some(freeze) = self.freeze.quality.judge(limits, self.intake.last_seq, ms) else { return false };
        if freeze {
            let why = self.freeze.quality.frozen.as_ref().map(|z| z.reason.clone()).unwrap_or_default();
            if let Some(model) = self.turn(self.intake.last_seq, None, &why) {
                self.learning.model = model;
            }
        } else {
            self.turn(self.intake.last_seq, Some(self.learning.model.clone()), "");
        }
        true
    }

    /// Turns the online updates after the event `seq`. A freeze (`resume` none) puts the other learners back to
    /// the oldest good state and returns its linear model; a resume keeps `resume` and the learners as they are
    /// now as a good state.
    pub(super) fn turn(&mut self, seq: u64, resume: Option<AdaptiveLinear>, why: &str) -> Option<AdaptiveLinear> {
        self.learning.need_write = true;
        match resume {
            None => {
                let good = self.freeze.good.pop_front();
                self.freeze.clear();
                tracing::warn!(seq, reason = %why, "bad input: online updates frozen, last good state restored");
                good.map(|g| {
                    self.learning.records.restore(g.learners);
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

    /// Keeps `model` and the other learners now as the good state after the event `seq`.
    pub(super) fn keep_good(&mut self, seq: u64, model: AdaptiveLinear) {
        let learners = self.learning.records.models();
        self.freeze.keep(Good { seq, model, learners });
    }

    /// At a restart, learns a logged event up to the checkpoint again from the snapshot, and takes a good state
    /// where the run took one.
    pub(super) fn relearn(&mut self, r: &Record) {
        let again = self.freeze.good_again(r);
        let Some(rl) = self.freeze.relearn.as_mut() else { return };
        if let Some(target) = &r.event.target {
            let encoder = &self.batch.artifact.encoder;
            self.learning.x.resize(encoder.dim(), 0.0);
            encoder.encode_row(&r.event, &mut self.learning.x);
            let _ =
                learn(&mut rl.model, &self.batch.artifact, &self.learning.x, target, &self.spec, &mut rl.stats, false);
            for l in &mut rl.learners {
                l.learn(&self.learning.x, target);
            }
        }
        if again {
            let good = Good { seq: r.seq, model: rl.model.clone(), learners: rl.learners.clone() };
            self.freeze.keep(good);
        }
    }

    /// At a restart, has the other learners learn a logged event between their file and the checkpoint again.
    pub(super) fn learners_catch_up(&mut self, r: &Record, learn: bool) {
        let Some(target) = &r.event.target else { return };
        let encoder = &self.batch.artifact.encoder;
        self.learning.x.resize(encoder.dim(), 0.0);
        encoder.encode_row(&r.event, &mut self.learning.x);
        self.learning.records.observe_learners(
            &self.learning.model.model.classes,
            &self.learning.x,
            target,
            r.seq,
            r.event.time,
            learn,
        );
        self.checkpoints.dirty = true;
    }
}
