//! Naive Bayes learned online over the encoder's vectors, from exact sufficient statistics.
//!
//! Per class, a count of events. A numeric or boolean feature is a Gaussian on its value dimension with Welford
//! moments (count, mean, sum of squared deviations) per class; a missing value (its flag dimension set) is neither
//! learned nor scored. A categorical feature is a categorical distribution over its one-hot slots (vocabulary, unseen,
//! missing) with counts per class and additive smoothing `alpha`, not a Gaussian per slot. Variances get
//! scikit-learn's `var_smoothing` (that share of the largest variance of any Gaussian dimension over all classes).
//!
//! Learning folds one event into the statistics exactly, so the batch layer's statistics over history
//! ([`BayesStats`], computed with the same [`BayesStats::add`]) are the statistics the speed layer would hold had it
//! learned every history row itself: its warm start.

use serde::{Deserialize, Serialize};

use crate::model::Prediction;
use lambda_core::encoder::{Encoder, FeatureEncoder};
use lambda_core::error::{Error, Result};
use lambda_core::schema::Target;

/// scikit-learn's and linfa's default `var_smoothing`.
pub const VAR_SMOOTHING: f64 = 1e-9;

/// The default additive smoothing of category counts (Laplace).
pub const ALPHA: f64 = 1.0;

/// How the learner reads one feature's encoded dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Part {
    /// A Gaussian on the value at this dimension; the next dimension is its missing flag.
    Gaussian(usize),
    /// A categorical over one-hot slots.
    Categorical {
        /// First slot's dimension.
        at: usize,
        /// Slots: vocabulary, unseen, missing.
        width: usize,
    },
}

/// The parts of `encoder`'s vectors, in feature order.
pub fn layout(encoder: &Encoder) -> Vec<Part> {
    let mut at = 0;
    let mut parts = Vec::with_capacity(encoder.features.len());
    for f in &encoder.features {
        parts.push(match f {
            FeatureEncoder::Numeric { .. } | FeatureEncoder::Boolean { .. } => Part::Gaussian(at),
            FeatureEncoder::Categorical { .. } => Part::Categorical { at, width: f.width() },
        });
        at += f.width();
    }
    parts
}

/// Count, mean and sum of squared deviations of a stream of values (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values seen.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Chan et al.'s merge of two streams' moments.
    fn merge(self, o: Moments) -> Moments {
        if o.n == 0 {
            return self;
        }
        if self.n == 0 {
            return o;
        }
        let n = (self.n + o.n) as f64;
        let d = o.mean - self.mean;
        Moments {
            n: self.n + o.n,
            mean: self.mean + d * o.n as f64 / n,
            m2: self.m2 + o.m2 + d * d * self.n as f64 * o.n as f64 / n,
        }
    }

    fn variance(&self) -> f64 {
        if self.n > 0 {
            self.m2 / self.n as f64
        } else {
            0.0
        }
    }
}

/// Naive Bayes' sufficient statistics for a layout and a number of classes. Their size does not grow with events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BayesStats {
    /// Events learned per class.
    pub counts: Vec<u64>,
    /// Per class, then per Gaussian part: the moments of its non-missing values.
    pub moments: Vec<Moments>,
    /// Per class, then per slot of every categorical part in order: events with that slot set.
    pub slots: Vec<u64>,
}

/// Gaussian parts and categorical slots of a layout.
fn sizes(layout: &[Part]) -> (usize, usize) {
    layout.iter().fold((0, 0), |(g, s), p| match p {
        Part::Gaussian(_) => (g + 1, s),
        Part::Categorical { width, .. } => (g, s + width),
    })
}

/// The slot set in a one-hot block; `None` when none is (never from the encoder).
fn hot(block: &[f64]) -> Option<usize> {
    block.iter().position(|v| *v > 0.5)
}

impl BayesStats {
    /// Nothing learned.
    pub fn empty(classes: usize, layout: &[Part]) -> BayesStats {
        let (g, s) = sizes(layout);
        BayesStats {
            counts: vec![0; classes],
            moments: vec![Moments::default(); classes * g],
            slots: vec![0; classes * s],
        }
    }

