//! The realtime view and the served speed side, and the view files a checkpoint lists.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lambda_core::spec::Spec;
use lambda_models::blend::Weights;
use lambda_models::model::LinearModel;
use lambda_stores::checkpoint::{self, RetrainStatus, SpeedModel, SpeedSide, SpeedStats, ViewFile};
use lambda_stores::realtime::Realtime;
use lambda_stores::registry::{now_millis, Published};
use lambda_stores::views::ViewTable;

use crate::Result;

use super::{remove_if_present, Learner};

/// The realtime view and the served speed side, and the view files the checkpoint lists.
pub(super) struct Views {
    /// What is served: the realtime view and the speed model.
    pub(super) side: Arc<SpeedSide>,
    /// Realtime generation: a new one at each adoption.
    pub(super) generation: u64,
    /// The view files of the checkpoint: a full one, then deltas.
    pub(super) files: Vec<ViewFile>,
    /// Whether the next checkpoint writes a full file.
    pub(super) need_full: bool,
    /// Files the checkpoint no longer lists, deleted once due (readers may still be on them).
    pub(super) retired: Vec<(i64, PathBuf)>,
}

/// Files dropped from a checkpoint stay this long for readers still on it.
pub(super) const RETIRE_AFTER_MS: i64 = 2_000;

pub(super) fn template(spec: &Spec, model: &LinearModel) -> ViewTable {
    ViewTable::new(spec).with_classes(&model.classes)
}

pub(super) fn side(generation: u64, batch: &Published, realtime: Realtime, model: SpeedModel) -> Arc<SpeedSide> {
    Arc::new(SpeedSide {
        generation,
        base_version: batch.manifest.version.clone(),
        base_watermark: batch.manifest.watermark,
        realtime,
        model: ArcSwap::from_pointee(model),
    })
}

impl Learner {
    /// Replaces the view files a compaction merged by its full file, unless the list moved on meanwhile.
    pub(super) fn took_compacted(
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
        let still = generation == self.views.generation
            && self.views.files.len() >= merged.len()
            && self.views.files.iter().zip(merged).all(|(a, b)| a.name == b.name);
        if !still {
            // Superseded; a full file of the same name the learner wrote meanwhile holds the same state and stays.
            if self.views.files.iter().all(|v| v.name != f.name) {
                remove_if_present(&dir.join(&f.name))?;
            }
            return Ok(());
        }
        tracing::debug!(files = merged.len(), bytes = f.bytes, seconds, "compacted realtime view files");
        let due = now_millis() + RETIRE_AFTER_MS;
        let rest = self.views.files.split_off(merged.len());
        for old in std::mem::replace(&mut self.views.files, vec![f]) {
            self.views.retired.push((due, dir.join(old.name)));
        }
        self.views.files.extend(rest);
        self.checkpoints.dirty = true;
        Ok(())
    }
}

/// The served speed model of a warm start, before any event: the batch model's, through `seq`.
pub(super) fn warm_start(model: LinearModel, seq: u64) -> SpeedModel {
    SpeedModel {
        model,
        updates: 0,
        seq,
        stats: SpeedStats::default(),
        learners: Vec::new(),
        windows: Arc::default(),
        weights: Arc::new(Weights::batch_only(Vec::new())),
        learner_models: Arc::default(),
        frozen: None,
        retrain: RetrainStatus::default(),
    }
}
