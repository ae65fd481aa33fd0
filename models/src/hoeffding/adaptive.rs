//! The Hoeffding adaptive tree, HAT-ADWIN (Bifet and Gavaldà, "Adaptive Learning from Evolving Data Streams",
//! IDA 2009; as River's `HoeffdingAdaptiveTreeClassifier` and `HoeffdingAdaptiveTreeRegressor` do it).
//!
//! Its leaves are the plain tree's and grow the same way. Every node also keeps an ADWIN over the errors of the
//! predictions its subtree makes (the leaf an event reaches below it): 0/1 mistakes, or for regression `|y − ŷ|`
//! over three times the root mean square of the errors seen there, clipped to 1 (ADWIN and the comparison below
//! want values in [0, 1]). When a split node's window is cut and its mean rose, the node starts an alternate: an
//! empty leaf at its place that learns every event reaching the node, and grows, as a tree of its own; a later rise
//! restarts it. Once both windows hold more than `drift_window_threshold` errors, with `p` the subtree's error and
//! `ε = √(2 p (1 − p) ln(2 / switch_significance) (1/n₀ + 1/n₁))`, an alternate whose error is below the subtree's
//! by more than `ε` replaces it, and one above it by more than `ε` is dropped.
//!
//! Predictions come from the tree, not from its alternates. Nothing is random (River's bootstrap weights are left
//! out), so the same stream gives the same tree. Bounds: `max_leaves` counts the leaves of the tree and of every
//! alternate, and none splits once they reach it. An alternate may still start past it, as a single leaf, so that a
//! full tree can still replace a stale subtree; as only split nodes hold one, the whole stays below
//! `2 × max_leaves` leaves.

use serde::{Deserialize, Serialize};

use super::{Leaf, Moments, Split, TreeSettings};
use crate::drift::Adwin;
use crate::model::{argmax, Prediction};
use lambda_core::error::{Error, Result};
use lambda_core::schema::Target;

/// How a Hoeffding adaptive tree grows and adapts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveSettings {
    /// How leaves grow, as in the plain tree; `max_leaves` counts the alternates' leaves too.
    pub tree: TreeSettings,
    /// Confidence of every node's ADWIN.
    pub adwin_delta: f64,
    /// Errors that a subtree's and its alternate's windows must each hold before they are compared.
    pub drift_window_threshold: u64,
    /// Significance of that comparison.
    pub switch_significance: f64,
}

impl Default for AdaptiveSettings {
    /// River's defaults.
    fn default() -> Self {
        AdaptiveSettings {
            tree: TreeSettings::default(),
            adwin_delta: 0.002,
            drift_window_threshold: 300,
            switch_significance: 0.05,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AdaNode {
    /// Errors of this subtree's predictions.
    errors: Adwin,
    /// Raw errors seen here (regression); their root mean square scales the ones `errors` takes.
    raw: Moments,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Leaf(Leaf),
    /// Inputs `<= threshold` go to the first child.
    Split {
        input: u32,
        threshold: f64,
        children: Box<[AdaNode; 2]>,
        alternate: Option<Box<AdaNode>>,
    },
}

/// What does not change while an event is learned.
struct Cx<'a> {
    classes: &'a [String],
    dim: usize,
    set: &'a AdaptiveSettings,
}

/// Leaves of the tree and of its alternates, and what became of alternates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    leaves: u32,
    started: u64,
    switched: u64,
    dropped: u64,
}

/// What a split node does with its alternate after an event.
enum Verdict {
    Keep,
    Switch,
    Drop,
}

/// The error of `p` on `target`: 0 or 1 for a class, `y − ŷ` for a value (0 for a target of the other task, which
/// is refused before any error is used).
fn miss(classes: &[String], p: &Prediction, target: &Target) -> f64 {
    match (p, target) {
        (Prediction::Probabilities(p), Target::Class(c)) => f64::from(classes.get(argmax(p)) != Some(c)),
        (Prediction::Value(v), Target::Value(y)) => y - v,
        _ => 0.0,
    }
}

fn side(x: &[f64], input: u32, threshold: f64) -> usize {
    usize::from(x[input as usize] > threshold)
}

impl AdaNode {
    fn new(leaf: Leaf, delta: f64) -> AdaNode {
        AdaNode { errors: Adwin::new(delta), raw: Moments::default(), kind: Kind::Leaf(leaf) }
    }

