//! The realtime view and the served speed side, and the view files a checkpoint lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lambda_core::spec::Spec;
use lambda_models::blend::Weights;
use lambda_models::model::LinearModel;
use lambda_stores::checkpoint::{self, RetrainStatus, Served, SpeedModel, SpeedSide, SpeedStats, ViewFile, WeighedAt};
use lambda_stores::realtime::Realtime;
use lambda_stores::registry::Published;
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
    /// Where the view files are.
    dir: PathBuf,
}

impl Views {
    pub(super) fn new(state: &Path, side: Arc<SpeedSide>, generation: u64, files: Vec<ViewFile>) -> Views {
        let need_full = files.is_empty();
        Views { side, generation, files, need_full, dir: checkpoint::views_dir(state) }
    }

    /// The path of a view file.
    pub(super) fn path(&self, file: &ViewFile) -> PathBuf {
        self.dir.join(&file.name)
    }

    /// Replaces the view files a compaction merged by its full file, unless the list moved on meanwhile. The files
    /// replaced, when it did.
    fn took_compacted(
        &mut self,
        f: ViewFile,
        generation: u64,
        merged: &[ViewFile],
        seconds: f64,
    ) -> Result<Option<Vec<PathBuf>>> {
        let still = generation == self.generation
            && self.files.len() >= merged.len()
            && self.files.iter().zip(merged).all(|(a, b)| a.name == b.name);
        if !still {
            // Superseded; a full file of the same name the learner wrote meanwhile holds the same state and stays.
            if self.files.iter().all(|v| v.name != f.name) {
                remove_if_present(&self.dir.join(&f.name))?;
            }
            return Ok(None);
        }
        tracing::debug!(files = merged.len(), bytes = f.bytes, seconds, "compacted realtime view files");
        let rest = self.files.split_off(merged.len());
        let replaced = std::mem::replace(&mut self.files, vec![f]).iter().map(|old| self.path(old)).collect();
        self.files.extend(rest);
        Ok(Some(replaced))
    }
}

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
    /// Takes a compaction's full file in place of the view files it merged.
    pub(super) fn took_compacted(
        &mut self,
        r: Result<ViewFile>,
        generation: u64,
        merged: &[ViewFile],
        seconds: f64,
    ) -> Result<()> {
        match r {
            Ok(f) => {
                if let Some(replaced) = self.views.took_compacted(f, generation, merged, seconds)? {
                    replaced.into_iter().for_each(|path| self.checkpoints.retire(path));
                    self.checkpoints.dirty = true;
                }
            }
            Err(e) => tracing::error!(error = %e, "compacting realtime view files failed; the deltas stay"),
        }
        Ok(())
    }
}

/// The served speed model of a warm start, before any event: the batch model's, through `seq`.
pub(super) fn warm_start(model: LinearModel, seq: u64) -> SpeedModel {
    SpeedModel {
        model: model.clone(),
        updates: 0,
        seq,
        stats: SpeedStats::default(),
        windows: Arc::default(),
        served: Arc::new(Served {
            at: WeighedAt { seq, linear: model, updates: 0, weights: Weights::batch_only(Vec::new()) },
            learners: Vec::new(),
            statuses: Vec::new(),
        }),
        frozen: None,
        retrain: RetrainStatus::default(),
    }
}
