//! The lambda-ml serving layer: an axum service that answers predictions and per-key queries.
//!
//! It answers from one [`LiveState`]: a batch side (model and batch view of one published version) and, when the
//! speed layer runs, the speed side built on that same version (the realtime view of every event after its
//! watermark, and the incremental model). The pair is swapped as a whole, so `batch ⊕ realtime` never mixes
//! versions: while the speed layer has not yet adopted a new batch version, the serving layer stays on the version
//! the speed layer is built on, and moves when the speed layer does (or at once when the new version already
//! covers every event the speed layer holds).
//!
//! In one process (`lambda-ml up`) the speed layer hands over its pair and updates it in place, so an event is
//! visible as soon as its ingest call has answered. Otherwise [`Serving::reload`] follows the speed layer's
//! checkpoint files and the registry, applying the realtime deltas in place. Every answer carries `speed_seq`, the
//! ingestion sequence number through which it is exact; a reader can ask for `?min_seq=N` to read its own writes.

pub mod api;
pub mod v2;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lambda_core::schema::Mode;
use lambda_core::spec::Spec;
use lambda_models::blend::{Weights, BATCH, BLEND, NEGLIGIBLE, SPEED};
use lambda_models::model::{argmax, LinearModel, Model, Prediction};
use lambda_models::online::OnlineLearner;
use lambda_stores::checkpoint::{self, BatchSide, Checkpoint, Live, LiveState, SpeedModel, SpeedSide};
use lambda_stores::registry::Registry;
use lambda_stores::views::{view_json, KeyView};
use serde::Deserialize;
use serde_json::{json, Value};

/// Result with the serving [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while loading state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared core.
    #[error(transparent)]
    Core(#[from] lambda_core::Error),
}

/// What the follower has read of the speed layer's files.
#[derive(Debug, Default)]
struct Followed {
    stamp: Option<(u64, u64, std::time::SystemTime)>,
    checkpoint: Option<Checkpoint>,
    registry: Option<String>,
}

/// Everything the handlers read.
pub struct Serving {
    spec: Spec,
    live: Arc<Live>,
    follow: bool,
    followed: Mutex<Followed>,
}

/// How often a serving layer in its own process looks for a new checkpoint of the speed layer.
pub const SPEED_POLL: Duration = Duration::from_millis(50);

impl Serving {
    /// A service for `spec`. With `live`, the pair comes from the speed layer in the same process; without, the
    /// service follows the registry and the speed layer's checkpoint files itself ([`Serving::reload`]).
    pub fn new(spec: Spec, live: Option<Arc<Live>>) -> Arc<Serving> {
        let follow = live.is_none();
        Arc::new(Serving {
            spec,
            live: live.unwrap_or_else(|| Arc::new(Live::empty())),
            follow,
            followed: Mutex::new(Followed::default()),
        })
    }

    /// The pair now served.
    pub fn state(&self) -> Option<Arc<LiveState>> {
        self.live.load_full()
    }

    /// Brings the served pair up to date with the registry and the speed layer's checkpoint. Returns whether
    /// anything changed. In one process (`up`) the speed layer does this and only a batch-only start is loaded.
    pub fn reload(&self) -> Result<bool> {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.follow_files(&mut f);
        if r.is_err() {
            // Read everything again at the next poll, whether or not the files change meanwhile.
            *f = Followed::default();
        }
        r
    }

