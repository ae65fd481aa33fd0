//! The model registry: versioned model folders (`model.json` + `manifest.json`) published atomically through a
//! [`Publisher`], with a `CURRENT` pointer. Old versions stay for rollback.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::publish::Publisher;
use lambda_core::encoder::Encoder;
use lambda_core::error::{Error, Result};
use lambda_core::schema::{Event, RowSource};
use lambda_core::spec::Spec;
use lambda_models::metrics::Metrics;
use lambda_models::model::{LinearModel, Model};
use lambda_models::online::{AdaptiveLinear, GradientPrior};
use lambda_models::online_bayes::BayesStats;

/// Version of the on-disk artifact format. Version 1 (a linear model only) is read and migrated on load.
pub const FORMAT_VERSION: u32 = 2;

/// A model together with the encoder it was trained behind: everything needed to predict from a raw record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// On-disk format version.
    pub format_version: u32,
    /// Schema hash of the spec it was trained under.
    pub schema_hash: String,
    /// The fitted encoder.
    pub encoder: Encoder,
    /// The model: the batch champion, of any family.
    pub model: Model,
    /// The speed layer's starting model when the champion is not linear: the best linear candidate of the search,
    /// refitted on the same rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<LinearModel>,
    /// The speed layer's starting model's gradient statistics on its training rows, for the adaptive update's
    /// warm start ([`lambda_models::online`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_prior: Option<GradientPrior>,
    /// Naive Bayes' exact statistics over every labelled training row, under `encoder` and the speed layer's
    /// starting model's classes: the online naive Bayes learner's warm start ([`lambda_models::online_bayes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_bayes: Option<BayesStats>,
}

impl ModelArtifact {
    /// Checks that encoder and model fit together and that the artifact belongs to `spec`.
    pub fn validate(&self, spec: &Spec) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::InvalidModel(format!("model format {} is not {FORMAT_VERSION}", self.format_version)));
        }
        if self.schema_hash != spec.schema_hash() {
            return Err(Error::InvalidModel(format!(
                "model was trained for schema {} but the spec has schema {}",
                self.schema_hash,
                spec.schema_hash()
            )));
        }
        for dim in std::iter::once(self.model.dim()).chain(self.online.as_ref().map(|m| m.dim)) {
            if self.encoder.dim() != dim {
                return Err(Error::InvalidModel(format!(
                    "encoder gives {} dimensions, model expects {dim}",
                    self.encoder.dim()
                )));
            }
        }
        if self.model.as_linear().is_none() && self.online.is_none() {
            return Err(Error::InvalidModel(format!(
                "a {} model without a starting model for the speed layer",
                self.model.family()
            )));
        }
        if let Some(p) = &self.online_prior {
            let start = self.speed_start();
            if p.grad_sq.len() != start.outputs() * (start.dim + 1)
                || !p.grad_sq.iter().chain([&p.norm]).all(|v| v.is_finite() && *v >= 0.0)
            {
                return Err(Error::InvalidModel(
                    "the speed layer's gradient prior does not fit its starting model".into(),
                ));
            }
        }
        if let Some(b) = &self.online_bayes {
            b.check(self.speed_start().classes.len(), &lambda_models::online_bayes::layout(&self.encoder))
                .map_err(|e| Error::InvalidModel(format!("the speed layer's naive Bayes statistics: {e}")))?;
        }
        if let Some(online) = &self.online {
            if online.classes != self.model.classes() {
                return Err(Error::InvalidModel(
                    "the speed layer's starting model has other classes than the model".into(),
                ));
            }
            online.validate()?;
        }
        self.model.validate()
    }

    /// The model the speed layer starts from and updates: the champion when it is linear, else `online`.
    pub fn speed_start(&self) -> &LinearModel {
        match (self.model.as_linear(), &self.online) {
            (Some(m), _) => m,
            (None, Some(m)) => m,
            // validate() refuses an artifact with neither.
            (None, None) => unreachable!("validated artifact without a linear model"),
        }
    }

    /// The speed layer's starting model with the adaptive update's warm-start state.
    pub fn speed_start_adaptive(&self, spec: &Spec) -> AdaptiveLinear {
        AdaptiveLinear::warm(
            self.speed_start().clone(),
            self.encoder.scales(),
            self.online_prior.as_ref(),
            spec.speed.prior_events as f64,
        )
    }

    /// Encodes and predicts one record.
    pub fn predict<R: RowSource + ?Sized>(&self, row: &R) -> lambda_models::model::Prediction {
        self.model.predict(&self.encoder.encode(row))
    }

    /// Encodes and predicts one event.
    pub fn predict_event(&self, event: &Event) -> lambda_models::model::Prediction {
        self.predict(event)
    }
}

