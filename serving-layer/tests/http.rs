//! The serving layer's HTTP contract, including bad requests: each gets a 4xx with `{"error": ...}` naming what was
//! wrong, and the service keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use lambda_core::encoder::Encoder;
use lambda_core::model::{Family, LinearModel};
use lambda_core::registry::{now_rfc3339, Manifest, ModelArtifact, Registry, FORMAT_VERSION};
use lambda_core::schema::{Columns, Mode};
use lambda_core::spec::Spec;
use lambda_core::views::{batch_view_path, ViewTable};
use lambda_serving::Serving;
use serde_json::{json, Value};
use tower::ServiceExt;

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
required = true
[[features]]
name = "country"
type = "categorical"
[paths]
master = "master"
registry = "registry"
views = "views"
state = "state"
[serving]
max_body_bytes = 2048
max_batch = 3
"#;

fn setup(publish: bool) -> (tempfile::TempDir, Spec) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::from_toml(SPEC, &dir.path().join("spec.toml"), dir.path()).unwrap();
    if publish {
        let events: Vec<_> = (0..20)
            .map(|i| {
                spec.parse_record(&json!({"id": i, "user": format!("u{}", i % 2), "ts": 1_764_144_000_000i64 + i, "amount": i as f64, "country": "fr", "label": "yes"}), Mode::Event)
                    .unwrap()
            })
            .collect();
        let cols = Columns::from_events(&spec, events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)));
        let encoder = Encoder::fit(&spec, &cols).unwrap();
        let mut model = LinearModel::zeros(Family::Logistic, vec!["no".into(), "yes".into()], encoder.dim());
        model.weights[0] = 1.0;
        let artifact = ModelArtifact {
            format_version: FORMAT_VERSION,
            schema_hash: spec.schema_hash(),
            encoder,
            model: lambda_core::model::Model::Linear(model),
            online: None,
            online_prior: None,
            online_bayes: None,
        };
        let mut view = ViewTable::new(&spec);
        for e in &events {
            view.observe(&e.key, e.time, 1, e, e.target.as_ref());
        }
        view.write_parquet(&batch_view_path(&spec, "v000001")).unwrap();
        let manifest = Manifest {
            version: String::new(),
            pipeline: "t".into(),
            created: now_rfc3339(),
            watermark: 20,
            training_rows: 20,
            holdout_rows: 0,
            metrics: Default::default(),
            schema_hash: spec.schema_hash(),
            algorithm: "test".into(),
            leaderboard: vec![],
            gate: None,
            search: None,
            online_rows: None,
            trained_since: None,
        };
        Registry::open(&spec.paths.registry).publish(&artifact, manifest).unwrap();
    }
    (dir, spec)
}

async fn call(router: &axum::Router, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).body(body.into()).unwrap();
    let r = router.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn not_ready_until_a_model_is_published() {
    let (_dir, spec) = setup(false);
    let serving = Serving::new(spec, None);
    serving.reload().unwrap();
    let router = lambda_serving::router(serving);
    assert_eq!(call(&router, "GET", "/health/live", "").await.0, StatusCode::OK);
    let (s, v) = call(&router, "GET", "/health/ready", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("no model"));
    assert_eq!(call(&router, "POST", "/v1/predict", r#"{"amount": 1}"#).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn predicts_one_record_or_a_list_and_answers_views_and_models() {
    let (_dir, spec) = setup(true);
    let serving = Serving::new(spec, None);
    assert!(serving.reload().unwrap());
    let router = lambda_serving::router(serving);
    assert_eq!(call(&router, "GET", "/health/ready", "").await.0, StatusCode::OK);
    let (s, v) = call(&router, "POST", "/v1/predict", r#"{"amount": 19, "country": "fr"}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model_version"], "v000001");
    let p = &v["prediction"]["probabilities"];
    assert!((p["yes"].as_f64().unwrap() + p["no"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v["prediction"]["label"], "yes");
    // Without a speed layer the blend is the batch champion alone, and says so.
    assert_eq!(v["model"], "batch", "{v}");
    assert_eq!(v["components"][0]["name"], "batch", "{v}");
    assert_eq!(v["components"][0]["weight"], 1.0, "{v}");
    let (s, v) = call(&router, "POST", "/v1/predict", r#"[{"amount": 0}, {"amount": 19, "country": null}]"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 2);
    // A model asked for by name: one not loaded yet falls back to the batch champion; an unknown name is refused.
    let (s, v) = call(&router, "POST", "/v1/predict?model=speed", r#"{"amount": 19, "country": "fr"}"#).await;
    assert_eq!((s, v["model"].as_str()), (StatusCode::OK, Some("batch")), "{v}");
    let (s, v) = call(&router, "POST", "/v1/predict?model=forest", r#"{"amount": 19}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"forest\"; it can be blend, batch, speed"), "{v}");
    let (s, v) = call(&router, "GET", "/v1/views/u0", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["count"].as_u64(), v["features"]["amount"]["sum"].as_f64()), (Some(10), Some(90.0)), "{v}");
    assert_eq!(v["watermark"], 20);
    let (s, _) = call(&router, "GET", "/v1/views/nobody", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&router, "GET", "/v1/models", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["current"], "v000001");
    assert_eq!(v["manifest"]["watermark"], 20);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_service_keeps_serving() {
    let (_dir, spec) = setup(true);
    let serving = Serving::new(spec, None);
    serving.reload().unwrap();
    let router = lambda_serving::router(serving);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "malformed JSON"),
        (r#"{"amount": NaN}"#.into(), StatusCode::BAD_REQUEST, "malformed JSON"),
        (r#"{"amount": "NaN"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "amount"),
        (r#"{"country": "fr"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "amount"),
        (r#"{"amount": 1, "country": 3.5}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "country"),
        (r#"{"amount": 1, "colour": "red"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "colour"),
        (r#"[{"amount": 1}, {"amount": true}]"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "record 1"),
        ("[]".into(), StatusCode::BAD_REQUEST, "no records"),
        ("42".into(), StatusCode::BAD_REQUEST, "expected a JSON object"),
        (
            r#"[{"amount": 1}, {"amount": 1}, {"amount": 1}, {"amount": 1}]"#.into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 3",
        ),
        (format!(r#"{{"amount": 1, "country": "{}"}}"#, "x".repeat(5000)), StatusCode::PAYLOAD_TOO_LARGE, "2048 bytes"),
    ];
    for (body, status, needle) in cases {
        let (s, v) = call(&router, "POST", "/v1/predict", body.clone()).await;
        assert_eq!(s, status, "{body:.80}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body:.80}: {msg}");
    }
    let (s, _) = call(&router, "POST", "/v1/predict", r#"{"amount": 2}"#).await;
    assert_eq!(s, StatusCode::OK);
}
