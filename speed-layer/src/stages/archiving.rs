//! Archiving: logged events sealed into the master dataset (here, or on the worker thread), and the log rolled
//! and the ids flushed after them.

use std::sync::Arc;

use super::archive;
use super::worker::{Done, Job, Worker};
use crate::Result;

use super::Learner;

/// Archiving: how far the master dataset holds the logged events.
pub(super) struct Archiving {
    /// Highest sequence number archived into the master dataset.
    pub(super) through: u64,
    /// When the oldest event not archived yet was accepted (milliseconds since the Unix epoch).
    pub(super) open_first_ms: Option<i64>,
    /// Archive files written since start.
    pub(super) files: u64,
}

impl Learner {
    pub(super) fn first_ms_after(&self, seq: u64) -> Result<Option<i64>> {
        let mut out = None;
        self.intake.log.replay(seq, |r| {
            out = Some(r.ingest_ms);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Takes over what the background thread finished. Returns whether an archive file was added.
    pub(super) fn take_finished(&mut self, done: Vec<Done>) -> Result<bool> {
        let mut sealed = false;
        let mut failure = None;
        for d in done {
            match d {
                Done::Archived(Ok(Some(s)), seconds) => {
                    self.took_sealed(s, seconds)?;
                    sealed = true;
                }
                Done::Archived(Ok(None), _) => {}
                Done::Archived(Err(e), _) => failure = Some(e),
                Done::Compacted(r, generation, files, seconds) => {
                    self.took_compacted(r, generation, &files, seconds)?
                }
                Done::Merged(Ok(m), seconds) => {
                    let retired = self.intake.dedup.take_merge(m)?;
                    tracing::debug!(seconds, runs = self.intake.dedup.runs().len(), "merged id runs");
                    self.intake.retired.extend(retired);
                    self.checkpoints.dirty = true;
                }
                Done::Merged(Err(e), _) => {
                    tracing::error!(error = %e, "merging id runs failed; retrying later");
                    self.intake.dedup.merge_failed();
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(sealed),
        }
    }

    pub(super) fn took_sealed(&mut self, s: archive::Sealed, seconds: f64) -> Result<()> {
        if s.first != self.archive.through + 1 {
            // Written for a stretch the state has moved past: the file is there under its own name and is taken
            // over when its turn comes (or recognised at the next start).
            tracing::warn!(
                first = s.first,
                archived_through = self.archive.through,
                "archive result out of turn, ignored"
            );
            return Ok(());
        }
        tracing::info!(first = s.first, last = s.last, path = %s.path.display(), recovered = s.recovered, seconds, "archived");
        self.archive.through = s.last;
        self.archive.files += 1;
        self.archive.open_first_ms = self.first_ms_after(self.archive.through)?;
        Ok(())
    }

    pub(super) fn archive_due(&mut self, now: i64, force: bool) -> Result<()> {
        let max_rows = self.spec.speed.archive_max_rows;
        let max_age = self.spec.archive_max_age.as_millis().min(i64::MAX as u128) as i64;
        let mut sealed_any = false;
        // What the background thread finished is taken over first (the archive waited for when everything must be
        // archived now).
        let mut done = self.worker.as_mut().map(Worker::finished).unwrap_or_default();
        if force {
            if let Some(d) = self.worker.as_mut().and_then(Worker::wait_archive) {
                done.push(d);
            }
        }
        if self.take_finished(done)? {
            sealed_any = true;
        }
        loop {
            let open = self.intake.last_seq.saturating_sub(self.archive.through);
            if open == 0 {
                self.archive.open_first_ms = None;
                break;
            }
            let aged = self.archive.open_first_ms.is_some_and(|t| now.saturating_sub(t) >= max_age);
            let through = if open >= max_rows {
                self.archive.through + max_rows
            } else if force || aged {
                self.intake.last_seq
            } else {
                break;
            };
            if let Some(w) = self.worker.as_mut().filter(|_| !force) {
                if !w.archiving() {
                    let (spec, log, after) =
                        (Arc::new(self.spec.clone()), self.intake.log.view(), self.archive.through);
                    w.submit(Job::Archive { spec, log, after, through })?;
                }
                break;
            }
            let started = std::time::Instant::now();
            match archive::seal(&self.spec, &self.intake.log.view(), self.archive.through, through)? {
                Some(s) => self.took_sealed(s, started.elapsed().as_secs_f64())?,
                None => break,
            }
            sealed_any = true;
        }
        if sealed_any || self.intake.dedup.wants_flush() {
            // A new segment and a de-duplication run let the archived part of the log go at the next checkpoint.
            self.intake.log.roll(self.intake.last_seq + 1)?;
            let started = std::time::Instant::now();
            let retired = self.intake.dedup.flush(self.intake.last_seq, now, self.worker.is_none())?;
            let seconds = started.elapsed().as_secs_f64();
            tracing::debug!(
                seconds,
                runs = self.intake.dedup.runs().len(),
                merged = retired.len(),
                "wrote a de-duplication run"
            );
            self.intake.flush_max_ms = self.intake.flush_max_ms.max(seconds * 1000.0);
            self.intake.retired.extend(retired);
            self.checkpoints.dirty = true;
            if let Some(w) = self.worker.as_mut().filter(|w| !w.merging()) {
                if let Some(plan) = self.intake.dedup.plan_merge(now) {
                    w.submit(Job::Merge(plan))?;
                }
            }
        } else {
            self.intake.log.roll_if_large(self.intake.last_seq + 1)?;
        }
        Ok(())
    }
}