    /// Checks that the statistics are for `classes` classes over `layout` and hold sane numbers.
    pub fn check(&self, classes: usize, layout: &[Part]) -> Result<()> {
        let (g, s) = sizes(layout);
        if self.counts.len() != classes || self.moments.len() != classes * g || self.slots.len() != classes * s {
            return Err(Error::InvalidModel(format!(
                "naive Bayes statistics of {} classes, {} moments and {} slot counts for {classes} classes, {g} \
                 Gaussian features and {s} category slots",
                self.counts.len(),
                self.moments.len(),
                self.slots.len()
            )));
        }
        for (c, &n) in self.counts.iter().enumerate() {
            let bad = self.moments[c * g..(c + 1) * g]
                .iter()
                .any(|m| m.n > n || !m.mean.is_finite() || !(m.m2.is_finite() && m.m2 >= 0.0));
            if bad || self.slots[c * s..(c + 1) * s].iter().any(|&k| k > n) {
                return Err(Error::InvalidModel(format!(
                    "naive Bayes statistics of class {c}: a moment is not finite or a count exceeds its {n} events"
                )));
            }
        }
        Ok(())
    }

    /// Folds one encoded event of class `class` in. `false`, and nothing changed, when `x` is not of the layout's
    /// length or holds a value that is not finite.
    pub fn add(&mut self, layout: &[Part], dim: usize, x: &[f64], class: usize) -> bool {
        if x.len() != dim || class >= self.counts.len() || !x.iter().all(|v| v.is_finite()) {
            return false;
        }
        let (g, s) = sizes(layout);
        let (moments, slots) =
            (&mut self.moments[class * g..(class + 1) * g], &mut self.slots[class * s..(class + 1) * s]);
        let (mut gi, mut si) = (0, 0);
        for p in layout {
            match *p {
                Part::Gaussian(at) => {
                    if x[at + 1] == 0.0 {
                        moments[gi].add(x[at]);
                    }
                    gi += 1;
                }
                Part::Categorical { at, width } => {
                    if let Some(k) = hot(&x[at..at + width]) {
                        slots[si + k] += 1;
                    }
                    si += width;
                }
            }
        }
        self.counts[class] += 1;
        true
    }
}

/// An online naive Bayes classifier (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineBayes {
    /// Class labels, in output order.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// How the inputs group into features.
    pub layout: Vec<Part>,
    /// What it has learned.
    pub stats: BayesStats,
    /// Added to every category count.
    pub alpha: f64,
    /// Share of the largest variance added to every variance.
    pub var_smoothing: f64,
}

impl OnlineBayes {
    /// A classifier over `encoder`'s vectors, starting from `warm` when it fits (else from nothing).
    pub fn new(classes: Vec<String>, encoder: &Encoder, warm: Option<&BayesStats>) -> OnlineBayes {
        let layout = layout(encoder);
        let stats = match warm {
            Some(w) if w.check(classes.len(), &layout).is_ok() => w.clone(),
            _ => BayesStats::empty(classes.len(), &layout),
        };
        OnlineBayes { classes, dim: encoder.dim(), layout, stats, alpha: ALPHA, var_smoothing: VAR_SMOOTHING }
    }

    /// Events learned.
    pub fn events(&self) -> u64 {
        self.stats.counts.iter().sum()
    }

    /// Learns one labelled vector exactly; `false` (nothing changed) for an unknown class, a regression target, a
    /// vector of another length or a value that is not finite.
    pub fn learn(&mut self, x: &[f64], target: &Target) -> bool {
        let Target::Class(c) = target else { return false };
        let Some(class) = self.classes.iter().position(|k| k == c) else { return false };
        self.stats.add(&self.layout, self.dim, x, class)
    }