    /// The leaf of the tree (not of an alternate) that `x` reaches from here.
    fn leaf(&self, x: &[f64]) -> &Leaf {
        let mut at = self;
        loop {
            match &at.kind {
                Kind::Leaf(l) => return l,
                Kind::Split { input, threshold, children, .. } => at = &children[side(x, *input, *threshold)],
            }
        }
    }

    /// What the window takes for `miss`, with the raw errors' moments after it; `None` if either is not finite.
    fn scaled(&self, miss: f64, regression: bool) -> Option<(f64, Moments)> {
        if !regression {
            return Some((miss, self.raw));
        }
        let mut raw = self.raw;
        raw.add(miss);
        let rms = (raw.variance() + raw.mean * raw.mean).sqrt();
        let e = if rms > 0.0 { (miss.abs() / (3.0 * rms)).min(1.0) } else { 0.0 };
        (raw.is_finite() && rms.is_finite()).then_some((e, raw))
    }

    /// Whether every leaf and every error that learning the event would change stays finite (and the label fits).
    fn accepts(&self, cx: &Cx, x: &[f64], target: &Target) -> bool {
        let regression = cx.classes.is_empty();
        let miss = if regression { miss(cx.classes, &self.leaf(x).predict(x), target) } else { 0.0 };
        let mut at = self;
        loop {
            if at.scaled(miss, regression).is_none() {
                return false;
            }
            match &at.kind {
                Kind::Leaf(l) => return l.plan(cx.classes, x, target, cx.set.tree.radius, 1.0).is_some(),
                Kind::Split { input, threshold, children, alternate } => {
                    if alternate.as_ref().is_some_and(|a| !a.accepts(cx, x, target)) {
                        return false;
                    }
                    at = &children[side(x, *input, *threshold)];
                }
            }
        }
    }

    /// Learns an event that reached this node, the root of the tree or of an alternate at `depth`.
    fn learn(&mut self, cx: &Cx, tally: &mut Tally, x: &[f64], target: &Target, depth: u32) {
        let miss = miss(cx.classes, &self.leaf(x).predict(x), target);
        self.descend(cx, tally, x, target, miss, depth);
    }

