//! Hoeffding trees over encoded vectors, learned one event at a time (VFDT: Domingos and Hulten, "Mining
//! High-Speed Data Streams", KDD 2000; regression as in FIMT-DD: Ikonomovska, Gama and Džeroski, "Learning model
//! trees from evolving data streams", DMKD 2011).
//!
//! A leaf keeps statistics of what reached it; every `grace_period` events it scores the best split of each input
//! and splits on the best one once the Hoeffding bound says, with probability `1 - delta`, that it stays the best
//! (or the two best are tied within `tie_threshold`). Classification: per class and input a Gaussian (count, mean,
//! squared deviations, min, max) from which `split_points` thresholds per input are scored by information gain (whose
//! range in the bound is log2 of the classes the leaf has seen, as River and MOA); a
//! leaf predicts with its class counts or with naive Bayes over its Gaussians, whichever has been right more often
//! there (River's "nba"). Regression: per input a histogram of the target over bins of `radius` (inputs are
//! standardized, so a quarter of a standard deviation), scored by variance reduction, with FIMT-DD's test on the
//! ratio of the two best; a leaf predicts with its mean or its linear model, whichever has been closer lately
//! there (River's "adaptive" leaves; see [`LeafModel`]). The tree stops growing at `max_depth` and `max_leaves`, so its
//! memory is bounded whatever the stream.
//!
//! [`HoeffdingAdaptiveTree`] grows the same leaves and replaces subtrees whose error rose (see [`adaptive`]).

use serde::{Deserialize, Serialize};

use crate::model::{argmax, Prediction};
use lambda_core::error::{Error, Result};
use lambda_core::schema::Target;

pub mod adaptive;
pub mod forest;

pub use adaptive::{AdaptiveSettings, HoeffdingAdaptiveTree};
pub use forest::{AdaptiveRandomForest, ForestSettings};

/// How a Hoeffding tree grows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeSettings {
    /// Events a leaf takes between two split attempts.
    pub grace_period: u32,
    /// Allowed probability of choosing a split that is not the best.
    pub delta: f64,
    /// Below this Hoeffding bound the two best splits count as tied and the best is taken.
    pub tie_threshold: f64,
    /// Depth at which leaves stop splitting.
    pub max_depth: u32,
    /// Leaves at which the tree stops splitting.
    pub max_leaves: u32,
    /// Thresholds scored per input (classification).
    pub split_points: u32,
    /// Width of a target histogram bin (regression), in encoded units.
    pub radius: f64,
}

impl Default for TreeSettings {
    fn default() -> Self {
        TreeSettings {
            grace_period: 200,
            delta: 1e-7,
            tie_threshold: 0.05,
            max_depth: 20,
            max_leaves: 500,
            split_points: 10,
            radius: 0.25,
        }
    }
}

/// Count, mean and sum of squared deviations (Welford), mergeable (Chan et al.).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Observations.
    pub n: f64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.add_weighted(x, 1.0);
    }

    /// Adds `x` as `w` observations at once (West 1979); with `w = 1` exactly what [`Moments::add`] does.
    fn add_weighted(&mut self, x: f64, w: f64) {
        self.n += w;
        let d = x - self.mean;
        self.mean += d * w / self.n;
        self.m2 += w * d * (x - self.mean);
    }

    fn merge(&self, o: &Moments) -> Moments {
        if o.n == 0.0 {
            return *self;
        }
        if self.n == 0.0 {
            return *o;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        Moments { n, mean: self.mean + d * o.n / n, m2: self.m2 + o.m2 + d * d * self.n * o.n / n }
    }

    /// Population variance.
    fn variance(&self) -> f64 {
        if self.n > 0.0 {
            (self.m2 / self.n).max(0.0)
        } else {
            0.0
        }
    }

    fn is_finite(&self) -> bool {
        self.n.is_finite() && self.mean.is_finite() && self.m2.is_finite()
    }
}

/// The standard normal distribution function (Abramowitz and Stegun 7.1.26; absolute error below 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn entropy(counts: &[f64]) -> f64 {
    let n: f64 = counts.iter().sum();
    if n <= 0.0 {
        return 0.0;
    }
    -counts.iter().filter(|c| **c > 0.0).map(|c| (c / n) * (c / n).log2()).sum::<f64>()
}

/// What a classification leaf keeps: class counts, and per input and class a Gaussian with its range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ClassStats {
    counts: Vec<f64>,
    /// Input-major: `[j * classes + c]`.
    gauss: Vec<Moments>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Events this leaf's class counts, and its naive Bayes, predicted right (before learning them).
    mc_right: f64,
    nb_right: f64,
}

impl ClassStats {
    fn majority(&self) -> Vec<f64> {
        let n: f64 = self.counts.iter().sum();
        let k = self.counts.len() as f64;
        self.counts.iter().map(|c| if n > 0.0 { c / n } else { 1.0 / k }).collect()
    }

    fn naive_bayes(&self, x: &[f64]) -> Vec<f64> {
        let k = self.counts.len();
        let n: f64 = self.counts.iter().sum();
        let mut logp: Vec<f64> = self.counts.iter().map(|c| ((c + 1.0) / (n + k as f64)).ln()).collect();
        for (j, v) in x.iter().enumerate() {
            for (c, lp) in logp.iter_mut().enumerate() {
                let g = &self.gauss[j * k + c];
                if g.n > 0.0 {
                    // A variance floor: a constant input within a class gives a finite density.
                    let var = g.variance() + 1e-3;
                    *lp += -0.5 * ((v - g.mean) * (v - g.mean) / var + var.ln());
                }
            }
        }
        let top = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logp.iter().map(|l| (l - top).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    }
}

/// One bin of a regression leaf's histogram of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Bin {
    x_sum: f64,
    y: Moments,
}

