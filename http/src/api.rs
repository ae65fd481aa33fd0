//! What the services' OpenAPI documents share: the error body every 4xx and 5xx answers with, the schemas of an
//! event and of a record to predict, written from the pipeline spec when a service starts (a client sees this
//! pipeline's features, not a free-form object), and the middleware that keeps every error in the one shape.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use lambda_core::spec::{FeatureKind, Spec, Task};
use lambda_core::time::TimeFormat;

/// The body of every error answer.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in words.
    pub error: String,
}

/// The answer of a liveness route.
#[derive(Debug, ToSchema)]
pub struct Live {
    /// Always `live`.
    pub status: String,
}

/// Names a schema whose body is written from the spec by [`document`]; the derived document holds a placeholder.
macro_rules! spec_schema {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        pub struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                utoipa::openapi::ObjectBuilder::new().into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

spec_schema!(
    /// One event of the pipeline: its id, key, time, label and features.
    EventSchema,
    "Event"
);
spec_schema!(
    /// `POST /v1/events`' JSON body: one event or an array of them.
    EventsSchema,
    "Events"
);
spec_schema!(
    /// One record to predict: the pipeline's features.
    RecordSchema,
    "Record"
);
spec_schema!(
    /// `POST /v1/predict`'s body: one record, an array of them, or `{"records": [...]}`.
    PredictSchema,
    "PredictRequest"
);

fn nullable(types: &[&str], nullable: bool) -> Value {
    let mut t: Vec<&str> = types.to_vec();
    if nullable {
        t.push("null");
    }
    json!(t)
}

fn feature_schema(kind: FeatureKind, required: bool) -> Value {
    match kind {
        FeatureKind::Numeric => json!({"type": nullable(&["number"], !required), "description": "a finite number"}),
        FeatureKind::Categorical => json!({"type": nullable(&["string", "integer"], !required)}),
        FeatureKind::Boolean => json!({"type": nullable(&["boolean"], !required)}),
    }
}

fn time_schema(spec: &Spec) -> Value {
    let d = &spec.dataset;
    let w = &d.time_window;
    // The window is said in words: bounds as numbers would differ from the service's own rounding at the edges.
    let within = format!(
        "inside [{}, {}) (dataset.time_window)",
        lambda_core::time::show(w.from),
        lambda_core::time::show(w.until)
    );
    let epoch = |unit: &str| json!({"type": "number", "description": format!("{unit} since the Unix epoch, {within}")});
    let text = json!({"type": "string", "format": "date-time", "description": format!("an RFC 3339 time {within}")});
    match d.time_format {
        TimeFormat::Rfc3339 => text,
        TimeFormat::EpochS => epoch("seconds"),
        TimeFormat::EpochMs => epoch("milliseconds"),
        TimeFormat::EpochUs => epoch("microseconds"),
        TimeFormat::EpochNs => epoch("nanoseconds"),
        TimeFormat::Auto => {
            json!({"anyOf": [text, epoch("seconds, milliseconds, microseconds or nanoseconds (the one unit that puts it in the window)")]})
        }
    }
}

fn id_schema(what: &str) -> Value {
    json!({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}], "description": what})
}

