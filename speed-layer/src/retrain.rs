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

/// Why a retraining failed: the batch layer's own error, its causes kept.
pub type RetrainError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the batch pipeline for the speed layer.
pub trait Retrainer: Send + Sync {
    /// Trains on the events after `since_seq` (plus `speed.retrain.history_rows` before) within
    /// `speed.retrain.time_budget`, through the gate.
    fn retrain(&self, spec: &Spec, since_seq: u64) -> Result<Retrained, RetrainError>;
}

/// An error and its causes on one line, as the retraining status keeps it.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_retraining_keeps_every_cause_of_the_batch_layer_s_error() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e: RetrainError = Box::new(lambda_core::Error::Unreadable {
            what: "the manifest".into(),
            source: Box::new(lambda_core::Error::io("registry/v000002/model.json", io)),
        });
        let text = with_causes(&*e);
        assert!(text.starts_with("the manifest cannot be read"), "{text}");
        // The file and the system's answer, two causes down.
        assert!(text.contains("registry/v000002/model.json") && text.ends_with(": denied"), "{text}");
    }
}