    /// Learns an event whose prediction by the subtree above had error `miss`, then adapts: deeper nodes first.
    fn descend(&mut self, cx: &Cx, tally: &mut Tally, x: &[f64], target: &Target, miss: f64, depth: u32) {
        let (k, dim, set) = (cx.classes.len(), cx.dim, cx.set);
        if let Some((e, raw)) = self.scaled(miss, k == 0) {
            self.raw = raw;
            let before = self.errors.mean();
            // A cut where the error fell is no reason to adapt.
            let rose = self.errors.update(e) && self.errors.mean() > before;
            let verdict = match &mut self.kind {
                Kind::Leaf(leaf) => {
                    if let Some(update) = leaf.plan(cx.classes, x, target, set.tree.radius, 1.0) {
                        leaf.apply(x, update, 1.0);
                    }
                    if leaf.due(&set.tree) && tally.leaves < set.tree.max_leaves {
                        if let Some(Split { input, threshold, sides: [l, r] }) = leaf.split(k, dim, &set.tree) {
                            // The leaf's window goes on as the split's: an alternate that splits stays comparable.
                            let children =
                                Box::new([AdaNode::new(l, set.adwin_delta), AdaNode::new(r, set.adwin_delta)]);
                            self.kind = Kind::Split { input, threshold, children, alternate: None };
                            tally.leaves += 1;
                        }
                    }
                    Verdict::Keep
                }
                Kind::Split { input, threshold, children, alternate } => {
                    if let Some(a) = alternate {
                        a.learn(cx, tally, x, target, depth);
                    }
                    children[side(x, *input, *threshold)].descend(cx, tally, x, target, miss, depth + 1);
                    if rose {
                        let old = alternate.as_ref().map_or(0, |a| a.leaves());
                        let mut fresh = AdaNode::new(Leaf::new(k, dim, depth), set.adwin_delta);
                        // Errors on the subtree's scale, so that the two are compared on one.
                        fresh.raw = self.raw;
                        *alternate = Some(Box::new(fresh));
                        tally.leaves = (tally.leaves + 1).saturating_sub(old);
                        tally.started += 1;
                        Verdict::Keep
                    } else if let Some(a) = alternate {
                        compare(&self.errors, &a.errors, set)
                    } else {
                        Verdict::Keep
                    }
                }
            };
            match verdict {
                Verdict::Keep => {}
                Verdict::Switch => {
                    let whole = self.leaves();
                    if let Kind::Split { alternate, .. } = &mut self.kind {
                        if let Some(a) = alternate.take() {
                            tally.leaves = tally.leaves.saturating_sub(whole - a.leaves());
                            tally.switched += 1;
                            *self = *a;
                        }
                    }
                }
                Verdict::Drop => {
                    if let Kind::Split { alternate, .. } = &mut self.kind {
                        let gone = alternate.take().map_or(0, |a| a.leaves());
                        tally.leaves = tally.leaves.saturating_sub(gone);
                        tally.dropped += 1;
                    }
                }
            }
        }
    }

    /// Leaves here and in every alternate below.
    fn leaves(&self) -> u32 {
        match &self.kind {
            Kind::Leaf(_) => 1,
            Kind::Split { children, alternate, .. } => {
                children.iter().map(AdaNode::leaves).sum::<u32>() + alternate.as_ref().map_or(0, |a| a.leaves())
            }
        }
    }

    /// Leaves of the tree below (not of alternates), its depth below, and the alternates held here and below.
    fn shape(&self) -> (u32, u32, u32) {
        match &self.kind {
            Kind::Leaf(_) => (1, 0, 0),
            Kind::Split { children, alternate, .. } => {
                let [a, b] = [children[0].shape(), children[1].shape()];
                let held = alternate.as_ref().map_or(0, |n| 1 + n.shape().2);
                (a.0 + b.0, 1 + a.1.max(b.1), a.2 + b.2 + held)
            }
        }
    }

    /// Checks shapes and numbers below, counting leaves into `leaves`.
    fn check(&self, cx: &Cx, depth: u32, leaves: &mut u32) -> std::result::Result<(), String> {
        self.errors.validate().map_err(|e| e.to_string())?;
        if !self.raw.is_finite() {
            return Err("a node's error moments are not finite".into());
        }
        match &self.kind {
            Kind::Leaf(l) => {
                *leaves += 1;
                if !l.fits(cx.classes.len(), cx.dim) {
                    return Err("a leaf's statistics do not fit its inputs and classes".into());
                }
                if l.depth != depth {
                    return Err(format!("a leaf at depth {depth} says {}", l.depth));
                }
            }
            Kind::Split { input, threshold, children, alternate } => {
                if *input as usize >= cx.dim || !threshold.is_finite() {
                    return Err(format!("a split on input {input} at {threshold}"));
                }
                if depth >= cx.set.tree.max_depth {
                    return Err(format!("a split at depth {depth}, past the greatest, {}", cx.set.tree.max_depth));
                }
                for c in children.iter() {
                    c.check(cx, depth + 1, leaves)?;
                }
                if let Some(a) = alternate {
                    a.check(cx, depth, leaves)?;
                }
            }
        }
        Ok(())
    }
}

/// The test between a subtree's errors and its alternate's.
fn compare(tree: &Adwin, alternate: &Adwin, set: &AdaptiveSettings) -> Verdict {
    let (n0, n1) = (tree.width(), alternate.width());
    if n0 <= set.drift_window_threshold || n1 <= set.drift_window_threshold {
        return Verdict::Keep;
    }
    let (p0, p1) = (tree.mean(), alternate.mean());
    let p = p0.clamp(0.0, 1.0);
    let m = 1.0 / n0 as f64 + 1.0 / n1 as f64;
    let bound = (2.0 * p * (1.0 - p) * (2.0 / set.switch_significance).ln() * m).sqrt();
    if p0 - p1 > bound {
        Verdict::Switch
    } else if p1 - p0 > bound {
        Verdict::Drop
    } else {
        Verdict::Keep
    }
}

/// A Hoeffding adaptive tree classifier (with `classes`) or regressor (without); see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoeffdingAdaptiveTree {
    /// Class labels, in output order; empty for regression.
    pub classes: Vec<String>,
    /// Input dimension.
    pub dim: usize,
    /// How it grows and adapts.
    pub settings: AdaptiveSettings,
    root: AdaNode,
    tally: Tally,
}