    fn follow_files(&self, f: &mut Followed) -> Result<bool> {
        let registry = Registry::open(&self.spec.paths.registry);
        let current = registry.current_version()?;
        if !self.follow {
            if self.live.load().is_none() {
                if let Some(v) = &current {
                    self.live.store(Some(Arc::new(LiveState {
                        batch: Arc::new(BatchSide::load(&self.spec, v)?),
                        speed: None,
                    })));
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let state_dir = &self.spec.paths.state;
        let stamp = checkpoint::stamp(state_dir);
        let speed_changed = stamp != f.stamp;
        if speed_changed {
            f.checkpoint = checkpoint::read_reusing(state_dir, f.checkpoint.as_ref())?;
            f.stamp = stamp;
        }
        if !speed_changed && current == f.registry {
            return Ok(false);
        }
        f.registry = current.clone();
        let served = self.live.load_full();
        let batch_for = |version: &str| -> Result<Arc<BatchSide>> {
            match served.as_ref().filter(|s| s.batch.version() == version) {
                Some(s) => Ok(s.batch.clone()),
                None => Ok(Arc::new(BatchSide::load(&self.spec, version)?)),
            }
        };
        let Some(c) = f.checkpoint.clone() else {
            // No speed layer yet: the registry's version alone.
            let Some(v) = current else { return Ok(false) };
            if served.as_ref().is_some_and(|s| s.batch.version() == v && s.speed.is_none()) {
                return Ok(false);
            }
            self.live.store(Some(Arc::new(LiveState { batch: batch_for(&v)?, speed: None })));
            tracing::info!(version = %v, "serving batch model");
            return Ok(true);
        };
        // A newer (or rolled-back) version the speed layer has not adopted yet can be served alone only when it
        // covers every event the speed layer holds; else stay on the speed layer's version.
        if let Some(v) = current.as_ref().filter(|v| **v != c.base_version) {
            let m = registry.load(v)?.manifest;
            if m.watermark >= c.last_seq {
                if served.as_ref().is_some_and(|s| s.batch.version() == v && s.speed.is_none()) {
                    return Ok(false);
                }
                self.live.store(Some(Arc::new(LiveState { batch: batch_for(v)?, speed: None })));
                tracing::info!(version = %v, "serving batch model (it covers every speed-layer event)");
                return Ok(true);
            }
        }
        let same = served
            .as_ref()
            .and_then(|s| s.speed.clone())
            .filter(|sp| sp.generation == c.generation && sp.base_version == c.base_version);
        if let Some(sp) = same {
            if sp.seq() >= c.last_seq && served.as_ref().is_some_and(|s| s.batch.version() == c.base_version) {
                return Ok(false);
            }
            match apply_deltas(state_dir, &c, &sp) {
                Ok(()) => {
                    freshness(&c);
                    return Ok(true);
                }
                Err(e) => tracing::info!(error = %e, "reloading the speed layer's state whole"),
            }
        }
        let batch = batch_for(&c.base_version)?;
        let speed = Arc::new(SpeedSide::load(&self.spec, state_dir, &c)?);
        tracing::info!(version = %c.base_version, generation = c.generation, keys = speed.realtime.len(), seq = c.last_seq, "serving the speed layer's state");
        self.live.store(Some(Arc::new(LiveState { batch, speed: Some(speed) })));
        freshness(&c);
        Ok(true)
    }

    /// Sets what this service serves in the Prometheus metrics (see `lambda_http::telemetry`).
    pub fn collect_metrics(&self) {
        use lambda_http::telemetry as t;
        let Some(st) = self.state() else { return };
        t::set_model_version("serving", st.batch.version());
        metrics::gauge!("lambda_serving_speed_seq").set(st.seq() as f64);
        if let Some(sp) = &st.speed {
            let m = sp.model.load_full();
            let stats = &m.stats;
            let mean = |sum: f64| (stats.labelled > 0).then(|| sum / stats.labelled as f64);
            t::set_prequential_loss("speed", mean(stats.speed_loss_sum));
            t::set_prequential_loss("batch", mean(stats.batch_loss_sum));
            for l in &m.served.statuses {
                t::set_prequential_loss(&l.name, l.prequential_loss);
            }
            t::set_windows(&m.windows);
            metrics::gauge!("lambda_speed_frozen").set(if m.frozen.is_some() { 1.0 } else { 0.0 });
        }
    }

    /// Whether a model is loaded.
    pub fn ready(&self) -> bool {
        self.live.load().is_some()
    }
}

/// Records how long after the speed layer wrote a checkpoint its events became visible here: an event's freshness
/// (accepted → answered by this process) is at most this plus `speed.checkpoint_interval`. In one process (`up`)
/// events are visible when their ingest call answers, and nothing is recorded.
fn freshness(c: &Checkpoint) {
    let seconds = (lambda_stores::registry::now_millis() - c.written_ms).max(0) as f64 / 1000.0;
    metrics::histogram!("lambda_freshness_seconds").record(seconds);
}

/// Applies the view files newer than what `side` holds, then the model: each shard stays exact at every moment.
fn apply_deltas(state: &std::path::Path, c: &Checkpoint, side: &SpeedSide) -> Result<()> {
    let seq = side.seq();
    for f in c.views.iter().filter(|v| v.seq > seq) {
        checkpoint::read_view_file(state, f, &side.realtime)?;
    }
    side.realtime.set_applied(c.last_seq);
    side.model.store(Arc::new(SpeedModel::of(c)));
    Ok(())
}

/// Follows the registry and the speed layer's checkpoints until the process ends.
pub async fn reload_loop(serving: Arc<Serving>) {
    let mut every = tokio::time::interval(SPEED_POLL.min(serving.spec.reload_interval));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let s = serving.clone();
        match tokio::task::spawn_blocking(move || s.reload()).await {
            Ok(Ok(_)) => failing = false,
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "reload failed; serving what is loaded");
                }
                failing = true;
            }
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

use lambda_http::error;

/// The service's routes.
pub fn router(serving: Arc<Serving>) -> Router {
    router_with(serving, None)
}

/// The service's routes, with `more` routes (and their OpenAPI description) answering on the same address: the
/// speed layer's ingest under `up`.
pub fn router_with(serving: Arc<Serving>, more: Option<(Router, utoipa::openapi::OpenApi)>) -> Router {
    use utoipa::OpenApi;
    lambda_http::telemetry::register(&serving, Serving::collect_metrics);
    let mut doc = api::ServingApi::openapi();
    let spec = serving.spec.clone();
    let mut routes = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/views/{key}", get(view))
        .route("/v1/models", get(models))
        .route("/health/live", get(lambda_http::api::live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(lambda_http::api::metrics))
        .merge(v2::routes())
        .layer(axum::middleware::from_fn(|r, n| lambda_http::telemetry::track("serving", r, n)))
        .with_state(serving);
    if let Some((router, more_doc)) = more {
        routes = routes.merge(router);
        doc.merge(more_doc);
    }
    let doc = lambda_http::api::document(doc, &spec, "serving");
    routes
        .route("/openapi.json", get(lambda_http::api::openapi_json))
        .layer(axum::Extension(Arc::new(doc)))
        .layer(axum::middleware::from_fn(lambda_http::api::json_errors))
}

#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "A model is loaded; `degraded` with the alerts while a drift or a freeze is raised.", body = api::Ready),
        (status = 503, description = "No model loaded yet.", body = lambda_http::api::ErrorBody),
    ))]
