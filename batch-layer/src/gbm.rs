//! Gradient-boosted trees on binned columns: Newton steps on log loss (one tree per class and round beyond two
//! classes, combined by softmax) or squared error, trees grown level by level to `max_depth`, split gains from
//! histograms of gradient and hessian sums, the larger child's histogram taken as its parent's minus the smaller
//! one's (LightGBM's subtraction).
//!
//! It reads the same [`Binned`] columns as the forests, so a categorical feature costs one byte a row and one
//! histogram column, whatever its number of categories, and a split sends one category one way, which the core
//! tree format holds as a split on that category's one-hot dimension. Sums run in row order per column, and
//! columns are split between threads whole, so the model does not depend on the thread count.

use lambda_models::model::{TreeFamily, TreeModel};
use lambda_models::trees::{Combine, Tree, TreeBuilder, Trees};

use crate::cart::{BinColumn, Binned, Labels};

/// Settings of one boosted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoostParams {
    /// Trees (boosting rounds; one tree per class and round beyond two classes).
    pub rounds: usize,
    /// Shrinkage of each tree's output.
    pub learning_rate: f64,
    /// Deepest split level.
    pub max_depth: usize,
    /// L2 penalty on leaf weights.
    pub l2: f64,
    /// Fewest hessian weight in a leaf.
    pub min_leaf_weight: f64,
    /// Fewest rows in a leaf.
    pub min_leaf: usize,
    /// Rounds without a lower loss on the validation rows after which boosting stops (0: never; used only when
    /// [`fit`] is given validation rows).
    pub patience: usize,
}

/// Gradient and hessian sums of one bin. Rows are not counted: a side's rows are estimated from its share of
/// the node's hessian (exact for squared error), as LightGBM does, which keeps a bin to one 16-byte add.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
}

impl Bin {
    fn add(&mut self, o: &Bin) {
        self.g += o.g;
        self.h += o.h;
    }

    fn minus(&self, o: &Bin) -> Bin {
        Bin { g: self.g - o.g, h: self.h - o.h }
    }
}

/// Where each column's bins start in a node's histogram.
fn offsets(binned: &Binned) -> Vec<usize> {
    let mut out = Vec::with_capacity(binned.columns.len() + 1);
    let mut at = 0;
    out.push(0);
    for c in &binned.columns {
        at += match c {
            BinColumn::Ordinal { edges, .. } => edges.len() + 1,
            BinColumn::OneHot { width, .. } => *width,
        };
        out.push(at);
    }
    out
}

/// Gradient and hessian of one row, side by side: a row's pair is one load.
#[derive(Debug, Clone, Copy, Default)]
struct Grad {
    g: f64,
    h: f64,
}

/// The histogram of `rows` over every column, with the columns shared out between `threads` (each thread reads
/// whole rows but sums only its columns, in row order).
fn histogram(binned: &Binned, at: &[usize], rows: &[u32], gh: &[Grad], threads: usize) -> Vec<Bin> {
    let mut out = vec![Bin::default(); at[at.len() - 1]];
    let width = binned.columns.len();
    let fill = |first: usize, last: usize, hist: &mut [Bin]| {
        let offsets: Vec<usize> = (first..last).map(|c| at[c] - at[first]).collect();
        for &r in rows {
            let r = r as usize;
            let row = &binned.bins[r * width + first..r * width + last];
            let x = gh[r];
            for (&bin, &off) in row.iter().zip(&offsets) {
                let b = &mut hist[off + bin as usize];
                b.g += x.g;
                b.h += x.h;
            }
        }
    };
    if threads <= 1 || rows.len() < 4096 {
        fill(0, width, &mut out);
        return out;
    }
    // Contiguous runs of columns per thread: each writes only its own part of the histogram.
    let per = width.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut rest: &mut [Bin] = &mut out;
        let mut first = 0;
        while first < width {
            let last = (first + per).min(width);
            let (mine, tail) = rest.split_at_mut(at[last] - at[first]);
            rest = tail;
            let fill = &fill;
            scope.spawn(move || fill(first, last, mine));
            first = last;
        }
    });
    out
}

