//! Decision trees and random forests on binned columns (CART: Gini impurity for classes, squared error for values).
//!
//! Written here rather than taken from linfa-trees because that crate fits classification only, keeps a hard label
//! per leaf (and prunes away splits that refine probabilities without changing the label), breaks ties in
//! `HashMap` order (so two fits of the same data can differ) and presorts every column at every node. These trees
//! keep class frequencies per leaf, fit regression too, are deterministic for a seed, and find splits from
//! histograms over at most [`MAX_BINS`] bins per dimension, as LightGBM and scikit-learn's histogram trees do.

use lambda_models::model::{TreeFamily, TreeModel};
use lambda_models::trees::{Combine, Tree, TreeBuilder, Trees};

/// Bins per dimension.
pub const MAX_BINS: usize = 255;

/// How encoded dimensions become binned columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One dimension, binned by value.
    Dim(usize),
    /// A one-hot block of `width` dimensions from `first` (a categorical feature), as one column holding the hot
    /// slot: a split sends one slot one way and the rest the other, as a split on that dimension would, at a
    /// fraction of the histogram work.
    OneHot {
        /// First dimension of the block.
        first: usize,
        /// Dimensions in the block (at most [`MAX_BINS`] + 1).
        width: usize,
    },
}

/// A binned column.
#[derive(Debug, Clone, PartialEq)]
pub enum BinColumn {
    /// One dimension: `x <= edges[b]` is bin `b` or lower.
    Ordinal {
        /// The encoded dimension.
        dim: usize,
        /// Thresholds after each bin but the last.
        edges: Vec<f64>,
    },
    /// A one-hot block: the bin is the slot that is set.
    OneHot {
        /// First dimension of the block.
        first: usize,
        /// Dimensions in the block.
        width: usize,
    },
}

impl BinColumn {
    fn bins(&self) -> usize {
        match self {
            BinColumn::Ordinal { edges, .. } => edges.len() + 1,
            BinColumn::OneHot { width, .. } => *width,
        }
    }
}

/// Encoded rows, binned per column.
#[derive(Debug, Clone)]
pub struct Binned {
    /// Rows.
    pub rows: usize,
    /// Encoded dimensions (what the trees' nodes refer to).
    pub dim: usize,
    /// The binned columns.
    pub columns: Vec<BinColumn>,
    /// Bin per row and column, row-major: a node's rows are scattered, and one row's bins share a cache line.
    pub bins: Vec<u8>,
}

impl Binned {
    /// Bins row-major `xs` of `dim` columns, a column per dimension. Edges are midpoints between distinct values
    /// at quantiles of the column (all distinct values when there are few, as for one-hot and flag dimensions).
    pub fn new(xs: &[f64], dim: usize) -> Binned {
        let rows = xs.len().checked_div(dim).unwrap_or(0);
        let groups: Vec<Group> = (0..dim).map(Group::Dim).collect();
        Binned::from_chunks(rows, dim, &groups, xs, |put| put(0, xs))
    }

    /// Bins `rows` rows of `dim` dimensions, grouped by `groups`, that `fill` hands over in row-major chunks
    /// (`put(first_row, chunk)`), with edges taken from the row-major `sample`: the whole matrix is never held
    /// as numbers.
    pub fn from_chunks(
        rows: usize,
        dim: usize,
        groups: &[Group],
        sample: &[f64],
        fill: impl FnOnce(&mut dyn FnMut(usize, &[f64])),
    ) -> Binned {
        let in_sample = sample.len().checked_div(dim).unwrap_or(0);
        let mut col: Vec<f64> = Vec::with_capacity(in_sample);
        let columns: Vec<BinColumn> = groups
            .iter()
            .map(|g| match *g {
                Group::OneHot { first, width } => BinColumn::OneHot { first, width },
                Group::Dim(d) => {
                    col.clear();
                    col.extend((0..in_sample).map(|r| sample[r * dim + d]).filter(|v| !v.is_nan()));
                    col.sort_by(f64::total_cmp);
                    col.dedup();
                    let edges: Vec<f64> = if col.len() <= MAX_BINS {
                        col.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
                    } else {
                        let mut e: Vec<f64> = (1..MAX_BINS)
                            .map(|b| {
                                let i = b * col.len() / MAX_BINS;
                                col[i - 1] + (col[i] - col[i - 1]) / 2.0
                            })
                            .collect();
                        e.dedup();
                        e
                    };
                    BinColumn::Ordinal { dim: d, edges }
                }
            })
            .collect();
        Binned::with_columns(columns, rows, dim, fill)
    }