    /// Class probabilities for `x`: the normalized posterior. Uniform before anything is learned.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        let k = self.classes.len();
        let total = self.events();
        if x.len() != self.dim || total == 0 {
            return Prediction::Probabilities(vec![1.0 / k.max(1) as f64; k]);
        }
        let (g, s) = sizes(&self.layout);
        let st = &self.stats;
        // Each Gaussian dimension over all classes: for the smoothing, and for a class that never saw a value of it.
        let pooled: Vec<Moments> =
            (0..g).map(|j| (0..k).fold(Moments::default(), |acc, c| acc.merge(st.moments[c * g + j]))).collect();
        let largest = pooled.iter().map(Moments::variance).fold(0.0, f64::max);
        let epsilon = self.var_smoothing * largest.max(1e-12);
        let scores: Vec<f64> = (0..k)
            .map(|c| {
                let n = st.counts[c];
                if n == 0 {
                    return f64::NEG_INFINITY;
                }
                let mut score = (n as f64 / total as f64).ln();
                let (moments, slots) = (&st.moments[c * g..(c + 1) * g], &st.slots[c * s..(c + 1) * s]);
                let (mut gi, mut si) = (0, 0);
                for p in &self.layout {
                    match *p {
                        Part::Gaussian(at) => {
                            let m = if moments[gi].n > 0 { moments[gi] } else { pooled[gi] };
                            if x[at + 1] == 0.0 && x[at].is_finite() && m.n > 0 {
                                let var = m.variance() + epsilon;
                                let z = x[at] - m.mean;
                                score -= 0.5 * ((2.0 * std::f64::consts::PI * var).ln() + z * z / var);
                            }
                            gi += 1;
                        }
                        Part::Categorical { at, width } => {
                            if let Some(h) = hot(&x[at..at + width]) {
                                let block = &slots[si..si + width];
                                let seen: u64 = block.iter().sum();
                                score +=
                                    ((block[h] as f64 + self.alpha) / (seen as f64 + self.alpha * width as f64)).ln();
                            }
                            si += width;
                        }
                    }
                }
                score
            })
            .collect();
        Prediction::Probabilities(crate::bayes::softmax(scores))
    }

    /// Checks the stored shapes and numbers, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        let mut next = 0;
        for p in &self.layout {
            let (start, width) = match *p {
                Part::Gaussian(at) => (at, 2),
                Part::Categorical { at, width } => (at, width),
            };
            if start != next || width == 0 {
                return Err(Error::InvalidModel(format!("naive Bayes layout breaks at dimension {next}")));
            }
            next += width;
        }
        if next != self.dim {
            return Err(Error::InvalidModel(format!("naive Bayes layout covers {next} dimensions of {}", self.dim)));
        }
        let fine =
            self.alpha.is_finite() && self.alpha > 0.0 && self.var_smoothing.is_finite() && self.var_smoothing >= 0.0;
        if !fine {
            return Err(Error::InvalidModel("naive Bayes smoothing must be finite, alpha > 0".into()));
        }
        self.stats.check(self.classes.len(), &self.layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn encoder() -> Encoder {
        let vocabulary: BTreeMap<String, usize> = [("de".to_string(), 0), ("fr".to_string(), 1)].into();
        Encoder {
            features: vec![
                FeatureEncoder::Numeric { name: "amount".into(), mean: 0.0, std: 1.0, min: -3.0, max: 3.0, trend: 0.0 },
                FeatureEncoder::Categorical { name: "country".into(), vocabulary },
                FeatureEncoder::Boolean { name: "mobile".into() },
            ],
            target: None,
        }
    }

    fn classes() -> Vec<String> {
        vec!["no".into(), "yes".into()]
    }

    /// Encoded rows of `encoder()`: amount (missing one time in ten), country slot 0..3 (de, fr, unseen, missing),
    /// mobile; the label depends on all three.
    fn rows(n: usize, seed: u64) -> Vec<(Vec<f64>, Target)> {
        let mut lcg = crate::testing::Lcg(seed);
        let mut next = move || lcg.next();
        (0..n)
            .map(|_| {
                let yes = next() < 0.4;
                let mut x = vec![0.0; 8];
                if next() < 0.1 {
                    x[1] = 1.0;
                } else {
                    x[0] = next() * 2.0 - 1.0 + if yes { 0.8 } else { -0.3 };
                }
                let slot = if yes && next() < 0.6 { 1 } else { (next() * 4.0) as usize };
                x[2 + slot] = 1.0;
                x[6] = f64::from(u8::from(next() < if yes { 0.7 } else { 0.2 }));
                (x, Target::Class(if yes { "yes" } else { "no" }.into()))
            })
            .collect()
    }

    fn learned(data: &[(Vec<f64>, Target)]) -> OnlineBayes {
        let mut m = OnlineBayes::new(classes(), &encoder(), None);
        for (x, y) in data {
            assert!(m.learn(x, y));
        }
        m
    }

    fn probabilities(p: Prediction) -> Vec<f64> {
        match p {
            Prediction::Probabilities(p) => p,
            Prediction::Value(v) => panic!("a value {v} from a classifier"),
        }
    }

    #[test]
    fn the_statistics_equal_a_two_pass_computation() {
        let data = rows(2000, 5);
        let m = learned(&data);
        m.validate().unwrap();
        for (c, name) in classes().iter().enumerate() {
            let of: Vec<&Vec<f64>> =
                data.iter().filter(|(_, y)| *y == Target::Class(name.clone())).map(|(x, _)| x).collect();
            assert_eq!(m.stats.counts[c], of.len() as u64);
            // The amount over non-missing rows: mean, then squared deviations from it.
            let values: Vec<f64> = of.iter().filter(|x| x[1] == 0.0).map(|x| x[0]).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let m2: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            let amount = m.stats.moments[c * 2];
            assert_eq!(amount.n, values.len() as u64);
            assert!((amount.mean - mean).abs() < 1e-12 && (amount.m2 - m2).abs() < 1e-9 * m2, "{amount:?}");
            // Mobile is never missing here: every row counts.
            let mobile = m.stats.moments[c * 2 + 1];
            assert_eq!(mobile.n, of.len() as u64);
            assert!((mobile.mean - of.iter().map(|x| x[6]).sum::<f64>() / of.len() as f64).abs() < 1e-12);
            for slot in 0..4 {
                assert_eq!(m.stats.slots[c * 4 + slot], of.iter().filter(|x| x[2 + slot] == 1.0).count() as u64);
            }
        }
    }

    #[test]
    fn learning_rows_one_by_one_equals_the_batch_statistics_bit_for_bit() {
        let data = rows(3000, 9);
        let online = learned(&data);
        // What the batch layer does for the warm start: fold the history rows into statistics, then start from them.
        let layout = layout(&encoder());
        let mut batch = BayesStats::empty(2, &layout);
        for (x, y) in &data {
            let Target::Class(c) = y else { unreachable!() };
            batch.add(&layout, 8, x, classes().iter().position(|k| k == c).unwrap());
        }
        assert_eq!(online.stats, batch);
        let warm = OnlineBayes::new(classes(), &encoder(), Some(&batch));
        assert_eq!(warm, online);
        // The same holds from a warm start: the first half in batch, the rest learned.
        let mut half = BayesStats::empty(2, &layout);
        for (x, y) in &data[..1500] {
            let Target::Class(c) = y else { unreachable!() };
            half.add(&layout, 8, x, classes().iter().position(|k| k == c).unwrap());
        }
        let mut resumed = OnlineBayes::new(classes(), &encoder(), Some(&half));
        for (x, y) in &data[1500..] {
            resumed.learn(x, y);
        }
        assert_eq!(resumed, online);
    }

    #[test]
    fn a_warm_start_that_does_not_fit_starts_empty() {
        let wrong = BayesStats::empty(3, &layout(&encoder()));
        let m = OnlineBayes::new(classes(), &encoder(), Some(&wrong));
        assert_eq!(m.stats, BayesStats::empty(2, &layout(&encoder())));
        assert_eq!(probabilities(m.predict(&[0.0; 8])), vec![0.5, 0.5]);
    }

    #[test]
    fn categories_are_scored_by_smoothed_counts_with_their_own_unseen_slot() {
        // One categorical feature only: the posterior is the prior times the smoothed share of the slot.
        let vocabulary: BTreeMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let enc =
            Encoder { features: vec![FeatureEncoder::Categorical { name: "c".into(), vocabulary }], target: None };
        let mut m = OnlineBayes::new(classes(), &enc, None);
        let one_hot = |slot: usize| {
            let mut x = vec![0.0; 4];
            x[slot] = 1.0;
            x
        };
        let no = Target::Class("no".into());
        let yes = Target::Class("yes".into());
        // "no": a ×3, unseen ×1; "yes": b ×4. Nobody saw the missing slot.
        for (slot, y) in [(0, &no), (0, &no), (0, &no), (2, &no), (1, &yes), (1, &yes), (1, &yes), (1, &yes)] {
            assert!(m.learn(&one_hot(slot), y));
        }
        assert_eq!(m.stats.slots, vec![3, 0, 1, 0, 0, 4, 0, 0]);
        let expect = |slot: usize| {
            let (n, y) = ([3.0, 0.0, 1.0, 0.0][slot], [0.0, 4.0, 0.0, 0.0][slot]);
            // Equal priors (4 and 4 events); each class's slot share is (count + 1) / (4 + 4).
            let (pn, py) = ((n + 1.0) / 8.0, (y + 1.0) / 8.0);
            pn / (pn + py)
        };
        for slot in 0..4 {
            let p = probabilities(m.predict(&one_hot(slot)));
            assert!((p[0] - expect(slot)).abs() < 1e-12, "slot {slot}: {p:?}");
        }
        // An unseen category goes to the unseen slot, which "no" has seen; smoothing keeps "yes" above zero.
        let unseen = probabilities(m.predict(&one_hot(2)));
        assert!(unseen[0] > 0.6 && unseen[1] > 0.0, "{unseen:?}");
        // The missing slot, seen by neither, leaves the prior.
        assert_eq!(probabilities(m.predict(&one_hot(3))), vec![0.5, 0.5]);
    }

    #[test]
    fn a_missing_value_is_neither_learned_nor_scored_and_a_constant_dimension_stays_finite() {
        let mut m = OnlineBayes::new(classes(), &encoder(), None);
        // Mobile is 1 in every row of both classes: a constant dimension, smoothed into a narrow Gaussian.
        for (a, y) in [(-1.0, "no"), (-1.2, "no"), (1.0, "yes"), (1.1, "yes")] {
            assert!(m.learn(&[a, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &Target::Class(y.into())));
        }
        let before = m.stats.moments.clone();
        assert!(m.learn(&[0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &Target::Class("yes".into())));
        assert_eq!(m.stats.moments[2], before[2], "the missing amount is not learned as 0");
        assert_eq!(m.stats.moments[3].n, before[3].n + 1, "mobile is");
        // A row whose amount is missing is scored by the other features alone: mobile's Gaussians are alike, so the
        // prior (2 "no", 3 "yes") times the country's smoothed share (3/6 and 4/7) remains.
        let p = probabilities(m.predict(&[0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
        let (no, yes) = (0.4 * 3.0 / 6.0, 0.6 * 4.0 / 7.0);
        assert!((p[1] - yes / (no + yes)).abs() < 1e-9, "{p:?}");
        let p = probabilities(m.predict(&[1.05, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
        assert!(p.iter().all(|v| v.is_finite()) && p[1] > 0.99, "{p:?}");
    }

    #[test]
    fn an_unknown_class_or_a_value_that_is_not_finite_changes_nothing() {
        let mut m = learned(&rows(100, 3));
        let before = m.clone();
        let x = rows(1, 4).remove(0).0;
        assert!(!m.learn(&x, &Target::Class("maybe".into())));
        assert!(!m.learn(&x, &Target::Value(1.0)));
        for bad in [f64::NAN, f64::INFINITY] {
            let mut y = x.clone();
            y[0] = bad;
            assert!(!m.learn(&y, &Target::Class("yes".into())));
        }
        assert!(!m.learn(&x[..7], &Target::Class("yes".into())));
        assert_eq!(m, before);
        assert!(m.learn(&x, &Target::Class("yes".into())));
        assert_ne!(m, before);
    }

    #[test]
    fn a_checkpoint_round_trip_gives_the_same_model_and_predictions() {
        let data = rows(1500, 21);
        let mut m = learned(&data[..1000]);
        let bytes = postcard::to_stdvec(&m).unwrap();
        let mut back: OnlineBayes = postcard::from_bytes(&bytes).unwrap();
        back.validate().unwrap();
        assert_eq!(back, m);
        // Restarted and not restarted learn the rest alike, bit for bit.
        for (x, y) in &data[1000..] {
            let (p, q) = (probabilities(m.predict(x)), probabilities(back.predict(x)));
            assert_eq!(
                p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                q.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            m.learn(x, y);
            back.learn(x, y);
        }
        assert_eq!(back, m);
    }

    #[test]
    fn its_state_does_not_grow_with_the_events_learned() {
        let data = rows(100_000, 8);
        let small = learned(&data[..1000]);
        let large = learned(&data);
        let lens = |m: &OnlineBayes| (m.stats.counts.len(), m.stats.moments.len(), m.stats.slots.len());
        assert_eq!(lens(&small), lens(&large));
        // Serialized, only the counters' variable-length integers grow: from one or two bytes to at most three.
        let size = |m: &OnlineBayes| postcard::to_stdvec(m).unwrap().len();
        let counters = large.stats.counts.len() + large.stats.moments.len() + large.stats.slots.len();
        assert!(size(&large) <= size(&small) + 2 * counters, "{} then {}", size(&small), size(&large));
    }

    #[test]
    fn it_learns_the_concept_of_its_rows() {
        let m = learned(&rows(5000, 1));
        let test = rows(2000, 2);
        let right = test
            .iter()
            .filter(|(x, y)| {
                let p = probabilities(m.predict(x));
                *y == Target::Class(classes()[crate::model::argmax(&p)].clone())
            })
            .count();
        // The base rate is 0.6.
        assert!(right as f64 / 2000.0 > 0.7, "{right} of 2000");
    }
}