impl HoeffdingAdaptiveTree {
    /// A tree of one empty leaf.
    pub fn new(classes: Vec<String>, dim: usize, settings: AdaptiveSettings) -> HoeffdingAdaptiveTree {
        let root = AdaNode::new(Leaf::new(classes.len(), dim, 0), settings.adwin_delta);
        let tally = Tally { leaves: 1, ..Tally::default() };
        HoeffdingAdaptiveTree { classes, dim, settings, root, tally }
    }

    /// Leaves of the tree (not of its alternates).
    pub fn leaves(&self) -> usize {
        self.root.shape().0 as usize
    }

    /// Leaves of the tree and of every alternate: what `max_leaves` bounds.
    pub fn all_leaves(&self) -> usize {
        self.tally.leaves as usize
    }

    /// Alternates held.
    pub fn alternates(&self) -> usize {
        self.root.shape().2 as usize
    }

    /// Depth of the deepest leaf of the tree.
    pub fn depth(&self) -> u32 {
        self.root.shape().1
    }

    /// Alternates started, alternates that replaced their subtree, and alternates dropped, since the start.
    pub fn history(&self) -> (u64, u64, u64) {
        (self.tally.started, self.tally.switched, self.tally.dropped)
    }

    /// Checks the stored shapes and numbers, as after loading from disk.
    pub fn validate(&self) -> Result<()> {
        let cx = Cx { classes: &self.classes, dim: self.dim, set: &self.settings };
        let mut leaves = 0;
        let bad = |m: String| Error::InvalidModel(format!("Hoeffding adaptive tree: {m}"));
        self.root.check(&cx, 0, &mut leaves).map_err(bad)?;
        if leaves != self.tally.leaves {
            return Err(bad(format!("{leaves} leaves where {} are counted", self.tally.leaves)));
        }
        Ok(())
    }

