//! The model formats shared by batch training, online learning and serving, all over encoded vectors: [`Model`] is
//! any family the batch layer can publish (linear, tree ensembles, naive Bayes); [`LinearModel`] is the family the
//! speed layer updates online.
//!
//! Logistic regression (binary), softmax regression (multiclass) and linear regression, each with prediction on one
//! vector or a batch and an incremental SGD update. Weights are plain `f64`s so that a model trained by the batch
//! layer warm-starts the speed layer's model exactly.

use serde::{Deserialize, Serialize};

use crate::bayes::softmax;
use lambda_core::error::{Error, Result};
use lambda_core::schema::Target;

/// The model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Binary logistic regression: one output, sigmoid link; `classes[1]` is the positive class.
    Logistic,
    /// Multinomial (softmax) regression: one output per class.
    Softmax,
    /// Linear regression: one output, identity link.
    Linear,
}

/// What a model answers for one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    /// Class probabilities, in the order of [`LinearModel::classes`].
    Probabilities(Vec<f64>),
    /// A regression value.
    Value(f64),
}

/// A generalized linear model over encoded vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Model family.
    pub family: Family,
    /// Class labels (classification), in output order; empty for regression.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// Weights, one row of `dim` per output, row-major.
    pub weights: Vec<f64>,
    /// Intercept per output.
    pub bias: Vec<f64>,
}

/// The loss of one prediction of a model with `classes` against its label (log loss for classes, squared error for
/// values); `None` when the label is not one of the classes.
pub fn loss(classes: &[String], prediction: &Prediction, target: &Target) -> Option<f64> {
    match (prediction, target) {
        (Prediction::Probabilities(p), Target::Class(c)) => {
            let i = classes.iter().position(|k| k == c)?;
            Some(-p[i].clamp(1e-15, 1.0).ln())
        }
        (Prediction::Value(v), Target::Value(y)) => Some((v - y) * (v - y)),
        _ => None,
    }
}

/// The error of one prediction against its label: 1 for a mistake and 0 for a right class, or the absolute error
/// of a value; `None` when the label is not one of the classes or of the other task.
pub fn error(classes: &[String], prediction: &Prediction, target: &Target) -> Option<f64> {
    match (prediction, target) {
        (Prediction::Probabilities(p), Target::Class(c)) => {
            classes.iter().position(|k| k == c).map(|i| f64::from(argmax(p) != i))
        }
        (Prediction::Value(v), Target::Value(y)) => Some((v - y).abs()),
        _ => None,
    }
}