/// One candidate of the model search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// Algorithm name.
    pub algorithm: String,
    /// Its settings.
    pub params: String,
    /// Its holdout metrics.
    pub metrics: Metrics,
    /// Rows it was fitted on.
    #[serde(default)]
    pub rows: u64,
    /// Seconds its fit took.
    #[serde(default)]
    pub fit_seconds: f64,
    /// The last search round this fit took part in (0 first; each round fits the better half on four times the
    /// rows, or keeps a fit already at its family's row cap). The leaderboard is ordered by it, then by the metric.
    #[serde(default)]
    pub round: usize,
    /// Boosting rounds the model kept: fewer than `rounds` when early stopping cut it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds_kept: Option<usize>,
}

/// What is known about a published model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version name, e.g. `v000003`.
    pub version: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Highest ingestion sequence number the model and its batch view cover.
    pub watermark: u64,
    /// Rows the final model was trained on.
    pub training_rows: u64,
    /// Rows of the holdout.
    pub holdout_rows: u64,
    /// Holdout metrics of the chosen algorithm.
    pub metrics: Metrics,
    /// Schema hash of the spec.
    pub schema_hash: String,
    /// The chosen algorithm.
    pub algorithm: String,
    /// Every candidate tried, best first.
    pub leaderboard: Vec<LeaderboardEntry>,
    /// How the champion/challenger gate judged this version (absent in versions written before the gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// How the search went and why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchReport>,
    /// Rows the speed layer's starting model (`online` in the model file) was fitted on, when the champion is not
    /// one the speed layer can update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_rows: Option<u64>,
    /// A retraining on the fly trained on the rows after this sequence number (the drift window): the speed
    /// layer's tree learners start from those rows too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_since: Option<u64>,
}

/// How a model search went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// Candidates the spec allowed.
    pub candidates: usize,
    /// Candidates fitted and scored.
    pub tried: usize,
    /// Candidates that failed to fit.
    pub failed: usize,
    /// The time budget, in seconds.
    pub budget_seconds: f64,
    /// Seconds the search took.
    pub seconds: f64,
    /// Whether the time budget stopped it before every candidate was tried: then another run, on a faster or less
    /// busy machine, may try more and pick another winner.
    pub cut_by_time: bool,
    /// Why it stopped, in words.
    pub stopped: String,
    /// Rolling-origin folds each trial was scored on (1: the holdout alone).
    #[serde(default = "one_fold")]
    pub folds: usize,
    /// The newest training rows the winner was kept on when they predicted the holdout clearly better than all of
    /// them (history drifted); absent when all of them were best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_rows: Option<u64>,
}

fn one_fold() -> usize {
    1
}

/// The champion/challenger decision of a batch run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Whether `CURRENT` moved to this version.
    pub published: bool,
    /// Published by `--force` whatever the judgement.
    pub forced: bool,
    /// Why, in words.
    pub reason: String,
    /// The metric judged.
    pub metric: String,
    /// The challenger's value on the judged rows (its model fitted without the holdout).
    pub challenger: Option<f64>,
    /// The champion's value on the same rows.
    pub champion: Option<f64>,
    /// The champion's version, when there was one to judge against.
    pub champion_version: Option<String>,
    /// Holdout rows judged.
    pub judged_rows: u64,
}

pub use lambda_core::time::{now_millis, now_rfc3339};

/// A published model: manifest and artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The manifest.
    pub manifest: Manifest,
    /// The model and its encoder.
    pub artifact: ModelArtifact,
}

