//! Gradient-boosted trees with forust-ml, copied into the core tree format so that every layer predicts them
//! through the same code as the other families.
//!
//! forust-ml was chosen over perpetual by measurement (ARCHITECTURE.md): on 100,000 rows of a non-linear target it
//! fits 100 trees in 0.8 s where perpetual took 170 to 450 s, gives the same model bit for bit on a refit and
//! whatever the thread count, and builds on stable Rust. It fits log loss and squared error; more than two classes
//! get one booster per class, their scores combined by softmax.

use forust_ml::{GradientBooster, Matrix};
use lambda_core::model::{TreeFamily, TreeModel};
use lambda_core::trees::{Combine, Tree, TreeBuilder, Trees};

use crate::{Error, Result};

/// Settings of one boosted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoostParams {
    /// Trees (boosting rounds).
    pub rounds: usize,
    /// Shrinkage of each tree's output.
    pub learning_rate: f64,
    /// Deepest split level.
    pub max_depth: usize,
    /// L2 penalty on leaf weights.
    pub l2: f64,
    /// Fewest hessian weight in a leaf.
    pub min_leaf_weight: f64,
}

fn booster(p: &BoostParams, objective: forust_ml::objective::ObjectiveType, parallel: bool) -> GradientBooster {
    GradientBooster::default()
        .set_objective_type(objective)
        .set_iterations(p.rounds)
        .set_learning_rate(p.learning_rate as f32)
        .set_max_depth(p.max_depth)
        .set_l2(p.l2 as f32)
        .set_min_leaf_weight(p.min_leaf_weight as f32)
        // The search runs two candidates at once, each booster on one thread; a refit alone takes every core. The
        // result does not depend on the thread count.
        .set_parallel(parallel)
        .set_seed(0)
}

/// Copies forust-ml's trees (nodes indexed by number, `x < split_value` goes left, NaN to `missing_node`).
fn convert(trees: &[forust_ml::tree::Tree], output: usize) -> Result<Vec<Tree>> {
    let mut out = Vec::with_capacity(trees.len());
    for t in trees {
        let mut b = TreeBuilder::new(1, output);
        for (i, n) in t.nodes.iter().enumerate() {
            if n.num != i {
                return Err(Error::Data(format!("gradient boosting: node {i} is numbered {}", n.num)));
            }
            b.push();
        }
        for n in &t.nodes {
            if n.is_leaf {
                b.set_leaf(n.num, &[f64::from(n.weight_value)]);
            } else {
                b.split(n.num, n.split_feature, n.split_value, n.missing_node, n.left_child, n.right_child);
            }
        }
        out.push(b.finish());
    }
    Ok(out)
}

/// Column-major copy of row-major `xs`, as forust-ml reads it.
fn columns(xs: &[f64], dim: usize) -> Vec<f64> {
    let rows = xs.len().checked_div(dim).unwrap_or(0);
    let mut out = vec![0.0; xs.len()];
    for r in 0..rows {
        for d in 0..dim {
            out[d * rows + r] = xs[r * dim + d];
        }
    }
    out
}

/// Fits boosted trees on row-major `xs`: `classes` empty for regression on `values`, else class indices `ys`.
pub fn fit(
    xs: &[f64],
    dim: usize,
    classes: &[String],
    ys: &[usize],
    values: &[f64],
    p: &BoostParams,
    parallel: bool,
) -> Result<TreeModel> {
    let rows = xs.len().checked_div(dim).unwrap_or(0);
    fit_columns(&columns(xs, dim), rows, dim, classes, ys, values, p, parallel)
}

/// [`fit`] on a column-major matrix (`dim` columns of `rows`), as forust-ml reads it.
#[allow(clippy::too_many_arguments)]
pub fn fit_columns(
    data: &[f64],
    rows: usize,
    dim: usize,
    classes: &[String],
    ys: &[usize],
    values: &[f64],
    p: &BoostParams,
    parallel: bool,
) -> Result<TreeModel> {
    use forust_ml::objective::ObjectiveType;
    let matrix = Matrix::new(data, rows, dim);
    let weights = vec![1.0; rows];
    let train = |objective: ObjectiveType, y: &[f64]| -> Result<GradientBooster> {
        let mut b = booster(p, objective, parallel);
        b.fit(&matrix, y, &weights, None)
            .map_err(|e| Error::Train { algorithm: "gradient_boosting".into(), message: e.to_string() })?;
        Ok(b)
    };
    let (base, trees) = match classes.len() {
        0 => {
            let b = train(ObjectiveType::SquaredLoss, values)?;
            (vec![b.base_score], convert(&b.trees, 0)?)
        }
        2 => {
            let y: Vec<f64> = ys.iter().map(|&c| c as f64).collect();
            let b = train(ObjectiveType::LogLoss, &y)?;
            (vec![b.base_score], convert(&b.trees, 0)?)
        }
        k => {
            let mut base = Vec::with_capacity(k);
            let mut trees = Vec::new();
            for class in 0..k {
                let y: Vec<f64> = ys.iter().map(|&c| f64::from(u8::from(c == class))).collect();
                let b = train(ObjectiveType::LogLoss, &y)?;
                base.push(b.base_score);
                trees.extend(convert(&b.trees, class)?);
            }
            (base, trees)
        }
    };
    let outputs = base.len();
    Ok(TreeModel {
        family: TreeFamily::GradientBoosting,
        classes: classes.to_vec(),
        dim,
        trees: Trees { combine: Combine::Sum, inclusive: false, outputs, base, trees },
    })
}