async fn ready(State(s): State<Arc<Serving>>) -> Response {
    match s.state() {
        Some(st) => {
            // A drift on a model's live errors makes the service degraded, never not ready: it still answers.
            let alerts = st.speed.as_ref().map(|sp| sp.model.load().alerts()).unwrap_or_default();
            let status = if alerts.is_empty() { "ready" } else { "degraded" };
            Json(
                json!({"status": status, "model_version": st.batch.version(), "speed_seq": st.seq(), "alerts": alerts}),
            )
            .into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet"),
    }
}

/// `?min_seq=N`: answer only from state that has applied event `N`; `?model=M`: which model answers a prediction
/// (`serving.model` by default).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadParams {
    /// Answer only once the served state has applied this ingestion sequence number (read your own writes);
    /// 409 when it has not within `serving.min_seq_wait`.
    min_seq: Option<u64>,
    /// Which model answers: `blend`, `batch`, `speed` or an online learner of `speed.learners`
    /// (`serving.model` by default).
    model: Option<String>,
}

/// What a model can answer with.
enum Answerer<'a> {
    Batch(&'a Model),
    Speed(&'a LinearModel),
    Learner(&'a OnlineLearner),
}

impl Answerer<'_> {
    fn predict(&self, x: &[f64]) -> Prediction {
        match self {
            Answerer::Batch(m) => m.predict(x),
            Answerer::Speed(m) => m.predict(x),
            Answerer::Learner(m) => m.predict(x),
        }
    }
}

/// One model of a prediction's answer, with its weight in it.
struct Component<'a> {
    name: String,
    family: &'a str,
    version: &'a str,
    weight: f64,
    window_loss: Option<f64>,
    /// Events it learned online (the batch model: none).
    learned: Option<u64>,
    model: Answerer<'a>,
}

impl Component<'_> {
    fn describe(&self) -> Value {
        json!({"name": self.name, "family": self.family, "version": self.version, "weight": self.weight,
               "window_loss": self.window_loss, "learned": self.learned})
    }
}

