//! Evaluation metrics: accuracy, log loss and AUC for classification; RMSE, MAE and R² for regression.

use crate::model::{argmax, Prediction};
use lambda_core::schema::TargetRef;

pub use lambda_core::names::{Metric, Metrics};

/// Evaluates `predictions` of a model with `classes` (empty for regression) against `targets` (same length). Rows
/// whose label the model does not know count as wrong and as the worst log loss.
pub fn evaluate(classes: &[String], predictions: &[Prediction], targets: &[TargetRef<'_>]) -> Metrics {
    let mut m = Metrics::new();
    m.insert("rows".into(), targets.len() as f64);
    if targets.is_empty() {
        return m;
    }
    if classes.is_empty() {
        let mut ys = Vec::with_capacity(targets.len());
        let mut ps = Vec::with_capacity(targets.len());
        for (p, t) in predictions.iter().zip(targets) {
            if let (Prediction::Value(p), TargetRef::Value(y)) = (p, t) {
                ps.push(*p);
                ys.push(*y);
            }
        }
        let n = ys.len().max(1) as f64;
        let mean = ys.iter().sum::<f64>() / n;
        let sse: f64 = ps.iter().zip(&ys).map(|(p, y)| (p - y) * (p - y)).sum();
        let sst: f64 = ys.iter().map(|y| (y - mean) * (y - mean)).sum();
        m.insert("rmse".into(), (sse / n).sqrt());
        m.insert("mae".into(), ps.iter().zip(&ys).map(|(p, y)| (p - y).abs()).sum::<f64>() / n);
        m.insert("r2".into(), if sst > 0.0 { 1.0 - sse / sst } else { 0.0 });
        return m;
    }
    let k = classes.len();
    let mut correct = 0usize;
    let mut logloss = 0.0;
    // Per class: (score for that class, is that class) for one-vs-rest AUC.
    let mut per_class: Vec<Vec<(f64, bool)>> = vec![Vec::with_capacity(targets.len()); k];
    for (p, t) in predictions.iter().zip(targets) {
        let (Prediction::Probabilities(p), TargetRef::Class(c)) = (p, t) else { continue };
        let truth = classes.iter().position(|k| k == c);
        let best = argmax(p);
        if truth == Some(best) {
            correct += 1;
        }
        logloss += match truth {
            Some(i) => -p[i].clamp(1e-15, 1.0).ln(),
            None => -(1e-15f64).ln(),
        };
        for (class, scores) in per_class.iter_mut().enumerate() {
            scores.push((p[class], truth == Some(class)));
        }
    }
    let n = targets.len() as f64;
    m.insert("accuracy".into(), correct as f64 / n);
    m.insert("log_loss".into(), logloss / n);
    let aucs: Vec<f64> = if k == 2 {
        auc(&mut per_class[1]).into_iter().collect()
    } else {
        per_class.iter_mut().filter_map(|s| auc(s)).collect()
    };
    if !aucs.is_empty() {
        m.insert("auc".into(), aucs.iter().sum::<f64>() / aucs.len() as f64);
    }
    m
}

/// Area under the ROC curve by the rank-sum statistic, ties counted half. `None` when one side is empty.
pub fn auc(scores: &mut [(f64, bool)]) -> Option<f64> {
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = scores.iter().filter(|s| s.1).count() as f64;
    let negatives = scores.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < scores.len() {
        let mut j = i;
        while j + 1 < scores.len() && scores[j + 1].0 == scores[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * scores[i..=j].iter().filter(|s| s.1).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_tied_rankings() {
        assert_eq!(auc(&mut [(0.1, false), (0.9, true), (0.2, false), (0.8, true)]), Some(1.0));
        assert_eq!(auc(&mut [(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auc(&mut [(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(auc(&mut [(0.5, true)]), None);
    }

    #[test]
    fn classification_and_regression_metrics() {
        let m = ["n".to_string(), "y".to_string()];
        let preds = vec![Prediction::Probabilities(vec![0.2, 0.8]), Prediction::Probabilities(vec![0.6, 0.4])];
        let targets = vec![TargetRef::Class("y"), TargetRef::Class("y")];
        let r = evaluate(&m, &preds, &targets);
        assert_eq!(r["accuracy"], 0.5);
        assert!((r["log_loss"] - (-(0.8f64).ln() - (0.4f64).ln()) / 2.0).abs() < 1e-12);
        let m: [String; 0] = [];
        let r = evaluate(
            &m,
            &[Prediction::Value(1.0), Prediction::Value(3.0)],
            &[TargetRef::Value(1.0), TargetRef::Value(2.0)],
        );
        assert!((r["rmse"] - (0.5f64).sqrt()).abs() < 1e-12);
        assert_eq!(r["mae"], 0.5);
        assert_eq!(r["r2"], 1.0 - 1.0 / 0.5);
    }
}
