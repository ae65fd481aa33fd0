//! Online learners of the speed layer.
//!
//! [`AdaptiveLinear`] updates a [`LinearModel`] by normalized adaptive gradient descent, NAG (Ross, Mineiro and
//! Langford, "Normalized Online Learning", UAI 2013, arXiv:1305.6646, Algorithm 2), the update behind Vowpal
//! Wabbit's default learner. Per input it keeps the largest absolute value seen, `s_i`, and per weight the sum of
//! its squared gradients, `G_i`; over all events their count `t` and `N = Σ_t Σ_i x_ti² / s_i²`. A weight whose
//! input exceeds its scale is first shrunk by `s_i / |x_i|`; then each weight steps by
//! `η √(t / N) g_i / (s_i √G_i)`. The steps do not depend on the scale of any feature, so one step size (`η`, 0.5 by
//! default as in Vowpal Wabbit) serves every data set, and a feature recorded in other units learns the same.
//!
//! Warm start: the weights are the batch model's, the scales are the encoder's history ranges (so history's values
//! never count as a scale change), and `G`, `N` and `t` are what the batch model's own gradients on its training
//! rows ([`GradientPrior`]) give for `prior_events` of them: the online steps start as small as if the batch model
//! had been learned online from that many events.

use serde::{Deserialize, Serialize};

use crate::hoeffding::{
    AdaptiveRandomForest, AdaptiveSettings, ForestSettings, HoeffdingAdaptiveTree, HoeffdingTree, TreeSettings,
};
use crate::model::{LinearModel, NonFinite, Prediction};
use crate::online_bayes::{BayesStats, OnlineBayes};
use crate::prequential::Window;
use crate::tracking::TrackingLinear;
use lambda_core::encoder::Encoder;
use lambda_core::error::{Error, Result};
pub use lambda_core::names::{CLASSIFIERS_ONLY, LEARNERS};
use lambda_core::schema::Target;

/// Sums of the adaptive update's statistics over training rows, at a fitted model's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientPrior {
    /// Rows summed.
    pub rows: u64,
    /// Sum of squared gradients per weight (`outputs × dim`, row-major), then per intercept.
    pub grad_sq: Vec<f64>,
    /// Sum of `Σ_i x_i² / s_i²` (the intercept's constant input counts 1).
    pub norm: f64,
}

impl GradientPrior {
    /// Nothing summed yet, for `model`.
    pub fn new(model: &LinearModel) -> GradientPrior {
        GradientPrior { rows: 0, grad_sq: vec![0.0; model.outputs() * (model.dim + 1)], norm: 0.0 }
    }

    /// Adds one encoded row and its target; rows whose label the model does not know are skipped.
    pub fn add(&mut self, model: &LinearModel, scales: &[f64], x: &[f64], target: &Target) {
        let Some(g) = model.score_gradients(x, target) else { return };
        let (d, outs) = (model.dim, g.len());
        for (k, gk) in g.iter().enumerate() {
            for (sq, xi) in self.grad_sq[k * d..(k + 1) * d].iter_mut().zip(x) {
                *sq += (gk * xi) * (gk * xi);
            }
            self.grad_sq[outs * d + k] += gk * gk;
        }
        self.norm += 1.0 + x.iter().zip(scales).filter(|(_, s)| **s > 0.0).map(|(v, s)| (v / s) * (v / s)).sum::<f64>();
        self.rows += 1;
    }
}

/// The state NAG keeps beside a linear model's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NagState {
    /// Largest absolute value seen per input (`s_i`).
    pub scale: Vec<f64>,
    /// Sum of squared gradients per weight (`outputs × dim`, row-major), then per intercept (`G_i`).
    pub grad_sq: Vec<f64>,
    /// `N`: the sum over events of `Σ_i x_i² / s_i²`, the intercept's input counting 1.
    pub norm: f64,
    /// `t`: events learned, the prior's included.
    pub seen: f64,
}

impl NagState {
    /// The state for `model` with input scales `scales` and, with a prior, as if `prior_events` of its rows had been
    /// learned (all of them when it has fewer).
    pub fn warm(model: &LinearModel, scales: Vec<f64>, prior: Option<&GradientPrior>, prior_events: f64) -> NagState {
        let size = model.outputs() * (model.dim + 1);
        let (grad_sq, norm, seen) = match prior {
            Some(p) if p.rows > 0 && p.grad_sq.len() == size => {
                let seen = prior_events.max(0.0).min(p.rows as f64);
                let f = seen / p.rows as f64;
                (p.grad_sq.iter().map(|g| g * f).collect(), p.norm * f, seen)
            }
            _ => (vec![0.0; size], 0.0, 0.0),
        };
        NagState { scale: scales, grad_sq, norm, seen }
    }
}

