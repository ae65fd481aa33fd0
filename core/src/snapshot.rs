//! What the speed layer publishes for the serving layer: its incremental model and its realtime views, bucketed by
//! ingestion sequence so that a reader can take exactly the buckets after the batch watermark it holds.
//!
//! The speed layer writes a [`SpeedSnapshot`] at every checkpoint through a [`Publisher`] under `state/checkpoints`
//! (another process polls it); in one process it also swaps it into a [`Live`] slot that the serving layer reads.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::publish::Publisher;
use crate::registry::ModelArtifact;
use crate::views::{KeyView, ViewTable};

/// The in-process slot through which the speed layer hands its newest snapshot to the serving layer.
pub type Live = arc_swap::ArcSwapOption<SpeedSnapshot>;

/// Realtime views of a contiguous range of ingestion sequence numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// First sequence number covered.
    pub first_seq: u64,
    /// Last sequence number covered.
    pub last_seq: u64,
    /// Views of the events in the range.
    pub view: Arc<ViewTable>,
}

/// Counters of the speed layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedStats {
    /// Events accepted since the state was created.
    pub accepted: u64,
    /// Events rejected (sent to the dead-letter file).
    pub rejected: u64,
    /// Replays of an already accepted event id.
    pub duplicates: u64,
    /// Labelled events scored before learning (prequential).
    pub labelled: u64,
    /// Sum of the speed model's loss on them, each predicted before it was learned.
    pub speed_loss_sum: f64,
    /// Sum of the batch model's loss on the same events.
    pub batch_loss_sum: f64,
}

/// The speed layer's published state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedSnapshot {
    /// Batch model version the incremental model was warm-started from.
    pub base_version: String,
    /// Watermark of that batch model.
    pub base_watermark: u64,
    /// Highest ingestion sequence number applied.
    pub last_seq: u64,
    /// Highest sequence number archived into the master dataset.
    pub archived_through: u64,
    /// SGD updates applied since the warm start.
    pub updates: u64,
    /// The incremental model and its (batch-fitted) encoder.
    pub artifact: Arc<ModelArtifact>,
    /// Realtime buckets, oldest first; all after `base_watermark`.
    pub buckets: Vec<Bucket>,
    /// Counters.
    pub stats: SpeedStats,
}

impl SpeedSnapshot {
    /// The realtime view of `key` over the buckets strictly after `watermark`.
    pub fn key_view(&self, key: &str, watermark: u64) -> Option<KeyView> {
        let mut out: Option<KeyView> = None;
        for b in self.buckets.iter().filter(|b| b.first_seq > watermark) {
            if let Some(v) = b.view.keys.get(key) {
                match &mut out {
                    Some(o) => o.merge(v),
                    None => out = Some(v.clone()),
                }
            }
        }
        out
    }

    /// All realtime views after `watermark`, merged.
    pub fn realtime_after(&self, watermark: u64) -> ViewTable {
        let mut out = ViewTable::default();
        for b in self.buckets.iter().filter(|b| b.first_seq > watermark) {
            out.merge(&b.view);
        }
        out
    }
}

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The publisher of speed-layer checkpoints under `state`.
pub fn checkpoints(state: &Path) -> Publisher {
    Publisher::new(state.join("checkpoints"), "c")
}

/// Publishes a snapshot as a new checkpoint; keeps the newest few.
pub fn publish(state: &Path, snapshot: &SpeedSnapshot) -> Result<String> {
    let p = checkpoints(state);
    let bytes = serde_json::to_vec(snapshot).map_err(|e| Error::Data(e.to_string()))?;
    let version = p.publish(&[(SNAPSHOT_FILE, &bytes)])?;
    p.prune(3)?;
    Ok(version)
}

/// The current checkpoint's name, if any.
pub fn current(state: &Path) -> Result<Option<String>> {
    checkpoints(state).current()
}

/// Loads one checkpoint.
pub fn load(state: &Path, version: &str) -> Result<SpeedSnapshot> {
    let p = checkpoints(state);
    let bytes = p.read(version, SNAPSHOT_FILE)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Format { path: p.version_dir(version).join(SNAPSHOT_FILE), message: e.to_string() })
}

/// Loads the current checkpoint, if any.
pub fn load_current(state: &Path) -> Result<Option<(String, SpeedSnapshot)>> {
    match current(state)? {
        None => Ok(None),
        Some(v) => Ok(Some((v.clone(), load(state, &v)?))),
    }
}
