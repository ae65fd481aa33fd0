//! A linear model that keeps following a concept that moves.
//!
//! The speed layer's own linear model ([`crate::online::AdaptiveLinear`]) is warm-started from the batch model
//! with the statistics of thousands of history rows, and NAG's steps shrink as its sums of squared gradients grow:
//! right for a concept that holds, slow for one that rotates or jumps (the batch model's weights then hold it back).
//! [`TrackingLinear`] is the same NAG update on statistics that forget: before each step they are discounted by
//! `1 - 1/horizon`, so that they hold about `horizon` events and the steps stop shrinking there, as a constant step
//! does in stochastic gradient descent. It starts from zero weights, learns the latest history rows, then the
//! stream, as the tree learners do.

use serde::{Deserialize, Serialize};

use crate::model::{Family, LinearModel, NonFinite, Prediction};
use crate::online::AdaptiveLinear;
use lambda_core::encoder::Encoder;
use lambda_core::error::{Error, Result};
use lambda_core::schema::Target;

/// Events the statistics hold, by default.
pub const HORIZON: f64 = 1_000.0;
/// NAG's step size, as the speed layer's linear model's default.
pub const ETA: f64 = 0.5;

/// NAG with forgetting (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingLinear {
    /// The model and NAG's statistics.
    pub linear: AdaptiveLinear,
    /// Events the statistics hold.
    pub horizon: f64,
    /// Step size, times the target's deviation for a regression.
    pub eta: f64,
}

impl TrackingLinear {
    /// Zero weights for `encoder`'s vectors and `classes` (empty for regression).
    pub fn new(classes: &[String], encoder: &Encoder) -> TrackingLinear {
        TrackingLinear::cold(classes, encoder.scales(), ETA * crate::online::target_scale(encoder))
    }

    /// Zero weights for vectors whose inputs have `scales`.
    pub fn cold(classes: &[String], scales: Vec<f64>, eta: f64) -> TrackingLinear {
        let family = match classes.len() {
            0 => Family::Linear,
            2 => Family::Logistic,
            _ => Family::Softmax,
        };
        let model = LinearModel::zeros(family, classes.to_vec(), scales.len());
        TrackingLinear { linear: AdaptiveLinear::warm(model, scales, None, 0.0), horizon: HORIZON, eta }
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        self.linear.predict(x)
    }

    /// Forgets a little, then one NAG step; `false` when it could not learn (nothing changed).
    pub fn learn(&mut self, x: &[f64], target: &Target) -> bool {
        let before = self.linear.state.clone();
        let keep = 1.0 - 1.0 / self.horizon;
        let s = &mut self.linear.state;
        s.grad_sq.iter_mut().for_each(|g| *g *= keep);
        s.norm *= keep;
        s.seen *= keep;
        match self.linear.learn(x, target, self.eta, 0.0) {
            Ok(true) => true,
            Ok(false) | Err(NonFinite) => {
                self.linear.state = before;
                false
            }
        }
    }

    /// Checks the stored numbers, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        if !(self.horizon.is_finite() && self.horizon > 1.0 && self.eta.is_finite() && self.eta > 0.0) {
            return Err(Error::InvalidModel(format!(
                "tracking linear model with horizon {} and step {}",
                self.horizon, self.eta
            )));
        }
        self.linear.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    /// Accuracy over `scored` of `events` (x, positive?), each scored before it is learned.
    fn accuracy_over(
        model: &mut impl FnMut(&[f64], bool) -> bool,
        events: &[(Vec<f64>, bool)],
        scored: std::ops::Range<usize>,
    ) -> f64 {
        let mut right = 0;
        for (i, (x, y)) in events.iter().enumerate() {
            let hit = model(x, *y);
            right += (hit && scored.contains(&i)) as usize;
        }
        right as f64 / scored.len() as f64
    }

    #[test]
    fn after_the_concept_flips_it_follows_where_the_unforgetting_model_lags() {
        let classes = vec!["no".to_string(), "yes".to_string()];
        let label = |y: bool| Target::Class(if y { "yes" } else { "no" }.into());
        // 20,000 events of one noisy concept (P(yes) = σ(±4 x0)), then 2,000 of its opposite, scored over the first 600.
        let mut r = Lcg(7);
        let events: Vec<(Vec<f64>, bool)> = (0..22_000)
            .map(|i| {
                let x = vec![r.next() * 2.0 - 1.0, r.next() * 2.0 - 1.0];
                let z = if i < 20_000 { 4.0 * x[0] } else { -4.0 * x[0] };
                let y = r.next() < 1.0 / (1.0 + (-z).exp());
                (x, y)
            })
            .collect();
        let mut tracking = TrackingLinear::cold(&classes, vec![1.0; 2], ETA);
        let mut plain =
            AdaptiveLinear::warm(LinearModel::zeros(Family::Logistic, classes.clone(), 2), vec![1.0; 2], None, 0.0);
        let hit = |p: Prediction, y: bool| match p {
            Prediction::Probabilities(p) => (p[1] > 0.5) == y,
            other => panic!("{other:?}"),
        };
        let tracked = accuracy_over(
            &mut |x, y| {
                let h = hit(tracking.predict(x), y);
                assert!(tracking.learn(x, &label(y)));
                h
            },
            &events,
            20_000..20_600,
        );
        let lagged = accuracy_over(
            &mut |x, y| {
                let h = hit(plain.predict(x), y);
                plain.learn(x, &label(y), ETA, 0.0).unwrap();
                h
            },
            &events,
            20_000..20_600,
        );
        // Over the first 600 events of the new concept the model that forgets has mostly turned (0.60 when
        // written), while the one that does not still answers the old concept (0.17).
        assert!(tracked > 0.5 && tracked > lagged + 0.2, "tracking {tracked}, without forgetting {lagged}");
        tracking.validate().unwrap();
    }

    #[test]
    fn a_step_it_cannot_take_changes_nothing() {
        let mut m = TrackingLinear::cold(&["a".into(), "b".into()], vec![1.0; 2], ETA);
        let x = [0.5, -0.5];
        assert!(m.learn(&x, &Target::Class("a".into())));
        let before = m.clone();
        assert!(!m.learn(&x, &Target::Class("c".into())), "a class the model does not have");
        assert_eq!(m, before);
        let mut bad = m.clone();
        bad.horizon = 0.5;
        assert!(matches!(bad.validate(), Err(Error::InvalidModel(_))));
    }
}
