//! Tree ensembles over encoded vectors: one format for a single decision tree, a random forest and gradient-boosted
//! trees, whichever crate fitted them. Trees are flat arrays (no pointers), so a model file is compact and a
//! prediction is a few array reads per tree.

use serde::{Deserialize, Serialize};

use lambda_core::error::{Error, Result};

/// Marks a leaf in [`Tree::feature`].
pub const LEAF: u32 = u32::MAX;

/// One tree. Node 0 is the root; an internal node `n` sends `x` to `left[n]` when `x[feature[n]] < threshold[n]`
/// (or `<=`, see [`Trees::inclusive`]), else to `right[n]`; a missing (NaN) value goes to `missing[n]`, which is
/// one of the two or a third child of its own (boosters grow a separate branch for missing values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Split dimension per node; [`LEAF`] for leaves.
    pub feature: Vec<u32>,
    /// Split threshold per node (unused for leaves).
    pub threshold: Vec<f64>,
    /// Left child per node.
    pub left: Vec<u32>,
    /// Right child per node.
    pub right: Vec<u32>,
    /// Where a NaN goes, per node.
    pub missing: Vec<u32>,
    /// Leaf outputs, `width` per node (internal nodes hold zeros).
    pub values: Vec<f64>,
    /// Outputs per leaf: the class count for a forest's class frequencies, 1 for a boosted tree or a regression.
    pub width: u32,
    /// The first model output this tree adds to (a boosted multiclass model has one tree per class per round).
    pub output: u32,
}

impl Tree {
    /// The leaf `x` falls into.
    pub fn leaf(&self, x: &[f64], inclusive: bool) -> usize {
        let mut n = 0usize;
        loop {
            let f = self.feature[n];
            if f == LEAF {
                return n;
            }
            let v = x.get(f as usize).copied().unwrap_or(f64::NAN);
            n = if v.is_nan() {
                self.missing[n]
            } else if if inclusive { v <= self.threshold[n] } else { v < self.threshold[n] } {
                self.left[n]
            } else {
                self.right[n]
            } as usize;
        }
    }

    /// The outputs of the leaf `x` falls into.
    pub fn outputs(&self, x: &[f64], inclusive: bool) -> &[f64] {
        let w = self.width as usize;
        let leaf = self.leaf(x, inclusive);
        &self.values[leaf * w..(leaf + 1) * w]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.feature.len()
    }

    /// Whether the tree has no node (never true of a valid tree).
    pub fn is_empty(&self) -> bool {
        self.feature.is_empty()
    }

    /// Checks shapes and that every path ends in a leaf (children point forward, so there are no cycles).
    pub fn validate(&self, dim: usize, outputs: usize) -> Result<()> {
        let n = self.feature.len();
        let w = self.width as usize;
        let bad = |m: String| Err(Error::InvalidModel(format!("tree: {m}")));
        if n == 0 {
            return bad("no node".into());
        }
        if [self.threshold.len(), self.left.len(), self.right.len(), self.missing.len()].iter().any(|&l| l != n)
            || self.values.len() != n * w
        {
            return bad(format!("{n} nodes but arrays of other lengths"));
        }
        if w == 0 || self.output as usize + w > outputs {
            return bad(format!("outputs {}..{} of a model with {outputs}", self.output, self.output as usize + w));
        }
        for i in 0..n {
            if self.feature[i] == LEAF {
                continue;
            }
            if self.feature[i] as usize >= dim {
                return bad(format!("node {i} splits on dimension {} of {dim}", self.feature[i]));
            }
            let (l, r, m) = (self.left[i] as usize, self.right[i] as usize, self.missing[i] as usize);
            if [l, r, m].iter().any(|&c| c <= i || c >= n) || self.threshold[i].is_nan() {
                return bad(format!("node {i} has children {l}, {r} and {m} (missing) of {n} nodes"));
            }
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return bad("non-finite leaf value".into());
        }
        Ok(())
    }
}

/// How the trees' outputs become a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The mean of the trees' outputs (a forest or a single tree): class frequencies or a regression value.
    Mean,
    /// `base` plus the sum of the trees' outputs, then the link (boosting): log-odds, class scores or a value.
    Sum,
}

/// A tree ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trees {
    /// How outputs combine.
    pub combine: Combine,
    /// Whether a split sends `x <= threshold` left (else `x < threshold`), as the fitting crate decides.
    pub inclusive: bool,
    /// Model outputs: the class count (one for binary boosting, which gives log-odds), or 1 for regression.
    pub outputs: usize,
    /// Starting scores per output (boosting); zeros for a forest.
    pub base: Vec<f64>,
    /// The trees.
    pub trees: Vec<Tree>,
}