/// A regression leaf's histogram of one input: its bins by index, in order. A sorted vector, not a map: at most
/// `2 × BIN_SPAN + 1` bins, so a binary search over one block beats a tree's nodes, and a copy (a good state kept
/// for a freeze copies every leaf) is one allocation; these lookups and copies were a quarter and a sixth of a
/// regression replay's time with a `BTreeMap`. Stored as the map was (a length, then index and bin pairs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct Histogram(Vec<(i32, Bin)>);

impl Histogram {
    fn get(&self, at: i32) -> Option<&Bin> {
        self.0.binary_search_by_key(&at, |(k, _)| *k).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, at: i32, bin: Bin) {
        match self.0.binary_search_by_key(&at, |(k, _)| *k) {
            Ok(i) => self.0[i].1 = bin,
            Err(i) => self.0.insert(i, (at, bin)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (i32, &Bin)> {
        self.0.iter().map(|(k, b)| (*k, b))
    }

    fn values(&self) -> impl Iterator<Item = &Bin> {
        self.0.iter().map(|(_, b)| b)
    }

    /// Indices in order, each once and within the span (binary search relies on it; a file may say otherwise).
    fn well_formed(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0) && self.0.iter().all(|(k, _)| k.abs() <= BIN_SPAN)
    }
}

/// What a regression leaf keeps: the target's moments, per input a histogram of the target, and its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ValueStats {
    y: Moments,
    bins: Vec<Histogram>,
    model: LeafModel,
}

/// A regression leaf's linear model of the target around the leaf's mean (FIMT-DD's and River's model leaves),
/// beside faded squared errors of the mean and of the model: the leaf answers with whichever is lower (River's
/// "adaptive" leaves, whose decay this is). Learned by normalized least mean squares, so that it is free of the
/// inputs' scale and carries the target's unit in its weights. A split's sides start from it (their bias moved by
/// the difference of the means), so a new leaf answers as its parent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LeafModel {
    weights: Vec<f64>,
    bias: f64,
    mean_error: f64,
    model_error: f64,
}

/// The normalized least mean squares step (stable below 2). Of 0.03, 0.1, 0.2 and 0.3 on the pipeline benchmark's
/// ten regression folders, 0.2 was best or within 0.01 of it on the Friedman streams (0.03 was better on the two
/// smallest sets, by 3 and 2%, and worse on the others).
const NLMS_RATE: f64 = 0.2;
/// How much of the faded squared errors is kept per event.
const ERROR_DECAY: f64 = 0.95;
/// A model leaf answers within this many of the leaf's target deviations of its mean.
const MODEL_REACH: f64 = 4.0;

impl LeafModel {
    fn new(dim: usize) -> LeafModel {
        LeafModel { weights: vec![0.0; dim], bias: 0.0, mean_error: 0.0, model_error: 0.0 }
    }

    fn raw(&self, mean: f64, x: &[f64]) -> f64 {
        mean + self.bias + self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }

    /// The model's answer at a leaf of target moments `y`, kept within its reach of the mean.
    fn predict(&self, y: &Moments, x: &[f64]) -> f64 {
        Self::within_reach(y, self.raw(y.mean, x))
    }

    /// `v` kept within the model's reach of the mean of `y`.
    fn within_reach(y: &Moments, v: f64) -> f64 {
        let reach = MODEL_REACH * y.variance().sqrt();
        if v.is_finite() {
            v.clamp(y.mean - reach, y.mean + reach)
        } else {
            y.mean
        }
    }

    /// The leaf's answer: its mean, or its model where the model has been closer lately.
    fn answer(&self, y: &Moments, x: &[f64]) -> f64 {
        if self.mean_error < self.model_error {
            y.mean
        } else {
            self.predict(y, x)
        }
    }

    /// Scores the mean and the model on (`x`, `target`) as `w` events, then moves the model towards it; a step
    /// that would not be finite is not taken.
    fn learn(&mut self, y: &Moments, x: &[f64], target: f64, w: f64) {
        let raw = self.raw(y.mean, x);
        let decay = ERROR_DECAY.powf(w);
        let mean_error = decay * self.mean_error + w * (target - y.mean).powi(2);
        let model_error = decay * self.model_error + w * (target - Self::within_reach(y, raw)).powi(2);
        if mean_error.is_finite() && model_error.is_finite() {
            (self.mean_error, self.model_error) = (mean_error, model_error);
        }
        let rate = 1.0 - (1.0 - NLMS_RATE).powf(w);
        let step = rate * (target - raw) / (1.0 + x.iter().map(|v| v * v).sum::<f64>());
        let finite =
            (self.bias + step).is_finite() && self.weights.iter().zip(x).all(|(wt, v)| (wt + step * v).is_finite());
        if finite {
            self.bias += step;
            self.weights.iter_mut().zip(x).for_each(|(wt, v)| *wt += step * v);
        }
    }

    /// The model a split's side starts from: the parent's, answering as it did where the side's mean `to` differs
    /// from the parent's `from`.
    fn for_side(&self, from: f64, to: f64) -> LeafModel {
        LeafModel { bias: self.bias + from - to, ..self.clone() }
    }

