//! The Open Inference Protocol (KServe V2, the REST API Triton and KServe clients speak) beside the v1 routes. The
//! pipeline is one model, named after the spec; `infer` takes one input per feature (shape `[N]` or `[N, 1]`) or one
//! tensor of every feature in spec order (shape `[N, F]`, numbers and booleans as 0/1), and answers through the same
//! path as `/v1/predict`: `label` (BYTES) and `probabilities` (FP64, `[N, classes]`, the classes in its
//! parameters) for classification, `value` (FP64) for regression.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lambda_core::schema::Mode;
use lambda_core::spec::{FeatureKind, Spec};
use lambda_models::model::{argmax, Prediction};
use serde_json::{json, Map, Value};

use crate::api::v2::{InferRequest, InferResponse, ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady};
use crate::{answer, error, Serving};
use lambda_http::api::ErrorBody;

/// The V2 routes, unversioned and for one version (which must be the one served).
pub fn routes() -> Router<Arc<Serving>> {
    Router::new()
        .route("/v2", get(server))
        .route("/v2/health/live", get(server_live))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready_route))
        .route("/v2/models/{name}/versions/{version}/ready", get(version_ready))
        .route("/v2/models/{name}/infer", post(model_infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(version_infer))
}

const NAME: &str = "The pipeline's name (the spec's `name`).";
const VERSION: &str = "A batch version; it must be the one served.";

#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, description = "Server metadata.", body = ServerMetadata)))]
pub(crate) async fn server() -> Json<Value> {
    Json(json!({"name": "lambda-ml", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses((status = 200, description = "The process answers.", body = ServerLive)))]
pub(crate) async fn server_live() -> Json<Value> {
    Json(json!({"live": true}))
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "v2",
    responses((status = 200, description = "A model is loaded.", body = ServerReady), (status = 503, description = "No model loaded yet.", body = ErrorBody)))]
pub(crate) async fn server_ready(State(s): State<Arc<Serving>>) -> Response {
    if s.ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet")
    }
}