/// The models that answer a prediction when `asked` answers, with their weights, and the name of what answers:
/// the blend's weights as the speed layer last measured them, or all on the one model asked for. Without a speed
/// layer (or before it has the model asked for) the batch champion answers alone.
fn components<'a>(st: &'a LiveState, speed: Option<&'a SpeedModel>, asked: &str) -> (String, Vec<Component<'a>>) {
    let batch = &st.batch.published;
    let version = batch.manifest.version.as_str();
    let champion = &batch.artifact.model;
    let mut out = vec![Component {
        name: BATCH.into(),
        family: champion.family(),
        version,
        weight: 0.0,
        window_loss: None,
        learned: None,
        model: Answerer::Batch(champion),
    }];
    if let Some(m) = speed {
        // The blend weighs the copies its weights were measured with; the linear model asked for by name answers
        // as it is now.
        let served = &m.served;
        let (linear, updates) =
            if asked == BLEND { (&served.at.linear, served.at.updates) } else { (&m.model, m.updates) };
        out.push(Component {
            name: SPEED.into(),
            family: linear.family_name(),
            version,
            weight: 0.0,
            window_loss: None,
            learned: Some(updates),
            model: Answerer::Speed(linear),
        });
        for l in served.learners.iter() {
            out.push(Component {
                name: l.name().into(),
                family: l.name(),
                version,
                weight: 0.0,
                window_loss: None,
                learned: served.statuses.iter().find(|s| s.name == l.name()).map(|s| s.labelled),
                model: Answerer::Learner(l),
            });
        }
        let weights = &served.at.weights;
        for c in out.iter_mut() {
            if let Some(i) = weights.names.iter().position(|n| *n == c.name) {
                c.window_loss = weights.losses.get(i).copied().flatten();
                if asked == BLEND {
                    c.weight = weights.weights[i];
                }
            }
        }
    }
    if asked != BLEND {
        out.iter_mut().filter(|c| c.name == asked).for_each(|c| c.weight = 1.0);
    }
    let total: f64 = out.iter().map(|c| c.weight).sum();
    if total >= NEGLIGIBLE {
        out.iter_mut().for_each(|c| c.weight /= total);
        return (asked.to_string(), out);
    }
    out.iter_mut().for_each(|c| c.weight = if c.name == BATCH { 1.0 } else { 0.0 });
    (BATCH.to_string(), out)
}

/// Waits (up to `serving.min_seq_wait`) until `ok` holds for the served state, or answers 409.
async fn wait_for<T>(
    s: &Serving,
    min_seq: Option<u64>,
    mut read: impl FnMut(&Arc<LiveState>) -> (T, u64),
) -> std::result::Result<(Arc<LiveState>, T, u64), Response> {
    let deadline = Instant::now() + s.spec.min_seq_wait;
    loop {
        let Some(st) = s.state() else {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet"));
        };
        let (value, seq) = read(&st);
        match min_seq {
            Some(n) if seq < n => {
                if Instant::now() >= deadline {
                    let mut r = error(
                        StatusCode::CONFLICT,
                        format!("the served state has reached speed_seq {seq}, not min_seq {n}; retry later"),
                    );
                    if let Ok(v) = axum::http::HeaderValue::from_str(&seq.to_string()) {
                        r.headers_mut().insert("x-speed-seq", v);
                    }
                    return Err(r);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            _ => return Ok((st, value, seq)),
        }
    }
}

fn prediction_json(classes: &[String], p: &Prediction) -> Value {
    match p {
        Prediction::Value(v) => json!({"value": v}),
        Prediction::Probabilities(ps) => {
            let probs: serde_json::Map<String, Value> =
                classes.iter().cloned().zip(ps.iter().map(|v| json!(v))).collect();
            json!({"label": classes.get(argmax(ps)), "probabilities": probs})
        }
    }
}

#[utoipa::path(post, path = "/v1/predict", tag = "v1", params(ReadParams),
    request_body(content = ref("#/components/schemas/PredictRequest"), content_type = "application/json",
        description = "One record (the answer has `prediction`), an array of records or `{\"records\": [...]}` (the answer has `predictions`)."),
    responses(
        (status = 200, description = "The prediction, the model that answered and every model's weight.", body = api::PredictResponse),
        (status = 400, description = "Not JSON, not a record or an array of them, or an unknown model.", body = lambda_http::api::ErrorBody),
        (status = 409, description = "The served state has not reached `min_seq` within `serving.min_seq_wait`.", body = lambda_http::api::ErrorBody),
        (status = 413, description = "A body over `serving.max_body_bytes` or more than `serving.max_batch` records.", body = lambda_http::api::ErrorBody),
        (status = 422, description = "A record does not fit the pipeline's schema, or a value lies far outside the range seen in history; the error names the field.", body = lambda_http::api::ErrorBody),
        (status = 503, description = "No model loaded yet.", body = lambda_http::api::ErrorBody),
    ))]