/// The model registry of a pipeline.
#[derive(Debug, Clone)]
pub struct Registry {
    publisher: Publisher,
}

const MODEL_FILE: &str = "model.json";
const MANIFEST_FILE: &str = "manifest.json";

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Format { path: path.to_path_buf(), message: e.to_string() })
}

/// Reads a model file of this format or of format 1 (whose model was a bare linear model).
fn parse_artifact(path: &Path, bytes: &[u8]) -> Result<ModelArtifact> {
    let mut value: serde_json::Value = parse(path, bytes)?;
    if value.get("format_version").and_then(serde_json::Value::as_u64) == Some(1) {
        if let Some(model) = value.get_mut("model").and_then(serde_json::Value::as_object_mut) {
            model.insert("kind".into(), "linear".into());
        }
        value["format_version"] = FORMAT_VERSION.into();
    }
    serde_json::from_value(value).map_err(|e| Error::Format { path: path.to_path_buf(), message: e.to_string() })
}

/// The registry's lock, held until dropped.
pub type RegistryLock = crate::lock::FolderLock;

impl Registry {
    /// The registry at `root`.
    pub fn open(root: impl AsRef<Path>) -> Self {
        Registry { publisher: Publisher::new(root.as_ref(), "v") }
    }

    /// Waits for, then holds, the registry's lock (`.lock`, an exclusive file lock the system drops when the
    /// process dies): whoever compares against the current version and publishes does so holding it, so that two
    /// runs (the nightly batch job and a retraining started by the speed layer, say) never publish over each other.
    pub fn lock(&self) -> Result<RegistryLock> {
        crate::lock::FolderLock::acquire(self.publisher.root())
    }

    /// The version the next publication will get.
    pub fn next_version(&self) -> Result<String> {
        self.publisher.next_version()
    }

    /// Publishes a model: both files are synced before `CURRENT` moves. The manifest's `version` is set here.
    pub fn publish(&self, artifact: &ModelArtifact, manifest: Manifest) -> Result<Manifest> {
        let manifest = self.keep(artifact, manifest)?;
        self.publisher.set_current(&manifest.version)?;
        Ok(manifest)
    }

