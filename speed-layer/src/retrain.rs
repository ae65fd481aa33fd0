//! Retraining on the fly: after a confirmed drift (ADWIN and Page-Hinkley both on the batch model's live errors),
//! the speed layer archives what it holds and runs the batch pipeline on the events since the drift window, in a
//! thread of its own, while ingest and serving go on. The result goes through the champion/challenger gate under
//! the registry's lock, and a published version is adopted as any other. One run at a time.
//!
//! The speed layer does not link the batch layer; whoever starts it hands it a [`Retrainer`] (the `lambda-ml`
//! binary hands it one that calls the batch layer).

use lambda_core::spec::Spec;

/// What a retraining made.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrained {
    /// The version it made.
    pub version: String,
    /// Whether the gate published it.
    pub published: bool,
    /// The gate's reason.
    pub reason: String,
}

/// Runs the batch pipeline for the speed layer.
pub trait Retrainer: Send + Sync {
    /// Trains on the events after `since_seq` (plus `speed.retrain.history_rows` before) within
    /// `speed.retrain.time_budget`, through the gate; an error as text.
    fn retrain(&self, spec: &Spec, since_seq: u64) -> Result<Retrained, String>;
}