    /// The model over other inputs: `to` lists the new inputs by their index in the whole vector, `from` the old
    /// ones; a weight of an input both have is kept, the others start at zero.
    fn remapped(&self, from: &[u32], to: &[u32]) -> LeafModel {
        let weights = to.iter().map(|j| from.iter().position(|f| f == j).map_or(0.0, |i| self.weights[i])).collect();
        LeafModel { weights, ..self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Stats {
    Class(ClassStats),
    Value(ValueStats),
}

impl Stats {
    fn empty(classes: usize, dim: usize) -> Stats {
        if classes > 0 {
            Stats::Class(ClassStats {
                counts: vec![0.0; classes],
                gauss: vec![Moments::default(); dim * classes],
                // Finite, so that the statistics survive JSON (no input reaches them: inputs are finite, and a
                // range is only read where its Gaussian has an observation).
                lo: vec![f64::MAX; dim * classes],
                hi: vec![f64::MIN; dim * classes],
                mc_right: 0.0,
                nb_right: 0.0,
            })
        } else {
            Stats::Value(ValueStats {
                y: Moments::default(),
                bins: vec![Histogram::default(); dim],
                model: LeafModel::new(dim),
            })
        }
    }

    /// A split side's statistics (class counts, or target moments and model) over the inputs `to` instead of
    /// `from` (indices in the whole vector); nothing per input is kept.
    fn resized(self, classes: usize, from: &[u32], to: &[u32]) -> Stats {
        let mut out = Stats::empty(classes, to.len());
        match (&mut out, self) {
            (Stats::Class(o), Stats::Class(s)) => o.counts = s.counts,
            (Stats::Value(o), Stats::Value(s)) => {
                o.y = s.y;
                o.model = s.model.remapped(from, to);
            }
            (_, other) => return other,
        }
        out
    }

    fn seen(&self) -> f64 {
        match self {
            Stats::Class(s) => s.counts.iter().sum(),
            Stats::Value(s) => s.y.n,
        }
    }
}

/// A leaf: what reached it, and when it last tried to split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Leaf {
    depth: u32,
    /// Events seen when the last split attempt was made.
    attempted_at: f64,
    stats: Stats,
}

/// What learning one event changes at a leaf, computed before anything changes.
enum Update {
    /// The class's index and its new Gaussians, input by input.
    Class(usize, Vec<Moments>),
    /// The target, its new moments and each input's new bin.
    Value(f64, Moments, Vec<(i32, Bin)>),
}

/// A split a leaf decided on: inputs `<= threshold` go to the first side.
struct Split {
    input: u32,
    threshold: f64,
    sides: [Leaf; 2],
}

/// The best split of one input: merit, threshold, and what each side would start with.
struct Candidate {
    merit: f64,
    input: usize,
    threshold: f64,
    sides: [Stats; 2],
}

/// Most of a bin index either side of zero: inputs beyond `radius × BIN_SPAN` share the outermost bins.
const BIN_SPAN: i32 = 40;

/// A share of the uniform distribution mixed into every classification answer, so that one confident wrong leaf
/// costs a bounded log loss.
const SMOOTHING: f64 = 1e-3;

impl Leaf {
    fn new(classes: usize, dim: usize, depth: u32) -> Leaf {
        Leaf { depth, attempted_at: 0.0, stats: Stats::empty(classes, dim) }
    }

    /// Whether the statistics fit `classes` classes (0 for regression) and `dim` inputs.
    fn fits(&self, classes: usize, dim: usize) -> bool {
        match &self.stats {
            Stats::Class(s) => {
                s.counts.len() == classes && s.gauss.len() == classes * dim && s.lo.len() == classes * dim
            }
            Stats::Value(s) => {
                classes == 0
                    && s.bins.len() == dim
                    && s.bins.iter().all(Histogram::well_formed)
                    && s.model.weights.len() == dim
            }
        }
    }

    fn predict(&self, x: &[f64]) -> Prediction {
        self.predict_nb(x, false)
    }

    /// As [`Leaf::predict`]; with `ties_to_bayes`, naive Bayes also answers when it has been right as often as the
    /// class counts (River's rule, which a fresh leaf's naive Bayes needs to be heard).
    fn predict_nb(&self, x: &[f64], ties_to_bayes: bool) -> Prediction {
        match &self.stats {
            Stats::Class(s) => {
                let bayes = s.nb_right > s.mc_right || (ties_to_bayes && s.nb_right == s.mc_right);
                let p = if bayes { s.naive_bayes(x) } else { s.majority() };
                let k = p.len() as f64;
                Prediction::Probabilities(p.into_iter().map(|v| (1.0 - SMOOTHING) * v + SMOOTHING / k).collect())
            }
            Stats::Value(s) => Prediction::Value(s.model.answer(&s.y, x)),
        }
    }

    /// What learning (`x`, `target`) as `w` events would change; `None` when the label is not one of `classes` or
    /// of the other task, or a new moment would not be finite (1e200 squared). `x` has the leaf's dimension, every
    /// value finite; `w` is positive.
    fn plan(&self, classes: &[String], x: &[f64], target: &Target, radius: f64, w: f64) -> Option<Update> {
        match (&self.stats, target) {
            (Stats::Class(s), Target::Class(label)) => {
                let c = classes.iter().position(|k| k == label)?;
                let k = classes.len();
                let next: Vec<Moments> = x
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        let mut g = s.gauss[j * k + c];
                        g.add_weighted(*v, w);
                        g
                    })
                    .collect();
                next.iter().all(Moments::is_finite).then_some(Update::Class(c, next))
            }
            (Stats::Value(s), Target::Value(y)) => {
                let mut ys = s.y;
                ys.add_weighted(*y, w);
                let next: Vec<(i32, Bin)> = s
                    .bins
                    .iter()
                    .zip(x)
                    .map(|(bins, v)| {
                        let at = bin_of(*v, radius);
                        let mut b = bins.get(at).copied().unwrap_or_default();
                        b.x_sum += v * w;
                        b.y.add_weighted(*y, w);
                        (at, b)
                    })
                    .collect();
                let fine = ys.is_finite() && next.iter().all(|(_, b)| b.x_sum.is_finite() && b.y.is_finite());
                fine.then_some(Update::Value(*y, ys, next))
            }
            _ => None,
        }
    }

