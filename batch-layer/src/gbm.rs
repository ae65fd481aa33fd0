//! Gradient-boosted trees on binned columns: Newton steps on log loss (one tree per class and round beyond two
//! classes, combined by softmax) or squared error, trees grown level by level to `max_depth`, split gains from
//! histograms of gradient and hessian sums, the larger child's histogram taken as its parent's minus the smaller
//! one's (LightGBM's subtraction).
//!
//! It reads the same [`Binned`] columns as the forests, so a categorical feature costs one byte a row and one
//! histogram column, whatever its number of categories, and a split sends one category one way, which the core
//! tree format holds as a split on that category's one-hot dimension. Sums run in row order per column, and
//! columns are split between threads whole, so the model does not depend on the thread count.

use lambda_core::model::{TreeFamily, TreeModel};
use lambda_core::trees::{Combine, Tree, TreeBuilder, Trees};

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
/// over them stay in row order), and returns how many went left. `scratch` holds the right side meanwhile.
fn partition(rows: &mut [u32], scratch: &mut Vec<u32>, left: impl Fn(usize) -> bool) -> usize {
    scratch.clear();
    scratch.resize(rows.len(), 0);
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

/// Grows one tree on the gradients, adds its leaf values to `scores` (column `output` of `width`) and returns it.
/// `index` holds every row; each node's rows are a run of it, partitioned in place as the node splits.
#[allow(clippy::too_many_arguments)]
fn grow(
    binned: &Binned,
    at: &[usize],
    gh: &[Grad],
    scores: &mut [f64],
    width: usize,
    output: usize,
    p: &BoostParams,
    threads: usize,
    index: &mut [u32],
    scratch: &mut Vec<u32>,
) -> Tree {
    let mut b = TreeBuilder::new(1, output);
    let root = b.push();
    let n = index.len();
    // A node can split when it is above the deepest level and has rows for two leaves; only then is its
    // histogram needed.
    let can_split = |rows: usize, depth: usize| depth < p.max_depth && rows >= 2 * p.min_leaf.max(1);
    let hist = if can_split(n, 0) { Some(histogram(binned, at, index, gh, threads)) } else { None };
    let total = match &hist {
        Some(h) => sum(&h[at[0]..at[1]]),
        None => index.iter().fold(Bin::default(), |mut s, &r| {
            s.add(&Bin { g: gh[r as usize].g, h: gh[r as usize].h });
            s
        }),
    };
    let mut stack = vec![(root, 0usize, n, hist, total, 0usize)];
    while let Some((node, lo, hi, hist, total, depth)) = stack.pop() {
        let split = hist.as_ref().and_then(|h| best_split(binned, at, h, &total, hi - lo, p));
        let Some(s) = split else {
            let value = -total.g / (total.h + p.l2) * p.learning_rate;
            b.set_leaf(node, &[value]);
            for &r in &index[lo..hi] {
                scores[r as usize * width + output] += value;
            }
            continue;
        };
        let column = &binned.columns[s.column];
        let cols = binned.columns.len();
        let at_bin = |r: usize| binned.bins[r * cols + s.column] as usize;
        let nl = match column {
            BinColumn::Ordinal { .. } => partition(&mut index[lo..hi], scratch, |r| at_bin(r) <= s.bin),
            BinColumn::OneHot { .. } => partition(&mut index[lo..hi], scratch, |r| at_bin(r) != s.bin),
        };
        let (l, r) = (b.push(), b.push());
        match column {
            BinColumn::Ordinal { dim, edges } => b.split(node, *dim, edges[s.bin], r, l, r),
            // The slot's dimension is 1 on its rows and 0 elsewhere.
            BinColumn::OneHot { first, .. } => b.split(node, first + s.bin, 0.5, r, l, r),
        }
        let (left, right) = ((lo, lo + nl), (lo + nl, hi));
        let hist = hist.unwrap_or_default();
        // Totals come from the parent's histogram: the split column's bins on each side.
        let bins = &hist[at[s.column]..at[s.column + 1]];
        let lt = match column {
            BinColumn::Ordinal { .. } => sum(&bins[..=s.bin]),
            BinColumn::OneHot { .. } => total.minus(&bins[s.bin]),
        };
        let rt = total.minus(&lt);
        let (split_left, split_right) = (can_split(nl, depth + 1), can_split(hi - lo - nl, depth + 1));
        // Only the smaller child's histogram is summed; the larger one's is what the parent has left over.
        let left_small = nl <= hi - lo - nl;
        let small = if left_small { left } else { right };
        let (small_splits, large_splits) =
            if left_small { (split_left, split_right) } else { (split_right, split_left) };
        let small_hist =
            (small_splits || large_splits).then(|| histogram(binned, at, &index[small.0..small.1], gh, threads));
        let large_hist = match (&small_hist, large_splits) {
            (Some(sh), true) => Some(hist.iter().zip(sh).map(|(a, s)| a.minus(s)).collect::<Vec<Bin>>()),
            _ => None,
        };
        let small_hist = small_hist.filter(|_| small_splits);
        let (lh, rh) = if left_small { (small_hist, large_hist) } else { (large_hist, small_hist) };
        stack.push((r, right.0, right.1, rh, rt, depth + 1));
        stack.push((l, left.0, left.1, lh, lt, depth + 1));
    }
    b.finish()
}

/// Fits boosted trees on `binned` rows: `classes` empty for regression on [`Labels::Values`], else class indices.
/// `threads`: how many threads sum the histograms.
pub fn fit(binned: &Binned, labels: &Labels, classes: &[String], p: &BoostParams, threads: usize) -> TreeModel {
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
    let mut scores: Vec<f64> = (0..n).flat_map(|_| base.iter().copied()).collect();
    let mut gh = vec![Grad::default(); n];
    let (mut index, mut scratch): (Vec<u32>, Vec<u32>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut trees = Vec::with_capacity(p.rounds * width);
    let mut probs = vec![0.0; width];
    // Beyond two classes every class's gradients come from the scores at the start of the round.
    let mut start = Vec::new();
    for _ in 0..p.rounds {
        if width > 1 {
            start.clone_from(&scores);
        }
        for k in 0..width {
            for r in 0..n {
                let s = if width > 1 { &start[r * width..(r + 1) * width] } else { &scores[r..r + 1] };
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
            index.clear();
            index.extend(0..n as u32);
            trees.push(grow(binned, &at, &gh, &mut scores, width, k, p, threads, &mut index, &mut scratch));
        }
    }
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
    use lambda_core::model::{argmax, Prediction};

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

    const P: BoostParams =
        BoostParams { rounds: 40, learning_rate: 0.3, max_depth: 4, l2: 1.0, min_leaf_weight: 1e-3, min_leaf: 5 };

    #[test]
    fn boosting_learns_xor_which_no_linear_model_can() {
        let (xs, ys) = xor(4000, 7);
        let classes = ["0".to_string(), "1".to_string()];
        let m = fit(&Binned::new(&xs, 3), &Labels::Classes(ys, 2), &classes, &P, 1);
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
        let m = fit(&Binned::new(&xs, 1), &Labels::Classes(ys, 3), &classes, &P, 1);
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
        let m = fit(&Binned::new(&xs, 1), &Labels::Values(ys), &[], &BoostParams { rounds: 60, ..P }, 1);
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
        assert_eq!(fit(&binned, &labels, &classes, &p, 1), fit(&binned, &labels, &classes, &p, 3));
    }

    #[test]
    fn partition_keeps_both_sides_in_row_order() {
        let mut rows: Vec<u32> = (0..1000).map(|i| i * 3).collect();
        let mut scratch = Vec::new();
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
        let m = fit(&Binned::new(&xs, 1), &Labels::Values(ys), &[], &p, 1);
        for tree in &m.trees.trees {
            let mut rows = std::collections::HashMap::new();
            for x in &xs {
                *rows.entry(tree.outputs(&[*x], true)[0].to_bits()).or_insert(0) += 1;
            }
            assert!(rows.len() > 4, "the tree splits: {rows:?}");
            assert!(rows.values().all(|&n| n >= 40), "{rows:?}");
        }
    }
}