/// A linear model learned online by NAG (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveLinear {
    /// The model.
    pub model: LinearModel,
    /// What NAG keeps beside it.
    pub state: NagState,
}

impl AdaptiveLinear {
    /// Starts from `model`: see [`NagState::warm`].
    pub fn warm(
        model: LinearModel,
        scales: Vec<f64>,
        prior: Option<&GradientPrior>,
        prior_events: f64,
    ) -> AdaptiveLinear {
        let state = NagState::warm(&model, scales, prior, prior_events);
        AdaptiveLinear { model, state }
    }

    /// Checks that the stored shapes agree and every number is finite and in range, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let d = self.model.dim;
        if self.state.scale.len() != d || self.state.grad_sq.len() != self.model.outputs() * (d + 1) {
            return Err(Error::InvalidModel(format!(
                "adaptive state has {} scales and {} gradient sums for a model of {} inputs and {} outputs",
                self.state.scale.len(),
                self.state.grad_sq.len(),
                d,
                self.model.outputs()
            )));
        }
        let fine = |v: &f64| v.is_finite() && *v >= 0.0;
        if !(self.state.scale.iter().all(fine)
            && self.state.grad_sq.iter().all(fine)
            && fine(&self.state.norm)
            && fine(&self.state.seen))
        {
            return Err(Error::InvalidModel("adaptive state holds a negative or non-finite number".into()));
        }
        Ok(())
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        self.model.predict(x)
    }

    /// One NAG step on (`x`, `target`) with step size `eta` and L2 penalty `l2` (added to each weight's gradient).
    /// `Ok(false)` when the label is unknown to the model; `Err` (nothing changed) when the step would leave a number
    /// that is not finite.
    pub fn learn(&mut self, x: &[f64], target: &Target, eta: f64, l2: f64) -> std::result::Result<bool, NonFinite> {
        let d = self.model.dim;
        // The shrink factor of each input whose value exceeds its scale (line 6 of the algorithm).
        let shrink = |i: usize| {
            let (a, s) = (x[i].abs(), self.state.scale[i]);
            if a > s && s > 0.0 {
                s / a
            } else {
                1.0
            }
        };
        let new_scale = |i: usize| self.state.scale[i].max(x[i].abs());
        // Scores at the shrunk weights: w_i * shrink_i * x_i.
        let shrunk_x: Vec<f64> = (0..d).map(|i| x[i] * shrink(i)).collect();
        let mut scores = Vec::with_capacity(self.model.outputs());
        self.model.scores(&shrunk_x, &mut scores);
        let Some(g) = self.model.output_gradients(scores, target) else {
            return Ok(false);
        };
        let outs = g.len();
        let gain = (0..d).filter(|&i| new_scale(i) > 0.0).map(|i| (x[i] / new_scale(i)).powi(2)).sum::<f64>();
        let norm = self.state.norm + 1.0 + gain;
        let seen = self.state.seen + 1.0;
        let rate = eta * (seen / norm).sqrt();
        if !g.iter().all(|v| v.is_finite()) || !norm.is_finite() || !rate.is_finite() {
            return Err(NonFinite);
        }
        // Each weight's gradient, new gradient sum and new value; `None` for a weight left alone (an input never
        // seen non-zero).
        let step = |k: usize, i: usize| -> Option<(f64, f64)> {
            let s = new_scale(i);
            if s <= 0.0 {
                return None;
            }
            let w = self.model.weights[k * d + i] * shrink(i);
            let gi = g[k] * x[i] + l2 * w;
            let sq = self.state.grad_sq[k * d + i] + gi * gi;
            let next = if sq > 0.0 { w - rate * gi / (s * sq.sqrt()) } else { w };
            Some((sq, next))
        };
        let bias_step = |k: usize| {
            let sq = self.state.grad_sq[outs * d + k] + g[k] * g[k];
            let next = if sq > 0.0 { self.model.bias[k] - rate * g[k] / sq.sqrt() } else { self.model.bias[k] };
            (sq, next)
        };
        // Check the whole step first, so that a refused one changes nothing.
        for k in 0..outs {
            let (sq, b) = bias_step(k);
            if !sq.is_finite() || !b.is_finite() {
                return Err(NonFinite);
            }
            for i in 0..d {
                if let Some((sq, w)) = step(k, i) {
                    if !sq.is_finite() || !w.is_finite() {
                        return Err(NonFinite);
                    }
                }
            }
        }
        let mut updated = Vec::with_capacity(outs * (d + 1));
        for k in 0..outs {
            for i in 0..d {
                updated.push(step(k, i));
            }
        }
        let biases: Vec<(f64, f64)> = (0..outs).map(bias_step).collect();
        for (j, u) in updated.into_iter().enumerate() {
            if let Some((sq, w)) = u {
                self.state.grad_sq[j] = sq;
                self.model.weights[j] = w;
            }
        }
        for (k, (sq, b)) in biases.into_iter().enumerate() {
            self.state.grad_sq[outs * d + k] = sq;
            self.model.bias[k] = b;
        }
        let scales: Vec<f64> = (0..d).map(new_scale).collect();
        self.state.scale = scales;
        self.state.norm = norm;
        self.state.seen = seen;
        Ok(true)
    }
}

