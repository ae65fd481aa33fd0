//! Champion/challenger: a batch run publishes its winner only when it is at least as good as the current model on
//! the holdout rows that model has not seen; otherwise it keeps the version without moving `CURRENT`.

use std::path::Path;

use crate::common::{current, write};

use lambda_core::schema::{Cell, Event, Target};
use lambda_core::spec::Spec;
use lambda_stores::registry::{Gate, Registry};

/// The spec every test here starts from.
fn base() -> String {
    crate::common::spec_text(
        "binary_classification",
        &[("amount", "numeric"), ("country", "categorical")],
        "alphas = [0.1, 1.0]\n",
    )
}

fn spec(dir: &Path, extra: &str) -> Spec {
    Spec::from_toml(&format!("{}{extra}", base()), &dir.join("spec.toml"), dir).unwrap()
}

/// Rows `first..first + n` (sequence numbers and times follow the index); `rule` labels each by its amount.
fn events(first: u64, n: u64, rule: impl Fn(f64) -> bool) -> Vec<(u64, Event)> {
    (first..first + n)
        .map(|i| {
            let x = ((i * 37) % 101) as f64;
            let event = Event {
                id: format!("e{i}"),
                key: format!("u{}", i % 5),
                time: 1_000 * i as i64,
                features: vec![Cell::Num(Some(x)), Cell::Cat(Some(["a", "b"][(i % 2) as usize].into()))],
                target: Some(Target::Class(if rule(x) { "yes" } else { "no" }.into())),
            };
            (i + 1, event)
        })
        .collect()
}

fn gate_of(spec: &Spec, version: &str) -> Gate {
    Registry::open(&spec.paths.registry).load(version).unwrap().manifest.gate.unwrap()
}

/// High amounts are "yes" at first; later the rule flips.
fn before(x: f64) -> bool {
    x > 50.0
}
fn after(x: f64) -> bool {
    x <= 50.0
}

#[test]
fn a_first_run_publishes_and_says_there_was_no_champion() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "");
    write(&s, &events(0, 400, before), "a.parquet");
    let out = lambda_batch::run(&s, false).unwrap();
    assert!(out.published);
    assert_eq!(current(&s).as_deref(), Some("v000001"));
    let g = out.manifest.gate.unwrap();
    assert!(g.published && !g.forced && g.reason.contains("no champion"), "{g:?}");
    assert_eq!(g.metric, "log_loss");
}

#[test]
fn a_rerun_on_the_same_data_is_held_back_and_kept_for_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "");
    write(&s, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    // Nothing new: the champion was trained on the whole holdout, the challenger was not.
    let out = lambda_batch::run(&s, false).unwrap();
    assert!(!out.published);
    assert_eq!(out.manifest.version, "v000002");
    assert_eq!(current(&s).as_deref(), Some("v000001"));
    let g = gate_of(&s, "v000002");
    assert!(!g.published, "{g:?}");
    assert_eq!(g.champion_version.as_deref(), Some("v000001"));
    assert!(g.reason.contains("whole holdout") && g.reason.contains("short of"), "{}", g.reason);
    let (ours, theirs) = (g.challenger.unwrap(), g.champion.unwrap());
    assert!(ours > theirs, "log loss {ours} should be worse than the champion's {theirs}");
    // The kept version is complete: it loads and can be made current by hand.
    let registry = Registry::open(&s.paths.registry);
    registry.load("v000002").unwrap().artifact.validate(&s).unwrap();
    assert!(lambda_stores::views::batch_view_path(&s, "v000002").exists());
}

#[test]
fn force_publishes_what_the_gate_would_hold_back_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "");
    write(&s, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    let out = lambda_batch::run(&s, true).unwrap();
    assert!(out.published);
    assert_eq!(current(&s).as_deref(), Some("v000002"));
    let g = out.manifest.gate.unwrap();
    assert!(g.forced && g.reason.contains("--force") && g.reason.contains("short of"), "{g:?}");
}

