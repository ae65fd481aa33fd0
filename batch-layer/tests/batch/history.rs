//! The batch layer on good and bad history: a good master dataset publishes a model and its view; bad history
//! (missing column, wrong type, empty dataset, empty file, a single class) is a clear error and publishes nothing.

use std::path::Path;

use crate::common::{current, problem, write};
use lambda_batch::read::Problem;

use lambda_core::schema::{Cell, Event, Target};
use lambda_core::spec::Spec;
use lambda_stores::registry::Registry;
use polars::prelude::*;

/// The spec every test here starts from.
fn base() -> String {
    crate::common::spec_text(
        "binary_classification",
        &[("amount", "numeric"), ("country", "categorical"), ("mobile", "boolean")],
        "alphas = [0.1, 1.0]\n",
    )
}

fn spec(dir: &Path, text: &str) -> Spec {
    Spec::from_toml(text, &dir.join("spec.toml"), dir).unwrap()
}

fn events(n: u64, label: impl Fn(u64) -> &'static str) -> Vec<(u64, Event)> {
    (0..n)
        .map(|i| {
            let x = ((i * 37) % 101) as f64;
            (
                i + 1,
                Event {
                    id: format!("e{i}"),
                    key: format!("u{}", i % 5),
                    time: 1_000 * i as i64,
                    features: vec![
                        Cell::Num(if i % 17 == 0 { None } else { Some(x) }),
                        Cell::Cat(Some(["a", "b"][(i % 2) as usize].into())),
                        Cell::Bool(Some(i % 3 == 0)),
                    ],
                    target: Some(Target::Class(label(i).into())),
                },
            )
        })
        .collect()
}

fn write_frame(path: &Path, mut df: DataFrame) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap()).finish(&mut df).unwrap();
}

#[test]
fn good_history_publishes_model_view_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let rows = events(400, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" });
    write(&s, &rows[..250], "a.parquet");
    write(&s, &rows[250..], "b.parquet");
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!((m.version.as_str(), m.watermark, m.training_rows), ("v000001", 400, 400));
    // Two alphas, naive Bayes, three tree depths, a forest and twelve boosted models (100 or 300 rounds of depth
    // 4, 6 or 8 at learning rate 0.1 or 0.3); each entry says what it was fitted on.
    assert_eq!(m.leaderboard.len(), 19, "{:?}", m.leaderboard);
    let families: std::collections::BTreeSet<&str> = m.leaderboard.iter().map(|e| e.algorithm.as_str()).collect();
    let all = ["decision_tree", "gradient_boosting", "logistic_regression", "naive_bayes", "random_forest"];
    assert_eq!(families, all.into());
    assert!(m.leaderboard.iter().all(|e| e.rows == 320 && e.fit_seconds > 0.0), "{:?}", m.leaderboard);
    assert!(m.metrics["auc"] > 0.9, "{:?}", m.metrics);
    assert!(m.metrics["accuracy"] > 0.8, "{:?}", m.metrics);
    let view = lambda_stores::views::ViewTable::read_parquet(&s, &lambda_stores::views::batch_view_path(&s, "v000001"))
        .unwrap();
    assert_eq!(view.iter().map(|(_, v)| v.count).sum::<u64>(), 400);
    // Forecast gives one prediction per row with the model version.
    let out = dir.path().join("out/forecast.parquet");
    let input = lambda_stores::master::list_files(&s.paths.master).unwrap().remove(0);
    let r = lambda_batch::forecast::forecast(&s, &input, &out).unwrap();
    assert_eq!(r.rows, 250);
    let df = ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    assert_eq!(df.column("model_version").unwrap().str().unwrap().get(0), Some("v000001"));
    assert!(df.column("probability_yes").is_ok() && df.column("prediction").is_ok());
}

