//! The speed layer's promises: restart equals no restart, bad events never train and are kept with their reason,
//! replays are de-duplicated, and the HTTP ingest answers bad bodies with clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use lambda_core::encoder::Encoder;
use lambda_core::model::{Family, LinearModel};
use lambda_core::registry::{now_rfc3339, Manifest, ModelArtifact, Registry, FORMAT_VERSION};
use lambda_core::schema::{Columns, Mode};
use lambda_core::snapshot::{self, SpeedSnapshot};
use lambda_core::spec::Spec;
use lambda_core::views::ViewTable;
use lambda_speed::ingest::{parse_body, parse_line};
use lambda_speed::{Incoming, Learner, Speed};
use serde_json::json;

const SPEC: &str = r#"
name = "t"
[dataset]
time_column = "ts"
key_column = "user"
id_column = "id"
target = "label"
task = "binary_classification"
[[features]]
name = "amount"
type = "numeric"
[[features]]
name = "country"
type = "categorical"
[[features]]
name = "mobile"
type = "boolean"
[paths]
master = "master"
registry = "registry"
views = "views"
state = "state"
[speed]
checkpoint_interval = "1h"
max_body_bytes = 4096
"#;

fn event(i: u64) -> serde_json::Value {
    let x = ((i * 7919) % 100) as f64 / 10.0;
    let country = ["fr", "de", "us"][(i % 3) as usize];
    json!({"id": format!("e{i}"), "user": format!("u{}", i % 7), "ts": 1_000 + i as i64,
           "amount": x, "country": country, "mobile": i.is_multiple_of(2),
           "label": if x > 5.0 { "yes" } else { "no" }})
}

/// A pipeline folder with a published batch model whose watermark is 0.
fn setup() -> (tempfile::TempDir, Spec) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::from_toml(SPEC, &dir.path().join("spec.toml"), dir.path()).unwrap();
    let events: Vec<_> = (0..50).map(|i| spec.parse_record(&event(i), Mode::Event).unwrap()).collect();
    let encoder = Encoder::fit(&spec, &Columns::from_events(&spec, events.iter().map(|e| (0, e)))).unwrap();
    let mut model = LinearModel::zeros(Family::Logistic, vec!["no".into(), "yes".into()], encoder.dim());
    model.weights[0] = 0.5;
    let artifact = ModelArtifact { format_version: FORMAT_VERSION, schema_hash: spec.schema_hash(), encoder, model };
    let manifest = Manifest {
        version: String::new(),
        pipeline: "t".into(),
        created: now_rfc3339(),
        watermark: 0,
        training_rows: 50,
        holdout_rows: 0,
        metrics: Default::default(),
        schema_hash: spec.schema_hash(),
        algorithm: "test".into(),
        leaderboard: vec![],
    };
    Registry::open(&spec.paths.registry).publish(&artifact, manifest).unwrap();
    (dir, spec)
}

fn items(spec: &Spec, range: std::ops::Range<u64>) -> Vec<Incoming> {
    range.map(|i| parse_line(spec, 1, &event(i).to_string())).collect()
}

fn final_snapshot(spec: &Spec) -> SpeedSnapshot {
    snapshot::load_current(&spec.paths.state).unwrap().unwrap().1
}