    /// Applies what [`Leaf::plan`] computed for the same `x` and `w`.
    fn apply(&mut self, x: &[f64], update: Update, w: f64) {
        match (&mut self.stats, update) {
            (Stats::Class(s), Update::Class(c, next)) => {
                let k = s.counts.len();
                s.mc_right += w * f64::from(argmax(&s.majority()) == c);
                s.nb_right += w * f64::from(argmax(&s.naive_bayes(x)) == c);
                s.counts[c] += w;
                for (j, (v, g)) in x.iter().zip(next).enumerate() {
                    let i = j * k + c;
                    s.gauss[i] = g;
                    s.lo[i] = s.lo[i].min(*v);
                    s.hi[i] = s.hi[i].max(*v);
                }
            }
            (Stats::Value(s), Update::Value(y, ys, next)) => {
                s.model.learn(&s.y, x, y, w);
                s.y = ys;
                for (bins, (at, b)) in s.bins.iter_mut().zip(next) {
                    bins.insert(at, b);
                }
            }
            // A plan is only made from the leaf's own statistics.
            _ => {}
        }
    }

    /// Whether the leaf may try to split: a grace period has passed since the last attempt, and it is not too deep.
    fn due(&self, set: &TreeSettings) -> bool {
        self.stats.seen() - self.attempted_at >= f64::from(set.grace_period) && self.depth < set.max_depth
    }

    /// Scores the best split of each input and returns the best one if the Hoeffding bound picks it; otherwise
    /// notes the attempt.
    fn split(&mut self, classes: usize, dim: usize, set: &TreeSettings) -> Option<Split> {
        let seen = self.stats.seen();
        // The best split of each input, best first; the null split (merit 0) competes too.
        let mut best: Vec<Candidate> = (0..dim)
            .filter_map(|j| best_split(&self.stats, j, classes, dim, set.split_points))
            .filter(|c| c.merit.is_finite() && c.threshold.is_finite())
            .collect();
        best.sort_by(|a, b| b.merit.total_cmp(&a.merit).then(a.input.cmp(&b.input)));
        let second = best.get(1).map_or(0.0, |c| c.merit.max(0.0));
        let decide = match (&self.stats, best.first()) {
            (_, None) => false,
            (_, Some(top)) if top.merit <= 0.0 => false,
            (Stats::Class(s), Some(top)) => {
                // The gain's range over the classes this leaf has seen (River's and MOA's): a deep leaf that sees
                // two of four classes splits on half the evidence.
                let seen_classes = s.counts.iter().filter(|&&c| c > 0.0).count();
                let range = (seen_classes.max(2) as f64).log2();
                let eps = (range * range * (1.0 / set.delta).ln() / (2.0 * seen)).sqrt();
                top.merit - second > eps || eps < set.tie_threshold
            }
            (Stats::Value(_), Some(top)) => {
                let eps = ((1.0 / set.delta).ln() / (2.0 * seen)).sqrt();
                second / top.merit < 1.0 - eps || eps < set.tie_threshold
            }
        };
        if !decide {
            self.attempted_at = seen;
            return None;
        }
        let top = best.swap_remove(0);
        let [mut l, mut r] = top.sides;
        if let Stats::Value(parent) = &self.stats {
            for side in [&mut l, &mut r] {
                if let Stats::Value(s) = side {
                    s.model = parent.model.for_side(parent.y.mean, s.y.mean);
                }
            }
        }
        let side = |stats: Stats| Leaf { depth: self.depth + 1, attempted_at: stats.seen(), stats };
        Some(Split { input: top.input as u32, threshold: top.threshold, sides: [side(l), side(r)] })
    }
}

fn bin_of(v: f64, radius: f64) -> i32 {
    ((v / radius).floor().clamp(-(BIN_SPAN as f64), BIN_SPAN as f64)) as i32
}

