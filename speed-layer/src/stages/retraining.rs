//! Retraining on the fly: a confirmed drift of the batch model starts the batch pipeline once enough events are in.

use std::sync::Arc;

use lambda_stores::checkpoint::{RetrainState, RetrainStatus};
use lambda_stores::registry::now_millis;

use crate::retrain::{Retrained, Retrainer};
use crate::{Error, Result};

use super::Learner;

/// Retraining on the fly: what runs it, where it stands, the run in progress.
#[derive(Default)]
pub(super) struct Retraining {
    /// Runs the batch pipeline after a confirmed drift, when given.
    retrainer: Option<Arc<dyn Retrainer>>,
    pub(super) status: RetrainStatus,
    pub(super) job: Option<std::thread::JoinHandle<std::result::Result<Retrained, crate::retrain::RetrainError>>>,
    /// The last confirmed drift acted on (its sequence number).
    drift: u64,
}

impl Retraining {
    /// Where a checkpoint left it: the drift acted on stays acted on; a run the stop interrupted is asked for again.
    pub(super) fn resume(status: Option<RetrainStatus>) -> Retraining {
        let Some(mut status) = status else { return Retraining::default() };
        if status.state == RetrainState::Running {
            status.state = RetrainState::Waiting;
            status.reason = Some("the run in progress was interrupted by a restart; asked for again".into());
        }
        Retraining { retrainer: None, job: None, drift: status.drift_seq.unwrap_or(0), status }
    }
}

impl Learner {
    /// Hands over what runs the batch pipeline after a confirmed drift (`speed.retrain.on_drift`).
    pub fn set_retrainer(&mut self, retrainer: Arc<dyn Retrainer>) {
        self.retraining.retrainer = Some(retrainer);
    }

    /// Where retraining on the fly stands.
    pub fn retrain_status(&self) -> &RetrainStatus {
        &self.retraining.status
    }

    /// Takes the result of a finished run; notices a new confirmed drift; starts a run once enough events have
    /// come after it (archiving first, so that the run reads them).
    pub(super) fn retrain_step(&mut self, wait: bool) -> Result<()> {
        let done = self.retraining.job.take_if(|j| wait || j.is_finished());
        if let Some(job) = done {
            let out = job.join().unwrap_or_else(|_| Err("the retraining thread panicked".into()));
            let r = &mut self.retraining.status;
            r.seconds = r.started_ms.map(|t| (now_millis() - t) as f64 / 1000.0);
            match out {
                Ok(x) => {
                    r.state = if x.published { RetrainState::Published } else { RetrainState::Held };
                    (r.version, r.reason) = (Some(x.version), Some(x.reason));
                }
                Err(e) => (r.state, r.reason) = (RetrainState::Failed, Some(crate::retrain::with_causes(&*e))),
            }
            tracing::info!(state = ?r.state, version = ?r.version, reason = ?r.reason, "retraining on the fly finished");
            self.checkpoints.dirty = true;
            self.publish_model();
        }
        let Some(retrainer) = self.retraining.retrainer.clone() else { return Ok(()) };
        if self.retraining.job.is_some() || !self.spec.speed.retrain.on_drift {
            return Ok(());
        }
        let w = &self.learning.records.windows[1];
        let (a, p) = (&w.adwin_status, &w.page_hinkley_status);
        let confirmed = a.last_drift_seq.max(p.last_drift_seq);
        if a.drifts > 0 && p.drifts > 0 && confirmed > self.retraining.drift {
            self.retraining.drift = confirmed;
            // ADWIN's window after its cut holds the events since the change (labelled ones: at least that recent).
            let since = self.intake.last_seq.saturating_sub(w.adwin.width());
            self.retraining.status.state = RetrainState::Waiting;
            (self.retraining.status.drift_seq, self.retraining.status.since_seq) = (Some(confirmed), Some(since));
            tracing::warn!(
                drift_seq = confirmed,
                "confirmed drift of the batch model: retraining once enough events are in"
            );
        }
        let due = self
            .retraining
            .status
            .drift_seq
            .is_some_and(|d| self.intake.last_seq >= d + self.spec.speed.retrain.min_events);
        if self.retraining.status.state == RetrainState::Waiting && due {
            // The run reads the master dataset: everything accepted so far goes there first.
            self.archive_due(now_millis(), true)?;
            let since = self.retraining.status.since_seq.unwrap_or(0);
            let spec = self.spec.clone();
            let job = std::thread::Builder::new()
                .name("speed-retrain".into())
                .spawn(move || retrainer.retrain(&spec, since))
                .map_err(|source| Error::Spawn { name: "retraining", source })?;
            self.retraining.job = Some(job);
            self.retraining.status.state = RetrainState::Running;
            self.retraining.status.runs += 1;
            self.retraining.status.started_ms = Some(now_millis());
            (self.retraining.status.version, self.retraining.status.reason, self.retraining.status.seconds) =
                (None, None, None);
            tracing::info!(since_seq = since, "retraining on the fly started");
            self.checkpoints.dirty = true;
            self.publish_model();
        }
        Ok(())
    }

    /// Waits for a retraining in progress, then adopts what it published.
    pub fn finish_retraining(&mut self) -> Result<()> {
        if self.retraining.job.is_some() {
            self.retrain_step(true)?;
            self.poll_batch()?;
        }
        Ok(())
    }
}
