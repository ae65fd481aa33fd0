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

/// Gradient, hessian and row sums of one bin.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
    n: f64,
}

impl Bin {
    fn add(&mut self, o: &Bin) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }

    fn minus(&self, o: &Bin) -> Bin {
        Bin { g: self.g - o.g, h: self.h - o.h, n: self.n - o.n }
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

/// The histogram of `rows` over every column, with the columns shared out between `threads` (each thread reads
/// whole rows but sums only its columns, in row order).
fn histogram(binned: &Binned, at: &[usize], rows: &[u32], g: &[f64], h: &[f64], threads: usize) -> Vec<Bin> {
    let mut out = vec![Bin::default(); at[at.len() - 1]];
    let width = binned.columns.len();
    let fill = |first: usize, last: usize, hist: &mut [Bin]| {
        let offsets: Vec<usize> = (first..last).map(|c| at[c] - at[first]).collect();
        for &r in rows {
            let r = r as usize;
            let row = &binned.bins[r * width + first..r * width + last];
            let (gr, hr) = (g[r], h[r]);
            for (&bin, &off) in row.iter().zip(&offsets) {
                if let Some(b) = hist.get_mut(off + bin as usize) {
                    b.g += gr;
                    b.h += hr;
                    b.n += 1.0;
                }
            }
        }
    };
    if threads <= 1 || rows.len() < 20_000 {
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

/// The best split of a node: its column, bin and gain.
struct Split {
    column: usize,
    bin: usize,
    gain: f64,
}

fn score(b: &Bin, l2: f64) -> f64 {
    b.g * b.g / (b.h + l2)
}

fn best_split(binned: &Binned, at: &[usize], hist: &[Bin], total: &Bin, p: &BoostParams) -> Option<Split> {
    let parent = score(total, p.l2);
    let min_rows = p.min_leaf as f64;
    let mut best: Option<Split> = None;
    for (c, column) in binned.columns.iter().enumerate() {
        let bins = &hist[at[c]..at[c + 1]];
        let mut consider = |bin: usize, left: &Bin, right: &Bin| {
            if left.n < min_rows || right.n < min_rows || left.h < p.min_leaf_weight || right.h < p.min_leaf_weight {
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
#[allow(clippy::too_many_arguments)]
fn grow(
    binned: &Binned,
    at: &[usize],
    g: &[f64],
    h: &[f64],
    scores: &mut [f64],
    width: usize,
    output: usize,
    p: &BoostParams,
    threads: usize,
) -> Tree {
    let mut b = TreeBuilder::new(1, output);
    let root = b.push();
    let rows: Vec<u32> = (0..binned.rows as u32).collect();
    let hist = histogram(binned, at, &rows, g, h, threads);
    let total = hist[at[0]..at[1]].iter().fold(Bin::default(), |mut s, x| {
        s.add(x);
        s
    });
    let mut stack = vec![(root, rows, hist, total, 0usize)];
    while let Some((node, rows, hist, total, depth)) = stack.pop() {
        let split = if depth < p.max_depth { best_split(binned, at, &hist, &total, p) } else { None };
        let Some(s) = split else {
            let value = -total.g / (total.h + p.l2) * p.learning_rate;
            b.set_leaf(node, &[value]);
            for &r in &rows {
                scores[r as usize * width + output] += value;
            }
            continue;
        };
        let column = &binned.columns[s.column];
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&r| {
            let bin = binned.bin(s.column, r as usize);
            match column {
                BinColumn::Ordinal { .. } => bin <= s.bin,
                BinColumn::OneHot { .. } => bin != s.bin,
            }
        });
        drop(rows);
        let (l, r) = (b.push(), b.push());
        match column {
            BinColumn::Ordinal { dim, edges } => b.split(node, *dim, edges[s.bin], r, l, r),
            // The slot's dimension is 1 on its rows and 0 elsewhere.
            BinColumn::OneHot { first, .. } => b.split(node, first + s.bin, 0.5, r, l, r),
        }
        // Only the smaller child's histogram is summed; the larger one's is what the parent has left over.
        let left_small = left_rows.len() <= right_rows.len();
        let small = histogram(binned, at, if left_small { &left_rows } else { &right_rows }, g, h, threads);
        let large: Vec<Bin> = hist.iter().zip(&small).map(|(a, s)| a.minus(s)).collect();
        let (lh, rh) = if left_small { (small, large) } else { (large, small) };
        let sum = |x: &[Bin]| {
            x[at[0]..at[1]].iter().fold(Bin::default(), |mut s, b| {
                s.add(b);
                s
            })
        };
        let (lt, rt) = (sum(&lh), sum(&rh));
        stack.push((r, right_rows, rh, rt, depth + 1));
        stack.push((l, left_rows, lh, lt, depth + 1));
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
    let (mut g, mut h) = (vec![0.0; n], vec![0.0; n]);
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
                g[r] = gr;
                h[r] = hr;
            }
            trees.push(grow(binned, &at, &g, &h, &mut scores, width, k, p, threads));
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
}