/// The best split of input `j` at a leaf of `k` classes (0 for regression) and `dim` inputs, with the statistics
/// each side starts from (estimated class counts, exact target moments), or `None` when the input cannot split it.
fn best_split(stats: &Stats, j: usize, k: usize, dim: usize, split_points: u32) -> Option<Candidate> {
    match stats {
        Stats::Class(s) => {
            let range = (j * k..(j + 1) * k).filter(|&i| s.gauss[i].n > 0.0);
            let lo = range.clone().map(|i| s.lo[i]).fold(f64::INFINITY, f64::min);
            let hi = range.map(|i| s.hi[i]).fold(f64::NEG_INFINITY, f64::max);
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                return None;
            }
            let n: f64 = s.counts.iter().sum();
            let parent = entropy(&s.counts);
            let points = split_points.max(1);
            let mut best: Option<(f64, f64, Vec<f64>, Vec<f64>)> = None;
            for p in 1..=points {
                let v = lo + (hi - lo) * f64::from(p) / f64::from(points + 1);
                let mut left = vec![0.0; k];
                for (c, l) in left.iter_mut().enumerate() {
                    let (g, i) = (&s.gauss[j * k + c], j * k + c);
                    *l = if g.n == 0.0 || v < s.lo[i] {
                        0.0
                    } else if v >= s.hi[i] {
                        g.n
                    } else {
                        let sd = g.variance().sqrt();
                        if sd > 0.0 {
                            g.n * normal_cdf((v - g.mean) / sd)
                        } else {
                            g.n
                        }
                    };
                }
                let right: Vec<f64> = s.counts.iter().zip(&left).map(|(t, l)| (t - l).max(0.0)).collect();
                let (nl, nr) = (left.iter().sum::<f64>(), right.iter().sum::<f64>());
                // Each side must hold at least 1% of the leaf.
                if nl < 0.01 * n || nr < 0.01 * n {
                    continue;
                }
                let gain = parent - (nl / n) * entropy(&left) - (nr / n) * entropy(&right);
                if best.as_ref().is_none_or(|b| gain > b.0) {
                    best = Some((gain, v, left, right));
                }
            }
            let (merit, threshold, left, right) = best?;
            let side = |counts: Vec<f64>| {
                let mut e = Stats::empty(k, dim);
                if let Stats::Class(s) = &mut e {
                    s.counts = counts;
                }
                e
            };
            Some(Candidate { merit, input: j, threshold, sides: [side(left), side(right)] })
        }
        Stats::Value(s) => {
            let bins: Vec<&Bin> = s.bins[j].values().collect();
            if bins.len() < 2 || s.y.n == 0.0 {
                return None;
            }
            let total = s.y;
            let mut left = Moments::default();
            let mut best: Option<(f64, f64, Moments, Moments)> = None;
            for w in 0..bins.len() - 1 {
                left = left.merge(&bins[w].y);
                let right = bins[w + 1..].iter().fold(Moments::default(), |m, b| m.merge(&b.y));
                if left.n < 0.01 * total.n || right.n < 0.01 * total.n {
                    continue;
                }
                let reduction =
                    total.variance() - (left.n / total.n) * left.variance() - (right.n / total.n) * right.variance();
                // Between the two bins' mean inputs.
                let threshold = 0.5 * (bins[w].x_sum / bins[w].y.n + bins[w + 1].x_sum / bins[w + 1].y.n);
                if best.as_ref().is_none_or(|b| reduction > b.0) {
                    best = Some((reduction, threshold, left, right));
                }
            }
            let (merit, threshold, left, right) = best?;
            let side = |y: Moments| {
                Stats::Value(ValueStats { y, bins: vec![Histogram::default(); dim], model: LeafModel::new(dim) })
            };
            Some(Candidate { merit, input: j, threshold, sides: [side(left), side(right)] })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    /// Inputs `<= threshold` go left.
    Split {
        input: u32,
        threshold: f64,
        left: u32,
        right: u32,
    },
    Leaf(Leaf),
}

/// A Hoeffding tree classifier (with `classes`) or regressor (without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoeffdingTree {
    /// Class labels, in output order; empty for regression.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// How it grows.
    pub settings: TreeSettings,
    nodes: Vec<Node>,
    leaves: u32,
}

impl HoeffdingTree {
    /// A tree of one empty leaf.
    pub fn new(classes: Vec<String>, dim: usize, settings: TreeSettings) -> HoeffdingTree {
        let root = Leaf::new(classes.len(), dim, 0);
        HoeffdingTree { classes, dim, settings, nodes: vec![Node::Leaf(root)], leaves: 1 }
    }

    /// Leaves of the tree.
    pub fn leaves(&self) -> usize {
        self.leaves as usize
    }

    /// Depth of the deepest leaf.
    pub fn depth(&self) -> u32 {
        self.nodes.iter().filter_map(|n| if let Node::Leaf(l) = n { Some(l.depth) } else { None }).max().unwrap_or(0)
    }