/// Moves the rows that `left` sends left to the front of `rows`, keeping both sides in row order (so that sums
/// over them stay in row order), and returns how many went left. `scratch`, at least as long as `rows`, holds
/// the right side meanwhile.
fn partition(rows: &mut [u32], scratch: &mut [u32], left: impl Fn(usize) -> bool) -> usize {
    let (mut nl, mut nr) = (0, 0);
    for i in 0..rows.len() {
        let r = rows[i];
        let go = left(r as usize);
        // Written to both sides, kept by one: no branch to mispredict.
        rows[nl] = r;
        scratch[nr] = r;
        nl += usize::from(go);
        nr += usize::from(!go);
    }
    rows[nl..].copy_from_slice(&scratch[..nr]);
    nl
}

fn sum(bins: &[Bin]) -> Bin {
    bins.iter().fold(Bin::default(), |mut s, b| {
        s.add(b);
        s
    })
}

/// The best split of a node: its column, bin and gain.
struct Split {
    column: usize,
    bin: usize,
    gain: f64,
}

fn score(b: &Bin, l2: f64) -> f64 {
    b.g * b.g / (b.h + l2)
}

fn best_split(binned: &Binned, at: &[usize], hist: &[Bin], total: &Bin, rows: usize, p: &BoostParams) -> Option<Split> {
    let parent = score(total, p.l2);
    // Hessian that stands for one row: a side has fewer than `min_leaf` rows when its hessian is below this.
    let min_h = p.min_leaf as f64 * total.h / rows.max(1) as f64;
    let mut best: Option<Split> = None;
    for (c, column) in binned.columns.iter().enumerate() {
        let bins = &hist[at[c]..at[c + 1]];
        let mut consider = |bin: usize, left: &Bin, right: &Bin| {
            if left.h.min(right.h) < min_h.max(p.min_leaf_weight) {
                return;
            }
            let gain = score(left, p.l2) + score(right, p.l2) - parent;
            // Strictly better only: the lowest column and bin win ties.
            if gain > 1e-12 && best.as_ref().is_none_or(|b| gain > b.gain) {
                best = Some(Split { column: c, bin, gain });
            }
        };
        match column {
            BinColumn::Ordinal { .. } => {
                let mut left = Bin::default();
                for (bin, b) in bins.iter().enumerate().take(bins.len().saturating_sub(1)) {
                    left.add(b);
                    consider(bin, &left, &total.minus(&left));
                }
            }
            BinColumn::OneHot { .. } => {
                for (bin, b) in bins.iter().enumerate() {
                    consider(bin, &total.minus(b), b);
                }
            }
        }
    }
    best
}

/// Rows a tree is grown on (or, for early stopping, scored on): their bins, an index whose runs are the nodes'
/// rows, partitioned in place as nodes split, and the rows' scores (`width` per row).
struct Side<'a> {
    binned: &'a Binned,
    index: Vec<u32>,
    scratch: Vec<u32>,
    scores: Vec<f64>,
}