/// The deviation of history's target for a regression (1 for classes, or a target without spread): what NAG's step
/// size is multiplied by, so that a linear model adapts at the same pace whatever the target's unit.
pub fn target_scale(encoder: &Encoder) -> f64 {
    encoder.target.map(|t| t.std).filter(|s| s.is_finite() && *s > 0.0).unwrap_or(1.0)
}

/// A learner of the speed layer beside its linear model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OnlineLearner {
    /// A Hoeffding tree ([`crate::hoeffding`]), learned from the stream alone.
    HoeffdingTree(HoeffdingTree),
    /// A Hoeffding adaptive tree ([`crate::hoeffding::adaptive`]), boxed: it is larger than the other variants.
    HoeffdingAdaptiveTree(Box<HoeffdingAdaptiveTree>),
    /// Naive Bayes ([`crate::online_bayes`]), warm-started from history's statistics when the batch layer has them.
    NaiveBayes(OnlineBayes),
    /// An adaptive random forest ([`crate::hoeffding::forest`]), boxed as the adaptive tree.
    AdaptiveRandomForest(Box<AdaptiveRandomForest>),
    /// A linear model whose statistics forget ([`crate::tracking`]), learned from history's latest rows then the
    /// stream. Last, so that learners' files written before it read as they did.
    TrackingLinear(TrackingLinear),
}

impl OnlineLearner {
    /// A learner by its name in [`LEARNERS`], for `encoder`'s vectors and `classes` (empty for regression). Naive
    /// Bayes starts from `history` (the batch layer's statistics, [`lambda_stores::registry::ModelArtifact::online_bayes`])
    /// when given, and is `None` for regression.
    pub fn new(
        name: &str,
        classes: &[String],
        encoder: &Encoder,
        history: Option<&BayesStats>,
    ) -> Option<OnlineLearner> {
        match name {
            "hoeffding_tree" => Some(OnlineLearner::HoeffdingTree(HoeffdingTree::new(
                classes.to_vec(),
                encoder.dim(),
                TreeSettings::default(),
            ))),
            "naive_bayes" if !classes.is_empty() => {
                Some(OnlineLearner::NaiveBayes(OnlineBayes::new(classes.to_vec(), encoder, history)))
            }
            "hoeffding_adaptive_tree" => Some(OnlineLearner::HoeffdingAdaptiveTree(Box::new(
                HoeffdingAdaptiveTree::new(classes.to_vec(), encoder.dim(), AdaptiveSettings::default()),
            ))),
            "adaptive_random_forest" => AdaptiveRandomForest::over_features(
                classes.to_vec(),
                encoder.feature_inputs(),
                ForestSettings::default(),
            )
            .ok()
            .map(|f| OnlineLearner::AdaptiveRandomForest(Box::new(f))),
            "tracking_linear" => Some(OnlineLearner::TrackingLinear(TrackingLinear::new(classes, encoder))),
            _ => None,
        }
    }