    /// Bins `rows` rows the way `self` was binned (the same columns and edges): rows to score a model grown on
    /// `self` with.
    pub fn like(&self, rows: usize, fill: impl FnOnce(&mut dyn FnMut(usize, &[f64]))) -> Binned {
        Binned::with_columns(self.columns.clone(), rows, self.dim, fill)
    }

    fn with_columns(
        columns: Vec<BinColumn>,
        rows: usize,
        dim: usize,
        fill: impl FnOnce(&mut dyn FnMut(usize, &[f64])),
    ) -> Binned {
        let width = columns.len();
        let mut bins = vec![0u8; rows * width];
        fill(&mut |first_row: usize, chunk: &[f64]| {
            for (i, row) in chunk.chunks_exact(dim.max(1)).enumerate() {
                for (c, column) in columns.iter().enumerate() {
                    let bin = match column {
                        // NaN never comes out of the encoder; it would land in the last bin.
                        BinColumn::Ordinal { dim, edges } => edges.partition_point(|edge| *edge < row[*dim]),
                        BinColumn::OneHot { first, width } => {
                            row[*first..first + width].iter().position(|v| *v > 0.5).unwrap_or(width - 1)
                        }
                    };
                    bins[(first_row + i) * width + c] = bin as u8;
                }
            }
        });
        Binned { rows, dim, columns, bins }
    }

    /// The bin of row `r` in column `c`.
    pub fn bin(&self, c: usize, r: usize) -> usize {
        self.bins[r * self.columns.len() + c] as usize
    }
}

/// What the trees learn.
#[derive(Debug, Clone)]
pub enum Labels {
    /// Class index per row, with the class count.
    Classes(Vec<usize>, usize),
    /// Value per row.
    Values(Vec<f64>),
}

impl Labels {
    fn width(&self) -> usize {
        match self {
            Labels::Classes(_, k) => *k,
            Labels::Values(_) => 1,
        }
    }
}

/// Settings of one tree or forest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    /// Trees (1: a single decision tree on all rows, no bootstrap).
    pub trees: usize,
    /// Deepest split level.
    pub max_depth: usize,
    /// Fewest rows (bootstrap-weighted) in a leaf.
    pub min_leaf: usize,
    /// Share of dimensions tried at each split (random forest); 1 tries all.
    pub feature_fraction: f64,
    /// Seed of the bootstrap and the dimension draws.
    pub seed: u64,
}

/// SplitMix64: small and stable, so that a seed gives the same forest on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

/// Leaf class frequencies are smoothed by this many rows per class, so that no class gets probability 0.
const SMOOTHING: f64 = 0.5;

/// Fits a decision tree (`trees == 1`) or a random forest on binned rows.
pub fn fit(binned: &Binned, labels: &Labels, classes: &[String], p: &TreeParams) -> TreeModel {
    let family = if p.trees <= 1 { TreeFamily::DecisionTree } else { TreeFamily::RandomForest };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(p.trees.max(1));
    // Tree i always draws from seed + i, whichever thread fits it.
    let trees: Vec<Tree> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..p.trees.max(1))
                        .step_by(threads)
                        .map(|i| (i, fit_tree(binned, labels, p, p.seed.wrapping_add(i as u64))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Tree)> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, t)| t).collect()
    });
    let outputs = labels.width();
    TreeModel {
        family,
        classes: classes.to_vec(),
        dim: binned.dim,
        trees: Trees { combine: Combine::Mean, inclusive: true, outputs, base: vec![0.0; outputs], trees },
    }
}

