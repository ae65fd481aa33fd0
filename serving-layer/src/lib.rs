//! The lambda-ml serving layer: an axum service that answers predictions and per-key queries.
//!
//! It holds the current batch model and batch view (from the registry) and the speed layer's newest snapshot
//! (incremental model and realtime buckets), each behind an [`ArcSwapOption`] so that requests never wait for a
//! reload. A background task polls the registry and the speed layer's checkpoints; in the one-process quickstart the
//! speed layer hands its snapshots over directly through a [`Live`] slot.
//!
//! Predictions use the speed model when it was warm-started from the batch model being served (it has learned
//! everything since), else the batch model. Views answer `batch ⊕ realtime`: the batch view plus the speed buckets
//! strictly after the batch watermark.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lambda_core::model::{LinearModel, Prediction};
use lambda_core::registry::{Published, Registry};
use lambda_core::schema::Mode;
use lambda_core::snapshot::{self, Live, SpeedSnapshot};
use lambda_core::spec::Spec;
use lambda_core::views::{batch_view_path, ViewTable};
use serde_json::{json, Value};

/// The batch side: a published model and its view.
#[derive(Debug)]
pub struct BatchState {
    /// Model, encoder and manifest.
    pub published: Published,
    /// The batch view of that version.
    pub view: ViewTable,
}

/// Everything the handlers read.
pub struct Serving {
    spec: Spec,
    batch: ArcSwapOption<BatchState>,
    speed: ArcSwapOption<SpeedSnapshot>,
    /// Name of the checkpoint `speed` was loaded from, so that an unchanged checkpoint is not read again.
    speed_version: ArcSwapOption<String>,
    live: Option<Arc<Live>>,
}

/// Result with the serving [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while loading state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared core.
    #[error(transparent)]
    Core(#[from] lambda_core::Error),
}

impl Serving {
    /// A service for `spec`. With `live`, speed snapshots come from that slot instead of the state folder.
    pub fn new(spec: Spec, live: Option<Arc<Live>>) -> Arc<Serving> {
        Arc::new(Serving {
            spec,
            batch: ArcSwapOption::empty(),
            speed: ArcSwapOption::empty(),
            speed_version: ArcSwapOption::empty(),
            live,
        })
    }

