//! Champion/challenger: a new winner replaces the current model only when it is at least as good on the rows the
//! current model has not seen.
//!
//! The challenger is judged by its model fitted without the holdout; the champion by the published model. Both
//! predict the holdout rows ingested after the champion's watermark (the champion was trained on everything up to
//! it, so older holdout rows would flatter it). When there are none, the whole holdout is used and the reason says
//! that the champion was trained on it. Past [`SCORED_ROWS`] rows, an even spread of that many is judged.

use lambda_core::schema::Columns;
use lambda_core::spec::Spec;
use lambda_models::metrics::Metric;
use lambda_stores::registry::{Gate, Published};

use crate::train::{score, spread, Search, Split, SCORED_ROWS};

/// The current version as the registry gave it: loaded, or its name and why it could not be read.
pub type Champion = Option<Result<Published, (String, String)>>;

/// Judges the search's winner against `champion`.
pub fn judge(spec: &Spec, columns: &Columns, split: &Split, search: &Search, champion: Champion, force: bool) -> Gate {
    let metric = spec.metric();
    let name = metric.name();
    // With rolling-origin folds the leaderboard holds the folds' mean; the gate judges the holdout alone.
    let holdout_value = if search.report.folds > 1 {
        score(&search.model, &search.encoder, columns, &spread(&split.holdout, SCORED_ROWS)).get(name).copied()
    } else {
        search.leaderboard.first().and_then(|e| e.metrics.get(name)).copied()
    };
    let mut gate = Gate {
        published: true,
        forced: false,
        reason: String::new(),
        metric: name.to_string(),
        challenger: holdout_value,
        champion: None,
        champion_version: None,
        judged_rows: split.holdout.len() as u64,
    };
    let held = judge_inner(spec, metric, columns, split, search, champion, &mut gate);
    gate.published = !held;
    if force && held {
        gate.published = true;
        gate.forced = true;
        gate.reason = format!("published by --force; the gate would have held it back: {}", gate.reason);
    }
    gate
}

/// Fills the reason and the figures; returns whether the challenger is held back.
fn judge_inner(
    spec: &Spec,
    metric: Metric,
    columns: &Columns,
    split: &Split,
    search: &Search,
    champion: Champion,
    gate: &mut Gate,
) -> bool {
    let name = metric.name();
    if let Some(bar) = spec.batch.min_metric {
        let clears = gate.challenger.is_some_and(|v| metric.gain(bar, v) >= 0.0);
        if !clears {
            let side = if metric.lower_is_better() { "at most" } else { "at least" };
            gate.reason = match gate.challenger {
                Some(v) => format!("holdout {name} {v:.4} does not clear batch.min_metric (must be {side} {bar})"),
                None => format!("holdout {name} is undefined, so batch.min_metric {bar} cannot be cleared"),
            };
            return true;
        }
    }
    let champion = match champion {
        None => {
            gate.reason = "no champion yet".into();
            return false;
        }
        // A current model that cannot be read is broken for every layer: the new one replaces it.
        Some(Err((version, e))) => {
            gate.reason = format!("champion {version} cannot be read ({e})");
            gate.champion_version = Some(version);
            return false;
        }
        Some(Ok(p)) => p,
    };
    let champion = &champion;
    let version = champion.manifest.version.clone();
    gate.champion_version = Some(version.clone());
    if let Err(e) = champion.artifact.validate(spec) {
        gate.reason = format!("champion {version} cannot be judged under this spec ({e})");
        return false;
    }
    let watermark = champion.manifest.watermark;
    let unseen: Vec<usize> = split.holdout.iter().copied().filter(|&r| columns.seqs[r] > watermark).collect();
    // Both models predict at most SCORED_ROWS rows, spread evenly over the rows judged.
    let unseen = spread(&unseen, SCORED_ROWS);
    let all = &spread(&split.holdout, SCORED_ROWS);
    let mut judged = None;
    for (rows, fresh) in [(&unseen, true), (all, false)] {
        if rows.is_empty() {
            continue;
        }
        if let Some(values) = values_on(metric, rows, columns, search, champion) {
            judged = Some((rows.len(), fresh, values));
            break;
        }
    }
    let Some((n, fresh, (challenger, champ))) = judged else {
        gate.reason = format!("{name} is undefined on the holdout, so the champion {version} cannot be judged");
        return false;
    };
    gate.judged_rows = n as u64;
    gate.challenger = Some(challenger);
    gate.champion = Some(champ);
    let rows = if fresh {
        format!("{n} holdout rows ingested after the champion's watermark {watermark}")
    } else {
        let whole = if n == split.holdout.len() { "the whole holdout" } else { "an even spread of the holdout" };
        format!("{whole} ({n} rows; none ingested after the champion's watermark {watermark}, so the champion was trained on them)")
    };
    let gain = metric.gain(champ, challenger);
    let min = spec.batch.min_improvement;
    let held = gain < min;
    gate.reason = format!(
        "{name} {challenger:.4} against champion {version}'s {champ:.4} on {rows}: {} by {:.4}, {} batch.min_improvement {min}",
        if gain >= 0.0 { "better" } else { "worse" },
        gain.abs(),
        if held { "short of" } else { "meets" },
    );
    held
}

/// The metric of the challenger and of the champion on `rows` of the holdout, when both are defined.
fn values_on(
    metric: Metric,
    rows: &[usize],
    columns: &Columns,
    search: &Search,
    champion: &Published,
) -> Option<(f64, f64)> {
    if rows.iter().any(|&r| !columns.targets.is_set(r)) {
        return None;
    }
    let a = score(&search.model, &search.encoder, columns, rows).get(metric.name()).copied()?;
    let b = score(&champion.artifact.model, &champion.artifact.encoder, columns, rows).get(metric.name()).copied()?;
    (a.is_finite() && b.is_finite()).then_some((a, b))
}