/// Per-row weights: bootstrap multiplicities for a forest, all ones for a single tree.
fn weights(rows: usize, p: &TreeParams, rng: &mut Rng) -> Vec<f64> {
    if p.trees <= 1 {
        return vec![1.0; rows];
    }
    let mut w = vec![0.0; rows];
    for _ in 0..rows {
        w[rng.below(rows)] += 1.0;
    }
    w
}

struct Split {
    column: usize,
    bin: usize,
    gain: f64,
}

fn fit_tree(binned: &Binned, labels: &Labels, p: &TreeParams, seed: u64) -> Tree {
    let mut rng = Rng::new(seed);
    let w = weights(binned.rows, p, &mut rng);
    let width = labels.width();
    let mut b = TreeBuilder::new(width, 0);
    let root = b.push();
    let rows: Vec<u32> = (0..binned.rows as u32).filter(|&r| w[r as usize] > 0.0).collect();
    let mut stack = vec![(root, rows, 0usize)];
    let n = binned.columns.len();
    let tried = ((n as f64 * p.feature_fraction).ceil() as usize).clamp(1, n.max(1));
    let mut dims: Vec<usize> = (0..n).collect();
    while let Some((node, rows, depth)) = stack.pop() {
        let stats = node_stats(&rows, labels, &w);
        let split = if depth < p.max_depth && stats.weight >= 2.0 * p.min_leaf as f64 && !stats.pure() {
            // A fresh draw of dimensions per split (partial Fisher-Yates), in a fixed order for the seed.
            for i in 0..tried.min(dims.len()) {
                let j = i + rng.below(dims.len() - i);
                dims.swap(i, j);
            }
            let mut chosen: Vec<usize> = dims[..tried.min(dims.len())].to_vec();
            chosen.sort_unstable();
            best_split(binned, labels, &w, &rows, &chosen, &stats, p.min_leaf as f64)
        } else {
            None
        };
        match split {
            Some(s) => {
                let column = &binned.columns[s.column];
                let goes_left = |bin: usize| match column {
                    BinColumn::Ordinal { .. } => bin <= s.bin,
                    BinColumn::OneHot { .. } => bin != s.bin,
                };
                let (left_rows, right_rows): (Vec<u32>, Vec<u32>) =
                    rows.iter().partition(|&&r| goes_left(binned.bin(s.column, r as usize)));
                let (l, r) = (b.push(), b.push());
                // The encoder never gives NaN; were one to come, it would go where the larger values go.
                match column {
                    BinColumn::Ordinal { dim, edges } => b.split(node, *dim, edges[s.bin], r, l, r),
                    // The slot's dimension is 1 on its rows and 0 elsewhere.
                    BinColumn::OneHot { first, .. } => b.split(node, first + s.bin, 0.5, r, l, r),
                }
                stack.push((r, right_rows, depth + 1));
                stack.push((l, left_rows, depth + 1));
            }
            None => b.set_leaf(node, &stats.leaf()),
        }
    }
    b.finish()
}

/// Weighted label statistics of a set of rows.
#[derive(Debug, Clone)]
struct Stats {
    weight: f64,
    /// Class weights, or (sum, sum of squares) for values.
    sums: Vec<f64>,
    classes: bool,
}

impl Stats {
    fn new(labels: &Labels) -> Stats {
        match labels {
            Labels::Classes(_, k) => Stats { weight: 0.0, sums: vec![0.0; *k], classes: true },
            Labels::Values(_) => Stats { weight: 0.0, sums: vec![0.0; 2], classes: false },
        }
    }

    fn add(&mut self, labels: &Labels, r: usize, w: f64) {
        self.weight += w;
        match labels {
            Labels::Classes(ys, _) => self.sums[ys[r]] += w,
            Labels::Values(ys) => {
                self.sums[0] += w * ys[r];
                self.sums[1] += w * ys[r] * ys[r];
            }
        }
    }

