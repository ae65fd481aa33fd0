//! Every model family predicts through the same path: for a champion of each family, `forecast` and `/v1/predict`
//! give the same probabilities for the same rows, and a champion the speed layer cannot update comes with a linear
//! starting model that the speed layer learns on while the champion keeps answering.

use std::path::Path;

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_stores::registry::Registry;
use polars::prelude::*;

fn read(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap()
}

fn records(df: &DataFrame, n: usize) -> String {
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|r| {
            serde_json::json!({
                "amount": df.column("amount").unwrap().f64().unwrap().get(r),
                "country": df.column("country").unwrap().str().unwrap().get(r),
                "mobile": df.column("mobile").unwrap().bool().unwrap().get(r),
                "session_seconds": df.column("session_seconds").unwrap().f64().unwrap().get(r),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// Trains a champion of `family`, then compares `forecast` with `/v1/predict` on 200 history rows; returns the
/// served answer after `speed --once` has replayed the stream too.
fn check(family: &str, leaderboard_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    pin_families(&spec_path, &[family]);
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    let s = stream.to_str().unwrap();
    run_ok(&["generate", "--spec", sp, "--rows", "3000", "--stream-rows", "300", "--stream", s, "--seed", "5"]);
    let out = run_ok(&["batch", "--spec", sp]);
    assert!(out.contains("published v000001"), "{out}");
    let spec = Spec::from_file(&spec_path).unwrap();
    let published = Registry::open(&spec.paths.registry).load("v000001").unwrap();
    assert_eq!(published.artifact.model.family(), leaderboard_name);
    assert_eq!(published.artifact.online.is_some(), family != "linear", "{family}");

    let input = lambda_stores::master::list_files(&spec.paths.master).unwrap().remove(0);
    let output = dir.path().join("forecast.parquet");
    run_ok(&["forecast", "--spec", sp, "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    let scored = read(&output);
    let n = scored.height().min(200);
    let body = records(&read(&input), n);

    // The speed layer learns from the stream; the batch champion still answers when asked for by name.
    run_ok(&["speed", "--spec", sp, "--source", &format!("file:{s}"), "--once"]);
    let port = free_port();
    let server = start(&["serve", "--spec", sp, "--listen", &format!("127.0.0.1:{port}")], port, "/health/ready");
    let (_, models) = get(&format!("{}/v1/models", server.base));
    assert!(models["speed"]["updates"].as_u64().unwrap() > 0, "{models}");
    let (status, online) = post(&format!("{}/v1/predict?model=speed", server.base), &body);
    assert_eq!(status, 200, "{online}");
    assert!(online["speed_update"].as_u64().unwrap() > 0, "{online}");
    // The blend names its components, the champion among them, with weights that sum to one.
    let (status, blend) = post(&format!("{}/v1/predict", server.base), &body);
    assert_eq!((status, blend["model"].as_str()), (200, Some("blend")), "{blend}");
    let components = blend["components"].as_array().unwrap();
    assert_eq!(components[0]["family"], leaderboard_name, "{blend}");
    let total: f64 = components.iter().map(|c| c["weight"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "{blend}");
    let (status, answer) = post(&format!("{}/v1/predict?model=batch", server.base), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_family"], leaderboard_name, "{answer}");
    assert!(answer["speed_update"].is_null(), "{answer}");
    // `serving.model` pins the model that answers when a request names none: the champion, as `?model=batch`.
    let pinned_path = dir.path().join("pinned.toml");
    let pinned_spec =
        std::fs::read_to_string(&spec_path).unwrap().replace("[serving]\n", "[serving]\nmodel = \"batch\"\n");
    assert!(pinned_spec.contains("model = \"batch\""), "the spec has a [serving] table");
    std::fs::write(&pinned_path, pinned_spec).unwrap();
    let port = free_port();
    let pinned = start(
        &["serve", "--spec", pinned_path.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")],
        port,
        "/health/ready",
    );
    let (status, by_spec) = post(&format!("{}/v1/predict", pinned.base), &body);
    assert_eq!((status, by_spec["model"].as_str()), (200, Some("batch")), "{by_spec}");
    assert_eq!(by_spec["predictions"], answer["predictions"], "{family}");
    drop(pinned);
    let p_yes = scored.column("probability_yes").unwrap().f64().unwrap().clone();
    let labels = scored.column("prediction").unwrap().str().unwrap().clone();
    let mut distinct = std::collections::BTreeSet::new();
    for r in 0..n {
        let served = &answer["predictions"][r];
        let p = served["probabilities"]["yes"].as_f64().unwrap();
        assert_eq!(p.to_bits(), p_yes.get(r).unwrap().to_bits(), "{family} row {r}");
        assert_eq!(served["label"].as_str(), labels.get(r), "{family} row {r}");
        distinct.insert(p.to_bits());
    }
    // A model that answers one constant would pass the comparison without showing anything.
    assert!(distinct.len() > 1, "{family}: {} distinct probabilities", distinct.len());
}

#[test]
fn forecast_equals_serving_for_a_linear_champion_before_the_stream() {
    // The linear champion is compared before the speed layer has learned; after it, the online model answers.
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    pin_families(&spec_path, &["linear"]);
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "3000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();
    let input = lambda_stores::master::list_files(&spec.paths.master).unwrap().remove(0);
    let output = dir.path().join("forecast.parquet");
    run_ok(&["forecast", "--spec", sp, "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    let scored = read(&output);
    let port = free_port();
    let server = start(&["serve", "--spec", sp, "--listen", &format!("127.0.0.1:{port}")], port, "/health/ready");
    let (_, answer) = post(&format!("{}/v1/predict", server.base), &records(&read(&input), 100));
    assert_eq!(answer["model_family"], "logistic_regression");
    let p_yes = scored.column("probability_yes").unwrap().f64().unwrap().clone();
    for r in 0..100 {
        let p = answer["predictions"][r]["probabilities"]["yes"].as_f64().unwrap();
        assert_eq!(p.to_bits(), p_yes.get(r).unwrap().to_bits(), "row {r}");
    }
    check("linear", "logistic_regression");
}

#[test]
fn forecast_equals_serving_for_a_naive_bayes_champion() {
    check("naive_bayes", "naive_bayes");
}

#[test]
fn forecast_equals_serving_for_a_decision_tree_champion() {
    check("decision_tree", "decision_tree");
}

#[test]
fn forecast_equals_serving_for_a_random_forest_champion() {
    check("random_forest", "random_forest");
}

#[test]
fn forecast_equals_serving_for_a_gradient_boosting_champion() {
    check("gradient_boosting", "gradient_boosting");
}
