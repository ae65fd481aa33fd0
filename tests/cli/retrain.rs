//! Retraining on the fly: an abrupt concept change in the live stream is confirmed by both detectors on the batch
//! model's errors, the speed layer runs the batch pipeline on the events since the change while it goes on
//! ingesting, the gate publishes the new model, the speed layer adopts it, and the batch model's windowed accuracy
//! comes back to where it was before the change.

use std::sync::Arc;

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_speed::ingest::parse_line;
use lambda_speed::{Incoming, Learner, RetrainError, Retrained, Retrainer};
use lambda_stores::checkpoint::RetrainState;

/// The batch layer, as the `lambda-ml` binary hands it to the speed layer.
struct Batch;

impl Retrainer for Batch {
    fn retrain(&self, spec: &Spec, since_seq: u64) -> Result<Retrained, RetrainError> {
        let out = lambda_batch::retrain(spec, since_seq)?;
        let reason = out.manifest.gate.map(|g| g.reason).unwrap_or_default();
        Ok(Retrained { version: out.manifest.version, published: out.published, reason })
    }
}

fn flipped(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(mut v) if v.get("converted").is_some_and(|c| c.is_string()) => {
            v["converted"] = serde_json::json!(if v["converted"] == "yes" { "no" } else { "yes" });
            v.to_string()
        }
        _ => line.to_string(),
    }
}

fn ingest(learner: &mut Learner, spec: &Spec, lines: &[String]) {
    for group in lines.chunks(100) {
        let items: Vec<Incoming> = group.iter().enumerate().map(|(i, l)| parse_line(spec, i + 1, l)).collect();
        learner.ingest(items).unwrap();
        learner.tick().unwrap();
    }
}

fn batch_accuracy(learner: &Learner) -> f64 {
    learner.status().windows.batch.unwrap().metrics["accuracy"]
}

#[test]
fn a_concept_change_is_retrained_on_the_fly_published_adopted_and_the_accuracy_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let text = std::fs::read_to_string(&spec_path).unwrap().replace("[batch]\n", "[batch]\ntime_budget = \"4s\"\n")
        + "\n[speed.retrain]\nmin_events = 2000\ntime_budget = \"4s\"\n";
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    let s = stream.to_str().unwrap();
    run_ok(&["generate", "--spec", sp, "--rows", "6000", "--stream-rows", "7200", "--stream", s, "--seed", "9"]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&stream).unwrap().lines().map(String::from).collect();
    let (before, after) = lines.split_at(2000);
    let after: Vec<String> = after.iter().map(|l| flipped(l)).collect();

    let mut learner = Learner::open(spec.clone(), None).unwrap();
    learner.set_retrainer(Arc::new(Batch));
    ingest(&mut learner, &spec, before);
    let settled = batch_accuracy(&learner);
    assert_eq!(learner.retrain_status().state, RetrainState::Idle, "no retraining on the stable part");
    let first = learner.base_version().to_string();

    // The change: the batch model is wrong on most events from here; the speed layer keeps ingesting while the
    // run goes on, and adopts what it publishes at a tick.
    ingest(&mut learner, &spec, &after[..4000]);
    let r = learner.retrain_status().clone();
    assert!(r.runs >= 1 && r.drift_seq.unwrap() > 6000 + 2000, "{r:?}");
    learner.finish_retraining().unwrap();
    let r = learner.retrain_status().clone();
    assert_eq!(r.state, RetrainState::Published, "{r:?}");
    assert_ne!(learner.base_version(), first);
    assert_eq!(Some(learner.base_version()), r.version.as_deref());

    // A restart keeps where retraining stands and does not run again for the drift already acted on.
    drop(learner);
    let mut learner = Learner::open(spec.clone(), None).unwrap();
    learner.set_retrainer(Arc::new(Batch));
    assert_eq!(learner.retrain_status(), &r);

    // The new batch model, on the events after it: as good as the old one was before the change.
    ingest(&mut learner, &spec, &after[4000..]);
    let recovered = batch_accuracy(&learner);
    let again = learner.retrain_status();
    assert_eq!((again.runs, again.drift_seq), (r.runs, r.drift_seq), "{again:?}");
    assert!(recovered >= settled - 0.03, "before the change {settled}, after the retraining {recovered}");
}

/// A batch layer whose runs are always held by the gate, counting them.
struct Held(std::sync::atomic::AtomicU64);

impl Retrainer for Held {
    fn retrain(&self, _: &Spec, _: u64) -> Result<Retrained, RetrainError> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(Retrained { version: format!("held{n}"), published: false, reason: "not better".into() })
    }
}

#[test]
fn a_restart_does_not_retrain_again_for_a_drift_already_acted_on() {
    // Regression: the acted-on drift lived only in memory; after a restart the windows (checkpointed) still showed
    // it, and a run held by the gate was started again for the same drift.
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let text = std::fs::read_to_string(&spec_path).unwrap().replace("[batch]\n", "[batch]\ntime_budget = \"2s\"\n")
        + "\n[speed.retrain]\nmin_events = 500\n";
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    let s = stream.to_str().unwrap();
    run_ok(&["generate", "--spec", sp, "--rows", "3000", "--stream-rows", "4000", "--stream", s, "--seed", "5"]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&stream).unwrap().lines().map(String::from).collect();
    let (before, after) = lines.split_at(1000);
    let after: Vec<String> = after.iter().map(|l| flipped(l)).collect();

    let held = Arc::new(Held(0.into()));
    let mut learner = Learner::open(spec.clone(), None).unwrap();
    learner.set_retrainer(held.clone());
    ingest(&mut learner, &spec, before);
    ingest(&mut learner, &spec, &after[..2000]);
    learner.finish_retraining().unwrap();
    let r = learner.retrain_status().clone();
    assert_eq!((r.state, r.runs), (RetrainState::Held, 1), "{r:?}");
    learner.tick().unwrap();
    drop(learner);

    let mut learner = Learner::open(spec.clone(), None).unwrap();
    learner.set_retrainer(held.clone());
    assert_eq!(learner.retrain_status(), &r);
    ingest(&mut learner, &spec, &after[2000..]);
    learner.finish_retraining().unwrap();
    let runs = held.0.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!((learner.retrain_status().runs, runs), (1, 1), "{:?}", learner.retrain_status());
}