    /// Loads a newer batch model or speed snapshot if there is one. Returns whether anything changed.
    pub fn reload(&self) -> Result<bool> {
        let mut changed = false;
        let registry = Registry::open(&self.spec.paths.registry);
        let current = registry.current_version()?;
        let loaded = self.batch.load().as_ref().map(|b| b.published.manifest.version.clone());
        if current.is_some() && current != loaded {
            if let Some(published) = registry.load_current(&self.spec)? {
                let path = batch_view_path(&self.spec, &published.manifest.version);
                let view = ViewTable::read_parquet(&self.spec, &path)?;
                tracing::info!(version = %published.manifest.version, keys = view.keys.len(), "serving batch model");
                self.batch.store(Some(Arc::new(BatchState { published, view })));
                changed = true;
            }
        }
        if self.live.is_none() {
            let current = snapshot::current(&self.spec.paths.state)?;
            if let Some(version) = current {
                if self.speed_version.load().as_deref() != Some(&version) {
                    let snap = snapshot::load(&self.spec.paths.state, &version)?;
                    self.speed.store(Some(Arc::new(snap)));
                    self.speed_version.store(Some(Arc::new(version)));
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    fn speed(&self) -> Option<Arc<SpeedSnapshot>> {
        match &self.live {
            Some(live) => live.load_full(),
            None => self.speed.load_full(),
        }
    }

    /// Whether a model is loaded.
    pub fn ready(&self) -> bool {
        self.batch.load().is_some()
    }
}

/// Polls for new versions every `reload_interval` until the process ends.
pub async fn reload_loop(serving: Arc<Serving>) {
    let mut every = tokio::time::interval(serving.spec.reload_interval);
    loop {
        every.tick().await;
        let s = serving.clone();
        match tokio::task::spawn_blocking(move || s.reload()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reload failed; serving what is loaded"),
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The service's routes.
pub fn router(serving: Arc<Serving>) -> Router {
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/views/{key}", get(view))
        .route("/v1/models", get(models))
        .route("/health/live", get(|| async { Json(json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .with_state(serving)
}

async fn ready(State(s): State<Arc<Serving>>) -> Response {
    match s.batch.load().as_ref() {
        Some(b) => Json(json!({"status": "ready", "model_version": b.published.manifest.version})).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet"),
    }
}

fn prediction_json(model: &LinearModel, p: &Prediction) -> Value {
    match p {
        Prediction::Value(v) => json!({"value": v}),
        Prediction::Probabilities(ps) => {
            let probs: serde_json::Map<String, Value> =
                model.classes.iter().cloned().zip(ps.iter().map(|v| json!(v))).collect();
            json!({"label": model.label(p), "probabilities": probs})
        }
    }
}

async fn predict(State(s): State<Arc<Serving>>, body: Body) -> Response {
    let Some(batch) = s.batch.load_full() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet");
    };
    let limit = s.spec.serving.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"));
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let (records, single) = match value {
        Value::Array(items) => (items, false),
        Value::Object(mut o) if o.len() == 1 && o.get("records").is_some_and(Value::is_array) => {
            match o.remove("records") {
                Some(Value::Array(items)) => (items, false),
                _ => (Vec::new(), false),
            }
        }
        other @ Value::Object(_) => (vec![other], true),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected a JSON object or an array of objects, got {other}"),
            )
        }
    };
    if records.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no records to predict");
    }
    if records.len() > s.spec.serving.max_batch {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} records; at most {} per request", records.len(), s.spec.serving.max_batch),
        );
    }
    let mut events = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        match s.spec.parse_record(r, Mode::Predict) {
            Ok(e) => events.push(e),
            Err(rej) if single => return error(StatusCode::UNPROCESSABLE_ENTITY, rej.to_string()),
            Err(rej) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("record {i}: {rej}")),
        }
    }
    let version = &batch.published.manifest.version;
    let speed = s.speed().filter(|sp| &sp.base_version == version);
    let (artifact, speed_update, speed_seq) = match &speed {
        Some(sp) => (sp.artifact.as_ref(), Some(sp.updates), Some(sp.last_seq)),
        None => (&batch.published.artifact, None, None),
    };
    let predictions: Vec<Value> =
        events.iter().map(|e| prediction_json(&artifact.model, &artifact.predict(e))).collect();
    let mut out = json!({"model_version": version, "speed_update": speed_update, "speed_seq": speed_seq});
    if single {
        out["prediction"] = predictions.into_iter().next().unwrap_or(Value::Null);
    } else {
        out["predictions"] = Value::Array(predictions);
    }
    Json(out).into_response()
}

async fn view(State(s): State<Arc<Serving>>, Path(key): Path<String>) -> Response {
    let Some(batch) = s.batch.load_full() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet");
    };
    let watermark = batch.published.manifest.watermark;
    let mut table = ViewTable {
        features: batch.view.features.clone(),
        feature_index: batch.view.feature_index.clone(),
        keys: Default::default(),
    };
    if let Some(v) = batch.view.keys.get(&key) {
        table.keys.insert(key.clone(), v.clone());
    }
    let speed = s.speed();
    let realtime = speed.as_ref().and_then(|sp| sp.key_view(&key, watermark));
    if let Some(rt) = &realtime {
        match table.keys.get_mut(&key) {
            Some(v) => v.merge(rt),
            None => {
                table.keys.insert(key.clone(), rt.clone());
            }
        }
    }
    match table.key_json(&key) {
        Some(mut doc) => {
            doc["watermark"] = json!(watermark);
            doc["batch_version"] = json!(batch.published.manifest.version);
            doc["speed_seq"] = json!(speed.as_ref().map(|sp| sp.last_seq));
            doc["realtime_count"] = json!(realtime.map(|r| r.count).unwrap_or(0));
            Json(doc).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no events for key {key:?}")),
    }
}

async fn models(State(s): State<Arc<Serving>>) -> Response {
    let registry = Registry::open(&s.spec.paths.registry);
    let spec_manifests = tokio::task::spawn_blocking(move || registry.manifests()).await;
    let manifests = match spec_manifests {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let current = s.batch.load().as_ref().map(|b| b.published.manifest.clone());
    let speed = s.speed().map(|sp| {
        let mean = |sum: f64| if sp.stats.labelled > 0 { Some(sum / sp.stats.labelled as f64) } else { None };
        json!({"base_version": sp.base_version, "updates": sp.updates, "last_seq": sp.last_seq, "accepted": sp.stats.accepted,
               "rejected": sp.stats.rejected, "duplicates": sp.stats.duplicates, "labelled": sp.stats.labelled,
               "prequential_loss": {"speed": mean(sp.stats.speed_loss_sum), "batch": mean(sp.stats.batch_loss_sum)}})
    });
    Json(json!({
        "current": current.as_ref().map(|m| m.version.clone()),
        "manifest": current,
        "versions": manifests.iter().map(|m| json!({"version": m.version, "created": m.created, "watermark": m.watermark, "metrics": m.metrics})).collect::<Vec<_>>(),
        "speed": speed,
    }))
    .into_response()
}
