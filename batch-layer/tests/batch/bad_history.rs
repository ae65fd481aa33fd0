//! Bad history is a clear error for every model family: a constant feature, a feature missing in every row, a class
//! with a single row and an infinite regression target each name the file (or the master dataset) and the column,
//! and publish nothing. More categories than `max_categories` is not an error: the rarest share one bucket.

use std::path::Path;

use crate::common::{current, problem, write};
use lambda_batch::read::Problem;

use lambda_core::schema::{Cell, Event, Target};
use lambda_core::spec::Spec;
use lambda_stores::registry::Registry;

const FAMILIES: [&str; 5] = ["linear", "naive_bayes", "decision_tree", "random_forest", "gradient_boosting"];

fn spec(dir: &Path, task: &str, family: &str) -> Spec {
    let features = [("amount", "numeric"), ("country", "categorical"), ("mobile", "boolean")];
    let batch = format!("alphas = [0.1]\nmax_categories = 5\nfamilies = [\"{family}\"]\n");
    Spec::from_toml(&crate::common::spec_text(task, &features, &batch), &dir.join("spec.toml"), dir).unwrap()
}

/// Rows whose amount, country and mobile vary; `label` gives the target of row i.
fn events(n: u64, label: impl Fn(u64) -> Target) -> Vec<(u64, Event)> {
    (0..n)
        .map(|i| {
            let event = Event {
                id: format!("e{i}"),
                key: format!("u{}", i % 5),
                time: 1_000 * i as i64,
                features: vec![
                    Cell::Num(Some(((i * 37) % 101) as f64)),
                    Cell::Cat(Some(format!("c{}", i % 3))),
                    Cell::Bool(Some(i % 2 == 0)),
                ],
                target: Some(label(i)),
            };
            (i + 1, event)
        })
        .collect()
}

fn yes_no(i: u64) -> Target {
    Target::Class(if ((i * 37) % 101) > 50 { "yes" } else { "no" }.into())
}

/// Runs the batch layer on `rows` for each family and returns the errors.
fn errors(task: &str, rows: &[(u64, Event)], families: &[&str]) -> Vec<lambda_batch::Error> {
    families
        .iter()
        .map(|family| {
            let dir = tempfile::tempdir().unwrap();
            let s = spec(dir.path(), task, family);
            write(&s, &rows[..rows.len() / 2], "a.parquet");
            write(&s, &rows[rows.len() / 2..], "b.parquet");
            let err = lambda_batch::run(&s, false).map(|o| o.manifest.version).unwrap_err();
            assert_eq!(current(&s), None, "{family}: {err}");
            err
        })
        .collect()
}

#[test]
fn a_constant_feature_is_an_error_naming_the_column() {
    let mut rows = events(300, yes_no);
    rows.iter_mut().for_each(|(_, e)| e.features[2] = Cell::Bool(Some(true)));
    for err in errors("binary_classification", &rows, &FAMILIES) {
        let (path, p) = problem(err);
        assert!(path.ends_with("master"), "{path:?}");
        assert!(matches!(&p, Problem::Constant { column, rows: 300 } if column == "mobile"), "{p}");
    }
}

#[test]
fn a_feature_missing_in_every_row_is_an_error_naming_the_column() {
    let mut rows = events(300, yes_no);
    rows.iter_mut().for_each(|(_, e)| e.features[0] = Cell::Num(None));
    for err in errors("binary_classification", &rows, &FAMILIES) {
        let (path, p) = problem(err);
        assert!(path.ends_with("master"), "{path:?}");
        assert!(matches!(&p, Problem::AllMissing { column, rows: 300 } if column == "amount"), "{p}");
    }
}

#[test]
fn a_class_with_a_single_row_is_an_error_naming_the_class() {
    let rows =
        events(300, |i| Target::Class(if i == 17 { "rare".into() } else { ["a", "b"][(i % 2) as usize].into() }));
    for err in errors("multiclass_classification", &rows, &FAMILIES) {
        let err = err.to_string();
        assert!(err.contains("`label`") && err.contains("`rare`") && err.contains("single labelled row"), "{err}");
    }
}

#[test]
fn an_infinite_regression_target_is_an_error_naming_the_file_and_column() {
    let mut rows = events(300, |i| Target::Value(i as f64 * 0.5));
    rows[250].1.target = Some(Target::Value(f64::INFINITY));
    for err in errors("regression", &rows, &["linear", "decision_tree", "random_forest", "gradient_boosting"]) {
        let (path, p) = problem(err);
        assert!(path.ends_with("b.parquet"), "{path:?}");
        assert!(matches!(&p, Problem::Infinite { column, count: 1 } if column == "label"), "{p}");
    }
}

#[test]
fn more_categories_than_max_categories_train_every_family() {
    for family in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "binary_classification", family);
        let mut rows = events(400, yes_no);
        // 40 countries where the spec keeps 5: the rest share the unknown bucket.
        rows.iter_mut().enumerate().for_each(|(i, (_, e))| e.features[1] = Cell::Cat(Some(format!("k{}", i % 40))));
        write(&s, &rows, "a.parquet");
        let out = lambda_batch::run(&s, false).unwrap();
        assert!(out.published, "{family}");
        let p = Registry::open(&s.paths.registry).load_current(&s).unwrap().unwrap();
        let expected = if family == "linear" { "logistic_regression" } else { family };
        assert_eq!(p.artifact.model.family(), expected);
        let vocabulary = match &p.artifact.encoder.features[1] {
            lambda_core::encoder::FeatureEncoder::Categorical { vocabulary, .. } => vocabulary.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(vocabulary.len(), 5);
        // A country never seen predicts exactly like a rare one the spec's limit left out of the vocabulary.
        let rare = (0..40).map(|i| format!("k{i}")).find(|c| !vocabulary.contains_key(c)).unwrap();
        let (mut unseen, mut left_out) = (rows[0].1.clone(), rows[0].1.clone());
        unseen.features[1] = Cell::Cat(Some("never-seen".into()));
        left_out.features[1] = Cell::Cat(Some(rare));
        let p_unseen = p.artifact.predict_event(&unseen);
        assert!(matches!(p_unseen, lambda_models::model::Prediction::Probabilities(_)), "{family}");
        assert_eq!(p_unseen, p.artifact.predict_event(&left_out), "{family}");
    }
}
