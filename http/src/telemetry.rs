//! Prometheus metrics (`GET /metrics` on the serving and speed addresses), through the `metrics` facade and its
//! Prometheus exporter without the exporter's own listener: each service renders the text on its own routes.
//!
//! What happens (requests, checkpoints, batch models loaded) is recorded where it happens. What is a state (counters
//! the speed layer keeps in its checkpoint, model versions, windowed metrics, drift detectors) is set by collectors
//! that every running service registers and that run before each rendering, so that two services in one process
//! (`up`) show the same, current figures on either address.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use lambda_models::drift::DriftState;
use lambda_models::prequential::DetectorStatus;
use lambda_stores::checkpoint::WindowStatuses;

/// Upper bounds (seconds) of the latency histograms: 100 µs to 10 s.
const SECONDS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

type Collector = Box<dyn Fn() -> bool + Send + Sync>;

fn collectors() -> &'static Mutex<Vec<Collector>> {
    static C: OnceLock<Mutex<Vec<Collector>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Vec::new()))
}

/// The process's Prometheus recorder, installed on first use. When another recorder was installed first (a test
/// harness, an embedding program), this one still renders what is recorded through it: nothing, and the state
/// the collectors set.
pub fn handle() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("lambda_http_requests_total", "HTTP requests answered, per service, method, route and status");
    describe_histogram!(
        "lambda_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, per service, method, route and status"
    );
    describe_counter!("lambda_speed_events_total", "Events the speed layer took in, per outcome");
    describe_gauge!("lambda_speed_last_seq", "Highest ingestion sequence number the speed layer applied");
    describe_gauge!("lambda_speed_archived_through", "Highest sequence number archived into the master dataset");
    describe_gauge!("lambda_speed_learner_queue", "Requests waiting for the learner thread (its lag)");
    describe_counter!("lambda_speed_checkpoints_total", "Checkpoints written since the speed layer started");
    describe_histogram!(
        "lambda_speed_checkpoint_duration_seconds",
        Unit::Seconds,
        "Time to write a checkpoint (views, model, learners, manifest, syncs)"
    );
    describe_gauge!("lambda_speed_log_bytes", "Bytes of the speed layer's log on disk");
    describe_gauge!("lambda_speed_realtime_keys", "Keys in the realtime view");
    describe_gauge!("lambda_speed_frozen", "1 while bad input keeps online learning frozen");
    describe_counter!("lambda_speed_freezes_total", "Freezes since the speed layer's state was created");
    describe_gauge!("lambda_speed_resident_bytes", "Resident memory of the process");
    describe_gauge!("lambda_serving_speed_seq", "Sequence number through which the serving layer's answers are exact");
    describe_histogram!(
        "lambda_freshness_seconds",
        Unit::Seconds,
        "Checkpoint written by the speed layer to visible in this serving process (add speed.checkpoint_interval)"
    );
    describe_gauge!("lambda_model_info", "1 for the model version a layer runs on, per layer and version");
    describe_gauge!("lambda_prequential_loss", "Mean loss of a model on labelled events predicted before learning");
    describe_gauge!("lambda_window_metric", "A model's metric over its latest window of labelled events");
    describe_gauge!("lambda_drift_state", "A drift detector's state on a model's errors: 0 stable, 1 warning, 2 drift");
}

/// Runs `collect(&service)` before each rendering for as long as `service` lives.
pub fn register<T: Send + Sync + 'static>(service: &Arc<T>, collect: fn(&T)) {
    handle();
    let weak: Weak<T> = Arc::downgrade(service);
    let f: Collector = Box::new(move || match weak.upgrade() {
        Some(s) => {
            collect(&s);
            true
        }
        None => false,
    });
    if let Ok(mut c) = collectors().lock() {
        c.push(f);
    }
}

/// The exposition text: every collector's state, then everything recorded.
pub fn render() -> String {
    if let Ok(mut c) = collectors().lock() {
        c.retain(|f| f());
    }
    handle().render()
}

/// `GET /metrics`.
pub async fn metrics_route() -> Response {
    let text = tokio::task::spawn_blocking(render).await.unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Middleware counting requests and timing them per service, method, route (the matched pattern, so that keys do
/// not make one series each) and status.
pub async fn track(service: &'static str, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method()).to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("service", service.to_string()),
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("lambda_http_requests_total", &labels).increment(1);
    metrics::histogram!("lambda_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// A request's method as a label: the standard ones by name, any other as `other`, so that made-up methods cannot
/// add series without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", |m| m.as_str())
}

fn detector_level(d: &DetectorStatus) -> f64 {
    match d.state {
        DriftState::Stable => 0.0,
        DriftState::Warning => 1.0,
        DriftState::Drift => 2.0,
    }
}

/// Sets each model's windowed metrics (`lambda_window_metric{model, metric}`) and drift detectors
/// (`lambda_drift_state{model, detector}`: 0 stable, 1 warning, 2 drift).
pub fn set_windows(w: &WindowStatuses) {
    let named = w
        .speed
        .iter()
        .map(|s| ("speed".to_string(), s))
        .chain(w.batch.iter().map(|s| ("batch".to_string(), s)))
        .chain(w.learners.iter().map(|(n, s)| (n.clone(), s)))
        .chain(w.blend.iter().map(|s| ("blend".to_string(), s)));
    for (model, s) in named {
        for (metric, v) in &s.metrics {
            if v.is_finite() {
                metrics::gauge!("lambda_window_metric", "model" => model.clone(), "metric" => metric.clone()).set(*v);
            }
        }
        for (detector, d) in [("adwin", &s.adwin), ("page_hinkley", &s.page_hinkley)] {
            metrics::gauge!("lambda_drift_state", "model" => model.clone(), "detector" => detector)
                .set(detector_level(d));
        }
    }
}

/// Sets `lambda_prequential_loss{model}`: a model's mean loss on the labelled events it predicted before learning.
pub fn set_prequential_loss(model: &str, loss: Option<f64>) {
    if let Some(l) = loss.filter(|l| l.is_finite()) {
        metrics::gauge!("lambda_prequential_loss", "model" => model.to_string()).set(l);
    }
}

/// Sets `lambda_model_info{layer, version}` to 1 for the version a layer runs on (the batch model the serving
/// layer answers with, or the one the speed layer builds on); a version left behind is set to 0.
pub fn set_model_version(layer: &'static str, version: &str) {
    static LAST: OnceLock<Mutex<Vec<(&'static str, String)>>> = OnceLock::new();
    let last = LAST.get_or_init(|| Mutex::new(Vec::new()));
    if let Ok(mut last) = last.lock() {
        if let Some(i) = last.iter().position(|(l, _)| *l == layer) {
            let (_, old) = last.remove(i);
            if old != version {
                metrics::gauge!("lambda_model_info", "layer" => layer, "version" => old).set(0.0);
            }
        }
        last.push((layer, version.to_string()));
    }
    metrics::gauge!("lambda_model_info", "layer" => layer, "version" => version.to_string()).set(1.0);
}
