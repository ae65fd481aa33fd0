//! HTTP ingest: `POST /v1/events` takes one JSON object, a JSON array, or NDJSON, and answers once the accepted
//! events are durable. Every error is `{"error": "..."}`: 4xx for the caller's mistakes, 503 with `Retry-After`
//! when the learner is behind or the disk cannot take the events (nothing of the request was accepted), 500 for
//! anything else of ours.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use lambda_http::ApiError;

use crate::{Error, Speed};

pub use lambda_http::error;

/// Reads a whole body up to `limit` bytes as UTF-8, or answers 413 / 400.
pub async fn read_body(body: Body, limit: usize) -> Result<String, Response> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes")))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body is not UTF-8: {e}")))
}

/// The answer to a speed-layer error: 503 with `Retry-After` for "busy" and storage failures.
pub fn failure(e: &Error) -> Response {
    match e {
        Error::Busy(_) => ApiError::unavailable(e.to_string(), 1),
        Error::Storage(_) => ApiError::unavailable(e.to_string(), 5),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    .into_response()
}

/// The ingest routes with the speed layer's own liveness route, Prometheus metrics and OpenAPI document, for its
/// own address.
pub fn router(speed: Arc<Speed>) -> Router {
    use utoipa::OpenApi;
    lambda_http::telemetry::register(&speed, Speed::collect_metrics);
    let doc = lambda_http::api::document(SpeedApi::openapi(), speed.spec(), "speed layer");
    ingest_routes(speed)
        .route("/health/live", get(lambda_http::api::live))
        .route("/metrics", get(lambda_http::api::metrics))
        .layer(axum::middleware::from_fn(|r, n| lambda_http::telemetry::track("speed", r, n)))
        .route("/openapi.json", get(lambda_http::api::openapi_json))
        .layer(axum::Extension(Arc::new(doc)))
        .layer(axum::middleware::from_fn(lambda_http::api::json_errors))
}

/// The speed layer's routes on its own address.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(events, status, lambda_http::api::live, lambda_http::api::metrics, lambda_http::api::openapi_json),
    components(schemas(
        lambda_http::api::ErrorBody,
        lambda_http::api::Live,
        lambda_http::api::EventSchema,
        lambda_http::api::EventsSchema
    )),
    info(description = "Ingest of one pipeline's live events (`POST /v1/events`), the speed layer's status, health \
        and Prometheus metrics. Every error answers `{\"error\": \"...\"}`.")
)]
pub struct SpeedApi;

/// `POST /v1/events` and `GET /v1/status` alone, described for another service's document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(events, status),
    components(schemas(lambda_http::api::ErrorBody, lambda_http::api::EventSchema, lambda_http::api::EventsSchema))
)]
pub struct IngestApi;

/// [`IngestApi`]'s document, to merge into the serving layer's under `up`.
pub fn ingest_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    IngestApi::openapi()
}

/// `POST /v1/events` and `GET /v1/status` alone, to merge into another service's routes (the serving address of
/// `up`, so that a client needs one base URL).
pub fn ingest_routes(speed: Arc<Speed>) -> Router {
    Router::new().route("/v1/events", post(events)).route("/v1/status", get(status)).with_state(speed)
}

#[utoipa::path(get, path = "/v1/status", tag = "speed",
    responses((status = 200, description = "The speed layer's counters, log, checkpoints, learners, windows, input rates, freeze and retraining.", body = crate::stages::Status)))]
async fn status(State(speed): State<Arc<Speed>>) -> Response {
    Json(json!(*speed.status())).into_response()
}

#[utoipa::path(post, path = "/v1/events", tag = "speed",
    request_body(description = "One event, a JSON array of events, or NDJSON (one event per line).",
        content(
            (lambda_http::api::EventsSchema = "application/json"),
            (String = "application/x-ndjson"),
        )),
    responses(
        (status = 200, description = "The accepted events are durable; rejected records (with their line and reason) went to the dead letters.", body = crate::IngestReport),
        (status = 400, description = "Not JSON or NDJSON, or not UTF-8.", body = lambda_http::api::ErrorBody),
        (status = 413, description = "A body over `speed.max_body_bytes`.", body = lambda_http::api::ErrorBody),
        (status = 422, description = "Every record was rejected: `error` names the first reason, the rest is the ingest report.", body = lambda_http::api::ErrorBody),
        (status = 503, description = "The learner is behind or the disk cannot take the events; nothing of the request was accepted. Retry after `Retry-After` seconds.", body = lambda_http::api::ErrorBody),
    ))]
async fn events(State(speed): State<Arc<Speed>>, body: Body) -> Response {
    let text = match read_body(body, speed.spec().speed.max_body_bytes).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let items = match speed.parse(text).await {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e) => return failure(&e),
    };
    match speed.ingest(items).await {
        Ok(report) => {
            let status = if report.accepted == 0 && report.duplicates == 0 && !report.rejected.is_empty() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            let mut body = json!(report);
            if status != StatusCode::OK {
                let first =
                    report.rejected.first().map(|r| format!("line {}: {}", r.line, r.error)).unwrap_or_default();
                body["error"] = json!(format!("every record was rejected; first: {first}"));
            }
            (status, Json(body)).into_response()
        }
        Err(e) => failure(&e),
    }
}
