//! The live blend: the batch champion, the speed layer's linear model and its other online learners, combined for
//! each prediction with weights from their losses on the same latest events.
//!
//! The weights are the exponentially weighted average forecaster's (Hedge) over a sliding window at rate 1:
//! `w_m ∝ exp(−L_m)`, where `L_m` is component `m`'s loss summed over the latest `k` events that every component
//! scored. For classes the loss is the mistake (0/1): Hedge on mistakes is the weighted majority algorithm
//! (Littlestone and Warmuth, "The Weighted Majority Algorithm", 1994; Cesa-Bianchi and Lugosi, "Prediction,
//! Learning, and Games", 2006, section 2.1), whose mistakes stay within a constant factor of the best component's
//! plus `ln M`. Mistakes rather than log loss because a served label is what users judge, and log loss ranks
//! components by their calibration as much as by their answers: on a stream whose classes drift all along, a batch
//! model right 62% of the time kept the weight over a forest right 78% of the time with a log loss only 0.015 nats
//! higher (bench/pipeline, rbf_moving: 0.650 blend accuracy with log-loss weights, 0.695 with mistakes; on two
//! streams with abrupt drifts 0.1 and 0.2 points lower; the blend's log loss is higher, not lower). For values:
//! the summed absolute error over the smallest mean absolute error among them, the Laplace log-likelihood with one
//! shared scale, so that the weights do not depend on the target's unit. Absolute rather than squared errors
//! because a component wrong by much on a few events (a batch model after a drift in one region of the inputs)
//! lost its weight under squared errors to one wrong by a little everywhere, though its mean absolute error, the
//! benchmark's measure, was lower: on Friedman with a local drift (bench/pipeline, friedman_lea, three seeds) the
//! blend's MAE was 1.365, 1.058 and 1.763 with squared errors, 1.231, 1.029 and 1.568 with absolute ones (0.3% worse
//! and 3% worse on two other sets, better on four). A window instead of all history
//! lets a component that fell behind win its weight back as soon as its latest events say so: after a drift the
//! online learners take over, and a new batch version takes back. The weights are measured again every
//! [`REWEIGH_EVERY`] scored events (not on a timer, so that a replay ends with the same weights), every
//! [`MIN_EVENTS`] before that, and until every component has scored [`MIN_EVENTS`] of the same events the batch
//! champion answers alone. Ten, not a hundred: on a stream of 301 records (bench/pipeline, trump_approval) the
//! batch model answering alone for the first hundred cost the blend 0.07 of MAE (0.362 against 0.292) where the
//! linear model was better from the start; on the larger streams the blend's accuracy moved by 0.0002 at most.

use serde::{Deserialize, Serialize};

use crate::model::Prediction;
use crate::prequential::Window;
pub use lambda_core::names::{BATCH, BLEND, SPEED};
use lambda_core::schema::Target;

/// Scored events between two measures of the weights.
pub const REWEIGH_EVERY: u64 = 100;
/// Events every component must have scored before the weights leave the batch champion.
pub const MIN_EVENTS: usize = 10;
/// A weight below this is left out of predictions (so that a component the window rules out costs no time).
pub const NEGLIGIBLE: f64 = 1e-6;

/// The components' names: the batch champion, the speed layer's linear model, then the other online learners.
pub fn component_names<'a>(learners: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    [BATCH, SPEED].into_iter().chain(learners).map(String::from).collect()
}

/// The components' weights, as last measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Component names: [`BATCH`], [`SPEED`], then the online learners' names.
    pub names: Vec<String>,
    /// Their weights; they sum to 1.
    pub weights: Vec<f64>,
    /// Events the weights were measured on (0: not enough yet, the batch champion answers alone).
    pub events: usize,
    /// Each component's mean error over those events (mistake rate, or absolute error).
    pub losses: Vec<Option<f64>>,
}

impl Weights {
    /// All the weight on the batch champion.
    pub fn batch_only(names: Vec<String>) -> Weights {
        let weights = names.iter().map(|n| if n == BATCH { 1.0 } else { 0.0 }).collect();
        let losses = vec![None; names.len()];
        Weights { names, weights, events: 0, losses }
    }