#[test]
fn duplicate_ids_in_the_master_dataset_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let rows = events(300, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" });
    write(&s, &rows, "a.parquet");
    // The same 40 events again, under later sequence numbers (a replay that another writer archived).
    let again: Vec<(u64, Event)> = rows[..40].iter().map(|(seq, e)| (seq + 1000, e.clone())).collect();
    write(&s, &again, "b.parquet");
    let data = lambda_batch::read::read_master(&s).unwrap();
    assert_eq!((data.columns.len(), data.duplicates, data.watermark), (300, 40, 1040));
    assert!(data.columns.seqs.iter().all(|seq| *seq <= 300), "the first arrival is the one kept");
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!(m.training_rows, 300);
    let view = lambda_stores::views::ViewTable::read_parquet(&s, &lambda_stores::views::batch_view_path(&s, "v000001"))
        .unwrap();
    assert_eq!(view.iter().map(|(_, v)| v.count).sum::<u64>(), 300);
}

#[test]
fn empty_dataset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path == s.paths.master && matches!(p, Problem::NoFiles), "{path:?}: {p}");
    std::fs::create_dir_all(s.paths.master.join("date=1970-01-01")).unwrap();
    std::fs::write(s.paths.master.join("date=1970-01-01/empty.parquet"), b"").unwrap();
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("empty.parquet") && matches!(p, Problem::EmptyFile), "{path:?}: {p}");
    write(&s, &[], "zero-rows.parquet");
    std::fs::remove_file(s.paths.master.join("date=1970-01-01/empty.parquet")).unwrap();
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path == s.paths.master && matches!(p, Problem::NoRows), "{path:?}: {p}");
    assert_eq!(current(&s), None);
}

#[test]
fn single_class_and_too_many_classes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    write(&s, &events(100, |_| "yes"), "a.parquet");
    let err = lambda_batch::run(&s, false).unwrap_err().to_string();
    assert!(err.contains("single class") && err.contains("yes"), "{err}");
    write(&s, &events(100, |i| ["x", "y", "z"][(i % 3) as usize]), "a.parquet");
    let err = lambda_batch::run(&s, false).unwrap_err().to_string();
    assert!(err.contains("binary_classification") && err.contains("3 classes"), "{err}");
    assert_eq!(current(&s), None);
}

#[test]
fn missing_column_and_wrong_types_name_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let file = s.paths.master.join("date=1970-01-01/bad.parquet");
    let base = || {
        vec![
            Column::new("_ingest_seq".into(), vec![1u64, 2]),
            Column::new("id".into(), vec!["a", "b"]),
            Column::new("user".into(), vec!["u", "v"]),
            Column::new("ts".into(), vec![1i64, 2]),
            Column::new("country".into(), vec!["fr", "de"]),
            Column::new("mobile".into(), vec![true, false]),
            Column::new("label".into(), vec!["yes", "no"]),
        ]
    };
    // Missing the key column.
    let mut cols = base();
    cols.retain(|c| c.name() != "user");
    cols.push(Column::new("amount".into(), vec![1.0f64, 2.0]));
    write_frame(&file, DataFrame::new_infer_height(cols).unwrap());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(
        path.ends_with("bad.parquet") && matches!(&p, Problem::MissingColumn { column, .. } if column == "user"),
        "{p}"
    );
    // `amount` as text.
    let mut cols = base();
    cols.push(Column::new("amount".into(), vec!["1.5", "oops"]));
    write_frame(&file, DataFrame::new_infer_height(cols).unwrap());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("bad.parquet"), "{path:?}");
    assert!(
        matches!(&p, Problem::Column { column, why } if column == "amount" && why.contains("expected a number")),
        "{p}"
    );
    // `mobile` as a number.
    let mut cols = base();
    cols.retain(|c| c.name() != "mobile");
    cols.push(Column::new("mobile".into(), vec![1.0f64, 0.0]));
    cols.push(Column::new("amount".into(), vec![1.0f64, 2.0]));
    write_frame(&file, DataFrame::new_infer_height(cols).unwrap());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("bad.parquet"), "{path:?}");
    assert!(
        matches!(&p, Problem::Column { column, why } if column == "mobile" && why.contains("expected a boolean")),
        "{p}"
    );
    // Nulls in the key column.
    let mut cols = base();
    cols.retain(|c| c.name() != "user");
    cols.push(Column::new("user".into(), vec![Some("u"), None]));
    cols.push(Column::new("amount".into(), vec![1.0f64, 2.0]));
    write_frame(&file, DataFrame::new_infer_height(cols).unwrap());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("bad.parquet"), "{path:?}");
    assert!(matches!(&p, Problem::Nulls { column, nulls: 1 } if column == "user"), "{p}");
    // Not Parquet at all.
    std::fs::write(&file, b"PAR1 this is not parquet").unwrap();
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("bad.parquet") && matches!(p, Problem::NotParquet(_)), "{path:?}: {p}");
    assert_eq!(current(&s), None);
}