impl<'a> Side<'a> {
    fn new(binned: &'a Binned, base: &[f64]) -> Side<'a> {
        let n = binned.rows;
        Side {
            binned,
            index: Vec::with_capacity(n),
            scratch: vec![0; n],
            scores: (0..n).flat_map(|_| base.iter().copied()).collect(),
        }
    }

    /// Every row in one node again, for the next tree.
    fn reset(&mut self) {
        self.index.clear();
        self.index.extend(0..self.binned.rows as u32);
    }

    /// Splits the node of rows `lo..hi` on `column` at `bin`; returns where its right child's rows start.
    fn split(&mut self, lo: usize, hi: usize, column: usize, bin: usize) -> usize {
        let cols = self.binned.columns.len();
        let bins = &self.binned.bins;
        let at_bin = |r: usize| bins[r * cols + column] as usize;
        lo + match self.binned.columns[column] {
            BinColumn::Ordinal { .. } => partition(&mut self.index[lo..hi], &mut self.scratch, |r| at_bin(r) <= bin),
            BinColumn::OneHot { .. } => partition(&mut self.index[lo..hi], &mut self.scratch, |r| at_bin(r) != bin),
        }
    }

    /// Adds a leaf's value to the scores of its rows.
    fn add(&mut self, lo: usize, hi: usize, width: usize, output: usize, value: f64) {
        for &r in &self.index[lo..hi] {
            self.scores[r as usize * width + output] += value;
        }
    }
}

/// A node waiting to be split or made a leaf: its rows (a run of each side's index), histogram (when it can
/// split) and sums.
struct Node {
    id: usize,
    rows: (usize, usize),
    valid: (usize, usize),
    hist: Option<Vec<Bin>>,
    total: Bin,
    depth: usize,
}

/// Grows one tree on the gradients `gh` of `train`'s rows, adds its leaf values to the scores of column `output`
/// on both sides and returns it.
#[allow(clippy::too_many_arguments)]
fn grow(
    at: &[usize],
    gh: &[Grad],
    width: usize,
    output: usize,
    p: &BoostParams,
    threads: usize,
    train: &mut Side<'_>,
    mut valid: Option<&mut Side<'_>>,
) -> Tree {
    let binned = train.binned;
    let mut b = TreeBuilder::new(1, output);
    let root = b.push();
    train.reset();
    let valid_rows = valid.as_mut().map_or(0, |v| {
        v.reset();
        v.binned.rows
    });
    let n = train.index.len();
    // A node can split when it is above the deepest level and has rows for two leaves; only then is its
    // histogram needed.
    let can_split = |rows: usize, depth: usize| depth < p.max_depth && rows >= 2 * p.min_leaf.max(1);
    let hist = can_split(n, 0).then(|| histogram(binned, at, &train.index, gh, threads));
    let total = match &hist {
        Some(h) => sum(&h[at[0]..at[1]]),
        None => gh.iter().fold(Bin::default(), |mut s, x| {
            s.add(&Bin { g: x.g, h: x.h });
            s
        }),
    };
    let mut stack = vec![Node { id: root, rows: (0, n), valid: (0, valid_rows), hist, total, depth: 0 }];
    while let Some(node) = stack.pop() {
        let Node { id, rows: (lo, hi), valid: (vlo, vhi), hist, total, depth } = node;
        let split = hist.as_ref().and_then(|h| best_split(binned, at, h, &total, hi - lo, p));
        let Some(s) = split else {
            let value = -total.g / (total.h + p.l2) * p.learning_rate;
            b.set_leaf(id, &[value]);
            train.add(lo, hi, width, output, value);
            if let Some(v) = valid.as_mut() {
                v.add(vlo, vhi, width, output, value);
            }
            continue;
        };
        let mid = train.split(lo, hi, s.column, s.bin);
        let vmid = valid.as_mut().map_or(vlo, |v| v.split(vlo, vhi, s.column, s.bin));
        let (l, r) = (b.push(), b.push());
        let column = &binned.columns[s.column];
        match column {
            BinColumn::Ordinal { dim, edges } => b.split(id, *dim, edges[s.bin], r, l, r),
            // The slot's dimension is 1 on its rows and 0 elsewhere.
            BinColumn::OneHot { first, .. } => b.split(id, first + s.bin, 0.5, r, l, r),
        }
        let hist = hist.unwrap_or_default();
        // Totals come from the parent's histogram: the split column's bins on each side.
        let bins = &hist[at[s.column]..at[s.column + 1]];
        let lt = match column {
            BinColumn::Ordinal { .. } => sum(&bins[..=s.bin]),
            BinColumn::OneHot { .. } => total.minus(&bins[s.bin]),
        };
        let rt = total.minus(&lt);
        let (left, right) = ((lo, mid), (mid, hi));
        let (split_left, split_right) = (can_split(mid - lo, depth + 1), can_split(hi - mid, depth + 1));
        // Only the smaller child's histogram is summed; the larger one's is what the parent has left over.
        let left_small = mid - lo <= hi - mid;
        let small = if left_small { left } else { right };
        let (small_splits, large_splits) =
            if left_small { (split_left, split_right) } else { (split_right, split_left) };
        let small_hist =
            (small_splits || large_splits).then(|| histogram(binned, at, &train.index[small.0..small.1], gh, threads));
        let large_hist = match (&small_hist, large_splits) {
            (Some(sh), true) => Some(hist.iter().zip(sh).map(|(a, s)| a.minus(s)).collect::<Vec<Bin>>()),
            _ => None,
        };
        let small_hist = small_hist.filter(|_| small_splits);
        let (lh, rh) = if left_small { (small_hist, large_hist) } else { (large_hist, small_hist) };
        let depth = depth + 1;
        stack.push(Node { id: r, rows: right, valid: (vmid, vhi), hist: rh, total: rt, depth });
        stack.push(Node { id: l, rows: left, valid: (vlo, vmid), hist: lh, total: lt, depth });
    }
    b.finish()
}

/// Mean loss of `scores` (`width` per row) against `labels`: log loss, softmax cross-entropy or squared error.
fn mean_loss(labels: &Labels, scores: &[f64], width: usize) -> f64 {
    let softplus = |x: f64| if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() };
    let total: f64 = match labels {
        Labels::Values(ys) => ys.iter().zip(scores).map(|(y, s)| (s - y) * (s - y)).sum(),
        Labels::Classes(ys, _) if width == 1 => {
            ys.iter().zip(scores).map(|(&y, &s)| if y == 1 { softplus(-s) } else { softplus(s) }).sum()
        }
        Labels::Classes(ys, _) => ys
            .iter()
            .zip(scores.chunks_exact(width))
            .map(|(&y, s)| {
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - s[y]
            })
            .sum(),
    };
    let rows = match labels {
        Labels::Values(ys) => ys.len(),
        Labels::Classes(ys, _) => ys.len(),
    };
    total / rows.max(1) as f64
}