    /// Checks the stored shapes, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(format!("Hoeffding tree: {m}")));
        let n = self.nodes.len() as u32;
        let mut leaves = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            match node {
                // Children come after their parent (a split appends them), so that no path loops.
                Node::Split { input, threshold, left, right } => {
                    let (l, r, i) = (*left as usize, *right as usize, i);
                    if *input as usize >= self.dim
                        || *left >= n
                        || *right >= n
                        || l <= i
                        || r <= i
                        || !threshold.is_finite()
                    {
                        return bad(format!("a split on input {input} at {threshold} to nodes {left}, {right}"));
                    }
                }
                Node::Leaf(l) => {
                    leaves += 1;
                    if !l.fits(self.classes.len(), self.dim) {
                        return bad("a leaf's statistics do not fit its inputs and classes".into());
                    }
                }
            }
        }
        if leaves != self.leaves {
            return bad(format!("{leaves} leaves where {} are counted", self.leaves));
        }
        Ok(())
    }

    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut at = 0;
        while let Node::Split { input, threshold, left, right } = &self.nodes[at] {
            at = if x[*input as usize] <= *threshold { *left } else { *right } as usize;
        }
        at
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        let Node::Leaf(leaf) = &self.nodes[self.leaf_of(x)] else { unreachable!("leaf_of ends at a leaf") };
        leaf.predict(x)
    }

    /// Learns one labelled vector. `false` (nothing changed) when the label is not one of the classes or of the
    /// other task, or a value is not finite.
    pub fn learn(&mut self, x: &[f64], target: &Target) -> bool {
        self.learn_weighted(x, target, 1)
    }

    /// Learns one labelled vector as `k` identical events at once (online bagging's weight, Oza and Russell 2001):
    /// counts, moments and histograms grow by `k` in one update, and one split attempt follows. `false` (nothing
    /// changed) as for [`HoeffdingTree::learn`], and for `k = 0`.
    pub fn learn_weighted(&mut self, x: &[f64], target: &Target, k: u32) -> bool {
        if k == 0 || x.len() != self.dim || x.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let at = self.leaf_of(x);
        let Node::Leaf(leaf) = &mut self.nodes[at] else { unreachable!("leaf_of ends at a leaf") };
        let w = f64::from(k);
        // Every new moment is computed first: a value that would overflow one (1e200 squared) changes nothing.
        let Some(update) = leaf.plan(&self.classes, x, target, self.settings.radius, w) else { return false };
        leaf.apply(x, update, w);
        self.attempt_split(at);
        true
    }

    fn attempt_split(&mut self, at: usize) {
        let (k, dim) = (self.classes.len(), self.dim);
        let Node::Leaf(leaf) = &mut self.nodes[at] else { return };
        if !leaf.due(&self.settings) || self.leaves >= self.settings.max_leaves {
            return;
        }
        let Some(Split { input, threshold, sides: [l, r] }) = leaf.split(k, dim, &self.settings) else { return };
        let left = self.nodes.len() as u32;
        self.nodes.push(Node::Leaf(l));
        self.nodes.push(Node::Leaf(r));
        self.nodes[at] = Node::Split { input, threshold, left, right: left + 1 };
        self.leaves += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, LinearModel};
    use crate::online::AdaptiveLinear;
    use crate::testing::Lcg;

    /// Five inputs in [-1, 1); the label is an exclusive or of two thresholds, which no linear model separates.
    fn rule_stream(n: usize, seed: u64) -> Vec<(Vec<f64>, Target)> {
        let mut r = Lcg(seed);
        (0..n)
            .map(|_| {
                let x: Vec<f64> = (0..5).map(|_| r.next() * 2.0 - 1.0).collect();
                let yes = (x[0] > 0.3) != (x[1] > -0.2);
                (x, Target::Class(if yes { "yes" } else { "no" }.into()))
            })
            .collect()
    }

    fn classes() -> Vec<String> {
        vec!["no".into(), "yes".into()]
    }

    /// Accuracy over the last `tail` events of a predict-then-learn pass.
    fn prequential(
        data: &[(Vec<f64>, Target)],
        tail: usize,
        mut predict_learn: impl FnMut(&[f64], &Target) -> Prediction,
    ) -> f64 {
        let mut right = 0;
        for (i, (x, y)) in data.iter().enumerate() {
            let p = predict_learn(x, y);
            if i >= data.len() - tail {
                let Prediction::Probabilities(p) = p else { panic!("a classifier") };
                let Target::Class(c) = y else { panic!("a class") };
                right += usize::from(classes()[argmax(&p)] == *c);
            }
        }
        right as f64 / tail as f64
    }

    #[test]
    fn a_tree_learns_a_rule_no_linear_model_can() {
        let data = rule_stream(40_000, 5);
        let mut tree = HoeffdingTree::new(classes(), 5, TreeSettings::default());
        let tree_acc = prequential(&data, 10_000, |x, y| {
            let p = tree.predict(x);
            assert!(tree.learn(x, y));
            p
        });
        let mut linear =
            AdaptiveLinear::warm(LinearModel::zeros(Family::Logistic, classes(), 5), vec![0.0; 5], None, 0.0);
        let linear_acc = prequential(&data, 10_000, |x, y| {
            let p = linear.predict(x);
            linear.learn(x, y, 0.5, 0.0).unwrap();
            p
        });
        assert!(tree_acc > 0.95, "tree {tree_acc}");
        assert!(linear_acc < 0.75, "linear {linear_acc}");
        assert!(tree.leaves() >= 4 && tree.leaves() < 100, "{} leaves", tree.leaves());
        tree.validate().unwrap();
    }

    #[test]
    fn a_leaf_judges_a_split_by_the_classes_it_has_seen_not_all_those_declared() {
        // A 10%-noisy threshold on x0 between two of four declared classes. With the gain's range over the two
        // classes seen (one bit) the tree splits at its second attempt (100 events); over all four (two bits) it
        // took 400.
        let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let settings = TreeSettings { grace_period: 50, tie_threshold: 0.0, ..TreeSettings::default() };
        let mut tree = HoeffdingTree::new(four, 2, settings);
        let mut r = Lcg(5);
        for _ in 0..250 {
            let x = vec![r.next() * 2.0 - 1.0, r.next() * 2.0 - 1.0];
            let right = (x[0] > 0.0) == (r.next() > 0.1);
            assert!(tree.learn(&x, &Target::Class(if right { "a" } else { "b" }.into())));
        }
        assert_eq!(tree.leaves(), 2);
    }

    #[test]
    fn a_regression_tree_learns_a_step_function() {
        let mut r = Lcg(9);
        let data: Vec<(Vec<f64>, f64)> = (0..30_000)
            .map(|_| {
                let x: Vec<f64> = (0..3).map(|_| r.next() * 4.0 - 2.0).collect();
                let noise = (r.next() - 0.5) * 1.0;
                let y = if x[0] > 0.5 { 5.0 } else { -3.0 } + if x[2] > -1.0 { 2.0 } else { 0.0 } + noise;
                (x, y)
            })
            .collect();
        let mut tree = HoeffdingTree::new(vec![], 3, TreeSettings::default());
        let mut sq = 0.0;
        for (i, (x, y)) in data.iter().enumerate() {
            let Prediction::Value(p) = tree.predict(x) else { panic!("a regressor") };
            if i >= 20_000 {
                sq += (p - y) * (p - y);
            }
            assert!(tree.learn(x, &Target::Value(*y)));
        }
        let rmse = (sq / 10_000.0).sqrt();
        // The noise alone: a uniform of width 1 has standard deviation 0.29; a quarter-width bin around each
        // threshold costs a little more.
        assert!(rmse < 0.6, "rmse {rmse}");
        tree.validate().unwrap();
    }

    /// A one-leaf regressor's squared error over the last 2,000 of 6,000 events of `y = scale (3 x0 - 2 x1 + noise)`.
    fn linear_target_rmse(scale: f64) -> (f64, Vec<f64>) {
        let settings = TreeSettings { max_leaves: 1, ..TreeSettings::default() };
        let mut tree = HoeffdingTree::new(vec![], 3, settings);
        let mut r = Lcg(4);
        let (mut sq, mut predictions) = (0.0, Vec::new());
        for i in 0..6_000 {
            let x: Vec<f64> = (0..3).map(|_| r.next() * 2.0 - 1.0).collect();
            let y = scale * (3.0 * x[0] - 2.0 * x[1] + (r.next() - 0.5) * 0.2);
            let Prediction::Value(p) = tree.predict(&x) else { panic!("a regressor") };
            if i >= 4_000 {
                sq += (p - y) * (p - y);
                predictions.push(p);
            }
            assert!(tree.learn(&x, &Target::Value(y)));
        }
        ((sq / 2_000.0).sqrt() / scale, predictions)
    }

    #[test]
    fn a_regression_leaf_answers_with_its_linear_model_where_that_is_closer_than_its_mean() {
        // The target's deviation is 2.1 and the noise's 0.06: a leaf that answered its mean was wrong by 2.1.
        let (rmse, predictions) = linear_target_rmse(1.0);
        assert!(rmse < 0.1, "rmse {rmse}");
        // Free of the target's unit: a thousand times the target, a thousand times the answers.
        let (rmse_k, predictions_k) = linear_target_rmse(1000.0);
        assert!((rmse_k - rmse).abs() < 1e-9 * rmse, "{rmse_k} against {rmse}");
        assert!(predictions.iter().zip(&predictions_k).all(|(p, q)| (q / 1000.0 - p).abs() < 1e-9 * (1.0 + p.abs())));
    }

    #[test]
    fn a_split_s_sides_start_from_the_parent_s_model_and_answer_as_it_did() {
        let mut parent = LeafModel::new(2);
        let y = Moments { n: 50.0, mean: 3.0, m2: 200.0 };
        let mut r = Lcg(2);
        for _ in 0..50 {
            let x = [r.next(), r.next()];
            parent.learn(&y, &x, 3.0 + 2.0 * x[0] - x[1], 1.0);
        }
        let side = parent.for_side(3.0, 4.5);
        let x = [0.3, -0.2];
        assert!((side.raw(4.5, &x) - parent.raw(3.0, &x)).abs() < 1e-12);
        // Over other inputs (a forest's leaves draw theirs): the weights of the inputs both have are kept.
        let moved = side.remapped(&[4, 7], &[7, 1]);
        assert_eq!(moved.weights, vec![side.weights[1], 0.0]);
    }

    #[test]
    fn a_histogram_reads_what_the_map_before_it_wrote_and_refuses_bins_out_of_order() {
        // Learners' files written when the histograms were `BTreeMap`s restart the same trees.
        let bin = |v: f64| Bin { x_sum: v, y: Moments { n: 1.0, mean: v, m2: 0.0 } };
        let map: std::collections::BTreeMap<i32, Bin> = [(-40, bin(1.0)), (3, bin(2.0)), (7, bin(3.0))].into();
        let bytes = crate::testing::encode(&map).unwrap();
        let h: Histogram = crate::testing::decode(std::path::Path::new("learners"), &bytes).unwrap();
        assert_eq!(h.iter().map(|(k, b)| (k, *b)).collect::<Vec<_>>(), map.into_iter().collect::<Vec<_>>());
        assert!(h.well_formed());
        assert_eq!(h.get(3).map(|b| b.x_sum), Some(2.0));
        assert_eq!(h.get(4), None);
        for bad in [vec![(3, bin(1.0)), (3, bin(1.0))], vec![(7, bin(1.0)), (3, bin(1.0))], vec![(41, bin(1.0))]] {
            assert!(!Histogram(bad).well_formed());
        }
    }

    #[test]
    fn the_tree_stops_growing_at_max_leaves_and_its_size_stays_bounded() {
        let settings = TreeSettings { grace_period: 50, max_leaves: 8, ..TreeSettings::default() };
        let mut tree = HoeffdingTree::new(vec![], 4, settings);
        let mut r = Lcg(3);
        let mut sizes = Vec::new();
        for i in 0..400_000 {
            let x: Vec<f64> = (0..4).map(|_| (r.next() - 0.5) * 1e3).collect();
            let y = x.iter().map(|v| v.sin()).sum::<f64>() * 1e6;
            tree.learn(&x, &Target::Value(y));
            if i == 199_999 || i == 399_999 {
                sizes.push(crate::testing::encode(&tree).unwrap().len());
            }
        }
        assert_eq!(tree.leaves(), 8);
        // At most 2 * BIN_SPAN + 1 bins per leaf and input, each a key and four numbers, whatever the stream.
        let bound = 8 * 4 * (2 * BIN_SPAN as usize + 1) * (5 + 4 * 8) + 4096;
        assert!(sizes[0] <= sizes[1] && sizes[1] <= bound, "{sizes:?}, bound {bound}");
    }

    #[test]
    fn a_tree_restored_from_its_bytes_learns_on_identically() {
        let data = rule_stream(6_000, 8);
        let mut a = HoeffdingTree::new(classes(), 5, TreeSettings::default());
        for (x, y) in &data[..3_000] {
            a.learn(x, y);
        }
        let bytes = crate::testing::encode(&a).unwrap();
        let mut b: HoeffdingTree = crate::testing::decode(std::path::Path::new("tree"), &bytes).unwrap();
        b.validate().unwrap();
        for (x, y) in &data[3_000..] {
            a.learn(x, y);
            b.learn(x, y);
        }
        assert_eq!(a, b);
        assert!(a.leaves() > 1);
    }

    #[test]
    fn learning_with_weight_k_is_learning_k_times_in_one_update() {
        // No split within these events: the leaf's statistics alone are compared.
        let settings = TreeSettings { grace_period: 100_000, ..TreeSettings::default() };
        for classes in [classes(), vec![]] {
            let (mut once, mut repeated) = (
                HoeffdingTree::new(classes.clone(), 5, settings.clone()),
                HoeffdingTree::new(classes.clone(), 5, settings.clone()),
            );
            let mut r = Lcg(4);
            for (i, (x, y)) in rule_stream(2_000, 6).into_iter().enumerate() {
                let y = if classes.is_empty() { Target::Value(x[0] * 3.0 + x[1]) } else { y };
                let k = (r.next() * 4.0) as u32;
                assert_eq!(once.learn_weighted(&x, &y, k), k > 0, "event {i}");
                for _ in 0..k {
                    assert!(repeated.learn(&x, &y));
                }
            }
            let (Node::Leaf(a), Node::Leaf(b)) = (&once.nodes[0], &repeated.nodes[0]) else { panic!("one leaf") };
            let close = |u: f64, v: f64| (u - v).abs() <= 1e-9 * (1.0 + u.abs().max(v.abs()));
            let same_moments = |p: &Moments, q: &Moments| close(p.n, q.n) && close(p.mean, q.mean) && close(p.m2, q.m2);
            match (&a.stats, &b.stats) {
                (Stats::Class(p), Stats::Class(q)) => {
                    assert_eq!(p.counts, q.counts);
                    assert!(p.gauss.iter().zip(&q.gauss).all(|(g, h)| same_moments(g, h)));
                    assert_eq!((&p.lo, &p.hi), (&q.lo, &q.hi));
                }
                (Stats::Value(p), Stats::Value(q)) => {
                    assert!(same_moments(&p.y, &q.y));
                    for (bp, bq) in p.bins.iter().zip(&q.bins) {
                        let keys = |h: &Histogram| h.iter().map(|(k, _)| k).collect::<Vec<_>>();
                        assert_eq!(keys(bp), keys(bq));
                        assert!(bp
                            .values()
                            .zip(bq.values())
                            .all(|(u, v)| close(u.x_sum, v.x_sum) && same_moments(&u.y, &v.y)));
                    }
                }
                _ => panic!("one task"),
            }
        }
    }

    #[test]
    fn hostile_input_changes_nothing() {
        let mut tree = HoeffdingTree::new(classes(), 2, TreeSettings::default());
        for (x, y) in rule_stream(500, 2).iter().map(|(x, y)| (x[..2].to_vec(), y)) {
            tree.learn(&x, y);
        }
        let before = tree.clone();
        assert!(!tree.learn(&[f64::NAN, 0.0], &Target::Class("yes".into())));
        assert!(!tree.learn(&[f64::INFINITY, 0.0], &Target::Class("yes".into())));
        assert!(!tree.learn(&[0.0, 0.0], &Target::Class("maybe".into())));
        assert!(!tree.learn(&[0.0, 0.0], &Target::Value(1.0)));
        assert!(!tree.learn(&[0.0], &Target::Class("yes".into())));
        assert_eq!(tree, before);
        let mut reg = HoeffdingTree::new(vec![], 1, TreeSettings::default());
        assert!(!reg.learn(&[1.0], &Target::Value(f64::NAN)));
        assert!(reg.learn(&[1e300], &Target::Value(1e300)));
        let Prediction::Value(v) = reg.predict(&[1e300]) else { panic!("a regressor") };
        assert_eq!(v, 1e300);
        // Squares of these overflow: refused, and the tree stays as it was.
        let before = reg.clone();
        assert!(!reg.learn(&[-1e300], &Target::Value(-1e300)));
        assert_eq!(reg, before);
        let mut cls = HoeffdingTree::new(classes(), 1, TreeSettings::default());
        assert!(cls.learn(&[1e200], &Target::Class("yes".into())));
        assert!(!cls.learn(&[-1e300], &Target::Class("yes".into())));
        cls.validate().unwrap();
    }

    #[test]
    fn a_stored_tree_whose_splits_loop_is_refused() {
        // Regression: a split pointing back at itself or an ancestor passed `validate`, and `predict` on the
        // restored tree never returned.
        let mut tree = HoeffdingTree::new(classes(), 2, TreeSettings { grace_period: 50, ..TreeSettings::default() });
        let mut r = Lcg(4);
        for _ in 0..3_000 {
            let x = [r.next() * 2.0 - 1.0, r.next() * 2.0 - 1.0];
            tree.learn(&x, &Target::Class(if x[0] > 0.3 { "yes" } else { "no" }.into()));
        }
        tree.validate().unwrap();
        assert!(tree.leaves() > 1, "the tree split");
        for target in [0u32, 1] {
            let mut bad = tree.clone();
            let Some(Node::Split { left, .. }) = bad.nodes.iter_mut().rev().find(|n| matches!(n, Node::Split { .. }))
            else {
                unreachable!("a split")
            };
            *left = target;
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("a split on input"), "{err}");
        }
    }
}