#[utoipa::path(get, path = "/v2/models/{name}", tag = "v2", params(("name" = String, Path, description = NAME)),
    responses(
        (status = 200, description = "The model's inputs (one per feature) and outputs.", body = ModelMetadata),
        (status = 404, description = "Not this pipeline's name.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn model_metadata(s: State<Arc<Serving>>, Path(name): Path<String>) -> Response {
    metadata(s, name, None).await
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "v2",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    responses(
        (status = 200, description = "The model's inputs (one per feature) and outputs.", body = ModelMetadata),
        (status = 404, description = "Not this pipeline's name, or not the version served.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn version_metadata(s: State<Arc<Serving>>, Path((n, v)): Path<(String, String)>) -> Response {
    metadata(s, n, Some(v)).await
}

#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "v2", params(("name" = String, Path, description = NAME)),
    responses(
        (status = 200, description = "The model is ready.", body = ModelReady),
        (status = 404, description = "Not this pipeline's name.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn model_ready_route(s: State<Arc<Serving>>, Path(name): Path<String>) -> Response {
    model_ready(s, name, None).await
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "v2",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    responses(
        (status = 200, description = "The version is served.", body = ModelReady),
        (status = 404, description = "Not this pipeline's name, or not the version served.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn version_ready(s: State<Arc<Serving>>, Path((n, v)): Path<(String, String)>) -> Response {
    model_ready(s, n, Some(v)).await
}

#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "v2", params(("name" = String, Path, description = NAME)),
    request_body = InferRequest,
    responses(
        (status = 200, description = "`label` and `probabilities`, or `value`, per row.", body = InferResponse),
        (status = 400, description = "Not an inference request, a tensor that does not fit, or a row that does not fit the schema.", body = ErrorBody),
        (status = 404, description = "Not this pipeline's name.", body = ErrorBody),
        (status = 409, description = "The served state has not reached `parameters.min_seq` in time.", body = ErrorBody),
        (status = 422, description = "A value lies far outside the range seen in history.", body = ErrorBody),
        (status = 413, description = "A body over `serving.max_body_bytes` or more than `serving.max_batch` rows.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn model_infer(s: State<Arc<Serving>>, Path(name): Path<String>, body: Body) -> Response {
    infer(s, name, None, body).await
}

#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "v2",
    params(("name" = String, Path, description = NAME), ("version" = String, Path, description = VERSION)),
    request_body = InferRequest,
    responses(
        (status = 200, description = "`label` and `probabilities`, or `value`, per row.", body = InferResponse),
        (status = 400, description = "Not an inference request, a tensor that does not fit, or a row that does not fit the schema.", body = ErrorBody),
        (status = 404, description = "Not this pipeline's name, or not the version served.", body = ErrorBody),
        (status = 409, description = "The served state has not reached `parameters.min_seq` in time, or the version stopped being served meanwhile.", body = ErrorBody),
        (status = 422, description = "A value lies far outside the range seen in history.", body = ErrorBody),
        (status = 413, description = "A body over `serving.max_body_bytes` or more than `serving.max_batch` rows.", body = ErrorBody),
        (status = 503, description = "No model loaded yet.", body = ErrorBody),
    ))]
pub(crate) async fn version_infer(
    s: State<Arc<Serving>>,
    Path((n, v)): Path<(String, String)>,
    body: Body,
) -> Response {
    infer(s, n, Some(v), body).await
}

/// The served batch version, after checking the name and version asked for.
fn served(s: &Serving, name: &str, version: Option<&str>) -> Result<String, Fail> {
    if name != s.spec.name {
        return Err((StatusCode::NOT_FOUND, format!("unknown model {name:?}; this service serves {:?}", s.spec.name)));
    }
    let Some(st) = s.state() else { return Err((StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet".into())) };
    let current = st.batch.version().to_string();
    match version {
        Some(v) if v != current => Err((
            StatusCode::NOT_FOUND,
            format!("version {v:?} of {name:?} is not served; the served version is {current:?}"),
        )),
        _ => Ok(current),
    }
}

fn datatype(kind: FeatureKind) -> &'static str {
    match kind {
        FeatureKind::Numeric => "FP64",
        FeatureKind::Categorical => "BYTES",
        FeatureKind::Boolean => "BOOL",
    }
}

async fn metadata(State(s): State<Arc<Serving>>, name: String, version: Option<String>) -> Response {
    let current = match served(&s, &name, version.as_deref()) {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    let inputs: Vec<Value> =
        s.spec.features.iter().map(|f| json!({"name": f.name, "datatype": datatype(f.kind), "shape": [-1]})).collect();
    let classes = s.state().map(|st| st.batch.published.artifact.model.classes().to_vec()).unwrap_or_default();
    let outputs = if classes.is_empty() {
        json!([{"name": "value", "datatype": "FP64", "shape": [-1]}])
    } else {
        json!([
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, classes.len()], "parameters": {"classes": classes}},
        ])
    };
    Json(json!({"name": name, "versions": [current], "platform": "lambda-ml", "inputs": inputs, "outputs": outputs}))
        .into_response()
}

async fn model_ready(State(s): State<Arc<Serving>>, name: String, version: Option<String>) -> Response {
    match served(&s, &name, version.as_deref()) {
        Ok(_) => Json(json!({"name": name, "ready": true})).into_response(),
        Err(f) => fail(f),
    }
}

/// A status and the message of its `{"error": ...}` body.
type Fail = (StatusCode, String);

fn bad(message: impl Into<String>) -> Fail {
    (StatusCode::BAD_REQUEST, message.into())
}

fn fail((status, message): Fail) -> Response {
    error(status, message)
}

/// One input tensor of a request, its data flattened (row-major, as the protocol allows nested arrays).
#[derive(Debug)]
struct Tensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Vec<Value>,
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

fn tensor(i: usize, v: &Value) -> Result<Tensor, Fail> {
    let field = |k: &str| v.get(k).ok_or_else(|| bad(format!("inputs[{i}] has no `{k}`")));
    let name = field("name")?.as_str().ok_or_else(|| bad(format!("inputs[{i}].name must be a string")))?.to_string();
    let shape: Vec<i64> = field("shape")?
        .as_array()
        .and_then(|a| a.iter().map(Value::as_i64).collect())
        .filter(|s: &Vec<i64>| s.iter().all(|&d| d >= 0))
        .ok_or_else(|| bad(format!("input `{name}`: shape must be a list of sizes")))?;
    let datatype = field("datatype")?
        .as_str()
        .ok_or_else(|| bad(format!("input `{name}`: datatype must be a string")))?
        .to_string();
    let known = [
        "BOOL", "BYTES", "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
        "UINT64",
    ];
    if !known.contains(&datatype.as_str()) {
        return Err(bad(format!("input `{name}`: unknown datatype {datatype:?}")));
    }
    let mut data = Vec::new();
    flatten(field("data")?, &mut data);
    // Sizes are the caller's: their product can overflow (a panic in a debug build, a wrong size in release).
    let Some(size) = shape.iter().try_fold(1i64, |a, &d| a.checked_mul(d)) else {
        return Err(bad(format!("input `{name}`: shape {shape:?} holds more values than can be counted")));
    };
    if size != data.len() as i64 {
        return Err(bad(format!("input `{name}`: shape {shape:?} holds {size} values, data has {}", data.len())));
    }
    Ok(Tensor { name, shape, datatype, data })
}

/// The request's rows as v1 records (feature name to JSON value), so that they are checked as `/v1/predict`'s are.
fn records(spec: &Spec, inputs: &[Tensor]) -> Result<Vec<Map<String, Value>>, Fail> {
    let features = &spec.features;
    let named = |t: &Tensor| features.iter().any(|f| f.name == t.name);
    if let [t] = inputs {
        if !named(t) {
            // One tensor of every feature in spec order.
            let width = features.len() as i64;
            if t.shape.len() != 2 || t.shape[1] != width {
                return Err(bad(format!(
                    "input `{}` is not a feature, so it must be one tensor of shape [N, {width}] holding {} in spec \
                     order; its shape is {:?}",
                    t.name,
                    features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "),
                    t.shape
                )));
            }
            if let Some(f) = features.iter().find(|f| f.kind == FeatureKind::Categorical) {
                return Err(bad(format!(
                    "feature `{}` is categorical, so one numeric tensor cannot hold it; send one input per feature",
                    f.name
                )));
            }
            let rows = t.data.chunks(features.len().max(1));
            return Ok(rows
                .map(|row| {
                    features
                        .iter()
                        .zip(row)
                        .map(|(f, v)| {
                            let v = match (f.kind, v.as_f64()) {
                                (FeatureKind::Boolean, Some(x)) if x == 0.0 || x == 1.0 => json!(x == 1.0),
                                _ => v.clone(),
                            };
                            (f.name.clone(), v)
                        })
                        .collect()
                })
                .collect());
        }
    }
    let mut n: Option<usize> = None;
    for t in inputs {
        if !named(t) {
            return Err(bad(format!(
                "input `{}` is not a feature of {:?}; send one input per feature, or a single [N, {}] tensor",
                t.name,
                spec.name,
                features.len()
            )));
        }
        if !(t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1)) {
            return Err(bad(format!("input `{}`: a feature's shape is [N] or [N, 1], not {:?}", t.name, t.shape)));
        }
        match n {
            Some(m) if m != t.data.len() => {
                return Err(bad(format!("input `{}` has {} rows, the other inputs {m}", t.name, t.data.len())))
            }
            _ => n = Some(t.data.len()),
        }
        if inputs.iter().filter(|o| o.name == t.name).count() > 1 {
            return Err(bad(format!("input `{}` is given twice", t.name)));
        }
    }
    let mut rows = vec![Map::new(); n.unwrap_or(0)];
    for t in inputs {
        let boolean = features.iter().any(|f| f.name == t.name && f.kind == FeatureKind::Boolean);
        for (row, v) in rows.iter_mut().zip(&t.data) {
            // A BOOL tensor's values may arrive as 0/1 from clients that encode booleans as numbers.
            let v = match (boolean, t.datatype.as_str(), v.as_f64()) {
                (true, "BOOL", Some(x)) => json!(x != 0.0),
                _ => v.clone(),
            };
            row.insert(t.name.clone(), v);
        }
    }
    Ok(rows)
}

async fn infer(State(s): State<Arc<Serving>>, name: String, version: Option<String>, body: Body) -> Response {
    let current = match served(&s, &name, version.as_deref()) {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    let limit = s.spec.serving.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"));
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => return fail(bad(format!("expected an inference request object, got {other}"))),
        Err(e) => return fail(bad(format!("malformed JSON: {e}"))),
    };
    let Some(list) = request.get("inputs").and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return fail(bad("`inputs` must be a non-empty list of tensors"));
    };
    let inputs = match list.iter().enumerate().map(|(i, v)| tensor(i, v)).collect::<Result<Vec<_>, _>>() {
        Ok(t) => t,
        Err(f) => return fail(f),
    };
    let rows = match records(&s.spec, &inputs) {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    if rows.is_empty() {
        return fail(bad("no rows to predict"));
    }
    if rows.len() > s.spec.serving.max_batch {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} rows; at most {} per request", rows.len(), s.spec.serving.max_batch),
        );
    }
    let mut events = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        match s.spec.parse_record(&Value::Object(r), Mode::Predict) {
            Ok(e) => events.push(e),
            Err(rej) => return fail(bad(format!("row {i}: input {rej}"))),
        }
    }
    if let Some(id) = request.get("id").filter(|id| !id.is_string()) {
        return fail(bad(format!("`id` must be a string, got {id}")));
    }
    let params = request.get("parameters");
    let model = params.and_then(|p| p.get("model")).and_then(Value::as_str);
    let min_seq = params.and_then(|p| p.get("min_seq")).and_then(Value::as_u64);
    let a = match answer(&s, &events, model, min_seq).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if a.version != current {
        // The served version moved while the request waited: answer for the version asked for or not at all.
        if version.is_some() {
            return error(StatusCode::CONFLICT, format!("version {current:?} stopped being served meanwhile"));
        }
    }
    let n = a.predictions.len();
    let mut outputs = Vec::new();
    if a.classes.is_empty() {
        let values: Vec<f64> =
            a.predictions.iter().map(|p| if let Prediction::Value(v) = p { *v } else { f64::NAN }).collect();
        outputs.push(json!({"name": "value", "datatype": "FP64", "shape": [n], "data": values}));
    } else {
        let probs: Vec<&[f64]> = a
            .predictions
            .iter()
            .map(|p| if let Prediction::Probabilities(ps) = p { ps.as_slice() } else { &[] })
            .collect();
        let labels: Vec<&str> = probs.iter().map(|ps| a.classes.get(argmax(ps)).map_or("", String::as_str)).collect();
        outputs.push(json!({"name": "label", "datatype": "BYTES", "shape": [n], "data": labels}));
        outputs.push(json!({
            "name": "probabilities", "datatype": "FP64", "shape": [n, a.classes.len()],
            "data": probs.concat(), "parameters": {"classes": a.classes},
        }));
    }
    if let Some(wanted) = request.get("outputs").and_then(Value::as_array) {
        let names: Vec<&str> = wanted.iter().filter_map(|o| o.get("name").and_then(Value::as_str)).collect();
        if let Some(unknown) = names.iter().find(|w| !outputs.iter().any(|o| o["name"] == **w)) {
            let have: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
            return fail(bad(format!("unknown output {unknown:?}; this model has {}", have.join(", "))));
        }
        outputs.retain(|o| names.iter().any(|w| o["name"] == *w));
    }
    let mut out = json!({
        "model_name": name,
        "model_version": a.version,
        "outputs": outputs,
        "parameters": {"model": a.model, "speed_seq": a.seq},
    });
    if let Some(id) = request.get("id") {
        out["id"] = id.clone();
    }
    Json(out).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> Spec {
        let text = "name = \"n\"\n[dataset]\ntime_column = \"ts\"\nkey_column = \"k\"\nid_column = \"id\"\n\
                    target = \"y\"\ntask = \"regression\"\n[[features]]\nname = \"amount\"\ntype = \"numeric\"\n\
                    [[features]]\nname = \"mobile\"\ntype = \"boolean\"\n[paths]\nmaster = \"m\"\n\
                    registry = \"r\"\nviews = \"v\"\nstate = \"s\"\n";
        Spec::from_toml(text, std::path::Path::new("s.toml"), std::path::Path::new("/")).unwrap()
    }

    fn t(v: Value) -> Tensor {
        tensor(0, &v).unwrap()
    }

    #[test]
    fn a_shape_whose_size_overflows_is_a_bad_request_not_a_panic() {
        // Regression: schemathesis sent `"shape": [32769, 281466387038201]`; the product overflowed and the
        // handler panicked, closing the connection without an answer.
        let v = json!({"name": "amount", "shape": [32769, 281_466_387_038_201i64], "datatype": "BOOL", "data": []});
        let (status, message) = tensor(0, &v).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("more values than can be counted"), "{message}");
    }

    #[test]
    fn one_tensor_of_every_feature_becomes_the_same_rows_as_named_inputs() {
        let s = spec();
        let whole = t(json!({"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1.5, 1], [2.5, 0]]}));
        let named = [
            t(json!({"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]})),
            t(json!({"name": "mobile", "shape": [2, 1], "datatype": "BOOL", "data": [[true], [false]]})),
        ];
        let a = records(&s, &[whole]).unwrap();
        let b = records(&s, &named).unwrap();
        assert_eq!(a, b);
        assert_eq!(Value::Object(a[0].clone()), json!({"amount": 1.5, "mobile": true}));
        let wrong = t(json!({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}));
        assert_eq!(records(&s, &[wrong]).unwrap_err().0, StatusCode::BAD_REQUEST);
        let err = tensor(0, &json!({"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1]})).unwrap_err();
        assert_eq!(err.0, StatusCode::BAD_REQUEST);
    }
}