    /// Its name in [`LEARNERS`].
    pub fn name(&self) -> &'static str {
        match self {
            OnlineLearner::HoeffdingTree(_) => "hoeffding_tree",
            OnlineLearner::HoeffdingAdaptiveTree(_) => "hoeffding_adaptive_tree",
            OnlineLearner::NaiveBayes(_) => "naive_bayes",
            OnlineLearner::AdaptiveRandomForest(_) => "adaptive_random_forest",
            OnlineLearner::TrackingLinear(_) => "tracking_linear",
        }
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        match self {
            OnlineLearner::HoeffdingTree(t) => t.predict(x),
            OnlineLearner::HoeffdingAdaptiveTree(t) => t.predict(x),
            OnlineLearner::NaiveBayes(b) => b.predict(x),
            OnlineLearner::AdaptiveRandomForest(f) => f.predict(x),
            OnlineLearner::TrackingLinear(l) => l.predict(x),
        }
    }

    /// Learns one labelled vector; `false` when it could not (nothing changed).
    pub fn learn(&mut self, x: &[f64], target: &Target) -> bool {
        match self {
            OnlineLearner::HoeffdingTree(t) => t.learn(x, target),
            OnlineLearner::HoeffdingAdaptiveTree(t) => t.learn(x, target),
            OnlineLearner::NaiveBayes(b) => b.learn(x, target),
            OnlineLearner::AdaptiveRandomForest(f) => f.learn(x, target),
            OnlineLearner::TrackingLinear(l) => l.learn(x, target),
        }
    }

    /// Checks the stored shapes, as after loading from disk.
    pub fn validate(&self, classes: &[String], dim: usize) -> Result<()> {
        let (own_classes, own_dim) = match self {
            OnlineLearner::HoeffdingTree(t) => (&t.classes, t.dim),
            OnlineLearner::HoeffdingAdaptiveTree(t) => (&t.classes, t.dim),
            OnlineLearner::NaiveBayes(b) => (&b.classes, b.dim),
            OnlineLearner::AdaptiveRandomForest(f) => (&f.classes, f.dim),
            OnlineLearner::TrackingLinear(l) => (&l.linear.model.classes, l.linear.model.dim),
        };
        if own_classes != classes || own_dim != dim {
            return Err(Error::InvalidModel(format!(
                "a {} learner of {own_dim} inputs and classes {own_classes:?} for a model of {dim} and {classes:?}",
                self.name()
            )));
        }
        match self {
            OnlineLearner::HoeffdingTree(t) => t.validate(),
            OnlineLearner::HoeffdingAdaptiveTree(t) => t.validate(),
            OnlineLearner::NaiveBayes(b) => b.validate(),
            OnlineLearner::AdaptiveRandomForest(f) => f.validate(),
            OnlineLearner::TrackingLinear(l) => l.validate(),
        }
    }

    /// A short description of its size (for status pages).
    pub fn describe(&self) -> String {
        match self {
            OnlineLearner::HoeffdingTree(t) => format!("{} leaves, depth {}", t.leaves(), t.depth()),
            OnlineLearner::HoeffdingAdaptiveTree(t) => {
                let (_, switched, _) = t.history();
                format!(
                    "{} leaves, depth {}, {} alternates ({} leaves), {switched} subtrees replaced",
                    t.leaves(),
                    t.depth(),
                    t.alternates(),
                    t.all_leaves() - t.leaves()
                )
            }
            OnlineLearner::NaiveBayes(b) => format!("{} events learned", b.events()),
            OnlineLearner::TrackingLinear(l) => {
                format!("linear, statistics over the latest {} events", l.horizon)
            }
            OnlineLearner::AdaptiveRandomForest(f) => {
                let (warnings, replaced) = f.history();
                format!(
                    "{} trees, {} leaves, depth {}, {} background trees ({} leaves), {warnings} warnings, {replaced} \
                     trees replaced",
                    f.settings.n_models,
                    f.leaves(),
                    f.depth(),
                    f.backgrounds(),
                    f.all_leaves() - f.leaves()
                )
            }
        }
    }
}

/// An online learner with its prequential record: every labelled event is scored before it is learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    /// The learner.
    pub learner: OnlineLearner,
    /// Labelled events scored.
    pub labelled: u64,
    /// Sum of their losses (log loss, or squared error).
    pub loss_sum: f64,
    /// Its latest events' record and its change detectors.
    pub window: Window,
    // Last, so that a record written before it ends early and is refused rather than misread.
    /// Of the scored events, its mistakes (classes) or summed absolute error (values).
    pub errors: f64,
}

