//! The speed layer's models besides the linear one, and every model's prequential record: the other online
//! learners, the windows of the linear and the batch model, and the live blend of them all ([`lambda_models::blend`]).
//! Each accepted labelled event goes through [`Records::observe`] in ingestion order, at ingest, in a replay and
//! at an adoption alike, so that the three end in the same state.

use lambda_core::schema::Target;
use lambda_core::spec::Spec;
use lambda_models::blend::{component_names, Blend};
use lambda_models::model::{error, Prediction};
use lambda_models::online::{OnlineLearner, Tracked};
use lambda_models::prequential::Window;
use lambda_stores::checkpoint::{Checkpoint, LearnerStatus, WindowStatuses};
use lambda_stores::registry::ModelArtifact;

/// The other learners, the windows and the blend.
#[derive(Debug, Clone)]
pub struct Records {
    /// The other online learners (`speed.learners`), learned from every accepted labelled event in order.
    pub extra: Vec<Tracked>,
    /// The speed (linear) and the batch model's windowed records, on the same events.
    pub windows: [Window; 2],
    /// The blend of the batch model, the linear model and the other learners.
    pub blend: Blend,
}

impl Records {
    /// Everything started afresh for `batch`.
    pub fn new(spec: &Spec, batch: &ModelArtifact) -> Records {
        Records::resume(spec, batch, None)
    }

    /// What a checkpoint kept, where it fits `batch` and the spec; the rest afresh.
    pub fn resume(spec: &Spec, batch: &ModelArtifact, c: Option<&Checkpoint>) -> Records {
        let extra = learners_for(spec, batch, c.and_then(|c| c.learners.as_ref()));
        let windows = c.and_then(|c| c.windows.clone()).unwrap_or_else(|| [window(spec, batch), window(spec, batch)]);
        let names = component_names(extra.iter().map(|t| t.learner.name()));
        let blend = match c.and_then(|c| c.blend.clone()) {
            Some(b) if b.weights.names == names => b,
            _ => Blend::new(names, window(spec, batch)),
        };
        Records { extra, windows, blend }
    }

    /// Scores one labelled event in every model, then has the other learners learn it (unless `learn` is false:
    /// updates are frozen). `predicted` holds the linear and the batch model's predictions made before the linear
    /// model learned it (none when it could not).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        classes: &[String],
        x: &[f64],
        predicted: Option<(&Prediction, &Prediction)>,
        target: &Target,
        seq: u64,
        ms: i64,
        learn: bool,
    ) {
        let others: Vec<Prediction> = self.extra.iter().map(|t| t.learner.predict(x)).collect();
        if let Some((ps, pb)) = predicted {
            let all: Vec<&Prediction> = [pb, ps].into_iter().chain(&others).collect();
            self.blend.record(&all, target, seq, ms);
            self.windows[0].record(ps, target, seq, ms);
            self.windows[1].record(pb, target, seq, ms);
        }
        self.learners_take(classes, x, &others, target, seq, ms, learn);
        if predicted.is_some() {
            let windows: Vec<&Window> =
                [&self.windows[1], &self.windows[0]].into_iter().chain(self.extra.iter().map(|t| &t.window)).collect();
            self.blend.reweigh_if_due(&windows);
        }
    }

    /// What [`Records::observe`] does to the other learners alone: a restart brings the learners of their file up
    /// to the checkpoint, whose windows and blend already hold these events.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_learners(&mut self, classes: &[String], x: &[f64], target: &Target, seq: u64, ms: i64, learn: bool) {
        let others: Vec<Prediction> = self.extra.iter().map(|t| t.learner.predict(x)).collect();
        self.learners_take(classes, x, &others, target, seq, ms, learn);
    }

    /// The other learners' windows record their predictions `others`, then the learners learn (unless frozen).
    #[allow(clippy::too_many_arguments)]
    fn learners_take(
        &mut self,
        classes: &[String],
        x: &[f64],
        others: &[Prediction],
        target: &Target,
        seq: u64,
        ms: i64,
        learn: bool,
    ) {
        for (t, p) in self.extra.iter_mut().zip(others) {
            if learn {
                t.observe_scored(classes, x, p, target, seq, ms);
            } else {
                t.window.record(p, target, seq, ms);
            }
        }
    }

    /// Puts back the other learners' models of a good state (in the same order).
    pub fn restore(&mut self, models: Vec<OnlineLearner>) {
        for (t, m) in self.extra.iter_mut().zip(models) {
            t.learner = m;
        }
    }

    /// What the windows say now.
    pub fn statuses(&self) -> WindowStatuses {
        WindowStatuses::of(Some(&self.windows), Some(&self.extra), Some(&self.blend))
    }

    /// The other learners' records.
    pub fn learner_statuses(&self) -> Vec<LearnerStatus> {
        self.extra.iter().map(LearnerStatus::of).collect()
    }

    /// A copy of the other learners' models.
    pub fn models(&self) -> Vec<OnlineLearner> {
        self.extra.iter().map(|t| t.learner.clone()).collect()
    }
}

/// The spec's online learners, each taken from `kept` when it holds one of that name that fits, else new.
impl Records {
    /// The speed model's error less the batch model's on one event ([`lambda_models::quality`]): mistake minus
    /// mistake, or the difference of absolute errors over the windows' error scale.
    pub fn gap(&self, speed: &Prediction, batch: &Prediction, target: &Target) -> Option<f64> {
        let w = &self.windows[0];
        let scale = if w.classes.is_empty() { w.error_scale } else { 1.0 };
        Some((error(&w.classes, speed, target)? - error(&w.classes, batch, target)?) / scale)
    }

    /// Has the learners that start from nothing learn a row of history (not scored: the windows and the blend
    /// are of the stream). Naive Bayes is left out: it already holds history's exact statistics.
    pub fn learn_history(&mut self, x: &[f64], target: &Target) {
        for t in &mut self.extra {
            if !matches!(t.learner, OnlineLearner::NaiveBayes(_)) {
                t.learner.learn(x, target);
            }
        }
    }
}

fn learners_for(spec: &Spec, batch: &ModelArtifact, kept: Option<&Vec<Tracked>>) -> Vec<Tracked> {
    let model = batch.speed_start();
    spec.speed
        .learners
        .iter()
        .filter_map(|name| {
            let found = kept.and_then(|k| k.iter().find(|t| t.learner.name() == name));
            match found {
                Some(t) if t.learner.validate(&model.classes, model.dim).is_ok() => Some(t.clone()),
                _ => OnlineLearner::new(name, &model.classes, &batch.encoder, batch.online_bayes.as_ref())
                    .map(|l| Tracked::new(l, window(spec, batch))),
            }
        })
        .collect()
}

/// An empty window for a model of `batch`.
fn window(spec: &Spec, batch: &ModelArtifact) -> Window {
    Window::new(spec.speed.window, batch.speed_start().classes.clone(), target_std(batch))
}

/// The history's deviation of a regression target (1 for classes).
fn target_std(batch: &ModelArtifact) -> f64 {
    batch.encoder.target.map_or(1.0, |t| t.std)
}