/// Fits boosted trees on `binned` rows: `classes` empty for regression on [`Labels::Values`], else class indices.
/// `threads`: how many threads sum the histograms. With `valid` rows (binned like `binned`, see [`Binned::like`])
/// and `p.patience` > 0, boosting stops once `patience` rounds in a row have not lowered the loss on them, and
/// the model keeps the rounds up to the lowest.
pub fn fit(
    binned: &Binned,
    labels: &Labels,
    classes: &[String],
    p: &BoostParams,
    threads: usize,
    valid: Option<(&Binned, &Labels)>,
) -> TreeModel {
    let n = binned.rows;
    let at = offsets(binned);
    // One output for values and for two classes (log-odds of classes[1]), one per class beyond.
    let width = match labels {
        Labels::Classes(_, k) if *k > 2 => *k,
        _ => 1,
    };
    let base: Vec<f64> = match labels {
        Labels::Values(y) => vec![y.iter().sum::<f64>() / n.max(1) as f64],
        Labels::Classes(ys, k) => {
            let mut counts = vec![0.0f64; *k];
            for &y in ys {
                counts[y] += 1.0;
            }
            let share = |c: f64| ((c + 0.5) / (n as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
            if width == 1 {
                let q = share(counts.get(1).copied().unwrap_or(0.0));
                vec![(q / (1.0 - q)).ln()]
            } else {
                counts.iter().map(|&c| share(c).ln()).collect()
            }
        }
    };
    let mut train = Side::new(binned, &base);
    let mut valid = valid.filter(|(v, _)| p.patience > 0 && v.rows > 0).map(|(v, l)| (Side::new(v, &base), l));
    let mut gh = vec![Grad::default(); n];
    let mut trees = Vec::with_capacity(p.rounds * width);
    let mut probs = vec![0.0; width];
    // Beyond two classes every class's gradients come from the scores at the start of the round.
    let mut start = Vec::new();
    // The lowest validation loss so far and the rounds that reached it.
    let mut best = (f64::INFINITY, p.rounds);
    for round in 0..p.rounds {
        if width > 1 {
            start.clone_from(&train.scores);
        }
        for k in 0..width {
            for r in 0..n {
                let s = if width > 1 { &start[r * width..(r + 1) * width] } else { &train.scores[r..r + 1] };
                let (gr, hr) = match labels {
                    Labels::Values(y) => (s[0] - y[r], 1.0),
                    Labels::Classes(ys, _) if width == 1 => {
                        let q = 1.0 / (1.0 + (-s[0]).exp());
                        (q - f64::from(u8::from(ys[r] == 1)), (q * (1.0 - q)).max(1e-16))
                    }
                    Labels::Classes(ys, _) => {
                        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let mut z = 0.0;
                        for (pk, sk) in probs.iter_mut().zip(s) {
                            *pk = (sk - m).exp();
                            z += *pk;
                        }
                        let q = probs[k] / z;
                        (q - f64::from(u8::from(ys[r] == k)), (q * (1.0 - q)).max(1e-16))
                    }
                };
                gh[r] = Grad { g: gr, h: hr };
            }
            let tree = grow(&at, &gh, width, k, p, threads, &mut train, valid.as_mut().map(|(v, _)| v));
            trees.push(tree);
        }
        if let Some((v, labels)) = &valid {
            let loss = mean_loss(labels, &v.scores, width);
            if loss < best.0 {
                best = (loss, round + 1);
            } else if round + 1 - best.1 >= p.patience {
                break;
            }
        }
    }
    trees.truncate(best.1 * width);
    TreeModel {
        family: TreeFamily::GradientBoosting,
        classes: classes.to_vec(),
        dim: binned.dim,
        trees: Trees { combine: Combine::Sum, inclusive: true, outputs: width, base, trees },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::Rng;
    use lambda_models::model::{argmax, Prediction};

    fn xor(n: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (a, b) = (rng.below(1000) as f64 / 500.0 - 1.0, rng.below(1000) as f64 / 500.0 - 1.0);
            xs.extend([a, b, rng.below(3) as f64]);
            ys.push(usize::from((a > 0.0) != (b > 0.0)));
        }
        (xs, ys)
    }

    const P: BoostParams = BoostParams {
        rounds: 40,
        learning_rate: 0.3,
        max_depth: 4,
        l2: 1.0,
        min_leaf_weight: 1e-3,
        min_leaf: 5,
        patience: 0,
    };

    #[test]
    fn boosting_learns_xor_which_no_linear_model_can() {
        let (xs, ys) = xor(4000, 7);
        let classes = ["0".to_string(), "1".to_string()];
        let m = fit(&Binned::new(&xs, 3), &Labels::Classes(ys, 2), &classes, &P, 1, None);
        m.validate().unwrap();
        let (tx, ty) = xor(1000, 8);
        let right = tx
            .chunks(3)
            .zip(&ty)
            .filter(|(x, y)| matches!(m.predict(x), Prediction::Probabilities(p) if argmax(&p) == **y))
            .count();
        assert!(right as f64 / ty.len() as f64 > 0.95, "{right}");
    }

    #[test]
    fn three_classes_get_a_tree_each_per_round_and_are_told_apart() {
        let xs: Vec<f64> = (0..3000).map(|i| (i % 300) as f64 / 100.0).collect();
        let ys: Vec<usize> = xs.iter().map(|x| (*x as usize).min(2)).collect();
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = fit(&Binned::new(&xs, 1), &Labels::Classes(ys, 3), &classes, &P, 1, None);
        assert_eq!(m.trees.trees.len(), 3 * P.rounds);
        for (x, want) in [(0.5, 0), (1.5, 1), (2.5, 2)] {
            match m.predict(&[x]) {
                Prediction::Probabilities(p) => assert!(argmax(&p) == want && p[want] > 0.9, "{x}: {p:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn regression_boosting_fits_a_step() {
        let xs: Vec<f64> = (0..400).map(|i| i as f64 / 400.0).collect();
        let ys: Vec<f64> = xs.iter().map(|x| if *x < 0.3 { 1.0 } else { 5.0 }).collect();
        let m = fit(&Binned::new(&xs, 1), &Labels::Values(ys), &[], &BoostParams { rounds: 60, ..P }, 1, None);
        for (x, want) in [(0.1, 1.0), (0.29, 1.0), (0.31, 5.0), (0.9, 5.0)] {
            match m.predict(&[x]) {
                Prediction::Value(v) => assert!((v - want).abs() < 1e-3, "{x}: {v}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_model_does_not_depend_on_the_thread_count() {
        // Enough rows that the histograms are summed on several threads.
        let (xs, ys) = xor(50_000, 9);
        let classes = ["0".to_string(), "1".to_string()];
        let (binned, labels) = (Binned::new(&xs, 3), Labels::Classes(ys, 2));
        let p = BoostParams { rounds: 5, ..P };
        assert_eq!(fit(&binned, &labels, &classes, &p, 1, None), fit(&binned, &labels, &classes, &p, 3, None));
    }

    #[test]
    fn partition_keeps_both_sides_in_row_order() {
        let mut rows: Vec<u32> = (0..1000).map(|i| i * 3).collect();
        let mut scratch = vec![0; rows.len()];
        let left = partition(&mut rows, &mut scratch, |r| r % 7 < 3);
        let want_left: Vec<u32> = (0..1000).map(|i| i * 3).filter(|r| r % 7 < 3).collect();
        let want_right: Vec<u32> = (0..1000).map(|i| i * 3).filter(|r| r % 7 >= 3).collect();
        assert_eq!(left, want_left.len());
        assert_eq!(rows[..left], want_left[..]);
        assert_eq!(rows[left..], want_right[..]);
    }

    #[test]
    fn no_regression_leaf_holds_fewer_rows_than_min_leaf() {
        // Unit hessians: a leaf's rows are known exactly from its hessian.
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (x / 37.0).sin() * 10.0).collect();
        let p = BoostParams { rounds: 3, max_depth: 8, min_leaf: 40, ..P };
        let m = fit(&Binned::new(&xs, 1), &Labels::Values(ys), &[], &p, 1, None);
        for tree in &m.trees.trees {
            let mut rows = std::collections::HashMap::new();
            for x in &xs {
                *rows.entry(tree.outputs(&[*x], true)[0].to_bits()).or_insert(0) += 1;
            }
            assert!(rows.len() > 4, "the tree splits: {rows:?}");
            assert!(rows.values().all(|&n| n >= 40), "{rows:?}");
        }
    }

    #[test]
    fn early_stopping_keeps_the_rounds_up_to_the_lowest_validation_loss() {
        // XOR with a fifth of the labels flipped: deep trees at a high rate soon fit the noise.
        let noisy = |n: usize, seed: u64| {
            let (xs, mut ys) = xor(n, seed);
            let mut rng = Rng::new(seed + 100);
            for y in &mut ys {
                if rng.below(5) == 0 {
                    *y = 1 - *y;
                }
            }
            (xs, ys)
        };
        let ((xs, ys), (vx, vy)) = (noisy(3000, 11), noisy(1000, 12));
        let classes = ["0".to_string(), "1".to_string()];
        let binned = Binned::new(&xs, 3);
        let valid = binned.like(1000, |put| put(0, &vx));
        let (labels, vlabels) = (Labels::Classes(ys, 2), Labels::Classes(vy.clone(), 2));
        let p = BoostParams { rounds: 200, learning_rate: 0.5, max_depth: 6, min_leaf: 2, patience: 10, ..P };
        let full = fit(&binned, &labels, &classes, &BoostParams { patience: 0, ..p }, 1, None);
        let cut = fit(&binned, &labels, &classes, &p, 1, Some((&valid, &vlabels)));
        let kept = cut.trees.trees.len();
        assert!(kept < 200, "it stopped early: {kept}");
        assert_eq!(cut.trees.trees[..], full.trees.trees[..kept], "the kept rounds are the full fit's first ones");
        // The validation loss after each prefix of the full fit, from the scores the trees give.
        let loss_after = |rounds: usize| {
            let scores: Vec<f64> = vx
                .chunks(3)
                .map(|x| {
                    full.trees.base[0] + full.trees.trees[..rounds].iter().map(|t| t.outputs(x, true)[0]).sum::<f64>()
                })
                .collect();
            mean_loss(&vlabels, &scores, 1)
        };
        let losses: Vec<f64> = (1..=kept + 10).map(loss_after).collect();
        let lowest = losses.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((losses[kept - 1] - lowest).abs() < 1e-12, "kept {kept}: {losses:?}");
        assert!(losses[kept..].iter().all(|l| *l >= losses[kept - 1] - 1e-12), "ten rounds without a lower loss");
    }
}