impl Tracked {
    /// A learner that has seen nothing, with an empty window.
    pub fn new(learner: OnlineLearner, window: Window) -> Tracked {
        Tracked { learner, labelled: 0, loss_sum: 0.0, window, errors: 0.0 }
    }

    /// Scores the event (sequence `seq`, event time `ms`), then learns it. A loss that is not finite (or would
    /// overflow the sum) is not counted.
    pub fn observe(&mut self, classes: &[String], x: &[f64], target: &Target, seq: u64, ms: i64) {
        let p = self.learner.predict(x);
        self.observe_scored(classes, x, &p, target, seq, ms);
    }

    /// [`Tracked::observe`] with the learner's prediction of `x` already made.
    pub fn observe_scored(
        &mut self,
        classes: &[String],
        x: &[f64],
        p: &Prediction,
        target: &Target,
        seq: u64,
        ms: i64,
    ) {
        let scored = crate::model::loss(classes, p, target).zip(crate::model::error(classes, p, target));
        if let Some((l, error)) = scored {
            if (self.loss_sum + l).is_finite() && (self.errors + error).is_finite() {
                self.loss_sum += l;
                self.errors += error;
                self.labelled += 1;
            }
        }
        self.window.record(p, target, seq, ms);
        self.learner.learn(x, target);
    }