async fn predict(State(s): State<Arc<Serving>>, Query(q): Query<ReadParams>, body: Body) -> Response {
    if s.state().is_none() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet");
    }
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
    let a = match answer(&s, &events, q.model.as_deref(), q.min_seq).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let predictions: Vec<Value> = a.predictions.iter().map(|p| prediction_json(&a.classes, p)).collect();
    let mut out = json!({
        "model": a.model,
        "model_version": a.version,
        "model_family": a.family,
        "speed_update": a.speed_update,
        "speed_seq": a.seq,
        "components": a.components,
    });
    if single {
        out["prediction"] = predictions.into_iter().next().unwrap_or(Value::Null);
    } else {
        out["predictions"] = Value::Array(predictions);
    }
    Json(out).into_response()
}

/// The answer to one prediction request: which model answered, and a prediction per event.
pub(crate) struct Answer {
    /// `blend`, or the one model that answered.
    pub model: String,
    /// Its family (`blend` for the blend).
    pub family: String,
    /// The batch version answered with.
    pub version: String,
    /// The online updates of the linear model when it took part.
    pub speed_update: Option<u64>,
    /// The ingestion sequence number through which the answer is exact.
    pub seq: u64,
    /// Each model's name, family, version, weight, window loss and events learned.
    pub components: Vec<Value>,
    /// Class labels, in the order of the probabilities (empty for regression).
    pub classes: Vec<String>,
    /// One per event.
    pub predictions: Vec<Prediction>,
}

/// Predicts `events` with `model` (the spec's `serving.model` when `None`), once the served state has applied
/// `min_seq`: the one path of `/v1/predict` and the Open Inference Protocol's `infer`.
pub(crate) async fn answer(
    s: &Arc<Serving>,
    events: &[lambda_core::schema::Event],
    model: Option<&str>,
    min_seq: Option<u64>,
) -> std::result::Result<Answer, Response> {
    let asked = model.unwrap_or(&s.spec.serving.model);
    let known: Vec<&str> =
        [BLEND, BATCH, SPEED].into_iter().chain(s.spec.speed.learners.iter().map(String::as_str)).collect();
    if !known.contains(&asked) {
        return Err(error(StatusCode::BAD_REQUEST, format!("unknown model {asked:?}; it can be {}", known.join(", "))));
    }
    let (st, speed_model, seq) = wait_for(s, min_seq, |st| match &st.speed {
        Some(sp) => {
            let m = sp.model.load_full();
            let seq = m.seq;
            (Some(m), seq)
        }
        None => (None, st.seq()),
    })
    .await?;
    let batch = &st.batch.published;
    let encoder = &batch.artifact.encoder;
    let (answered, components) = components(&st, speed_model.as_deref(), asked);
    let weights = Weights {
        names: components.iter().map(|c| c.name.clone()).collect(),
        weights: components.iter().map(|c| c.weight).collect(),
        events: 0,
        losses: Vec::new(),
    };
    // A value far past anything in history has no answer the model can stand behind (and at 1e266 the scores
    // overflow to NaN): refused as the speed layer refuses such an event.
    for (i, e) in events.iter().enumerate() {
        if let Err(rej) = encoder.check_ranges(e) {
            let at = if events.len() == 1 { String::new() } else { format!("record {i}: ") };
            return Err(error(StatusCode::UNPROCESSABLE_ENTITY, format!("{at}{rej}")));
        }
    }
    let mut predictions = Vec::with_capacity(events.len());
    for e in events {
        let x = encoder.encode(e);
        let each: Vec<Option<Prediction>> =
            components.iter().map(|c| (c.weight >= NEGLIGIBLE).then(|| c.model.predict(&x))).collect();
        let present: Vec<Option<&Prediction>> = each.iter().map(Option::as_ref).collect();
        match weights.combine(&present) {
            Some(p) => predictions.push(p),
            None => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "no model could answer")),
        }
    }
    let speed_update = components.iter().find(|c| c.name == SPEED && c.weight >= NEGLIGIBLE).and(speed_model.as_ref());
    let family = if answered == BLEND {
        BLEND.to_string()
    } else {
        components.iter().find(|c| c.name == answered).map_or("", |c| c.family).to_string()
    };
    Ok(Answer {
        model: answered.to_string(),
        family,
        version: batch.manifest.version.clone(),
        speed_update: speed_update.map(|m| m.updates),
        seq,
        components: components.iter().map(|c| c.describe()).collect(),
        classes: batch.artifact.model.classes().to_vec(),
        predictions,
    })
}