impl Trees {
    /// Checks every tree against the input dimension.
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.trees.is_empty() {
            return Err(Error::InvalidModel("tree ensemble without trees".into()));
        }
        if self.base.len() != self.outputs || self.base.iter().any(|b| !b.is_finite()) {
            return Err(Error::InvalidModel(format!(
                "tree ensemble: {} base scores for {} outputs",
                self.base.len(),
                self.outputs
            )));
        }
        self.trees.iter().try_for_each(|t| t.validate(dim, self.outputs))
    }

    /// The combined raw outputs for `x`: class frequencies or a value (mean), or scores before the link (sum).
    pub fn raw(&self, x: &[f64]) -> Vec<f64> {
        let mut out = self.base.clone();
        for t in &self.trees {
            let o = t.output as usize;
            for (k, v) in t.outputs(x, self.inclusive).iter().enumerate() {
                out[o + k] += v;
            }
        }
        if self.combine == Combine::Mean {
            let n = self.trees.len() as f64;
            out.iter_mut().for_each(|v| *v /= n);
        }
        out
    }

    /// Total number of nodes.
    pub fn nodes(&self) -> usize {
        self.trees.iter().map(Tree::len).sum()
    }
}

/// Builds a [`Tree`] node by node (parents before children).
#[derive(Debug)]
pub struct TreeBuilder {
    tree: Tree,
}

impl TreeBuilder {
    /// An empty tree with `width` outputs per leaf added at `output`.
    pub fn new(width: usize, output: usize) -> TreeBuilder {
        TreeBuilder {
            tree: Tree {
                feature: vec![],
                threshold: vec![],
                left: vec![],
                right: vec![],
                missing: vec![],
                values: vec![],
                width: width as u32,
                output: output as u32,
            },
        }
    }

    /// Adds a node as a leaf with zero outputs; returns its index.
    pub fn push(&mut self) -> usize {
        let t = &mut self.tree;
        t.feature.push(LEAF);
        t.threshold.push(0.0);
        t.left.push(0);
        t.right.push(0);
        t.missing.push(0);
        t.values.extend(std::iter::repeat_n(0.0, t.width as usize));
        t.feature.len() - 1
    }

    /// Makes node `n` a split; NaN goes to `missing` (`left`, `right` or a third child).
    pub fn split(&mut self, n: usize, feature: usize, threshold: f64, missing: usize, left: usize, right: usize) {
        let t = &mut self.tree;
        t.feature[n] = feature as u32;
        t.threshold[n] = threshold;
        t.missing[n] = missing as u32;
        t.left[n] = left as u32;
        t.right[n] = right as u32;
    }

    /// Sets the outputs of leaf `n`.
    pub fn set_leaf(&mut self, n: usize, values: &[f64]) {
        let w = self.tree.width as usize;
        self.tree.values[n * w..(n + 1) * w].copy_from_slice(values);
    }

    /// The tree.
    pub fn finish(self) -> Tree {
        self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x0 < 0.5 ? (x1 < 2 ? [a] : [b]) : [c]
    fn stump(a: f64, b: f64, c: f64) -> Tree {
        let mut t = TreeBuilder::new(1, 0);
        let root = t.push();
        let (l, r) = (t.push(), t.push());
        t.split(root, 0, 0.5, l, l, r);
        let (ll, lr) = (t.push(), t.push());
        t.split(l, 1, 2.0, lr, ll, lr);
        t.set_leaf(ll, &[a]);
        t.set_leaf(lr, &[b]);
        t.set_leaf(r, &[c]);
        t.finish()
    }

    #[test]
    fn routes_by_threshold_and_missing_direction() {
        let t = stump(1.0, 2.0, 3.0);
        t.validate(2, 1).unwrap();
        assert_eq!(t.outputs(&[0.1, 1.0], false), &[1.0]);
        assert_eq!(t.outputs(&[0.1, 2.0], false), &[2.0]);
        assert_eq!(t.outputs(&[0.1, 2.0], true), &[1.0]);
        assert_eq!(t.outputs(&[0.9, 0.0], false), &[3.0]);
        assert_eq!(t.outputs(&[f64::NAN, f64::NAN], false), &[2.0]);
    }

    #[test]
    fn mean_and_sum_combine() {
        let forest = Trees {
            combine: Combine::Mean,
            inclusive: false,
            outputs: 1,
            base: vec![0.0],
            trees: vec![stump(1.0, 2.0, 3.0), stump(3.0, 4.0, 5.0)],
        };
        assert_eq!(forest.raw(&[0.9, 0.0]), vec![4.0]);
        let boosted = Trees { combine: Combine::Sum, base: vec![0.5], ..forest };
        assert_eq!(boosted.raw(&[0.9, 0.0]), vec![8.5]);
        boosted.validate(2).unwrap();
    }

    #[test]
    fn validate_refuses_cycles_bad_dimensions_and_bad_values() {
        let mut t = stump(1.0, 2.0, 3.0);
        t.left[1] = 0;
        assert!(t.validate(2, 1).is_err());
        let t = stump(1.0, 2.0, 3.0);
        assert!(t.validate(1, 1).is_err());
        let t = stump(1.0, f64::INFINITY, 3.0);
        assert!(t.validate(2, 1).is_err());
    }
}
