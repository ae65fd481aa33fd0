//! The three layers together on generated data: batch, forecast, serving, the speed layer replaying the later
//! events, and a second batch run over what the speed layer archived.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use lambda_core::schema::{Cell, Mode, Target};
use lambda_core::spec::Spec;
use polars::prelude::*;

/// Aggregates computed independently of the views code, straight from the events.
#[derive(Debug, Default, Clone, PartialEq)]
struct Brute {
    count: u64,
    amount_sum: f64,
    amount_min: f64,
    amount_max: f64,
    session_count: u64,
    labels: BTreeMap<String, u64>,
    last_seen: i64,
}

fn fold(
    acc: &mut BTreeMap<String, Brute>,
    key: &str,
    time: i64,
    amount: Option<f64>,
    session: Option<f64>,
    label: Option<&str>,
) {
    let b = acc.entry(key.to_string()).or_insert(Brute {
        amount_min: f64::INFINITY,
        amount_max: f64::NEG_INFINITY,
        last_seen: i64::MIN,
        ..Brute::default()
    });
    b.count += 1;
    if let Some(a) = amount {
        b.amount_sum += a;
        b.amount_min = b.amount_min.min(a);
        b.amount_max = b.amount_max.max(a);
    }
    if session.is_some() {
        b.session_count += 1;
    }
    if let Some(l) = label {
        *b.labels.entry(l.to_string()).or_default() += 1;
    }
    b.last_seen = b.last_seen.max(time);
}

fn history_files(master: &Path) -> Vec<std::path::PathBuf> {
    lambda_stores::master::list_files(master)
        .unwrap()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .collect()
}

fn read(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap()
}

fn brute_force(spec: &Spec, stream: &Path) -> (BTreeMap<String, Brute>, u64) {
    let mut acc = BTreeMap::new();
    let mut seen = HashSet::new();
    for f in history_files(&spec.paths.master) {
        let df = read(&f);
        let ids = df.column("event_id").unwrap().str().unwrap().clone();
        let keys = df.column("user_id").unwrap().str().unwrap().clone();
        let ts = df.column("ts").unwrap().i64().unwrap().clone();
        let amount = df.column("amount").unwrap().f64().unwrap().clone();
        let session = df.column("session_seconds").unwrap().f64().unwrap().clone();
        let label = df.column("converted").unwrap().str().unwrap().clone();
        for r in 0..df.height() {
            seen.insert(ids.get(r).unwrap().to_string());
            fold(&mut acc, keys.get(r).unwrap(), ts.get(r).unwrap(), amount.get(r), session.get(r), label.get(r));
        }
    }
    let mut accepted = 0;
    for line in std::fs::read_to_string(stream).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Ok(e) = spec.parse_record(&v, Mode::Event) else { continue };
        if !seen.insert(e.id.clone()) {
            continue;
        }
        accepted += 1;
        let num = |i: usize| match e.features[i] {
            Cell::Num(v) => v,
            _ => None,
        };
        let label = match &e.target {
            Some(Target::Class(c)) => Some(c.as_str()),
            _ => None,
        };
        fold(&mut acc, &e.key, e.time, num(0), num(3), label);
    }
    (acc, accepted)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn assert_views_match(base: &str, expected: &BTreeMap<String, Brute>) {
    for (key, b) in expected {
        let (status, v) = get(&format!("{base}/v1/views/{key}"));
        assert_eq!(status, 200, "{key}: {v}");
        assert_eq!(v["count"], b.count, "{key}: {v}");
        let amount = &v["features"]["amount"];
        assert!(close(amount["sum"].as_f64().unwrap(), b.amount_sum), "{key}: {amount} vs {b:?}");
        assert_eq!(amount["min"].as_f64().unwrap(), b.amount_min, "{key}");
        assert_eq!(amount["max"].as_f64().unwrap(), b.amount_max, "{key}");
        assert_eq!(v["features"]["session_seconds"]["count"], b.session_count, "{key}");
        let labels: BTreeMap<String, u64> = serde_json::from_value(v["labels"].clone()).unwrap_or_default();
        assert_eq!(labels, b.labels, "{key}");
        assert_eq!(v["last_seen"], b.last_seen, "{key}");
    }
}