#[utoipa::path(get, path = "/v1/views/{key}", tag = "v1",
    params(("key" = String, Path, description = "The entity key."), ("min_seq" = Option<u64>, Query, description = "Answer only once the served state has applied this ingestion sequence number.")),
    responses(
        (status = 200, description = "The key's batch view merged with its realtime view.", body = api::View),
        (status = 400, description = "An unreadable query.", body = lambda_http::api::ErrorBody),
        (status = 404, description = "No event of this key.", body = lambda_http::api::ErrorBody),
        (status = 409, description = "The served state has not reached `min_seq` in time.", body = lambda_http::api::ErrorBody),
        (status = 503, description = "No model loaded yet.", body = lambda_http::api::ErrorBody),
    ))]
async fn view(State(s): State<Arc<Serving>>, Path(key): Path<String>, Query(q): Query<ReadParams>) -> Response {
    let (st, realtime, seq) = match wait_for(&s, q.min_seq, |st| match &st.speed {
        Some(sp) => sp.realtime.get(&key),
        None => (None, st.seq()),
    })
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let batch = &st.batch;
    let mut merged: Option<KeyView> = batch.view.get(&key);
    if let Some(rt) = &realtime {
        match &mut merged {
            Some(v) => v.merge(rt),
            None => merged = Some(rt.clone()),
        }
    }
    match merged {
        Some(v) => {
            let mut doc = view_json(&batch.view.features, &key, &v);
            doc["watermark"] = json!(batch.published.manifest.watermark);
            doc["batch_version"] = json!(batch.version());
            doc["speed_seq"] = json!(seq);
            doc["realtime_count"] = json!(realtime.map(|r| r.count).unwrap_or(0));
            Json(doc).into_response()
        }
        None => {
            let mut r = error(StatusCode::NOT_FOUND, format!("no events for key {key:?}"));
            if let Ok(v) = axum::http::HeaderValue::from_str(&seq.to_string()) {
                r.headers_mut().insert("x-speed-seq", v);
            }
            r
        }
    }
}

#[utoipa::path(get, path = "/v1/models", tag = "v1",
    responses(
        (status = 200, description = "The served version, every published version, and the speed layer's models, drift detectors, blend, freeze and retraining.", body = api::Models),
        (status = 500, description = "The registry could not be read.", body = lambda_http::api::ErrorBody),
    ))]
async fn models(State(s): State<Arc<Serving>>) -> Response {
    let registry = Registry::open(&s.spec.paths.registry);
    let listed = tokio::task::spawn_blocking(move || {
        Ok::<_, lambda_core::Error>((registry.manifests()?, registry.current_version()?))
    })
    .await;
    let (manifests, registry_current) = match listed {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let st = s.state();
    let current = st.as_ref().map(|st| st.batch.published.manifest.clone());
    let speed = st.as_ref().and_then(|st| st.speed.clone()).map(|sp| {
        let m = sp.model.load_full();
        let stats = &m.stats;
        let mean = |sum: f64| if stats.labelled > 0 { Some(sum / stats.labelled as f64) } else { None };
        json!({"base_version": sp.base_version, "generation": sp.generation, "updates": m.updates, "last_seq": sp.seq(),
               "keys": sp.realtime.len(), "accepted": stats.accepted, "rejected": stats.rejected, "duplicates": stats.duplicates,
               "labelled": stats.labelled, "refused_updates": stats.refused_updates,
               "prequential_loss": {"speed": mean(stats.speed_loss_sum), "batch": mean(stats.batch_loss_sum)},
               "learners": m.served.statuses, "windows": m.windows, "blend": m.served.at.weights,
               "blend_seq": m.served.at.seq, "frozen": m.frozen,
               "retrain": m.retrain})
    });
    Json(json!({
        "current": current.as_ref().map(|m| m.version.clone()),
        "registry_current": registry_current,
        "manifest": current,
        "speed_seq": st.as_ref().map(|st| st.seq()),
        "versions": manifests.iter().map(|m| json!({"version": m.version, "created": m.created, "watermark": m.watermark, "metrics": m.metrics})).collect::<Vec<_>>(),
        "speed": speed,
    }))
    .into_response()
}