    /// The weights the components' windows (in [`Weights::names`] order) give now.
    pub fn measure(names: Vec<String>, windows: &[&Window]) -> Weights {
        let least = windows.iter().map(|w| w.size).min().unwrap_or(0).min(MIN_EVENTS);
        let k = windows.iter().map(|w| w.len()).min().unwrap_or(0);
        if windows.len() != names.len() || k == 0 || k < least {
            return Weights::batch_only(names);
        }
        let regression = windows.iter().all(|w| w.classes.is_empty());
        let sums: Vec<(f64, usize)> = windows.iter().map(|w| w.latest_errors(k)).collect();
        let means: Vec<Option<f64>> =
            sums.iter().map(|&(s, n)| (n > 0 && s.is_finite()).then(|| s / n as f64)).collect();
        // The exponent of each component's likelihood over the window.
        let scale = if regression {
            let best = means.iter().flatten().copied().fold(f64::INFINITY, f64::min);
            best.max(f64::MIN_POSITIVE)
        } else {
            1.0
        };
        let exponents: Vec<Option<f64>> =
            sums.iter().zip(&means).map(|(&(s, _), m)| m.map(|_| s / scale).filter(|e| e.is_finite())).collect();
        let Some(low) = exponents.iter().flatten().copied().reduce(f64::min) else {
            return Weights::batch_only(names);
        };
        let raw: Vec<f64> = exponents.iter().map(|e| e.map_or(0.0, |e| (low - e).exp())).collect();
        let total: f64 = raw.iter().sum();
        Weights { names, weights: raw.iter().map(|w| w / total).collect(), events: k, losses: means }
    }

    /// The components worth predicting with, as (index, weight).
    pub fn active(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.weights.iter().copied().enumerate().filter(|(_, w)| *w >= NEGLIGIBLE)
    }

    /// The weighted mixture of the components' predictions (in [`Weights::names`] order; `None` where a component
    /// was not asked), renormalized over those present; `None` when none is.
    pub fn combine(&self, predictions: &[Option<&Prediction>]) -> Option<Prediction> {
        let mut total = 0.0;
        let mut out: Option<Prediction> = None;
        for (i, w) in self.active() {
            let Some(p) = predictions.get(i).copied().flatten() else { continue };
            match (&mut out, p) {
                (None, Prediction::Probabilities(p)) => {
                    out = Some(Prediction::Probabilities(p.iter().map(|v| v * w).collect()))
                }
                (None, Prediction::Value(v)) => out = Some(Prediction::Value(v * w)),
                (Some(Prediction::Probabilities(acc)), Prediction::Probabilities(p)) if acc.len() == p.len() => {
                    acc.iter_mut().zip(p).for_each(|(a, v)| *a += v * w)
                }
                (Some(Prediction::Value(acc)), Prediction::Value(v)) => *acc += v * w,
                _ => continue,
            }
            total += w;
        }
        match out? {
            Prediction::Probabilities(p) => Some(Prediction::Probabilities(p.into_iter().map(|v| v / total).collect())),
            Prediction::Value(v) => Some(Prediction::Value(v / total)),
        }
    }
}

/// The blend of the speed layer: its weights and its own prequential record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    /// The weights now.
    pub weights: Weights,
    /// The blend's windowed record and change detectors.
    pub window: Window,
    /// Events it scored.
    pub scored: u64,
    /// Of those, its mistakes (classes) or summed absolute error (values): its prequential record since it started.
    pub errors: f64,
    /// Its summed loss on them (log loss, or squared error).
    pub loss: f64,
}

impl Blend {
    /// A blend of the named components that has scored nothing: the batch champion answers alone.
    pub fn new(names: Vec<String>, window: Window) -> Blend {
        Blend { weights: Weights::batch_only(names), window, scored: 0, errors: 0.0, loss: 0.0 }
    }

    /// Scores the blend on an event before any component learned it, from the components' predictions in
    /// [`Weights::names`] order.
    pub fn record(&mut self, predictions: &[&Prediction], target: &Target, seq: u64, ms: i64) {
        let asked: Vec<Option<&Prediction>> = predictions.iter().copied().map(Some).collect();
        let Some(p) = self.weights.combine(&asked) else { return };
        let classes = &self.window.classes;
        let error = crate::model::error(classes, &p, target);
        let loss = crate::model::loss(classes, &p, target);
        if let (Some(e), Some(l)) = (error, loss) {
            if (self.errors + e).is_finite() && (self.loss + l).is_finite() {
                self.window.record(&p, target, seq, ms);
                self.scored += 1;
                self.errors += e;
                self.loss += l;
            }
        }
    }