    /// Keeps a model as a new version without moving `CURRENT` (a challenger the gate held back): it can be
    /// promoted later. The manifest's `version` is set here.
    pub fn keep(&self, artifact: &ModelArtifact, mut manifest: Manifest) -> Result<Manifest> {
        let version = self.publisher.next_version()?;
        manifest.version = version.clone();
        let model = serde_json::to_vec(artifact).map_err(|e| Error::Encode { what: "the model", source: e.into() })?;
        let man = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Encode { what: "the manifest", source: e.into() })?;
        self.publisher.stage(&version, &[(MODEL_FILE, &model), (MANIFEST_FILE, &man)])?;
        Ok(manifest)
    }

    /// Points `CURRENT` back (or forward) at a kept version: a rollback. The speed layer rebuilds on it.
    pub fn set_current(&self, version: &str) -> Result<()> {
        self.publisher.set_current(version)
    }

    /// The current version's name, if any.
    pub fn current_version(&self) -> Result<Option<String>> {
        self.publisher.current()
    }

    /// Removes the versions no one needs any more, keeping the current one, the one a rollback goes back to (the
    /// newest published version older than the current one), the newest `newest` and `also` (what a speed layer's
    /// state is built on). Returns the removed versions.
    pub fn retain(&self, newest: usize, also: &[String]) -> Result<Vec<String>> {
        let manifests = self.manifests()?;
        let mut keep: std::collections::BTreeSet<String> = also.iter().cloned().collect();
        keep.extend(manifests.iter().rev().take(newest).map(|m| m.version.clone()));
        if let Some(current) = self.current_version()? {
            let rollback = manifests
                .iter()
                .rev()
                .filter(|m| m.version < current)
                .find(|m| m.gate.as_ref().is_none_or(|g| g.published));
            keep.extend(rollback.map(|m| m.version.clone()));
            keep.insert(current);
        }
        self.publisher.retain(&keep)
    }

    /// Removes what crashed publications left behind (staging folders, temporary pointer files).
    pub fn sweep(&self) -> Result<Vec<PathBuf>> {
        self.publisher.sweep()
    }

    /// Loads one version.
    pub fn load(&self, version: &str) -> Result<Published> {
        let dir = self.publisher.version_dir(version);
        let manifest: Manifest = parse(&dir.join(MANIFEST_FILE), &self.publisher.read(version, MANIFEST_FILE)?)?;
        let artifact = parse_artifact(&dir.join(MODEL_FILE), &self.publisher.read(version, MODEL_FILE)?)?;
        Ok(Published { manifest, artifact })
    }

    /// Loads the current version, checked against `spec`.
    pub fn load_current(&self, spec: &Spec) -> Result<Option<Published>> {
        let Some(version) = self.current_version()? else { return Ok(None) };
        let published = self.load(&version)?;
        published.artifact.validate(spec)?;
        Ok(Some(published))
    }

    /// Manifests of every version kept, oldest first.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for v in self.publisher.versions()? {
            let path = self.publisher.version_dir(&v).join(MANIFEST_FILE);
            out.push(parse(&path, &self.publisher.read(&v, MANIFEST_FILE)?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::encoder::FeatureEncoder;
    use lambda_models::model::Family;

    fn spec() -> Spec {
        Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn artifact(spec: &Spec, w: f64) -> ModelArtifact {
        let encoder = Encoder {
            features: vec![
                FeatureEncoder::Numeric { name: "amount".into(), mean: 0.0, std: 1.0, min: 0.0, max: 1.0, trend: 0.0 },
                FeatureEncoder::Categorical { name: "country".into(), vocabulary: Default::default() },
                FeatureEncoder::Boolean { name: "mobile".into() },
            ],
            target: None,
        };
        let mut model = LinearModel::zeros(Family::Logistic, vec!["0".into(), "1".into()], encoder.dim());
        model.weights.iter_mut().for_each(|x| *x = w);
        crate::testing::linear_artifact(spec, encoder, model)
    }

    fn manifest(spec: &Spec, watermark: u64) -> Manifest {
        crate::testing::manifest(spec, watermark, 10)
    }

    #[test]
    fn runs_that_publish_under_the_lock_never_publish_over_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        // Four writers at once, each reading the current watermark and publishing the next one under the lock:
        // every publication gets its own version and sees the one before it.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let r = Registry::open(dir.path());
                    for _ in 0..10 {
                        let _lock = r.lock().unwrap();
                        let last = r.load_current(&s).unwrap().map_or(0, |p| p.manifest.watermark);
                        r.publish(&artifact(&s, 1.0), manifest(&s, last + 1)).unwrap();
                    }
                });
            }
        });
        let r = Registry::open(dir.path());
        let manifests = r.manifests().unwrap();
        assert_eq!(manifests.len(), 40);
        let mut watermarks: Vec<u64> = manifests.iter().map(|m| m.watermark).collect();
        watermarks.sort_unstable();
        assert_eq!(watermarks, (1..=40).collect::<Vec<u64>>());
        assert_eq!(r.load_current(&s).unwrap().unwrap().manifest.watermark, 40);
    }

    #[test]
    fn publish_load_and_keep_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let r = Registry::open(dir.path());
        assert!(r.load_current(&s).unwrap().is_none());
        r.publish(&artifact(&s, 1.0), manifest(&s, 10)).unwrap();
        let m = r.publish(&artifact(&s, 2.0), manifest(&s, 20)).unwrap();
        assert_eq!(m.version, "v000002");
        let cur = r.load_current(&s).unwrap().unwrap();
        assert_eq!(cur.manifest.watermark, 20);
        assert_eq!(cur.artifact, artifact(&s, 2.0));
        assert_eq!(r.manifests().unwrap().len(), 2);
    }

    #[test]
    fn model_of_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let r = Registry::open(dir.path());
        let mut a = artifact(&s, 1.0);
        a.schema_hash = "different".into();
        r.publish(&a, manifest(&s, 1)).unwrap();
        match r.load_current(&s) {
            Err(Error::InvalidModel(m)) => assert!(m.contains("trained for schema different"), "{m}"),
            other => panic!("expected the model refused, got {other:?}"),
        }
    }

    #[test]
    fn readers_never_see_a_partial_model_while_publishing() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let r = Registry::open(dir.path());
        r.publish(&artifact(&s, 0.0), manifest(&s, 0)).unwrap();
        let writer = {
            let (r, s) = (r.clone(), s.clone());
            std::thread::spawn(move || {
                for i in 1..40 {
                    r.publish(&artifact(&s, i as f64), manifest(&s, i)).unwrap();
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() || seen == 0 {
            let p = r.load_current(&s).unwrap().unwrap();
            // Model and manifest come from the same publication.
            assert_eq!(p.artifact, artifact(&s, p.manifest.watermark as f64));
            seen += 1;
        }
        writer.join().unwrap();
        assert_eq!(r.load_current(&s).unwrap().unwrap().manifest.watermark, 39);
    }

    #[test]
    fn a_model_file_of_format_1_is_read_as_a_linear_model() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let r = Registry::open(dir.path());
        let a = artifact(&s, 0.25);
        r.publish(&a, manifest(&s, 1)).unwrap();
        // Format 1 stored the linear model bare, without `kind` and without `online`.
        let path = dir.path().join("versions/v000001/model.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["format_version"] = 1.into();
        v["model"].as_object_mut().unwrap().remove("kind");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let loaded = r.load_current(&s).unwrap().unwrap().artifact;
        assert_eq!(loaded, a);
        assert_eq!(loaded.speed_start().weights[0], 0.25);
    }

    #[test]
    fn an_artifact_needs_a_starting_model_for_the_speed_layer() {
        let s = spec();
        let mut a = artifact(&s, 1.0);
        let classes = a.model.classes().to_vec();
        a.model = Model::NaiveBayes(lambda_models::bayes::NaiveBayes::fit(
            classes,
            a.encoder.dim(),
            &vec![0.5; a.encoder.dim() * 2],
            &[0, 1],
            1e-9,
        ));
        match a.validate(&s) {
            Err(Error::InvalidModel(m)) => assert!(m.contains("naive_bayes") && m.contains("speed layer"), "{m}"),
            other => panic!("expected the model refused, got {other:?}"),
        }
        a.online = Some(artifact(&s, 1.0).speed_start().clone());
        a.validate(&s).unwrap();
        assert_eq!(a.speed_start().weights[0], 1.0);
    }

    #[test]
    fn naive_bayes_statistics_round_trip_and_must_fit_the_encoder_and_classes() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let mut a = artifact(&s, 1.0);
        let layout = lambda_models::online_bayes::layout(&a.encoder);
        let mut stats = BayesStats::empty(2, &layout);
        let x = [0.3, 0.0, 0.0, 1.0, 1.0, 0.0];
        assert!(stats.add(&layout, a.encoder.dim(), &x, 1));
        a.online_bayes = Some(stats);
        let r = Registry::open(dir.path());
        r.publish(&a, manifest(&s, 1)).unwrap();
        assert_eq!(r.load_current(&s).unwrap().unwrap().artifact, a);
        // Statistics of three classes for a two-class model.
        a.online_bayes = Some(BayesStats::empty(3, &layout));
        match a.validate(&s) {
            Err(Error::InvalidModel(m)) => assert!(m.contains("naive Bayes statistics"), "{m}"),
            other => panic!("expected the model refused, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_model_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let r = Registry::open(dir.path());
        r.publish(&artifact(&s, 1.0), manifest(&s, 1)).unwrap();
        std::fs::write(dir.path().join("versions/v000001/model.json"), b"{\"format_version\": 1, \"sch").unwrap();
        match r.load_current(&s) {
            Err(Error::Format { path, .. }) => assert_eq!(path, dir.path().join("versions/v000001/model.json")),
            other => panic!("expected the file named, got {other:?}"),
        }
    }
}