#[test]
fn a_challenger_better_on_rows_the_champion_never_saw_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "");
    write(&s, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    // The concept flips for the next 1,600 rows: the holdout (the last 400) is all after the champion's watermark.
    write(&s, &events(400, 1600, after), "b.parquet");
    let out = lambda_batch::run(&s, false).unwrap();
    let g = out.manifest.gate.clone().unwrap();
    assert!(out.published, "{g:?}");
    assert_eq!(current(&s).as_deref(), Some("v000002"));
    assert_eq!(g.judged_rows, 400);
    assert!(g.reason.contains("after the champion's watermark 400") && g.reason.contains("better"), "{}", g.reason);
    assert!(g.challenger.unwrap() < g.champion.unwrap(), "{g:?}");
}

#[test]
fn min_improvement_demands_a_margin_and_a_negative_one_tolerates_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let strict = spec(dir.path(), "min_improvement = 100.0\n");
    write(&strict, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&strict, false).unwrap();
    write(&strict, &events(400, 1600, after), "b.parquet");
    // Better, but not by 100 nats of log loss.
    let out = lambda_batch::run(&strict, false).unwrap();
    assert!(!out.published, "{:?}", out.manifest.gate);
    assert_eq!(current(&strict).as_deref(), Some("v000001"));
    // A rerun without new data is worse than its champion, but within a tolerance of 10.
    let other = tempfile::tempdir().unwrap();
    let lenient = spec(other.path(), "min_improvement = -10.0\n");
    write(&lenient, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&lenient, false).unwrap();
    let out = lambda_batch::run(&lenient, false).unwrap();
    let g = out.manifest.gate.unwrap();
    assert!(out.published && !g.forced, "{g:?}");
    assert!(g.reason.contains("worse") && g.reason.contains("meets batch.min_improvement -10"), "{}", g.reason);
    assert_eq!(current(&lenient).as_deref(), Some("v000002"));
}

#[test]
fn a_winner_below_min_metric_is_held_back_even_without_a_champion() {
    let dir = tempfile::tempdir().unwrap();
    // Labels are a coin toss: no model reaches an AUC of 0.99.
    let s = spec(dir.path(), "metric = \"auc\"\nmin_metric = 0.99\n");
    let noise = events(0, 400, |_| false)
        .into_iter()
        .map(|(seq, mut e)| {
            let yes = (seq * 7919 % 13) < 6;
            e.target = Some(Target::Class(if yes { "yes" } else { "no" }.into()));
            (seq, e)
        })
        .collect::<Vec<_>>();
    write(&s, &noise, "a.parquet");
    let out = lambda_batch::run(&s, false).unwrap();
    assert!(!out.published);
    assert_eq!(current(&s), None);
    let g = out.manifest.gate.unwrap();
    assert_eq!(g.metric, "auc");
    assert!(g.reason.contains("batch.min_metric") && g.reason.contains("at least 0.99"), "{}", g.reason);
}

#[test]
fn an_unreadable_champion_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "");
    write(&s, &events(0, 400, before), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    std::fs::write(s.paths.registry.join("versions/v000001/model.json"), b"{\"format_version\": 1, \"sch").unwrap();
    let out = lambda_batch::run(&s, false).unwrap();
    assert!(out.published);
    let g = out.manifest.gate.unwrap();
    assert!(g.reason.contains("v000001 cannot be read"), "{}", g.reason);
}

/// What a spec error says, failing the test on any other result.
fn refused(text: &str, dir: &Path) -> String {
    match Spec::from_toml(text, &dir.join("spec.toml"), dir) {
        Err(lambda_core::error::Error::Spec { message, .. }) => message,
        other => panic!("expected a spec error, got {other:?}"),
    }
}

#[test]
fn a_metric_of_the_wrong_task_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}metric = \"rmse\"\n", base());
    let err = refused(&text, dir.path());
    assert!(err.contains("batch.metric") && err.contains("log_loss, accuracy, auc"), "{err}");
    let text = format!("{}min_improvement = nan\n", base());
    let err = refused(&text, dir.path());
    assert!(err.contains("batch.min_improvement"), "{err}");
    let text = format!("{}families = [\"linear\", \"svm\"]\n", base());
    let err = refused(&text, dir.path());
    assert!(err.contains("batch.families") && err.contains("svm") && err.contains("random_forest"), "{err}");
    let text = format!("{}families = []\n", base());
    let err = refused(&text, dir.path());
    assert!(err.contains("batch.families"), "{err}");
    let text = format!("{}metric = \"f1\"\n", base());
    let err = refused(&text, dir.path());
    assert!(err.contains("f1"), "{err}");
}
