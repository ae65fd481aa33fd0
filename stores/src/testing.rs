//! Fixtures the tests of every crate share: a batch artifact of a linear model and its manifest, as a batch run
//! would publish them. Not part of the API.

use lambda_core::encoder::Encoder;
use lambda_core::spec::Spec;
use lambda_models::model::{LinearModel, Model};

use crate::registry::{now_rfc3339, Manifest, ModelArtifact, FORMAT_VERSION};

/// A batch artifact of a linear model on `encoder`, without online parts.
pub fn linear_artifact(spec: &Spec, encoder: Encoder, model: LinearModel) -> ModelArtifact {
    ModelArtifact {
        format_version: FORMAT_VERSION,
        schema_hash: spec.schema_hash(),
        encoder,
        model: Model::Linear(model),
        online: None,
        online_prior: None,
        online_bayes: None,
    }
}

/// The manifest of a run that trained on `training_rows` rows through the event `watermark` (the registry gives
/// it its version when it publishes).
pub fn manifest(spec: &Spec, watermark: u64, training_rows: u64) -> Manifest {
    Manifest {
        version: String::new(),
        pipeline: spec.name.clone(),
        created: now_rfc3339(),
        watermark,
        training_rows,
        holdout_rows: 0,
        metrics: Default::default(),
        schema_hash: spec.schema_hash(),
        algorithm: "test".into(),
        leaderboard: vec![],
        gate: None,
        search: None,
        online_rows: None,
        trained_since: None,
    }
}