    fn pure(&self) -> bool {
        self.classes && self.sums.iter().filter(|s| **s > 0.0).count() <= 1
    }

    /// Weight times impurity: Gini for classes, the sum of squared deviations for values.
    fn impurity(&self) -> f64 {
        if self.weight <= 0.0 {
            return 0.0;
        }
        if self.classes {
            self.weight - self.sums.iter().map(|s| s * s).sum::<f64>() / self.weight
        } else {
            (self.sums[1] - self.sums[0] * self.sums[0] / self.weight).max(0.0)
        }
    }

    fn minus(&self, other: &Stats) -> Stats {
        Stats {
            weight: self.weight - other.weight,
            sums: self.sums.iter().zip(&other.sums).map(|(a, b)| a - b).collect(),
            classes: self.classes,
        }
    }

    fn leaf(&self) -> Vec<f64> {
        if self.classes {
            let k = self.sums.len() as f64;
            self.sums.iter().map(|s| (s + SMOOTHING) / (self.weight + SMOOTHING * k)).collect()
        } else {
            vec![if self.weight > 0.0 { self.sums[0] / self.weight } else { 0.0 }]
        }
    }
}

fn node_stats(rows: &[u32], labels: &Labels, w: &[f64]) -> Stats {
    let mut s = Stats::new(labels);
    for &r in rows {
        s.add(labels, r as usize, w[r as usize]);
    }
    s
}

