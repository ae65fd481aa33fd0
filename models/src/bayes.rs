//! Gaussian naive Bayes over encoded vectors, kept as exact sufficient statistics (count, mean and sum of squared
//! deviations per class and dimension) so that more rows can be folded in later without refitting.

use serde::{Deserialize, Serialize};

use lambda_core::error::{Error, Result};

/// A Gaussian naive Bayes classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaiveBayes {
    /// Class labels, in output order.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// Rows seen per class.
    pub counts: Vec<f64>,
    /// Mean per class and dimension, class-major.
    pub means: Vec<f64>,
    /// Sum of squared deviations from the mean per class and dimension (Welford), class-major.
    pub m2: Vec<f64>,
    /// Added to every variance, as a share of the largest variance of a dimension over all rows (scikit-learn's
    /// and linfa's `var_smoothing`), so that a dimension constant within a class does not give an infinite density.
    pub var_smoothing: f64,
}

impl NaiveBayes {
    /// A model that has seen nothing.
    pub fn empty(classes: Vec<String>, dim: usize, var_smoothing: f64) -> NaiveBayes {
        let k = classes.len();
        NaiveBayes {
            classes,
            dim,
            counts: vec![0.0; k],
            means: vec![0.0; k * dim],
            m2: vec![0.0; k * dim],
            var_smoothing,
        }
    }

    /// Folds one row of class `class` into the statistics.
    pub fn observe(&mut self, x: &[f64], class: usize) {
        let d = self.dim;
        self.counts[class] += 1.0;
        let n = self.counts[class];
        let (mean, m2) = (&mut self.means[class * d..(class + 1) * d], &mut self.m2[class * d..(class + 1) * d]);
        for j in 0..d {
            let delta = x[j] - mean[j];
            mean[j] += delta / n;
            m2[j] += delta * (x[j] - mean[j]);
        }
    }

    /// Fits on row-major `xs` with class indices `ys`.
    pub fn fit(classes: Vec<String>, dim: usize, xs: &[f64], ys: &[usize], var_smoothing: f64) -> NaiveBayes {
        let mut m = NaiveBayes::empty(classes, dim, var_smoothing);
        for (x, &y) in xs.chunks_exact(dim.max(1)).zip(ys) {
            m.observe(x, y);
        }
        m
    }

    /// The variances used for prediction, class-major.
    fn variances(&self) -> Vec<f64> {
        let d = self.dim;
        let mut var: Vec<f64> = Vec::with_capacity(self.m2.len());
        for (c, n) in self.counts.iter().enumerate() {
            for j in 0..d {
                var.push(if *n > 0.0 { self.m2[c * d + j] / n } else { 0.0 });
            }
        }
        // The variance of each dimension over all rows, from the per-class statistics (Chan et al.'s merge).
        let total: f64 = self.counts.iter().sum();
        let mut largest: f64 = 0.0;
        for j in 0..d {
            let mean = (0..self.counts.len()).map(|c| self.counts[c] * self.means[c * d + j]).sum::<f64>() / total;
            let m2: f64 = (0..self.counts.len())
                .map(|c| self.m2[c * d + j] + self.counts[c] * (self.means[c * d + j] - mean).powi(2))
                .sum();
            largest = largest.max(m2 / total);
        }
        let epsilon = self.var_smoothing * largest.max(1e-12);
        var.iter_mut().for_each(|v| *v += epsilon);
        var
    }

    /// Class probabilities for `x`.
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let total: f64 = self.counts.iter().sum();
        let var = self.variances();
        let scores: Vec<f64> = (0..self.classes.len())
            .map(|c| {
                if self.counts[c] <= 0.0 {
                    return f64::NEG_INFINITY;
                }
                let mut s = (self.counts[c] / total).ln();
                for j in 0..d {
                    let v = var[c * d + j];
                    let z = x[j] - self.means[c * d + j];
                    s -= 0.5 * ((2.0 * std::f64::consts::PI * v).ln() + z * z / v);
                }
                s
            })
            .collect();
        softmax(scores)
    }

    /// Checks shapes and values.
    pub fn validate(&self) -> Result<()> {
        let k = self.classes.len();
        if k < 2 || self.counts.len() != k || self.means.len() != k * self.dim || self.m2.len() != k * self.dim {
            return Err(Error::InvalidModel(format!("naive Bayes shapes disagree: {k} classes, dim {}", self.dim)));
        }
        if self.counts.iter().chain(&self.means).chain(&self.m2).any(|v| !v.is_finite())
            || self.counts.iter().all(|c| *c <= 0.0)
            || !(self.var_smoothing.is_finite() && self.var_smoothing >= 0.0)
        {
            return Err(Error::InvalidModel("naive Bayes has non-finite or empty statistics".into()));
        }
        Ok(())
    }
}

/// Probabilities from log-scores, shifted by the largest for stability; scores that are all -inf (no class
/// possible) give equal shares.
pub(crate) fn softmax(mut s: Vec<f64>) -> Vec<f64> {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = if m.is_finite() { (*v - m).exp() } else { 1.0 };
        sum += *v;
    }
    s.iter_mut().for_each(|v| *v /= sum);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_a_two_pass_computation_and_predictions_follow_the_densities() {
        let xs = [1.0, 10.0, 2.0, 12.0, 3.0, 11.0, -1.0, 0.0, -2.0, 1.0];
        let ys = [0, 0, 0, 1, 1];
        let m = NaiveBayes::fit(vec!["a".into(), "b".into()], 2, &xs, &ys, 1e-9);
        m.validate().unwrap();
        assert_eq!(m.counts, vec![3.0, 2.0]);
        assert!((m.means[0] - 2.0).abs() < 1e-12 && (m.means[1] - 11.0).abs() < 1e-12);
        // Sum of squared deviations of 1, 2, 3 around 2.
        assert!((m.m2[0] - 2.0).abs() < 1e-12);
        let p = m.predict(&[2.0, 11.0]);
        assert!(p[0] > 0.99 && (p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
        let p = m.predict(&[-1.5, 0.5]);
        assert!(p[1] > 0.99, "{p:?}");
    }

    #[test]
    fn a_class_never_seen_gets_zero_probability() {
        let m = NaiveBayes::fit(vec!["a".into(), "b".into(), "c".into()], 1, &[1.0, 2.0], &[0, 2], 1e-9);
        let p = m.predict(&[1.5]);
        assert_eq!(p[1], 0.0);
        assert!((p[0] + p[2] - 1.0).abs() < 1e-12);
    }
}