#[test]
fn non_finite_history_values_are_missing_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let mut rows = events(200, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" });
    rows[3].1.features[0] = Cell::Num(Some(f64::NAN));
    rows[4].1.features[0] = Cell::Num(Some(f64::INFINITY));
    write(&s, &rows, "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    let p = Registry::open(&s.paths.registry).load_current(&s).unwrap().unwrap();
    match &p.artifact.encoder.features[0] {
        lambda_core::encoder::FeatureEncoder::Numeric { mean, std, max, .. } => {
            assert!(mean.is_finite() && std.is_finite() && *max <= 100.0)
        }
        other => panic!("{other:?}"),
    }
    assert!(p.artifact.speed_start().weights.iter().all(|w| w.is_finite()));
}

fn spec_for_task(dir: &Path, task: &str) -> Spec {
    spec(dir, &base().replace("task = \"binary_classification\"", &format!("task = \"{task}\"")))
}

#[test]
fn multiclass_and_regression_learn_their_targets() {
    // Multiclass: the class is the bucket of `amount`, so a softmax over the standardized amount separates it.
    let dir = tempfile::tempdir().unwrap();
    let s = spec_for_task(dir.path(), "multiclass_classification");
    let rows = events(600, |i| match (i * 37) % 101 {
        0..=33 => "low",
        34..=66 => "mid",
        _ => "high",
    });
    write(&s, &rows, "a.parquet");
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert!(m.metrics["accuracy"] > 0.8, "{:?}", m.metrics);
    let p = Registry::open(&s.paths.registry).load_current(&s).unwrap().unwrap();
    assert_eq!(p.artifact.model.classes(), vec!["high", "low", "mid"]);
    let probe = |x: f64| {
        let e = Event {
            id: "p".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(Some(x)), Cell::Cat(Some("a".into())), Cell::Bool(Some(true))],
            target: None,
        };
        match p.artifact.predict(&e) {
            lambda_models::model::Prediction::Probabilities(ps) => p.artifact.model.classes()
                [ps.iter().enumerate().fold(0, |b, (i, v)| if *v > ps[b] { i } else { b })]
            .clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((probe(5.0), probe(50.0), probe(95.0)), ("low".into(), "mid".into(), "high".into()));

    // Regression: the target is a linear function of `amount` and `mobile`.
    let dir = tempfile::tempdir().unwrap();
    let text = base()
        .replace("task = \"binary_classification\"", "task = \"regression\"")
        .replace("alphas = [0.1, 1.0]", "alphas = [0.001, 0.1]");
    let s = spec(dir.path(), &text);
    let rows: Vec<(u64, Event)> = events(500, |_| "0")
        .into_iter()
        .map(|(seq, mut e)| {
            let x = match e.features[0] {
                Cell::Num(Some(x)) => x,
                _ => 50.0,
            };
            let mobile = matches!(e.features[2], Cell::Bool(Some(true)));
            e.target = Some(Target::Value(3.0 * x - 20.0 * f64::from(u8::from(mobile)) + 7.0));
            (seq, e)
        })
        .collect();
    write(&s, &rows, "a.parquet");
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert!(m.metrics["r2"] > 0.95, "{:?}", m.metrics);
    assert!(m.metrics["rmse"] < 10.0, "{:?}", m.metrics);
    let p = Registry::open(&s.paths.registry).load_current(&s).unwrap().unwrap();
    assert!(p.artifact.online_bayes.is_none(), "naive Bayes statistics for a regression");
}

#[test]
fn the_published_naive_bayes_statistics_equal_learning_every_labelled_row_online() {
    use lambda_models::online_bayes::OnlineBayes;
    let dir = tempfile::tempdir().unwrap();
    // Two categories in the vocabulary, so that "c" lands in the unseen slot.
    let s = spec(dir.path(), &(base() + "max_categories = 2\n"));
    let rows: Vec<(u64, Event)> = events(600, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" })
        .into_iter()
        .map(|(seq, mut e)| {
            let i = seq - 1;
            e.features[1] = Cell::Cat(match i % 7 {
                0 => None,
                1 => Some("c".into()),
                k => Some(["a", "b"][(k % 2) as usize].into()),
            });
            if i % 11 == 0 {
                e.features[2] = Cell::Bool(None);
            }
            if i % 13 == 0 {
                e.target = None;
            }
            (seq, e)
        })
        .collect();
    write(&s, &rows[..350], "a.parquet");
    write(&s, &rows[350..], "b.parquet");
    lambda_batch::run(&s, false).unwrap();
    let p = Registry::open(&s.paths.registry).load_current(&s).unwrap().unwrap();
    let stats = p.artifact.online_bayes.as_ref().expect("naive Bayes statistics");
    // The speed layer's learner, learning every labelled history row in event-time order with the published encoder.
    let classes = p.artifact.speed_start().classes.clone();
    let mut online = OnlineBayes::new(classes, &p.artifact.encoder, None);
    let mut labelled = 0;
    for (_, e) in &rows {
        if let Some(t) = &e.target {
            assert!(online.learn(&p.artifact.encoder.encode(e), t));
            labelled += 1;
        }
    }
    assert_eq!(&online.stats, stats);
    assert_eq!(stats.counts.iter().sum::<u64>(), labelled);
    // Every country slot was used: a, b, the unseen "c", missing; the missing mobile flags were skipped.
    assert!(stats.slots.iter().all(|k| *k > 0), "{:?}", stats.slots);
    assert!(stats.moments[1].n < stats.counts[0], "{:?}", stats.moments);
    // What the speed layer starts from.
    let warm = OnlineBayes::new(p.artifact.speed_start().classes.clone(), &p.artifact.encoder, Some(stats));
    assert_eq!(warm, online);
}

#[test]
fn forecast_input_without_a_feature_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let err = lambda_batch::forecast::forecast(&s, &dir.path().join("in.parquet"), &dir.path().join("out.parquet"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no model is published"), "{err}");
    write(&s, &events(200, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" }), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    let input = dir.path().join("in.parquet");
    write_frame(
        &input,
        DataFrame::new_infer_height(vec![
            Column::new("country".into(), vec!["fr", "de"]),
            Column::new("mobile".into(), vec![true, false]),
        ])
        .unwrap(),
    );
    let out = dir.path().join("out.parquet");
    let (path, p) = problem(lambda_batch::forecast::forecast(&s, &input, &out).unwrap_err());
    assert!(path == input && matches!(&p, Problem::MissingColumn { column, .. } if column == "amount"), "{p}");
    assert!(!out.exists());
}

#[test]
fn forecast_rows_far_outside_history_get_no_prediction_and_say_why_the_others_are_scored() {
    // Regression: a value such as 1e300 was scored like any other (a tree champion wrote probabilities 0 and 1, a
    // linear one could write NaN), where `/v1/predict` refuses it.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    write(&s, &events(200, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" }), "a.parquet");
    lambda_batch::run(&s, false).unwrap();
    let input = dir.path().join("in.parquet");
    write_frame(
        &input,
        DataFrame::new_infer_height(vec![
            Column::new("amount".into(), vec![Some(12.0), Some(1e300), None, Some(-1.6e266)]),
            Column::new("country".into(), vec!["fr", "de", "fr", "de"]),
            Column::new("mobile".into(), vec![true, false, true, false]),
        ])
        .unwrap(),
    );
    let out = dir.path().join("out.parquet");
    let r = lambda_batch::forecast::forecast(&s, &input, &out).unwrap();
    assert_eq!((r.rows, r.not_scored), (4, 2));
    let df = ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    let text = |name: &str| -> Vec<Option<String>> {
        let c = df.column(name).unwrap().str().unwrap().clone();
        (0..4).map(|i| c.get(i).map(str::to_string)).collect()
    };
    let why = text("not_scored");
    let why: Vec<Option<&str>> = why.iter().map(|w| w.as_deref()).collect();
    assert_eq!((why[0], why[2]), (None, None), "{why:?}");
    for w in [why[1], why[3]] {
        assert!(w.is_some_and(|w| w.contains("amount") && w.contains("far outside")), "{why:?}");
    }
    let prediction = text("prediction");
    assert!(prediction[0].is_some() && prediction[2].is_some() && prediction[1].is_none() && prediction[3].is_none());
    let yes_column = df.column("probability_yes").unwrap().f64().unwrap().clone();
    let yes: Vec<Option<f64>> = (0..4).map(|i| yes_column.get(i)).collect();
    assert!(yes[0].is_some_and(f64::is_finite) && yes[1].is_none(), "{yes:?}");
}

#[test]
fn categorical_columns_as_pandas_writes_them_are_read_as_strings() {
    // pandas' `category` dtype (key, categorical feature and label) reaches Parquet as a dictionary column, which
    // polars reads back as a categorical; it was refused as "type cat".
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let n = 200usize;
    let cat = |name: &str, values: Vec<String>| {
        Column::new(name.into(), values)
            .cast(&DataType::from_categories(polars::prelude::Categories::global()))
            .unwrap()
    };
    let cols = vec![
        Column::new("_ingest_seq".into(), (1..=n as u64).collect::<Vec<_>>()),
        Column::new("id".into(), (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>()),
        cat("user", (0..n).map(|i| format!("u{}", i % 5)).collect()),
        Column::new("ts".into(), (0..n as i64).map(|i| i * 1000).collect::<Vec<_>>()),
        Column::new("amount".into(), (0..n).map(|i| ((i * 37) % 101) as f64).collect::<Vec<_>>()),
        cat("country", (0..n).map(|i| ["a", "b"][i % 2].to_string()).collect()),
        Column::new("mobile".into(), (0..n).map(|i| i % 3 == 0).collect::<Vec<_>>()),
        cat("label", (0..n).map(|i| if (i * 37) % 101 > 50 { "yes" } else { "no" }.to_string()).collect()),
    ];
    let df = DataFrame::new_infer_height(cols).unwrap();
    assert!(df.column("country").unwrap().dtype().is_categorical());
    write_frame(&s.paths.master.join("date=1970-01-01/pandas.parquet"), df);
    let data = lambda_batch::read::read_master(&s).unwrap();
    assert_eq!(data.columns.len(), n);
    assert_eq!(data.columns.keys.get(3), Some("u3"));
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!(m.training_rows, n as u64);
    let view =
        lambda_stores::views::ViewTable::read_parquet(&s, &lambda_stores::views::batch_view_path(&s, &m.version))
            .unwrap();
    assert_eq!(view.len(), 5);
}

#[test]
fn a_file_read_a_slice_at_a_time_gives_the_same_columns_as_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &base());
    let rows = events(1000, |i| if ((i * 37) % 101) > 50 { "yes" } else { "no" });
    write(&s, &rows[..700], "a.parquet");
    // A replay in the second file, so that de-duplication must line up with the slices.
    let mut more: Vec<(u64, Event)> = rows[700..].to_vec();
    more.push((5000, rows[650].1.clone()));
    write(&s, &more, "b.parquet");
    let whole = lambda_batch::read::read_master_in(&s, 1 << 20).unwrap();
    let sliced = lambda_batch::read::read_master_in(&s, 97).unwrap();
    assert_eq!((whole.columns.len(), whole.duplicates, whole.watermark), (1000, 1, 5000));
    assert_eq!(sliced.columns, whole.columns);
    assert_eq!((sliced.duplicates, sliced.watermark), (1, 5000));
}