fn best_split(
    binned: &Binned,
    labels: &Labels,
    w: &[f64],
    rows: &[u32],
    dims: &[usize],
    parent: &Stats,
    min_leaf: f64,
) -> Option<Split> {
    let parent_impurity = parent.impurity();
    let mut best: Option<Split> = None;
    for &c in dims {
        let nb = binned.columns[c].bins();
        if nb < 2 {
            continue;
        }
        let mut hist: Vec<Stats> = vec![Stats::new(labels); nb];
        for &r in rows {
            let r = r as usize;
            hist[binned.bin(c, r)].add(labels, r, w[r]);
        }
        let mut consider = |bin: usize, left: &Stats, right: &Stats| {
            if left.weight < min_leaf || right.weight < min_leaf {
                return;
            }
            let gain = parent_impurity - left.impurity() - right.impurity();
            // Strictly better only: the lowest column and bin win ties, so the result does not depend on order.
            if gain > 1e-12 * parent.weight.max(1.0) && best.as_ref().is_none_or(|b| gain > b.gain) {
                best = Some(Split { column: c, bin, gain });
            }
        };
        match binned.columns[c] {
            BinColumn::Ordinal { .. } => {
                let mut left = Stats::new(labels);
                for (bin, h) in hist.iter().enumerate().take(nb - 1) {
                    left.weight += h.weight;
                    left.sums.iter_mut().zip(&h.sums).for_each(|(a, b)| *a += b);
                    let right = parent.minus(&left);
                    consider(bin, &left, &right);
                }
            }
            // One slot against the rest.
            BinColumn::OneHot { .. } => {
                for (bin, h) in hist.iter().enumerate() {
                    consider(bin, &parent.minus(h), h);
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xor(n: usize) -> (Vec<f64>, Vec<usize>) {
        let mut rng = Rng::new(7);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let (a, b) = (rng.below(1000) as f64 / 500.0 - 1.0, rng.below(1000) as f64 / 500.0 - 1.0);
            xs.extend([a, b, rng.below(3) as f64]);
            ys.push(usize::from((a > 0.0) != (b > 0.0)));
        }
        (xs, ys)
    }

    fn accuracy(m: &TreeModel, xs: &[f64], ys: &[usize]) -> f64 {
        let right = xs
            .chunks(3)
            .zip(ys)
            .filter(|(x, y)| match m.predict(x) {
                lambda_models::model::Prediction::Probabilities(p) => lambda_models::model::argmax(&p) == **y,
                _ => false,
            })
            .count();
        right as f64 / ys.len() as f64
    }

    #[test]
    fn a_tree_and_a_forest_learn_xor_which_no_linear_model_can() {
        let (xs, ys) = xor(4000);
        let binned = Binned::new(&xs, 3);
        let labels = Labels::Classes(ys.clone(), 2);
        let classes = ["0".to_string(), "1".to_string()];
        let tree = TreeParams { trees: 1, max_depth: 6, min_leaf: 5, feature_fraction: 1.0, seed: 1 };
        let m = fit(&binned, &labels, &classes, &tree);
        m.validate().unwrap();
        assert_eq!(m.family, TreeFamily::DecisionTree);
        let (test_x, test_y) = xor(1000);
        assert!(accuracy(&m, &test_x, &test_y) > 0.95);
        let forest = TreeParams { trees: 20, feature_fraction: 0.7, ..tree };
        let f = fit(&binned, &labels, &classes, &forest);
        assert_eq!(f.trees.trees.len(), 20);
        assert!(accuracy(&f, &test_x, &test_y) > 0.95);
    }

    #[test]
    fn the_same_seed_gives_the_same_forest_and_another_seed_another() {
        let (xs, ys) = xor(2000);
        let binned = Binned::new(&xs, 3);
        let labels = Labels::Classes(ys, 2);
        let classes = ["0".to_string(), "1".to_string()];
        let p = TreeParams { trees: 8, max_depth: 8, min_leaf: 2, feature_fraction: 0.5, seed: 3 };
        let a = fit(&binned, &labels, &classes, &p);
        assert_eq!(a, fit(&binned, &labels, &classes, &p));
        assert_ne!(a, fit(&binned, &labels, &classes, &TreeParams { seed: 4, ..p }));
    }

    #[test]
    fn a_one_hot_block_binned_as_one_column_gives_the_same_tree_as_a_column_per_dimension() {
        // A numeric dimension, then a one-hot block of five slots (the last never set, as an unknown bucket).
        let mut rng = Rng::new(11);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..3000 {
            let x = rng.below(1000) as f64 / 1000.0;
            let slot = rng.below(4);
            xs.push(x);
            xs.extend((0..5).map(|s| f64::from(u8::from(s == slot))));
            ys.push(usize::from((slot == 2) != (x > 0.6) || slot == 0));
        }
        let labels = Labels::Classes(ys, 2);
        let classes = ["0".to_string(), "1".to_string()];
        let groups = [Group::Dim(0), Group::OneHot { first: 1, width: 5 }];
        let grouped = Binned::from_chunks(3000, 6, &groups, &xs, |put| put(0, &xs));
        assert_eq!(grouped.columns.len(), 2);
        let p = TreeParams { trees: 1, max_depth: 6, min_leaf: 5, feature_fraction: 1.0, seed: 1 };
        let a = fit(&Binned::new(&xs, 6), &labels, &classes, &p);
        let b = fit(&grouped, &labels, &classes, &p);
        assert!(a.trees.trees[0].len() > 5, "the tree splits on both features");
        assert_eq!(a, b);
    }

    #[test]
    fn regression_trees_fit_a_step() {
        // Fewer distinct values than bins: every one is its own bin.
        let xs: Vec<f64> = (0..200).map(|i| i as f64 / 200.0).collect();
        let ys: Vec<f64> = xs.iter().map(|x| if *x < 0.3 { 1.0 } else { 5.0 }).collect();
        let binned = Binned::new(&xs, 1);
        let p = TreeParams { trees: 1, max_depth: 3, min_leaf: 1, feature_fraction: 1.0, seed: 0 };
        let m = fit(&binned, &Labels::Values(ys), &[], &p);
        for (x, want) in [(0.1, 1.0), (0.29, 1.0), (0.31, 5.0), (0.9, 5.0)] {
            match m.predict(&[x]) {
                lambda_models::model::Prediction::Value(v) => assert!((v - want).abs() < 1e-9, "{x}: {v}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