/// Index of the largest value (the first one on ties); 0 for an empty slice.
pub fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl LinearModel {
    /// A model with all weights zero.
    pub fn zeros(family: Family, classes: Vec<String>, dim: usize) -> LinearModel {
        let outputs = if family == Family::Softmax { classes.len() } else { 1 };
        LinearModel { family, classes, dim, weights: vec![0.0; outputs * dim], bias: vec![0.0; outputs] }
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Checks that the stored shapes agree, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        let outputs = match self.family {
            Family::Logistic if self.classes.len() == 2 => 1,
            Family::Softmax if self.classes.len() >= 2 => self.classes.len(),
            Family::Linear if self.classes.is_empty() => 1,
            _ => {
                return Err(Error::InvalidModel(format!("{:?} model with {} classes", self.family, self.classes.len())))
            }
        };
        if self.bias.len() != outputs || self.weights.len() != outputs * self.dim {
            return Err(Error::InvalidModel(format!(
                "model shapes disagree: {} outputs, dim {}, {} weights, {} intercepts",
                outputs,
                self.dim,
                self.weights.len(),
                self.bias.len()
            )));
        }
        if self.weights.iter().chain(&self.bias).any(|w| !w.is_finite()) {
            return Err(Error::InvalidModel("model has non-finite weights".into()));
        }
        Ok(())
    }

    pub(crate) fn scores(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        for (row, b) in self.weights.chunks_exact(self.dim.max(1)).zip(&self.bias) {
            out.push(b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>());
        }
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        let mut s = Vec::with_capacity(self.outputs());
        self.scores(x, &mut s);
        match self.family {
            Family::Linear => Prediction::Value(s[0]),
            Family::Logistic => {
                let p = sigmoid(s[0]);
                Prediction::Probabilities(vec![1.0 - p, p])
            }
            Family::Softmax => Prediction::Probabilities(softmax(s)),
        }
    }

    /// Predicts a row-major batch of encoded vectors.
    pub fn predict_batch(&self, xs: &[f64]) -> Vec<Prediction> {
        xs.chunks_exact(self.dim.max(1)).map(|x| self.predict(x)).collect()
    }

    /// The most probable class of a prediction (`None` for a regression value).
    pub fn label<'a>(&'a self, prediction: &Prediction) -> Option<&'a str> {
        match prediction {
            Prediction::Probabilities(p) => self.classes.get(argmax(p)).map(String::as_str),
            Prediction::Value(_) => None,
        }
    }

    /// The output index of a class label, if the model knows it.
    pub fn class_index(&self, label: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == label)
    }

    /// The loss of one prediction against its label (log loss for classes, squared error for values).
    pub fn loss(&self, prediction: &Prediction, target: &Target) -> Option<f64> {
        loss(&self.classes, prediction, target)
    }

    /// The family's name in leaderboards and manifests.
    pub fn family_name(&self) -> &'static str {
        match self.family {
            Family::Logistic => "logistic_regression",
            Family::Softmax => "softmax_regression",
            Family::Linear => "ridge_regression",
        }
    }

    /// The gradient of the loss of (`x`, `target`) with respect to each output score; `None` when the label is not
    /// one the model knows (or of the other task).
    pub fn score_gradients(&self, x: &[f64], target: &Target) -> Option<Vec<f64>> {
        let mut s = Vec::with_capacity(self.outputs());
        self.scores(x, &mut s);
        self.output_gradients(s, target)
    }

    /// [`LinearModel::score_gradients`] from the output scores.
    pub(crate) fn output_gradients(&self, s: Vec<f64>, target: &Target) -> Option<Vec<f64>> {
        match (self.family, target) {
            // Clamped so that one far-off value cannot throw the weights far.
            (Family::Linear, Target::Value(y)) => Some(vec![(s[0] - y).clamp(-1e6, 1e6)]),
            (Family::Logistic, Target::Class(c)) => self.class_index(c).map(|i| vec![sigmoid(s[0]) - i as f64]),
            (Family::Softmax, Target::Class(c)) => {
                let i = self.class_index(c)?;
                Some(softmax(s).into_iter().enumerate().map(|(k, pk)| pk - if k == i { 1.0 } else { 0.0 }).collect())
            }
            _ => None,
        }
    }

    /// One SGD step on the loss of (`x`, `target`) with step size `lr` and L2 penalty `l2`.
    /// Returns false (and changes nothing) when the label is unknown to the model or the step would not be finite.
    pub fn sgd_update(&mut self, x: &[f64], target: &Target, lr: f64, l2: f64) -> bool {
        matches!(self.sgd_update_checked(x, target, lr, l2), Ok(true))
    }

    /// One SGD step, refused when any weight would stop being finite: `Ok(false)` when the label is unknown to
    /// the model, `Err` (nothing changed) when the step would leave a non-finite weight.
    pub fn sgd_update_checked(&mut self, x: &[f64], target: &Target, lr: f64, l2: f64) -> Result<bool, NonFinite> {
        let Some(grads) = self.score_gradients(x, target) else {
            return Ok(false);
        };
        let dim = self.dim;
        let step = |w: f64, g: f64, v: f64| w - lr * (g * v + l2 * w);
        // Check the whole step first, so that a refused one changes nothing.
        for (k, g) in grads.iter().enumerate() {
            let row = &self.weights[k * dim..(k + 1) * dim];
            if !g.is_finite()
                || !(self.bias[k] - lr * g).is_finite()
                || row.iter().zip(x).any(|(w, v)| !step(*w, *g, *v).is_finite())
            {
                return Err(NonFinite);
            }
        }
        for (k, g) in grads.into_iter().enumerate() {
            let row = &mut self.weights[k * dim..(k + 1) * dim];
            for (w, v) in row.iter_mut().zip(x) {
                *w = step(*w, g, *v);
            }
            self.bias[k] -= lr * g;
        }
        Ok(true)
    }
}

