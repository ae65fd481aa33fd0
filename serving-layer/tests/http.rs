//! The serving layer's HTTP contract, including bad requests: each gets a 4xx with `{"error": ...}` naming what was
//! wrong, and the service keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use lambda_core::encoder::Encoder;
use lambda_core::schema::{Columns, Mode};
use lambda_core::spec::Spec;
use lambda_models::model::{Family, LinearModel};
use lambda_serving::Serving;
use lambda_stores::registry::Registry;
use lambda_stores::views::{batch_view_path, ViewTable};
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
        let artifact = lambda_stores::testing::linear_artifact(&spec, encoder, model);
        let mut view = ViewTable::new(&spec);
        for e in &events {
            view.observe(&e.key, e.time, 1, e, e.target.as_ref());
        }
        view.write_parquet(&batch_view_path(&spec, "v000001")).unwrap();
        let manifest = lambda_stores::testing::manifest(&spec, 20, 20);
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

#[tokio::test]
async fn a_value_far_outside_history_is_refused_not_answered_with_null_probabilities() {
    // Regression: schemathesis sent `"amount": -1.6e266` with another huge feature; the scores overflowed and
    // `/v1/predict` answered 200 with `"probabilities": {"no": null, "yes": null}`.
    let (_dir, spec) = setup(true);
    let serving = Serving::new(spec, None);
    serving.reload().unwrap();
    let router = lambda_serving::router(serving);
    for (body, needle) in [
        (r#"{"amount": -1.6e266}"#, "field `amount`"),
        (r#"[{"amount": 2}, {"amount": 1e300}]"#, "record 1: field `amount`"),
    ] {
        let (s, v) = call(&router, "POST", "/v1/predict", body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle) && msg.contains("far outside the range seen in history"), "{msg}");
    }
    let infer = r#"{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [-1e200]}]}"#;
    let (s, v) = call(&router, "POST", "/v2/models/t/infer", infer).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A value inside history's range, widened, is answered.
    let (s, v) = call(&router, "POST", "/v1/predict", r#"{"amount": 25}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_open_inference_protocol_answers_as_v1_predict_does() {
    let (_dir, spec) = setup(true);
    let serving = Serving::new(spec, None);
    serving.reload().unwrap();
    let router = lambda_serving::router(serving);
    assert_eq!(call(&router, "GET", "/v2/health/live", "").await.1, json!({"live": true}));
    assert_eq!(call(&router, "GET", "/v2/health/ready", "").await.1, json!({"ready": true}));
    assert_eq!(call(&router, "GET", "/v2", "").await.1["name"], "lambda-ml");
    let (s, meta) = call(&router, "GET", "/v2/models/t", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(meta["versions"], json!(["v000001"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "amount", "datatype": "FP64", "shape": [-1]}, {"name": "country", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(meta["outputs"][1]["parameters"]["classes"], json!(["no", "yes"]));
    assert_eq!(call(&router, "GET", "/v2/models/t/ready", "").await.1, json!({"name": "t", "ready": true}));
    assert_eq!(call(&router, "GET", "/v2/models/t/versions/v000001/ready", "").await.0, StatusCode::OK);
    let (s, e) = call(&router, "GET", "/v2/models/t/versions/v000009/ready", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("v000001"), "{e}");
    let (s, e) = call(&router, "GET", "/v2/models/other", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("\"t\""), "{e}");

    let request = json!({"id": "req-1", "inputs": [
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0, 15.0]},
        {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": [["fr"], ["de"]]},
    ]});
    let (s, v2) = call(&router, "POST", "/v2/models/t/infer", request.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(
        (v2["id"].as_str(), v2["model_name"].as_str(), v2["model_version"].as_str()),
        (Some("req-1"), Some("t"), Some("v000001"))
    );
    let (_, v1) = call(
        &router,
        "POST",
        "/v1/predict",
        r#"[{"amount": 1.0, "country": "fr"}, {"amount": 15.0, "country": "de"}]"#,
    )
    .await;
    let outputs = v2["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "label");
    assert_eq!(outputs[1]["shape"], json!([2, 2]));
    for r in 0..2 {
        let p = &v1["predictions"][r];
        assert_eq!(outputs[0]["data"][r], p["label"]);
        assert_eq!(outputs[1]["data"][2 * r + 1].as_f64(), p["probabilities"]["yes"].as_f64());
    }
    let only = json!({"inputs": request["inputs"], "outputs": [{"name": "probabilities"}]});
    let (_, v2) = call(&router, "POST", "/v2/models/t/versions/v000001/infer", only.to_string()).await;
    assert_eq!(v2["outputs"].as_array().unwrap().len(), 1, "{v2}");
    assert_eq!(v2["outputs"][0]["name"], "probabilities");
}

#[tokio::test]
async fn bad_inference_requests_get_a_4xx_naming_what_is_wrong_and_the_service_keeps_answering() {
    let (_dir, spec) = setup(true);
    let serving = Serving::new(spec, None);
    serving.reload().unwrap();
    let router = lambda_serving::router(serving);
    let amount = json!({"name": "amount", "shape": [1], "datatype": "FP64", "data": [2.0]});
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "malformed JSON"),
        ("[1]".into(), StatusCode::BAD_REQUEST, "inference request object"),
        (json!({"inputs": []}).to_string(), StatusCode::BAD_REQUEST, "`inputs`"),
        (
            json!({"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.0]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "holds 2 values",
        ),
        (
            json!({"inputs": [{"name": "amount", "shape": [1], "datatype": "FP128", "data": [1.0]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "datatype",
        ),
        (
            json!({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1.0]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "`name`",
        ),
        (
            json!({"inputs": [amount, {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "`colour` is not a feature",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "`country` is categorical",
        ),
        (
            json!({"inputs": [{"name": "amount", "shape": [1], "datatype": "BYTES", "data": ["lots"]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "amount",
        ),
        (
            json!({"inputs": [{"name": "country", "shape": [1], "datatype": "BYTES", "data": ["fr"]}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "amount",
        ),
        (
            json!({"inputs": [amount, {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["fr", "de"]}]})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "rows",
        ),
        (
            json!({"inputs": [{"name": "amount", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 3",
        ),
        (
            json!({"inputs": [amount], "outputs": [{"name": "logits"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown output \"logits\"",
        ),
        (
            json!({"inputs": [amount], "parameters": {"model": "oracle"}}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown model",
        ),
        ("x".repeat(4096), StatusCode::PAYLOAD_TOO_LARGE, "larger than"),
    ];
    for (body, status, needle) in cases {
        let (s, v) = call(&router, "POST", "/v2/models/t/infer", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{body}: no error string in {v}"));
        assert!(e.contains(needle), "{body}: {e}");
    }
    let (s, _) = call(&router, "POST", "/v2/models/t/infer", json!({"inputs": [amount]}).to_string()).await;
    assert_eq!(s, StatusCode::OK);
}