fn rows_in_master(spec: &Spec) -> usize {
    lambda_stores::master::list_files(&spec.paths.master).unwrap().iter().map(|f| read(f).height()).sum()
}

#[test]
fn batch_speed_and_serving_agree_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&[
        "generate",
        "--spec",
        sp,
        "--rows",
        "4000",
        "--stream-rows",
        "800",
        "--seed",
        "7",
        "--stream",
        stream.to_str().unwrap(),
    ]);
    let spec = Spec::from_file(&spec_path).unwrap();

    // Batch: a model is published with its manifest.
    let out = run_ok(&["batch", "--spec", sp]);
    assert!(out.contains("published v000001"), "{out}");

    // Forecast over one history file.
    let input = history_files(&spec.paths.master).remove(0);
    let output = dir.path().join("forecast.parquet");
    run_ok(&["forecast", "--spec", sp, "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    let scored = read(&output);
    let original = read(&input);
    assert_eq!(scored.height(), original.height());
    assert_eq!(scored.column("model_version").unwrap().str().unwrap().get(0), Some("v000001"));

    // Serving answers the same predictions for the same rows.
    let port = free_port();
    let server = start(&["serve", "--spec", sp, "--listen", &format!("127.0.0.1:{port}")], port, "/health/ready");
    let n = original.height().min(200);
    let mut records = Vec::new();
    for r in 0..n {
        let mut o = serde_json::Map::new();
        o.insert("amount".into(), original.column("amount").unwrap().f64().unwrap().get(r).into());
        o.insert("country".into(), original.column("country").unwrap().str().unwrap().get(r).into());
        o.insert("mobile".into(), original.column("mobile").unwrap().bool().unwrap().get(r).into());
        o.insert("session_seconds".into(), original.column("session_seconds").unwrap().f64().unwrap().get(r).into());
        records.push(serde_json::Value::Object(o));
    }
    let (status, answer) = post(&format!("{}/v1/predict", server.base), &serde_json::Value::Array(records).to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "v000001");
    let p_yes = scored.column("probability_yes").unwrap().f64().unwrap().clone();
    let labels = scored.column("prediction").unwrap().str().unwrap().clone();
    for r in 0..n {
        let served = &answer["predictions"][r];
        assert_eq!(served["probabilities"]["yes"].as_f64().unwrap(), p_yes.get(r).unwrap(), "row {r}");
        assert_eq!(served["label"].as_str(), labels.get(r), "row {r}");
    }

    // The speed layer replays the later events (paced, as a live stream would come); serving picks up its checkpoint.
    let src = format!("file:{}", stream.display());
    let out = run_ok(&["speed", "--spec", sp, "--source", &src, "--once", "--rate", "5000"]);
    let (expected, accepted) = brute_force(&spec, &stream);
    assert!(out.contains(&format!("{accepted} accepted")), "{out}");
    let dead = std::fs::read_to_string(spec.paths.state.join("dead-letter.ndjson")).unwrap();
    assert!(dead.lines().count() > 0 && dead.lines().all(|l| l.contains("\"error\"")), "{dead}");
    // Nothing accepted is lost: the master dataset now holds the history and every accepted event.
    assert_eq!(rows_in_master(&spec), 4000 + accepted as usize);
    let some_key = expected.keys().next().unwrap().clone();
    wait_for(Duration::from_secs(15), || {
        get(&format!("{}/v1/views/{some_key}", server.base)).1["speed_seq"] == 4000 + accepted
    });
    assert_views_match(&server.base, &expected);
    let (_, p) = post(
        &format!("{}/v1/predict?model=speed", server.base),
        r#"{"amount": 20.0, "country": "fr", "mobile": true}"#,
    );
    assert_eq!(p["model_version"], "v000001");
    assert!(p["speed_update"].as_u64().unwrap() > 0, "{p}");

    // A second batch run (forced past the gate: this test is about the handoff) covers the archived events; the
    // merged views neither lose nor double-count them.
    let out = run_ok(&["batch", "--spec", sp, "--force"]);
    assert!(out.contains("published v000002"), "{out}");
    wait_for(Duration::from_secs(15), || get(&format!("{}/v1/models", server.base)).1["current"] == "v000002");
    let (_, v) = get(&format!("{}/v1/views/{some_key}", server.base));
    assert_eq!(v["watermark"], 4000 + accepted, "{v}");
    assert_eq!(v["realtime_count"], 0, "{v}");
    assert_views_match(&server.base, &expected);
    drop(server);
}

#[test]
fn up_makes_a_posted_event_visible_as_soon_as_its_ingest_call_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Asked for by name, the speed layer's model answers, warm-started from a linear champion.
    let (server, ingest, _) = up_on_generated(dir.path());
    let record = r#"{"amount": 35.5, "country": "us", "mobile": false, "session_seconds": 80}"#;
    let predict = format!("{}/v1/predict?model=speed", server.base);
    let (_, before) = post(&predict, record);
    let (status, _) = get(&format!("{}/v1/views/new-user", server.base));
    assert_eq!(status, 404);
    let event = r#"{"event_id": "live-1", "user_id": "new-user", "ts": 1769904000000, "amount": 35.5, "country": "us", "mobile": false, "session_seconds": 80, "converted": "yes"}"#;
    let (status, ack) = post(&format!("{ingest}/v1/events"), event);
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(1)), "{ack}");
    // Read your writes: no waiting between the answer of the ingest call and the reads.
    let (status, view) = get(&format!("{}/v1/views/new-user", server.base));
    assert_eq!((status, view["count"].as_u64()), (200, Some(1)), "{view}");
    assert!(view["speed_seq"].as_u64() >= ack["last_seq"].as_u64(), "{view} {ack}");
    let (_, after) = post(&predict, record);
    assert_eq!((after["model"].as_str(), after["speed_update"].as_u64()), (Some("speed"), Some(1)), "{after}");
    let (b, a) = (
        before["prediction"]["probabilities"]["yes"].as_f64().unwrap(),
        after["prediction"]["probabilities"]["yes"].as_f64().unwrap(),
    );
    assert!(a > b, "learning a positive label raises its probability: {b} -> {a}");
    // One base URL: the serving address takes events too, here with an RFC 3339 time.
    let event = r#"{"event_id": "live-2", "user_id": "new-user", "ts": "2026-01-31T00:00:00.500Z", "amount": 20.0, "country": "us", "mobile": true, "session_seconds": 10, "converted": "no"}"#;
    let (status, ack) = post(&format!("{}/v1/events", server.base), event);
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(1)), "{ack}");
    let (_, view) = get(&format!("{}/v1/views/new-user", server.base));
    assert_eq!(view["count"].as_u64(), Some(2), "{view}");
    assert_eq!(view["first_seen"].as_i64(), Some(1_769_817_600_500), "an earlier time, to the millisecond: {view}");
    // The status is refreshed at each checkpoint tick.
    wait_for(std::time::Duration::from_secs(10), || get(&format!("{}/v1/status", server.base)).1["accepted"] == 2);
    let (status, err) =
        post(&format!("{}/v1/events", server.base), &event.replace("live-2", "live-3").replace(".500Z", ""));
    assert_eq!(status, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("no time zone offset"), "{err}");
    drop(server);
}

#[test]
fn cli_reports_bad_specs_and_missing_models_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let text = std::fs::read_to_string(&spec_path).unwrap().replace("task = ", "colour = \"red\"\ntask = ");
    std::fs::write(&spec_path, text).unwrap();
    let out = run(&["batch", "--spec", spec_path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.toml") && err.contains("colour"), "{err}");

    let spec_path = spec_in(dir.path());
    let sp = spec_path.to_str().unwrap();
    let out = run(&["speed", "--spec", sp, "--source", "file:/nonexistent.ndjson", "--once", "--rate", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate must be a positive"), "{out:?}");
    let out = run(&["speed", "--spec", sp, "--source", "file:/nonexistent.ndjson", "--once"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no batch model") && err.contains("lambda-ml batch"), "{err}");
    let out = run(&["batch", "--spec", sp]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Parquet files"));
    assert!(!dir.path().join("quickstart/run/registry/CURRENT").exists());
}