/// Which tree ensemble a [`TreeModel`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeFamily {
    /// Gradient-boosted trees.
    GradientBoosting,
    /// A random forest.
    RandomForest,
    /// One decision tree.
    DecisionTree,
}

impl TreeFamily {
    /// Its name in leaderboards.
    pub fn name(self) -> &'static str {
        match self {
            TreeFamily::GradientBoosting => "gradient_boosting",
            TreeFamily::RandomForest => "random_forest",
            TreeFamily::DecisionTree => "decision_tree",
        }
    }
}

/// A tree ensemble with its classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeModel {
    /// Which ensemble.
    pub family: TreeFamily,
    /// Class labels (classification), in output order; empty for regression.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// The trees.
    pub trees: crate::trees::Trees,
}

impl TreeModel {
    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        use crate::trees::Combine;
        let raw = self.trees.raw(x);
        if self.classes.is_empty() {
            return Prediction::Value(raw[0]);
        }
        match self.trees.combine {
            // Class frequencies: normalized again, as leaves may hold weighted or smoothed counts.
            Combine::Mean => {
                let sum: f64 = raw.iter().sum();
                let k = raw.len() as f64;
                Prediction::Probabilities(raw.iter().map(|v| if sum > 0.0 { v / sum } else { 1.0 / k }).collect())
            }
            Combine::Sum if raw.len() == 1 => {
                let p = sigmoid(raw[0]);
                Prediction::Probabilities(vec![1.0 - p, p])
            }
            Combine::Sum => Prediction::Probabilities(softmax(raw)),
        }
    }

    /// Checks shapes against the classes and dimension.
    pub fn validate(&self) -> Result<()> {
        let expected = match (self.classes.len(), self.trees.combine) {
            (0, _) => 1,
            (2, crate::trees::Combine::Sum) => 1,
            (k, _) => k,
        };
        if self.trees.outputs != expected {
            return Err(Error::InvalidModel(format!(
                "{} model with {} classes has {} outputs, expected {expected}",
                self.family.name(),
                self.classes.len(),
                self.trees.outputs
            )));
        }
        self.trees.validate(self.dim)
    }
}

/// A model of any family over encoded vectors: what the batch layer publishes and every layer predicts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    /// A generalized linear model (the family the speed layer updates online).
    Linear(LinearModel),
    /// A tree ensemble.
    Trees(TreeModel),
    /// Gaussian naive Bayes.
    NaiveBayes(crate::bayes::NaiveBayes),
}

impl Model {
    /// The family's name in leaderboards and manifests.
    pub fn family(&self) -> &'static str {
        match self {
            Model::Linear(m) => m.family_name(),
            Model::Trees(t) => t.family.name(),
            Model::NaiveBayes(_) => "naive_bayes",
        }
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        match self {
            Model::Linear(m) => m.predict(x),
            Model::Trees(m) => m.predict(x),
            Model::NaiveBayes(m) => Prediction::Probabilities(m.predict(x)),
        }
    }

    /// Predicts a row-major batch of encoded vectors.
    pub fn predict_batch(&self, xs: &[f64]) -> Vec<Prediction> {
        xs.chunks_exact(self.dim().max(1)).map(|x| self.predict(x)).collect()
    }

    /// Class labels in output order; empty for regression.
    pub fn classes(&self) -> &[String] {
        match self {
            Model::Linear(m) => &m.classes,
            Model::Trees(m) => &m.classes,
            Model::NaiveBayes(m) => &m.classes,
        }
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        match self {
            Model::Linear(m) => m.dim,
            Model::Trees(m) => m.dim,
            Model::NaiveBayes(m) => m.dim,
        }
    }

    /// The linear model, when this is one (the speed layer can update it).
    pub fn as_linear(&self) -> Option<&LinearModel> {
        match self {
            Model::Linear(m) => Some(m),
            _ => None,
        }
    }

    /// Checks stored shapes and values.
    pub fn validate(&self) -> Result<()> {
        match self {
            Model::Linear(m) => m.validate(),
            Model::Trees(m) => m.validate(),
            Model::NaiveBayes(m) => m.validate(),
        }
    }

    /// The most probable class of a prediction (`None` for a regression value).
    pub fn label<'a>(&'a self, prediction: &Prediction) -> Option<&'a str> {
        match prediction {
            Prediction::Probabilities(p) => self.classes().get(argmax(p)).map(String::as_str),
            Prediction::Value(_) => None,
        }
    }

    /// The loss of one prediction against its label (log loss for classes, squared error for values).
    pub fn loss(&self, prediction: &Prediction, target: &Target) -> Option<f64> {
        loss(self.classes(), prediction, target)
    }
}