/// The JSON Schema of one event of `spec`: what `/v1/events` and the other sources accept.
pub fn event_schema(spec: &Spec) -> Value {
    let d = &spec.dataset;
    let mut props = Map::new();
    let mut required = vec![json!(d.id_column), json!(d.key_column), json!(d.time_column)];
    props.insert(d.id_column.clone(), id_schema("unique event id; a replay of a known id is a duplicate"));
    props.insert(d.key_column.clone(), id_schema("entity key; views are kept per key"));
    props.insert(d.time_column.clone(), time_schema(spec));
    let target = match d.task {
        Task::Regression => {
            json!({"type": ["number", "null"], "description": "the label: a finite number, or null when unlabelled"})
        }
        _ => {
            json!({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}, {"type": "boolean"}, {"type": "null"}],
                    "description": "the class label, or null when unlabelled"})
        }
    };
    props.insert(d.target.clone(), target);
    for f in &spec.features {
        props.insert(f.name.clone(), feature_schema(f.kind, f.required));
        if f.required {
            required.push(json!(f.name));
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The JSON Schema of one record to predict with `spec`'s model: its features (the event fields are allowed and
/// ignored).
pub fn record_schema(spec: &Spec) -> Value {
    let d = &spec.dataset;
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in &spec.features {
        props.insert(f.name.clone(), feature_schema(f.kind, f.required));
        if f.required {
            required.push(json!(f.name));
        }
    }
    for ignored in [&d.id_column, &d.key_column, &d.time_column, &d.target] {
        props.insert(ignored.clone(), json!({"description": "ignored when predicting"}));
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The document `doc` (derived from the routes) made whole for `spec`: the spec-written schemas, a title and
/// the pipeline's name.
pub fn document(mut doc: utoipa::openapi::OpenApi, spec: &Spec, title: &str) -> Value {
    doc.info.title = format!("lambda-ml {title}: {}", spec.name);
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut v = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let schemas = [
        ("Event", event_schema(spec)),
        ("Events", json!({"anyOf": [reference("Event"), {"type": "array", "items": reference("Event")}]})),
        ("Record", record_schema(spec)),
        (
            "PredictRequest",
            // The batch limit is a 413 (too large), not a malformed request, so it is said in words only.
            json!({"anyOf": [
                reference("Record"),
                {"type": "array", "items": reference("Record"), "minItems": 1,
                    "description": format!("at most {} records (serving.max_batch)", spec.serving.max_batch)},
                {"type": "object", "properties": {"records": {"type": "array", "items": reference("Record"), "minItems": 1,
                    "description": format!("at most {} records (serving.max_batch)", spec.serving.max_batch)}},
                    "required": ["records"], "additionalProperties": false},
            ]}),
        ),
    ];
    // The Open Inference Protocol's `{name}` is the pipeline's: say so, so that a client (or a fuzzer) can know it.
    if let Some(Value::Object(paths)) = v.get_mut("paths") {
        for op in paths.values_mut().flat_map(|item| item.as_object_mut()).flat_map(|ops| ops.values_mut()) {
            if let Some(body) = op.get_mut("requestBody") {
                body["required"] = json!(true);
            }
        }
        let params = paths.values_mut().flat_map(|item| item.as_object_mut()).flat_map(|ops| ops.values_mut());
        for p in params.filter_map(|op| op.get_mut("parameters")).filter_map(Value::as_array_mut).flatten() {
            if p["name"] == "name" && p["in"] == "path" {
                p["schema"] = json!({"type": "string", "enum": [spec.name]});
            }
            if p["name"] == "model" && p["in"] == "query" {
                let models: Vec<&str> =
                    [lambda_core::names::BLEND, lambda_core::names::BATCH, lambda_core::names::SPEED]
                        .into_iter()
                        .chain(spec.speed.learners.iter().map(String::as_str))
                        .collect();
                p["schema"] = json!({"type": "string", "enum": models});
            }
        }
    }
    if let Some(Value::Object(components)) = v.pointer_mut("/components/schemas") {
        for (name, schema) in schemas {
            if components.contains_key(name) {
                components.insert(name.to_string(), schema);
            }
        }
    }
    v
}

/// `GET /health/live` of both services.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "The process answers.", body = Live)))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `GET /metrics` of both services.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition: requests per route and status, latencies, model versions, events accepted, rejected and duplicated, learner lag, checkpoint durations, prequential losses, freshness.", body = String, content_type = "text/plain")))]
pub async fn metrics() -> Response {
    crate::telemetry::metrics_route().await
}

/// `GET /openapi.json`: the document [`document`] wrote, given to the router as an `Extension<Arc<Value>>`.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This document: OpenAPI 3.1, with the pipeline's own event and record schemas.", body = Object)))]
pub async fn openapi_json(axum::Extension(doc): axum::Extension<Arc<Value>>) -> Json<Value> {
    Json(doc.as_ref().clone())
}

/// Bodies of errors that are not ours (a route that does not exist, a method it does not take, a query or path
/// axum could not read) are read up to this size and wrapped.
const FOREIGN_ERROR_BYTES: usize = 64 << 10;

/// Middleware: every 4xx and 5xx answers with `{"error": ...}`, including axum's own (unknown route, wrong
/// method, unreadable query or path), so that a client reads every error one way.
pub async fn json_errors(request: Request<Body>, next: Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let what = format!("{method} {}", uri.path());
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FOREIGN_ERROR_BYTES).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (text.is_empty(), status.as_u16()) {
        (false, _) => text,
        (true, 404) => format!("no route {what}"),
        (true, 405) => format!("{what}: method not allowed on this route"),
        (true, _) => format!("{what}: {}", status.canonical_reason().unwrap_or("error")),
    };
    let mut out = (status, Json(json!({"error": message}))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_schema_names_the_specs_fields_and_refuses_others() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/quickstart.toml");
        let spec = Spec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = event_schema(&spec);
        let d = &spec.dataset;
        for f in spec.features.iter().map(|f| &f.name).chain([&d.id_column, &d.key_column, &d.time_column, &d.target]) {
            assert!(s["properties"].get(f).is_some(), "{f} missing from {s}");
        }
        assert_eq!(s["additionalProperties"], json!(false));
        let required: Vec<&str> = s["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        assert!(required.contains(&d.id_column.as_str()) && required.contains(&d.time_column.as_str()), "{s}");
        assert!(!required.contains(&d.target.as_str()), "an unlabelled event is valid: {s}");
    }
}