    /// Measures the weights again every [`MIN_EVENTS`] scored events up to [`REWEIGH_EVERY`], then every
    /// [`REWEIGH_EVERY`], from the components' windows in [`Weights::names`] order.
    pub fn reweigh_if_due(&mut self, windows: &[&Window]) {
        let every = if self.scored < REWEIGH_EVERY { MIN_EVENTS as u64 } else { REWEIGH_EVERY };
        if self.scored > 0 && self.scored.is_multiple_of(every) {
            self.weights = Weights::measure(self.weights.names.clone(), windows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    fn names() -> Vec<String> {
        vec![BATCH.into(), SPEED.into(), "tree".into()]
    }

    fn classes() -> Vec<String> {
        vec!["no".into(), "yes".into()]
    }

    fn p(yes: f64) -> Prediction {
        Prediction::Probabilities(vec![1.0 - yes, yes])
    }

    /// Three windows over the same events: components right with chance 0.9, 0.6 and 0.5, each sure at 0.7.
    fn windows(n: usize, seed: u64) -> Vec<Window> {
        let mut rng = Lcg(seed);
        let mut w: Vec<Window> = (0..3).map(|_| Window::new(1000, classes(), 1.0)).collect();
        for i in 0..n {
            let yes = rng.next() < 0.5;
            let t = Target::Class(if yes { "yes" } else { "no" }.into());
            for (w, chance) in w.iter_mut().zip([0.9, 0.6, 0.5]) {
                let says_yes = (rng.next() < chance) == yes;
                w.record(&p(if says_yes { 0.7 } else { 0.3 }), &t, i as u64, 0);
            }
        }
        w
    }

    #[test]
    fn the_weights_follow_the_window_s_mistakes_and_stay_on_the_batch_model_until_there_is_evidence() {
        let w = windows(MIN_EVENTS - 1, 1);
        let refs: Vec<&Window> = w.iter().collect();
        assert_eq!(Weights::measure(names(), &refs), Weights::batch_only(names()));
        let w = windows(500, 1);
        let refs: Vec<&Window> = w.iter().collect();
        let m = Weights::measure(names(), &refs);
        assert_eq!(m.events, 500);
        assert!((m.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Over 500 events the first component makes about 150 fewer mistakes than the second.
        assert!(m.weights[0] > 1.0 - 1e-12, "{m:?}");
        let (l0, l1) = (m.losses[0].unwrap(), m.losses[1].unwrap());
        assert!((l0 - 0.1).abs() < 0.04 && (l1 - 0.4).abs() < 0.06, "{l0} {l1}");
        assert_eq!(m.active().map(|(i, _)| i).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn on_a_short_stream_the_weights_leave_a_worse_batch_model_after_ten_events_not_a_hundred() {
        // Regression: the batch model answered alone for the first hundred events of a 301-record stream where
        // the linear model was better from the start.
        let mut blend = Blend::new(vec![BATCH.into(), SPEED.into()], Window::new(1000, vec![], 1.0));
        let mut w: Vec<Window> = (0..2).map(|_| Window::new(1000, vec![], 1.0)).collect();
        for i in 0..100u64 {
            let y = (i % 5) as f64;
            let preds = [Prediction::Value(y + 1.0), Prediction::Value(y + 0.1)];
            blend.record(&[&preds[0], &preds[1]], &Target::Value(y), i, 0);
            for (w, p) in w.iter_mut().zip(&preds) {
                w.record(p, &Target::Value(y), i, 0);
            }
            blend.reweigh_if_due(&[&w[0], &w[1]]);
            if i == MIN_EVENTS as u64 - 1 {
                assert!(blend.weights.weights[1] > 0.99, "{:?}", blend.weights);
            }
        }
        // Ten events at the batch model's error, ninety at the linear model's.
        let mae = blend.errors / blend.scored as f64;
        assert!((mae - (10.0 * 1.0 + 90.0 * 0.1) / 100.0).abs() < 0.01, "{mae}");
    }

    #[test]
    fn close_components_share_the_weight_by_their_mistakes_not_their_confidence() {
        let classes = classes();
        let (mut a, mut b) = (Window::new(200, classes.clone(), 1.0), Window::new(200, classes, 1.0));
        // `a` is right on all 100 events but barely sure; `b` is sure and wrong once.
        for i in 0..100u64 {
            let t = Target::Class("yes".into());
            a.record(&p(0.51), &t, i, 0);
            b.record(&p(if i == 0 { 0.4 } else { 0.99 }), &t, i, 0);
        }
        let m = Weights::measure(vec![BATCH.into(), SPEED.into()], &[&a, &b]);
        let ratio = m.weights[1] / m.weights[0];
        assert!((ratio - (-1.0f64).exp()).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn regression_weights_follow_the_absolute_error_over_the_shared_scale() {
        let (mut a, mut b) = (Window::new(1000, vec![], 1.0), Window::new(1000, vec![], 1.0));
        for i in 0..200u64 {
            let y = (i % 7) as f64;
            a.record(&Prediction::Value(y + 1.0), &Target::Value(y), i, 0);
            b.record(&Prediction::Value(y + 1.1), &Target::Value(y), i, 0);
        }
        let m = Weights::measure(vec![BATCH.into(), SPEED.into()], &[&a, &b]);
        // exp(-(200 * 1.1 - 200 * 1) / 1)
        let expected = 1.0 / (1.0 + (-20.0f64).exp());
        assert!((m.weights[0] - expected).abs() < 1e-9, "{m:?}");
        // Scaling every value by 1000 changes nothing: the noise level scales with them.
        let (mut a2, mut b2) = (Window::new(1000, vec![], 1.0), Window::new(1000, vec![], 1.0));
        for i in 0..200u64 {
            let y = (i % 7) as f64 * 1000.0;
            a2.record(&Prediction::Value(y + 1000.0), &Target::Value(y), i, 0);
            b2.record(&Prediction::Value(y + 1100.0), &Target::Value(y), i, 0);
        }
        let m2 = Weights::measure(vec![BATCH.into(), SPEED.into()], &[&a2, &b2]);
        assert!((m2.weights[0] - m.weights[0]).abs() < 1e-9);
    }

    #[test]
    fn a_component_wrong_by_much_on_few_events_keeps_the_weight_when_its_absolute_errors_are_lower() {
        // Regression: a batch model after a drift in one region of the inputs (Friedman's local drift) is wrong by
        // 8 on one event in ten and exact elsewhere (mean absolute error 0.8, squared 6.4); a learner is wrong by 1.5
        // everywhere (1.5 and 2.25). Squared errors gave the learner all the weight and the blend a higher MAE.
        let (mut a, mut b) = (Window::new(1000, vec![], 1.0), Window::new(1000, vec![], 1.0));
        for i in 0..500u64 {
            let y = (i % 13) as f64;
            a.record(&Prediction::Value(if i % 10 == 0 { y + 8.0 } else { y }), &Target::Value(y), i, 0);
            b.record(&Prediction::Value(y - 1.5), &Target::Value(y), i, 0);
        }
        let m = Weights::measure(vec![BATCH.into(), SPEED.into()], &[&a, &b]);
        assert!(m.weights[0] > 0.999, "{m:?}");
        assert_eq!(m.losses, vec![Some(0.8), Some(1.5)]);
    }

    #[test]
    fn the_mixture_renormalizes_over_the_components_asked_and_skips_a_mismatch() {
        let w = Weights { names: names(), weights: vec![0.5, 0.25, 0.25], events: 100, losses: vec![None, None, None] };
        let (a, b, c) = (p(0.8), p(0.4), Prediction::Value(3.0));
        let Some(Prediction::Probabilities(m)) = w.combine(&[Some(&a), Some(&b), None]) else { panic!() };
        assert!((m[1] - (0.5 * 0.8 + 0.25 * 0.4) / 0.75).abs() < 1e-12);
        let Some(Prediction::Probabilities(m)) = w.combine(&[Some(&a), Some(&b), Some(&c)]) else { panic!() };
        assert!((m[1] - (0.5 * 0.8 + 0.25 * 0.4) / 0.75).abs() < 1e-12);
        assert_eq!(w.combine(&[None, None, None]), None);
    }

    #[test]
    fn after_a_drift_the_weight_moves_to_the_component_that_is_right_now() {
        // The batch component is right on the first 2,000 events and wrong after; the other the reverse.
        let mut blend = Blend::new(vec![BATCH.into(), SPEED.into()], Window::new(1000, classes(), 1.0));
        let mut w: Vec<Window> = (0..2).map(|_| Window::new(1000, classes(), 1.0)).collect();
        let mut rng = Lcg(5);
        let mut moved_at = None;
        for i in 0..4000u64 {
            let yes = rng.next() < 0.5;
            let t = Target::Class(if yes { "yes" } else { "no" }.into());
            let right = |good: bool| p(if good == yes { 0.8 } else { 0.2 });
            let preds = [right(i < 2000), right(i >= 2000)];
            blend.record(&[&preds[0], &preds[1]], &t, i, 0);
            for (w, p) in w.iter_mut().zip(&preds) {
                w.record(p, &t, i, 0);
            }
            blend.reweigh_if_due(&[&w[0], &w[1]]);
            if i == 1999 {
                assert!(blend.weights.weights[0] > 0.99, "{:?}", blend.weights);
            }
            if moved_at.is_none() && blend.weights.weights[1] > 0.99 {
                moved_at = Some(i);
            }
        }
        // The second component leads once its window's evidence does: about half a window after the change.
        let at = moved_at.expect("the weight moved");
        assert!((2000..2700).contains(&at), "moved at {at}");
        assert_eq!(blend.scored, 4000);
        // Its record since the start: right on all but the events before the weight moved after the change.
        let wrong = blend.errors as u64;
        assert!(wrong > 0 && wrong < 700, "{wrong} mistakes");
        let m = blend.window.metrics();
        assert!(m["accuracy"] > 0.95, "{m:?}");
    }
}