/// A model update that would leave a weight that is not a finite number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the model update would make a weight non-finite")]
pub struct NonFinite;

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_loss(m: &LinearModel, data: &[(Vec<f64>, Target)]) -> f64 {
        data.iter().map(|(x, y)| m.loss(&m.predict(x), y).unwrap()).sum::<f64>() / data.len() as f64
    }

    #[test]
    fn sgd_learns_each_family() {
        let xs: Vec<Vec<f64>> =
            (0..200).map(|i| vec![((i * 37) % 100) as f64 / 50.0 - 1.0, ((i * 11) % 7) as f64 / 3.5 - 1.0]).collect();
        let cases = [
            (Family::Logistic, vec!["a".to_string(), "b".to_string()]),
            (Family::Softmax, vec!["a".to_string(), "b".to_string(), "c".to_string()]),
            (Family::Linear, vec![]),
        ];
        for (family, classes) in cases {
            let data: Vec<(Vec<f64>, Target)> = xs
                .iter()
                .map(|x| {
                    let t = match family {
                        Family::Linear => Target::Value(3.0 * x[0] - x[1] + 0.5),
                        Family::Logistic => Target::Class(if x[0] > 0.0 { "b" } else { "a" }.into()),
                        Family::Softmax => Target::Class(
                            if x[0] > 0.3 {
                                "c"
                            } else if x[0] > -0.3 {
                                "b"
                            } else {
                                "a"
                            }
                            .into(),
                        ),
                    };
                    (x.clone(), t)
                })
                .collect();
            let mut m = LinearModel::zeros(family, classes, 2);
            m.validate().unwrap();
            let before = mean_loss(&m, &data);
            for _ in 0..30 {
                for (x, y) in &data {
                    assert!(m.sgd_update(x, y, 0.05, 0.0));
                }
            }
            let after = mean_loss(&m, &data);
            assert!(after < before * 0.5, "{family:?}: {before} -> {after}");
        }
    }

    #[test]
    fn probabilities_sum_to_one_and_unknown_labels_are_refused() {
        let mut m = LinearModel::zeros(Family::Softmax, vec!["a".into(), "b".into(), "c".into()], 2);
        m.weights = vec![1.0, 2.0, -1.0, 0.5, 0.0, 0.0];
        match m.predict(&[0.3, -0.7]) {
            Prediction::Probabilities(p) => assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        let before = m.clone();
        assert!(!m.sgd_update(&[1.0, 1.0], &Target::Class("zzz".into()), 0.1, 0.0));
        assert_eq!(m, before);
    }

    #[test]
    fn an_update_that_would_overflow_is_refused_and_changes_nothing() {
        let mut m = LinearModel::zeros(Family::Linear, vec![], 2);
        m.weights = vec![1e300, 0.0];
        let before = m.clone();
        // The clamped gradient times 1e300 in x overflows the first weight.
        assert_eq!(m.sgd_update_checked(&[1e303, 1.0], &Target::Value(-1e300), 1.0, 0.0), Err(NonFinite));
        assert_eq!(m, before);
        assert_eq!(m.sgd_update_checked(&[1.0, 1.0], &Target::Value(5.0), 0.1, 0.0), Ok(true));
        assert!(m.validate().is_ok());
    }

    #[test]
    fn validate_catches_bad_shapes() {
        let mut m = LinearModel::zeros(Family::Logistic, vec!["a".into(), "b".into()], 3);
        m.weights.pop();
        assert!(m.validate().is_err());
        let mut m = LinearModel::zeros(Family::Linear, vec![], 1);
        m.bias[0] = f64::NAN;
        assert!(m.validate().is_err());
    }
}