    /// Mean prequential loss, once it has scored an event.
    pub fn mean_loss(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.loss_sum / self.labelled as f64)
    }

    /// Prequential accuracy (classes) or mean absolute error (values), once it has scored an event.
    pub fn mean_error(&self) -> Option<f64> {
        let n = self.labelled as f64;
        (self.labelled > 0)
            .then(|| if self.window.classes.is_empty() { self.errors / n } else { 1.0 - self.errors / n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Family;

    /// A deterministic stream of a logistic concept over three inputs of very different scales.
    fn stream(n: usize, seed: u64) -> Vec<(Vec<f64>, Target)> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let x = vec![next() * 2.0 - 1.0, next() * 2.0 - 1.0, if next() < 0.3 { 1.0 } else { 0.0 }];
                let z = 3.0 * x[0] - 2.0 * x[1] + 1.5 * x[2] - 0.5;
                let p = 1.0 / (1.0 + (-z).exp());
                let label = if next() < p { "yes" } else { "no" };
                (x, Target::Class(label.into()))
            })
            .collect()
    }

    fn cold(dim: usize) -> AdaptiveLinear {
        let model = LinearModel::zeros(Family::Logistic, vec!["no".into(), "yes".into()], dim);
        AdaptiveLinear::warm(model, vec![0.0; dim], None, 0.0)
    }

    fn mean_loss(m: &LinearModel, data: &[(Vec<f64>, Target)]) -> f64 {
        data.iter().map(|(x, y)| m.loss(&m.predict(x), y).unwrap()).sum::<f64>() / data.len() as f64
    }

    #[test]
    fn naive_bayes_is_a_classifier_only_and_starts_from_the_statistics_it_is_given() {
        let encoder = lambda_core::encoder::Encoder {
            features: vec![lambda_core::encoder::FeatureEncoder::Boolean { name: "b".into() }],
            target: None,
        };
        assert!(OnlineLearner::new("naive_bayes", &[], &encoder, None).is_none());
        assert!(OnlineLearner::new("hoeffding_tree", &[], &encoder, None).is_some());
        let classes: Vec<String> = vec!["no".into(), "yes".into()];
        let mut cold = OnlineLearner::new("naive_bayes", &classes, &encoder, None).unwrap();
        assert!(cold.learn(&[1.0, 0.0], &Target::Class("yes".into())));
        assert!(cold.learn(&[0.0, 0.0], &Target::Class("no".into())));
        let OnlineLearner::NaiveBayes(b) = &cold else { panic!("{cold:?}") };
        let warm = OnlineLearner::new("naive_bayes", &classes, &encoder, Some(&b.stats)).unwrap();
        assert_eq!(warm, cold);
        warm.validate(&classes, 2).unwrap();
        assert!(warm.validate(&classes, 3).is_err());
        assert_eq!(warm.describe(), "2 events learned");
    }

    #[test]
    fn the_forest_serves_both_tasks_and_describes_itself() {
        let encoder = lambda_core::encoder::Encoder {
            features: vec![lambda_core::encoder::FeatureEncoder::Boolean { name: "b".into() }],
            target: None,
        };
        let mut reg = OnlineLearner::new("adaptive_random_forest", &[], &encoder, None).unwrap();
        assert!(reg.learn(&[1.0, 0.0], &Target::Value(2.0)));
        assert!(!reg.learn(&[1.0, 0.0], &Target::Class("yes".into())));
        reg.validate(&[], 2).unwrap();
        let classes: Vec<String> = vec!["no".into(), "yes".into()];
        assert!(reg.validate(&classes, 2).is_err());
        let mut cls = OnlineLearner::new("adaptive_random_forest", &classes, &encoder, None).unwrap();
        assert!(cls.learn(&[1.0, 0.0], &Target::Class("yes".into())));
        cls.validate(&classes, 2).unwrap();
        assert_eq!(cls.name(), "adaptive_random_forest");
        assert_eq!(
            cls.describe(),
            "10 trees, 10 leaves, depth 0, 0 background trees (0 leaves), 0 warnings, 0 trees replaced"
        );
    }

    #[test]
    fn the_forest_draws_whole_features_so_missing_flags_do_not_crowd_out_numbers() {
        // Ten numbers, each encoded as its value and a missing flag; four classes by the nearest of 16 centroids.
        let features = (0..10)
            .map(|j| lambda_core::encoder::FeatureEncoder::Numeric {
                name: format!("x{j}"),
                mean: 0.0,
                std: 1.0,
                min: -1.0,
                max: 1.0,
                trend: 0.0,
            })
            .collect();
        let encoder = lambda_core::encoder::Encoder { features, target: None };
        let classes: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut r = crate::testing::Lcg(21);
        let centroids: Vec<Vec<f64>> = (0..16).map(|_| (0..10).map(|_| r.next() * 2.0 - 1.0).collect()).collect();
        let data: Vec<(Vec<f64>, Target)> = (0..20_000)
            .map(|_| {
                let x: Vec<f64> = (0..10).map(|_| r.next() * 2.0 - 1.0).collect();
                let dist = |c: &Vec<f64>| c.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                let near = (0..16).min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b]))).unwrap();
                let encoded = x.iter().flat_map(|v| [*v, 0.0]).collect();
                (encoded, Target::Class(classes[near % 4].clone()))
            })
            .collect();
        let accuracy = |learner: &mut dyn FnMut(&[f64], &Target) -> Prediction| {
            let right = data
                .iter()
                .filter(|(x, y)| {
                    let Prediction::Probabilities(p) = learner(x, y) else { panic!("a classifier") };
                    Target::Class(classes[crate::model::argmax(&p)].clone()) == *y
                })
                .count();
            right as f64 / data.len() as f64
        };
        // At River's √ of what is drawn from: 3 of the 10 features, against 4 of the 20 encoded inputs.
        let (three, four) = (Some(3), Some(4));
        let set = |max_features| ForestSettings { max_features, ..ForestSettings::default() };
        let groups = encoder.feature_inputs();
        let mut by_feature = AdaptiveRandomForest::over_features(classes.clone(), groups, set(three)).unwrap();
        let features = accuracy(&mut |x, y| {
            let p = by_feature.predict(x);
            by_feature.learn(x, y);
            p
        });
        let mut by_input = AdaptiveRandomForest::new(classes.clone(), encoder.dim(), set(four));
        let inputs = accuracy(&mut |x, y| {
            let p = by_input.predict(x);
            by_input.learn(x, y);
            p
        });
        assert_eq!(by_feature.features_per_leaf(), 3);
        by_feature.validate().unwrap();
        assert!(features > inputs + 0.02, "over features {features}, over inputs {inputs}");
        // The speed layer's forest draws whole features, half of them.
        let learner = OnlineLearner::new("adaptive_random_forest", &classes, &encoder, None).unwrap();
        let OnlineLearner::AdaptiveRandomForest(f) = &learner else { panic!("{learner:?}") };
        assert_eq!((f.features_per_leaf(), f.dim), (5, 20));
        learner.validate(&classes, 20).unwrap();
    }

    #[test]
    fn nag_predicts_the_same_whatever_the_scale_of_each_feature() {
        let data = stream(3000, 7);
        let scaled: Vec<(Vec<f64>, Target)> =
            data.iter().map(|(x, y)| (vec![x[0] * 1000.0, x[1] * 0.001, x[2]], y.clone())).collect();
        let (mut a, mut b) = (cold(3), cold(3));
        for ((xa, ya), (xb, yb)) in data.iter().zip(&scaled) {
            let (Prediction::Probabilities(pa), Prediction::Probabilities(pb)) = (a.predict(xa), b.predict(xb)) else {
                panic!("classifier");
            };
            assert!((pa[1] - pb[1]).abs() < 1e-9, "{pa:?} vs {pb:?}");
            assert!(a.learn(xa, ya, 0.5, 0.0).unwrap() && b.learn(xb, yb, 0.5, 0.0).unwrap());
        }
        // Plain SGD with one step size cannot do this: the same stream diverges from the unscaled run.
        let (mut sa, mut sb) = (cold(3).model, cold(3).model);
        for ((xa, ya), (xb, yb)) in data.iter().zip(&scaled) {
            sa.sgd_update(xa, ya, 0.05, 0.0);
            sb.sgd_update(xb, yb, 0.05, 0.0);
        }
        assert!((mean_loss(&sa, &data) - mean_loss(&sb, &scaled)).abs() > 0.01);
    }

    #[test]
    fn a_tracked_learner_keeps_its_accuracy_or_mean_absolute_error_since_it_started() {
        let classes: Vec<String> = vec!["no".into(), "yes".into()];
        let mut r = crate::testing::Lcg(8);
        let tree = |classes: &[String]| HoeffdingTree::new(classes.to_vec(), 1, TreeSettings::default());
        let mut c = Tracked::new(
            OnlineLearner::HoeffdingTree(tree(&classes)),
            crate::prequential::Window::new(10, classes.clone(), 1.0),
        );
        let mut v =
            Tracked::new(OnlineLearner::HoeffdingTree(tree(&[])), crate::prequential::Window::new(10, vec![], 1.0));
        let (mut mistakes, mut abs) = (0.0, 0.0);
        for i in 0..500u64 {
            let x = [r.next()];
            let label = if x[0] > 0.5 { "yes" } else { "no" };
            let Prediction::Probabilities(p) = c.learner.predict(&x) else { panic!("classifier") };
            mistakes += f64::from(classes[crate::model::argmax(&p)] != label);
            c.observe(&classes, &x, &Target::Class(label.into()), i, 0);
            let Prediction::Value(y) = v.learner.predict(&x) else { panic!("regressor") };
            abs += (y - 3.0 * x[0]).abs();
            v.observe(&[], &x, &Target::Value(3.0 * x[0]), i, 0);
        }
        assert_eq!(c.mean_error(), Some(1.0 - mistakes / 500.0));
        assert!(mistakes > 0.0 && mistakes < 100.0, "{mistakes}");
        assert!((v.mean_error().unwrap() - abs / 500.0).abs() < 1e-12);
    }

    #[test]
    fn nag_with_the_step_in_target_deviations_adapts_at_the_same_pace_whatever_the_target_s_unit() {
        // Regression: the step moved a prediction by about the step size whatever the target's unit, so that a
        // target in thousands adapted a thousand times slower after a shift than the same target in ones.
        let model = |scale: f64| {
            let m = LinearModel {
                family: Family::Linear,
                classes: Vec::new(),
                dim: 2,
                weights: vec![2.0 * scale, -scale],
                bias: vec![0.0],
            };
            AdaptiveLinear::warm(m, vec![1.0, 1.0], None, 0.0)
        };
        let mut r = crate::testing::Lcg(3);
        let data: Vec<(Vec<f64>, f64)> = (0..2000)
            .map(|_| {
                let x = vec![r.next() * 2.0 - 1.0, r.next() * 2.0 - 1.0];
                // The concept shifts by 5 deviations of the target.
                (x.clone(), 2.0 * x[0] - x[1] + 5.0)
            })
            .collect();
        let mae_after = |scale: f64| {
            let mut m = model(scale);
            let mut errors = 0.0;
            for (i, (x, y)) in data.iter().enumerate() {
                let Prediction::Value(p) = m.predict(x) else { panic!("regression") };
                if i >= 1000 {
                    errors += (p / scale - y).abs();
                }
                m.learn(x, &Target::Value(y * scale), 0.5 * scale, 0.0).unwrap();
            }
            errors / 1000.0
        };
        let (ones, thousands) = (mae_after(1.0), mae_after(1000.0));
        assert!(ones < 0.5, "{ones}");
        assert!((ones - thousands).abs() < 1e-6 * ones.max(1.0), "{ones} vs {thousands}");
        // Without the scale the target in thousands is still about 5 deviations off after 2,000 events.
        let mut m = model(1000.0);
        for (x, y) in &data {
            m.learn(x, &Target::Value(y * 1000.0), 0.5, 0.0).unwrap();
        }
        let Prediction::Value(p) = m.predict(&data[0].0) else { panic!("regression") };
        assert!((p / 1000.0 - data[0].1).abs() > 4.0, "{}", p / 1000.0);
    }

    #[test]
    fn nag_learns_a_logistic_concept_near_its_true_weights() {
        let data = stream(50_000, 11);
        let mut m = cold(3);
        for (x, y) in &data {
            m.learn(x, y, 0.5, 0.0).unwrap();
        }
        let truth = LinearModel {
            family: Family::Logistic,
            classes: vec!["no".into(), "yes".into()],
            dim: 3,
            weights: vec![3.0, -2.0, 1.5],
            bias: vec![-0.5],
        };
        let test = stream(20_000, 12);
        let (got, best) = (mean_loss(&m.model, &test), mean_loss(&truth, &test));
        assert!(got < best + 0.01, "learned {got}, true weights {best}");
    }

    #[test]
    fn a_warm_start_with_a_prior_steps_less_than_a_cold_one() {
        let data = stream(20_000, 3);
        let mut fitted = cold(3);
        for (x, y) in &data {
            fitted.learn(x, y, 0.5, 0.0).unwrap();
        }
        let scales = vec![1.0, 1.0, 1.0];
        let mut prior = GradientPrior::new(&fitted.model);
        for (x, y) in &data {
            prior.add(&fitted.model, &scales, x, y);
        }
        assert_eq!(prior.rows, 20_000);
        let light = AdaptiveLinear::warm(fitted.model.clone(), scales.clone(), Some(&prior), 100.0);
        let heavy = AdaptiveLinear::warm(fitted.model.clone(), scales.clone(), Some(&prior), 10_000.0);
        let bare = AdaptiveLinear::warm(fitted.model.clone(), scales.clone(), None, 0.0);
        assert_eq!((light.state.seen, heavy.state.seen, bare.state.seen), (100.0, 10_000.0, 0.0));
        // The same ten events move the weights less the more prior events the state stands for.
        let moved = |mut m: AdaptiveLinear| {
            for (x, y) in &data[..10] {
                m.learn(x, y, 0.5, 0.0).unwrap();
            }
            m.model.weights.iter().zip(&fitted.model.weights).map(|(a, b)| (a - b).abs()).sum::<f64>()
        };
        let (h, l, b) = (moved(heavy), moved(light), moved(bare));
        assert!(h < l && l < b, "heavy {h}, light {l}, bare {b}");
        assert!(h > 0.0);
    }

    #[test]
    fn a_value_beyond_its_scale_shrinks_that_weight_before_the_step() {
        let model =
            LinearModel { family: Family::Linear, classes: vec![], dim: 2, weights: vec![2.0, 1.0], bias: vec![0.0] };
        let mut m = AdaptiveLinear::warm(model, vec![1.0, 1.0], None, 0.0);
        // The first input is four times its scale; with the target equal to the shrunk prediction (0.5 * 4 + 1)
        // the gradient is zero and only the shrink shows.
        assert!(m.learn(&[4.0, 1.0], &Target::Value(3.0), 0.5, 0.0).unwrap());
        assert_eq!(m.model.weights, vec![0.5, 1.0]);
        assert_eq!(m.state.scale, vec![4.0, 1.0]);
    }

    #[test]
    fn a_step_that_would_overflow_is_refused_and_changes_nothing() {
        let model =
            LinearModel { family: Family::Linear, classes: vec![], dim: 1, weights: vec![1.0], bias: vec![0.0] };
        let mut m = AdaptiveLinear::warm(model, vec![1.0], None, 0.0);
        let before = m.clone();
        assert_eq!(m.learn(&[1e308], &Target::Value(f64::MAX), 0.5, 1e300), Err(NonFinite));
        assert_eq!(m, before);
        assert_eq!(m.learn(&[1.0], &Target::Class("x".into()), 0.5, 0.0), Ok(false));
        assert_eq!(m, before);
        m.validate().unwrap();
    }
}
