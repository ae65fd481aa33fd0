//! What the speed-layer tests share: a small pipeline with a published model, events, and what a user compares
//! between two runs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lambda_core::encoder::Encoder;
use lambda_core::schema::{Columns, Mode};
use lambda_core::spec::Spec;
use lambda_models::model::{Family, LinearModel};
use lambda_speed::ingest::parse_line;
use lambda_speed::Incoming;
use lambda_stores::checkpoint::{self, SpeedSide};
use lambda_stores::registry::{Manifest, ModelArtifact, Registry};
use lambda_stores::views::ViewTable;
use serde_json::json;

pub const SPEC: &str = r#"
name = "t"
[dataset]
time_column = "ts"
# The tests' events count milliseconds from the epoch's first second.
time_format = "epoch_ms"
time_window = ["1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"]
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
archive_max_rows = 50
"#;

pub fn event(i: u64) -> serde_json::Value {
    let x = ((i * 7919) % 100) as f64 / 10.0;
    let country = ["fr", "de", "us"][(i % 3) as usize];
    json!({"id": format!("e{i}"), "user": format!("u{}", i % 7), "ts": 1_000 + i as i64,
           "amount": x, "country": country, "mobile": i.is_multiple_of(2),
           "label": if x > 5.0 { "yes" } else { "no" }})
}

pub fn artifact(spec: &Spec, w0: f64, bias: f64) -> ModelArtifact {
    let events: Vec<_> = (0..50).map(|i| spec.parse_record(&event(i), Mode::Event).unwrap()).collect();
    let encoder = Encoder::fit(spec, &Columns::from_events(spec, events.iter().map(|e| (0, e)))).unwrap();
    let mut model = LinearModel::zeros(Family::Logistic, vec!["no".into(), "yes".into()], encoder.dim());
    model.weights[0] = w0;
    model.bias[0] = bias;
    linear_artifact(spec, encoder, model)
}

/// A batch artifact of a linear model on `encoder`, without online parts.
pub fn linear_artifact(spec: &Spec, encoder: Encoder, model: LinearModel) -> ModelArtifact {
    lambda_stores::testing::linear_artifact(spec, encoder, model)
}

pub fn manifest(spec: &Spec, watermark: u64) -> Manifest {
    lambda_stores::testing::manifest(spec, watermark, 50)
}

/// Publishes a model and an (empty) batch view, as a batch run would.
pub fn publish(spec: &Spec, w0: f64, bias: f64, watermark: u64) -> Manifest {
    let registry = Registry::open(&spec.paths.registry);
    let version = registry.next_version().unwrap();
    ViewTable::new(spec).write_parquet(&lambda_stores::views::batch_view_path(spec, &version)).unwrap();
    registry.publish(&artifact(spec, w0, bias), manifest(spec, watermark)).unwrap()
}

/// A pipeline folder with a published batch model whose watermark is 0.
pub fn setup_with(extra: &str) -> (tempfile::TempDir, Spec) {
    let dir = tempfile::tempdir().unwrap();
    let spec = setup_in(dir.path(), extra);
    (dir, spec)
}

/// [`setup_with`] in a folder of the caller's.
pub fn setup_in(dir: &std::path::Path, extra: &str) -> Spec {
    let spec = Spec::from_toml(&format!("{SPEC}{extra}"), &dir.join("spec.toml"), dir).unwrap();
    publish(&spec, 0.5, 0.0, 0);
    spec
}

pub fn setup() -> (tempfile::TempDir, Spec) {
    setup_with("")
}

pub fn items(spec: &Spec, range: std::ops::Range<u64>) -> Vec<Incoming> {
    range.map(|i| parse_line(spec, 1, &event(i).to_string())).collect()
}

/// What a user compares between two runs: the model bit for bit, the counters, every key's view.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub last_seq: u64,
    pub updates: u64,
    pub accepted: u64,
    pub weights: Vec<u64>,
    pub losses: (u64, u64),
    /// Each other online learner: name, events scored, mean prequential loss (bits), size.
    pub learners: Vec<(String, u64, Option<u64>, String)>,
    /// The blend's components, weights (bits) and the events they were measured on.
    pub blend: (Vec<String>, Vec<u64>, usize),
    pub views: ViewTable,
    /// The freeze, if frozen: since which event, why, records received since (not when: a clock time).
    pub frozen: Option<(u64, String, u64)>,
}

pub fn summary(side: &SpeedSide) -> Summary {
    let m = side.model.load_full();
    Summary {
        last_seq: side.seq(),
        updates: m.updates,
        accepted: m.stats.accepted,
        weights: m.model.weights.iter().chain(&m.model.bias).map(|w| w.to_bits()).collect(),
        losses: (m.stats.speed_loss_sum.to_bits(), m.stats.batch_loss_sum.to_bits()),
        learners: m
            .served
            .statuses
            .iter()
            .map(|l| (l.name.clone(), l.labelled, l.prequential_loss.map(f64::to_bits), l.size.clone()))
            .collect(),
        blend: {
            let w = &m.served.at.weights;
            (w.names.clone(), w.weights.iter().map(|w| w.to_bits()).collect(), w.events)
        },
        views: side.realtime.to_table(),
        frozen: m.frozen.as_ref().map(|z| (z.since_seq, z.reason.clone(), z.records)),
    }
}

pub fn on_disk(spec: &Spec) -> Summary {
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    summary(&SpeedSide::load(spec, &spec.paths.state, &c).unwrap())
}

pub fn master_rows(spec: &Spec) -> Vec<(u64, String)> {
    let mut rows = Vec::new();
    for f in lambda_stores::master::list_files(&spec.paths.master).unwrap() {
        for b in lambda_stores::master::read_batches(&f).unwrap() {
            for (seq, e) in lambda_stores::master::events_of(spec, &f, &b).unwrap() {
                rows.push((seq, e.id));
            }
        }
    }
    rows.sort();
    rows
}