fn assert_same_state(a: &SpeedSnapshot, b: &SpeedSnapshot) {
    assert_eq!(a.last_seq, b.last_seq);
    assert_eq!(a.updates, b.updates);
    assert_eq!(a.stats.accepted, b.stats.accepted);
    let bits = |s: &SpeedSnapshot| {
        s.artifact.model.weights.iter().chain(&s.artifact.model.bias).map(|w| w.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(bits(a), bits(b), "the incremental models differ");
    let (va, vb): (ViewTable, ViewTable) = (a.realtime_after(0), b.realtime_after(0));
    assert_eq!(va.keys.len(), vb.keys.len());
    for (k, x) in &va.keys {
        let y = &vb.keys[k];
        assert_eq!((x.count, &x.labels, x.last_seen, x.last_seq), (y.count, &y.labels, y.last_seen, y.last_seq), "{k}");
        for (s, t) in x.features.iter().zip(&y.features) {
            assert_eq!((s.count, s.min, s.max), (t.count, t.min, t.max));
            assert!((s.sum - t.sum).abs() < 1e-9 * (1.0 + s.sum.abs()));
        }
    }
}

#[test]
fn restarted_speed_layer_ends_like_one_that_never_stopped() {
    let (_a_dir, a) = setup();
    let speed = Speed::start(a.clone(), None).unwrap();
    for chunk in (0..300u64).collect::<Vec<_>>().chunks(40) {
        speed.ingest_blocking(items(&a, chunk[0]..chunk[chunk.len() - 1] + 1)).unwrap();
    }
    speed.stop().unwrap();

    let (_b_dir, b) = setup();
    let speed = Speed::start(b.clone(), None).unwrap();
    speed.ingest_blocking(items(&b, 0..130)).unwrap();
    speed.stop().unwrap();
    let speed = Speed::start(b.clone(), None).unwrap();
    speed.ingest_blocking(items(&b, 130..300)).unwrap();
    speed.stop().unwrap();

    let (sa, sb) = (final_snapshot(&a), final_snapshot(&b));
    assert_eq!(sa.last_seq, 300);
    assert!(sa.updates > 0);
    assert_same_state(&sa, &sb);
}

#[test]
fn crash_without_checkpoint_recovers_from_the_log() {
    let (_a_dir, a) = setup();
    let mut learner = Learner::open(a.clone()).unwrap();
    learner.ingest(items(&a, 0..200)).unwrap();
    learner.checkpoint().unwrap();

    let (_b_dir, b) = setup();
    let mut learner = Learner::open(b.clone()).unwrap();
    learner.ingest(items(&b, 0..60)).unwrap();
    learner.checkpoint().unwrap();
    learner.ingest(items(&b, 60..140)).unwrap();
    // Killed: no checkpoint for 60..140, which only the log holds.
    drop(learner);
    let mut learner = Learner::open(b.clone()).unwrap();
    assert_eq!(learner.last_seq(), 140);
    // A replay of already accepted events (at-least-once delivery) changes nothing.
    let r = learner.ingest(items(&b, 100..200)).unwrap();
    assert_eq!((r.accepted, r.duplicates), (60, 40));
    learner.checkpoint().unwrap();
    assert_same_state(&final_snapshot(&a), &final_snapshot(&b));
    // And the master dataset holds each event exactly once.
    let archived: u64 = lambda_core::master::list_files(&b.paths.master)
        .unwrap()
        .iter()
        .map(|p| lambda_core::master::read_batches(p).unwrap().iter().map(|x| x.num_rows() as u64).sum::<u64>())
        .sum();
    assert_eq!(archived, 200);
}

#[test]
fn bad_events_go_to_dead_letters_and_never_train() {
    let (_dir, spec) = setup();
    let mut learner = Learner::open(spec.clone()).unwrap();
    learner.ingest(items(&spec, 0..10)).unwrap();
    let before = learner.snapshot();
    let body = [
        r#"{"id": "x1", "user": "u", "ts": 1, "amount": "NaN"}"#,
        r#"{"user": "u", "ts": 1, "amount": 1.0}"#,
        r#"{"id": "x3", "user": "u", "ts": 1, "mobile": "yes"}"#,
        r#"{"id": "x4", "user": "u", "ts": 1, "label": 0.5}"#,
        r#"{"id": "x5", "user": "u", "ts": 1, "colour": "red"}"#,
        r#"{"id": "x6", "user": "u", "ts": 1, "amount": 1e999}"#,
        r#"{"id": "x7", "user": "u", "ts": 1, "amount": 1e300}"#,
        r#"not json"#,
    ]
    .join("\n");
    let parsed = parse_body(&spec, &body).unwrap();
    let report = learner.ingest(parsed).unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.rejected.len(), 8);
    let fields =
        ["amount", "id", "mobile", "label", "colour", "number out of range", "far outside the range", "invalid JSON"];
    for (r, f) in report.rejected.iter().zip(fields) {
        assert!(r.error.contains(f), "{} -> {}", r.line, r.error);
    }
    let after = learner.snapshot();
    assert_eq!(before.artifact, after.artifact);
    assert_eq!(before.realtime_after(0), after.realtime_after(0));
    let dead = std::fs::read_to_string(spec.paths.state.join("dead-letter.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 8);
    assert!(dead.contains("colour") && dead.contains("not json"));
    assert_eq!(after.stats.rejected, 8);
}

#[test]
fn new_batch_model_drops_covered_buckets_and_warm_starts() {
    let (_dir, spec) = setup();
    let mut learner = Learner::open(spec.clone()).unwrap();
    learner.ingest(items(&spec, 0..50)).unwrap();
    learner.checkpoint().unwrap();
    learner.ingest(items(&spec, 50..80)).unwrap();
    learner.checkpoint().unwrap();
    // A batch run that read the first archived segment (seq 1..=50) publishes.
    let registry = Registry::open(&spec.paths.registry);
    let mut published = registry.load_current(&spec).unwrap().unwrap();
    published.manifest.watermark = 50;
    registry.publish(&published.artifact, published.manifest.clone()).unwrap();
    assert!(learner.poll_batch().unwrap());
    let snap = learner.snapshot();
    assert_eq!(snap.base_version, "v000002");
    assert!(snap.buckets.iter().all(|b| b.first_seq > 50));
    assert_eq!(snap.realtime_after(50).keys.values().map(|v| v.count).sum::<u64>(), 30);
    // Warm start: the batch model plus the 30 labelled events after its watermark.
    assert_eq!(snap.updates, 30);
}

mod http {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn send(router: axum::Router, body: impl Into<Body>) -> (StatusCode, serde_json::Value) {
        let r = router.oneshot(Request::post("/v1/events").body(body.into()).unwrap()).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ingest_answers_bad_bodies_clearly_and_keeps_going() {
        let (_dir, spec) = setup();
        let speed = Arc::new(tokio::task::block_in_place(|| Speed::start(spec.clone(), None)).unwrap());
        let router = lambda_speed::http::router(speed.clone());
        let (s, v) = send(router.clone(), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("empty body"));
        let (s, v) = send(router.clone(), "x".repeat(10_000)).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(v["error"].as_str().unwrap().contains("4096"));
        let (s, v) = send(router.clone(), r#"{"id": "a", "user": "u", "ts": "noon"}"#).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["error"].as_str().unwrap().contains("`ts`"), "{v}");
        let (s, v) = send(router.clone(), vec![0xffu8, 0xfe]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let ndjson = format!("{}\n{}\n{{\"id\": 5}}\n", event(1), event(2));
        let (s, v) = send(router.clone(), ndjson).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!((v["accepted"].as_u64(), v["rejected"][0]["line"].as_u64()), (Some(2), Some(3)), "{v}");
        let (s, v) = send(router.clone(), json!([event(2), event(3)]).to_string()).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!((v["accepted"].as_u64(), v["duplicates"].as_u64()), (Some(1), Some(1)), "{v}");
        drop(router);
        let speed = Arc::try_unwrap(speed).ok().unwrap();
        tokio::task::block_in_place(|| speed.stop()).unwrap();
        let snap = final_snapshot(&spec);
        assert_eq!(snap.last_seq, 3);
    }
}

#[test]
fn start_without_a_batch_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::from_toml(SPEC, &dir.path().join("spec.toml"), dir.path()).unwrap();
    let err = Learner::open(spec).err().unwrap().to_string();
    assert!(err.contains("no batch model") && err.contains("lambda-ml batch"), "{err}");
}

#[test]
fn requests_grouped_into_one_commit_keep_their_own_reports() {
    let (_dir, spec) = setup();
    let mut learner = Learner::open(spec.clone()).unwrap();
    let mut second = items(&spec, 3..6);
    second.push(parse_line(&spec, 4, "{\"id\": \"bad\"}"));
    let reports = learner.ingest_many(vec![items(&spec, 0..4), second]).unwrap();
    assert_eq!((reports[0].accepted, reports[0].first_seq, reports[0].last_seq), (4, Some(1), Some(4)));
    // Event 3 was in the first request of the same group: a duplicate, not a second copy.
    assert_eq!((reports[1].accepted, reports[1].duplicates, reports[1].first_seq), (2, 1, Some(5)));
    assert_eq!(reports[1].rejected.len(), 1);
    assert_eq!(learner.last_seq(), 6);
}