    /// Predicts one encoded vector.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        self.root.leaf(x).predict(x)
    }

    /// Learns one labelled vector. `false` (nothing changed) when the label is not one of the classes or of the
    /// other task, or a value is not finite or would make a statistic overflow.
    pub fn learn(&mut self, x: &[f64], target: &Target) -> bool {
        if x.len() != self.dim || x.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let cx = Cx { classes: &self.classes, dim: self.dim, set: &self.settings };
        // Every leaf and error the event would change is checked first, so that a refused event changes nothing.
        if !self.root.accepts(&cx, x, target) {
            return false;
        }
        self.root.learn(&cx, &mut self.tally, x, target, 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hoeffding::HoeffdingTree;
    use crate::testing::{flipping_classes, flipping_values};

    fn classes() -> Vec<String> {
        vec!["no".into(), "yes".into()]
    }

    /// Per event of a predict-then-learn pass: 1 for a mistake (classes) or the absolute error (values).
    fn errors(data: &[(Vec<f64>, Target)], mut predict_learn: impl FnMut(&[f64], &Target) -> Prediction) -> Vec<f64> {
        data.iter()
            .map(|(x, y)| {
                let p = predict_learn(x, y);
                match (&p, y) {
                    (Prediction::Probabilities(_), _) => miss(&classes(), &p, y),
                    _ => miss(&[], &p, y).abs(),
                }
            })
            .collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Errors of the plain and the adaptive tree, each learning `data` from nothing.
    fn both(
        data: &[(Vec<f64>, Target)],
        classes: Vec<String>,
        dim: usize,
    ) -> (Vec<f64>, Vec<f64>, HoeffdingAdaptiveTree) {
        let mut plain = HoeffdingTree::new(classes.clone(), dim, TreeSettings::default());
        let p = errors(data, |x, y| {
            let p = plain.predict(x);
            assert!(plain.learn(x, y));
            p
        });
        let mut hat = HoeffdingAdaptiveTree::new(classes, dim, AdaptiveSettings::default());
        let a = errors(data, |x, y| {
            let p = hat.predict(x);
            assert!(hat.learn(x, y));
            p
        });
        hat.validate().unwrap();
        (p, a, hat)
    }

    #[test]
    fn after_a_concept_change_the_adaptive_tree_replaces_its_stale_subtree() {
        for seed in 1..=5 {
            let data = flipping_classes(26_000, 20_000, seed);
            let (plain, hat, tree) = both(&data, classes(), 5);
            // Before the change: the same tree. After it (the first 1,000 events left for detection and regrowth):
            // the plain tree's leaves still hold the old concept.
            let before = (1.0 - mean(&plain[15_000..20_000]), 1.0 - mean(&hat[15_000..20_000]));
            let after = (1.0 - mean(&plain[21_000..26_000]), 1.0 - mean(&hat[21_000..26_000]));
            assert!(before.1 >= before.0 - 0.01 && before.1 > 0.9, "seed {seed}: before {before:?}");
            assert!(after.1 > after.0 + 0.2, "seed {seed}: after {after:?}");
            assert!(tree.history().1 >= 1, "seed {seed}: {:?}", tree.history());
        }
    }

    #[test]
    fn after_a_change_of_the_target_function_the_adaptive_regressor_recovers() {
        for seed in 1..=5 {
            let data = flipping_values(26_000, 20_000, seed);
            let (plain, hat, tree) = both(&data, vec![], 3);
            let before = (mean(&plain[15_000..20_000]), mean(&hat[15_000..20_000]));
            let after = (mean(&plain[21_000..26_000]), mean(&hat[21_000..26_000]));
            // Mean absolute errors; the noise alone gives 0.25.
            assert!(before.1 <= before.0 + 0.02, "seed {seed}: before {before:?}");
            assert!(after.1 < 0.5 * after.0 && after.1 < 0.6, "seed {seed}: after {after:?}");
            assert!(tree.history().1 >= 1, "seed {seed}: {:?}", tree.history());
        }
    }

    #[test]
    fn leaves_and_alternates_stay_within_the_budget_through_repeated_drifts() {
        let max = 12;
        let tree = TreeSettings { grace_period: 50, max_leaves: max, ..TreeSettings::default() };
        let mut hat =
            HoeffdingAdaptiveTree::new(classes(), 5, AdaptiveSettings { tree, ..AdaptiveSettings::default() });
        let mut most = 0;
        for (i, (x, y)) in flipping_classes(200_000, 20_000, 11).iter().enumerate() {
            assert!(hat.learn(x, y));
            if i % 100 == 0 {
                let all = hat.all_leaves();
                assert!(hat.leaves() <= all && all < 2 * max as usize, "event {i}: {} of {all}", hat.leaves());
                most = most.max(all);
            }
        }
        // The budget was reached, and subtrees were still replaced at every change.
        assert!(most >= max as usize, "at most {most} leaves");
        let (started, switched, dropped) = hat.history();
        assert!(switched >= 9, "{started} started, {switched} switched, {dropped} dropped");
        hat.validate().unwrap();
        let mut wrong = hat.clone();
        wrong.tally.leaves += 1;
        assert!(wrong.validate().is_err());
    }

    #[test]
    fn a_tree_restored_from_its_bytes_mid_drift_learns_on_identically() {
        for (data, classes, dim) in
            [(flipping_classes(30_000, 20_000, 4), classes(), 5), (flipping_values(30_000, 20_000, 4), vec![], 3)]
        {
            let mut a = HoeffdingAdaptiveTree::new(classes.clone(), dim, AdaptiveSettings::default());
            let mut cut = 0;
            for (i, (x, y)) in data.iter().enumerate() {
                a.learn(x, y);
                // Checkpointed while an alternate grows.
                if i > 20_000 && a.alternates() > 0 && a.all_leaves() > a.leaves() + 1 {
                    cut = i + 1;
                    break;
                }
            }
            assert!(cut > 0, "no alternate grew after the change");
            let bytes = crate::testing::encode(&a).unwrap();
            let mut b: HoeffdingAdaptiveTree = crate::testing::decode(std::path::Path::new("hat"), &bytes).unwrap();
            b.validate().unwrap();
            assert_eq!(a, b);
            for (x, y) in &data[cut..] {
                assert_eq!(a.predict(x), b.predict(x));
                assert_eq!(a.learn(x, y), b.learn(x, y));
            }
            assert_eq!(a, b);
            // Nothing random: the same stream gives the same tree.
            let mut c = HoeffdingAdaptiveTree::new(classes, dim, AdaptiveSettings::default());
            for (x, y) in &data {
                c.learn(x, y);
            }
            assert_eq!(a, c);
        }
    }

    #[test]
    fn hostile_input_changes_nothing() {
        let mut cls = HoeffdingAdaptiveTree::new(classes(), 5, AdaptiveSettings::default());
        // Stopped while an alternate grows, so that its leaves are checked too.
        for (i, (x, y)) in flipping_classes(30_000, 20_000, 2).iter().enumerate() {
            cls.learn(x, y);
            if i > 20_000 && cls.alternates() > 0 {
                break;
            }
        }
        assert!(cls.alternates() > 0);
        let before = cls.clone();
        let yes = Target::Class("yes".into());
        assert!(!cls.learn(&[f64::NAN, 0.0, 0.0, 0.0, 0.0], &yes));
        assert!(!cls.learn(&[0.0, f64::INFINITY, 0.0, 0.0, 0.0], &yes));
        // Its square overflows the leaves' moments.
        assert!(!cls.learn(&[1e200, 0.0, 0.0, 0.0, 0.0], &yes));
        assert!(!cls.learn(&[0.0; 5], &Target::Class("maybe".into())));
        assert!(!cls.learn(&[0.0; 5], &Target::Value(1.0)));
        assert!(!cls.learn(&[0.0; 4], &yes));
        assert_eq!(cls, before);
        let mut reg = HoeffdingAdaptiveTree::new(vec![], 3, AdaptiveSettings::default());
        for (x, y) in flipping_values(21_000, 20_000, 2).iter() {
            reg.learn(x, y);
        }
        let before = reg.clone();
        assert!(!reg.learn(&[0.0; 3], &Target::Value(f64::NAN)));
        assert!(!reg.learn(&[0.0; 3], &Target::Value(1e200)));
        assert!(!reg.learn(&[0.0; 3], &Target::Class("yes".into())));
        assert!(!reg.learn(&[f64::NAN, 0.0, 0.0], &Target::Value(1.0)));
        assert_eq!(reg, before);
        reg.validate().unwrap();
        cls.validate().unwrap();
    }
}
