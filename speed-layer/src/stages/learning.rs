//! Learning: one prequential step of the linear model (predict, then update), and what the learners hold.

use std::sync::Arc;

use lambda_core::encoder::Encoder;
use lambda_core::schema::{Event, Target};
use lambda_core::spec::{LinearUpdate, Spec};
use lambda_models::model::{NonFinite, Prediction};
use lambda_models::online::{AdaptiveLinear, NagState};
use lambda_stores::checkpoint::{Checkpoint, LearnerFile, Served, SpeedStats, WeighedAt, WindowStatuses};
use lambda_stores::registry::{now_millis, ModelArtifact, Published};

use super::records::Records;
use crate::Result;

/// What serving answers with, as of the event of sequence `seq`: the linear model, the other learners, and the
/// weights their records give now.
pub(super) fn served(linear: &lambda_models::model::LinearModel, updates: u64, records: &Records, seq: u64) -> Served {
    Served {
        at: WeighedAt { seq, linear: linear.clone(), updates, weights: records.blend.weights.clone() },
        learners: records.models(),
        statuses: records.learner_statuses(),
    }
}

/// Learning: the incremental linear model, the other online learners with every model's prequential record, and
/// the online learners' file.
pub(super) struct Learning {
    pub(super) model: AdaptiveLinear,
    /// The other learners, the windows and the blend.
    pub(super) records: Records,
    /// What the windows said at the last refresh.
    pub(super) window_status: Arc<WindowStatuses>,
    /// What serving answers with: the models and the blend's weights, copied together.
    pub(super) served: Arc<Served>,
    /// Updates of the linear model since the warm start.
    pub(super) updates: u64,
    pub(super) stats: SpeedStats,
    /// The encoded row, reused.
    pub(super) x: Vec<f64>,
    /// The online learners' file the last checkpoint lists (they are exact through its sequence number).
    pub(super) file: Option<LearnerFile>,
    /// When the learners were last written (milliseconds since the Unix epoch).
    pub(super) written_ms: i64,
    /// Whether the next checkpoint must write the learners: they changed other than by learning the logged events
    /// in order (a start, an adoption, a freeze's restore), or learning changes its kind (a freeze, a resume).
    pub(super) need_write: bool,
}

impl Learning {
    pub(super) fn new(
        model: AdaptiveLinear,
        records: Records,
        updates: u64,
        stats: SpeedStats,
        file: Option<LearnerFile>,
    ) -> Learning {
        let first = Arc::new(served(&model.model, updates, &records, 0));
        Learning {
            model,
            records,
            window_status: Arc::default(),
            served: first,
            updates,
            stats,
            x: Vec::new(),
            file,
            written_ms: now_millis(),
            need_write: false,
        }
    }

    /// Copies the models and the blend's weights for serving, as of the event of sequence `seq`.
    pub(super) fn copy_served(&mut self, seq: u64) {
        self.served = Arc::new(served(&self.model.model, self.updates, &self.records, seq));
    }

    /// Checks an event against the batch encoder's ranges and the model: a target in range, a class the model
    /// has (unless `dataset.allow_new_classes`).
    pub(super) fn check(&self, spec: &Spec, encoder: &Encoder, event: &Event) -> std::result::Result<(), String> {
        encoder.check_ranges(event).map_err(|r| r.to_string())?;
        let field = &spec.dataset.target;
        match &event.target {
            Some(t @ Target::Value(_)) => encoder.check_target(field, t).map_err(|r| r.to_string()),
            Some(Target::Class(c)) if self.model.model.class_index(c).is_none() && !spec.dataset.allow_new_classes => {
                Err(format!(
                    "field `{field}`: class {c:?} is not one of the model's classes {:?} (set \
                     `dataset.allow_new_classes` to accept new classes)",
                    self.model.model.classes
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Why a labelled event cannot be learned.
pub(super) enum Unlearnable {
    /// The model has no output for its class; allowed when the spec says so.
    UnknownClass,
    /// The loss or the update would not be finite.
    NonFinite(String),
}

/// One update of the incremental model, by the spec's rule. Nothing changes on `Err`.
pub(super) fn update(
    model: &mut AdaptiveLinear,
    x: &[f64],
    target: &Target,
    spec: &Spec,
    batch: &ModelArtifact,
) -> std::result::Result<bool, NonFinite> {
    let (rate, l2) = (spec.speed.step_size(), spec.speed.l2);
    match spec.speed.update {
        // NAG's steps are free of the inputs' scales but move a prediction by about the step size whatever the
        // target's: in the target's deviations, a value in dollars adapts as fast as one in thousands of dollars.
        LinearUpdate::Adaptive => {
            model.learn(x, target, rate * lambda_models::online::target_scale(&batch.encoder), l2)
        }
        LinearUpdate::Sgd => model.model.sgd_update_checked(x, target, rate, l2),
    }
}

/// Predicts (speed and batch model), then takes one update step: prequential evaluation. Nothing changes on `Err`.
pub(super) fn learn(
    model: &mut AdaptiveLinear,
    batch: &ModelArtifact,
    x: &[f64],
    target: &Target,
    spec: &Spec,
    stats: &mut SpeedStats,
    frozen: bool,
) -> std::result::Result<(bool, Prediction, Prediction), Unlearnable> {
    let ps = model.predict(x);
    let pb = batch.model.predict(x);
    let (Some(ls), Some(lb)) = (model.model.loss(&ps, target), batch.model.loss(&pb, target)) else {
        return Err(Unlearnable::UnknownClass);
    };
    if !ls.is_finite() || !lb.is_finite() {
        return Err(Unlearnable::NonFinite(format!("its loss is not finite (speed {ls}, batch {lb})")));
    }
    let sums = (stats.speed_loss_sum + ls, stats.batch_loss_sum + lb);
    if !sums.0.is_finite() || !sums.1.is_finite() {
        return Err(Unlearnable::NonFinite("the summed loss would overflow".into()));
    }
    // Frozen: scored (the windows tell when the input is clean again), not learned.
    let learned = if frozen { Ok(false) } else { update(model, x, target, spec, batch) };
    match learned {
        Ok(updated) => {
            stats.labelled += 1;
            (stats.speed_loss_sum, stats.batch_loss_sum) = sums;
            Ok((updated, ps, pb))
        }
        Err(e) => Err(Unlearnable::NonFinite(e.to_string())),
    }
}

/// The incremental model a checkpoint holds, with its adaptive state; a version-1 checkpoint has none, so it
/// starts from the batch model's warm-start state at the checkpoint's weights.
pub(super) fn resume_model(spec: &Spec, batch: &Published, c: &Checkpoint) -> Result<AdaptiveLinear> {
    let state = c.online.clone().unwrap_or_else(|| {
        NagState::warm(
            &c.model,
            batch.artifact.encoder.scales(),
            batch.artifact.online_prior.as_ref(),
            spec.speed.prior_events as f64,
        )
    });
    let model = AdaptiveLinear { model: c.model.clone(), state };
    model.validate().map_err(|e| lambda_core::Error::Unreadable {
        what: "the checkpoint's incremental model".into(),
        source: Box::new(e),
    })?;
    Ok(model)
}

/// The speed and the batch model's predictions of an accepted labelled event, made before it was learned.
pub(super) type Predicted = Option<(Prediction, Prediction)>;
