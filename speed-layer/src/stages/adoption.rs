//! Adoption: a new batch version (or a rollback) taken on by rebuilding the speed state from the events after its
//! watermark, on a thread of its own while ingest goes on.

use std::sync::Arc;

use lambda_core::schema::Event;
use lambda_core::spec::Spec;
use lambda_models::online::{AdaptiveLinear, OnlineLearner};
use lambda_stores::checkpoint::{BatchSide, LiveState, SpeedModel, SpeedStats};
use lambda_stores::master;
use lambda_stores::realtime::Realtime;
use lambda_stores::registry::{now_millis, Published, Registry};

use super::dedup::{id_hash, Dedup};
use super::log::LogView;
use super::records::Records;
use crate::{Error, Result};

use super::learning::update;
use super::views::{side, template};
use super::Learner;

/// Adoption of new batch versions in the background.
#[derive(Default)]
pub(super) struct Adoptions {
    /// A batch version being adopted in the background.
    pub(super) running: Option<Adoption>,
    /// After a failed build: no new one before this time (milliseconds since the Unix epoch), and the pause.
    retry_ms: i64,
    backoff: i64,
    /// Builds that failed since start.
    pub(super) failures: u64,
}

/// Events a finished background build may be behind by and still learn here, on the learner thread (ingest
/// waits for them: a few milliseconds)...
pub(super) const CATCH_UP_HERE: u64 = 2_000;
/// ...or after this many rounds on its own thread, whatever it is behind by (a stream as fast as learning).
pub(super) const CATCH_UP_ROUNDS: u32 = 4;

/// Runs `build` on a thread of its own.
pub(super) fn spawn_adoption(
    build: impl FnOnce() -> Result<Built> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<Built>>> {
    std::thread::Builder::new()
        .name("speed-adopt".into())
        .spawn(build)
        .map_err(|source| Error::Spawn { name: "adoption", source })
}

/// A batch version being adopted on a thread of its own.
pub(super) struct Adoption {
    pub(super) version: String,
    /// The thread's log reading starts after this sequence number: the log keeps the events after it.
    pub(super) keep_after: u64,
    pub(super) job: std::thread::JoinHandle<Result<Built>>,
    /// Rounds of catching up done on the thread.
    rounds: u32,
}

/// The speed layer's state on a new batch version, built from the events after its watermark.
pub(super) struct Built {
    pub(super) published: Published,
    /// Its batch side, for an in-process serving layer.
    pub(super) live_batch: Option<Arc<BatchSide>>,
    pub(super) model: AdaptiveLinear,
    pub(super) realtime: Realtime,
    pub(super) records: Records,
    pub(super) x: Vec<f64>,
    pub(super) updates: u64,
    refused: u64,
    /// Sequence number of the last event taken in.
    pub(super) through: u64,
    from_master: u64,
    from_log: u64,
    started: std::time::Instant,
}

impl Built {
    /// The warm start on `published`, with its tree learners having learned history (and, with `live`, its batch
    /// side loaded: if its batch view cannot be read, nothing changes and the next poll retries).
    pub(super) fn start(spec: &Spec, published: Published, live: bool) -> Result<Built> {
        let started = std::time::Instant::now();
        let live_batch = if live { Some(Arc::new(BatchSide::load(spec, &published.manifest.version)?)) } else { None };
        let model = published.artifact.speed_start_adaptive(spec);
        let w = published.manifest.watermark;
        let realtime = Realtime::new(template(spec, &model.model), w);
        // The other learners, the windows and the blend start over on the new version's encoding, from the same
        // events: the new batch model and its speed model, scored on the events after its watermark.
        let records = fresh_records(spec, &published)?;
        let x = vec![0.0; published.artifact.encoder.dim()];
        Ok(Built {
            published,
            live_batch,
            model,
            realtime,
            records,
            x,
            updates: 0,
            refused: 0,
            through: w,
            from_master: 0,
            from_log: 0,
            started,
        })
    }

    pub(super) fn apply(&mut self, spec: &Spec, seq: u64, e: &Event) {
        self.realtime.observe(&e.key, e.time, seq, e, e.target.as_ref());
        if let Some(t) = &e.target {
            let artifact = &self.published.artifact;
            artifact.encoder.encode_row(e, &mut self.x);
            let (ps, pb) = (self.model.predict(&self.x), artifact.model.predict(&self.x));
            let learned = match update(&mut self.model, &self.x, t, spec, artifact) {
                Ok(updated) => {
                    self.updates += u64::from(updated);
                    true
                }
                Err(_) => {
                    self.refused += 1;
                    false
                }
            };
            let classes = &self.model.model.classes;
            self.records.observe(classes, &self.x, learned.then_some((&ps, &pb)), t, seq, e.time, true);
        }
        self.through = seq;
    }

    /// The state on `published` through the event `last`: the archived events after its watermark through
    /// `archived` from the master dataset (their ids into `seed`, when given), the rest from `log`.
    pub(super) fn through(
        spec: &Spec,
        published: Published,
        live: bool,
        archived: u64,
        log: &LogView,
        last: u64,
        seed: Option<(&mut Dedup, i64)>,
    ) -> Result<Built> {
        let after = published.manifest.watermark.max(archived);
        let mut b = Built::start(spec, published, live)?;
        b.learn_master(spec, archived, seed)?;
        b.learn_log(spec, log, after, last)?;
        Ok(b)
    }

    /// Takes in the archived events after the watermark through `archived` (their ids into `seed`, when given).
    pub(super) fn learn_master(
        &mut self,
        spec: &Spec,
        archived: u64,
        mut seed: Option<(&mut Dedup, i64)>,
    ) -> Result<()> {
        let w = self.published.manifest.watermark;
        let mut n = 0u64;
        master::for_each_event_after(spec, w, |seq, e| {
            if seq <= archived {
                self.apply(spec, seq, &e);
                n += 1;
                if let Some((dedup, now)) = seed.as_mut() {
                    dedup.insert(id_hash(&e.id), *now);
                }
            }
            Ok(())
        })?;
        self.from_master += n;
        Ok(())
    }

    /// Takes in the logged events after `after` through `last`.
    pub(super) fn learn_log(&mut self, spec: &Spec, log: &LogView, after: u64, last: u64) -> Result<()> {
        let mut n = 0u64;
        log.replay(after, |r| {
            if r.seq > last {
                return Ok(false);
            }
            self.apply(spec, r.seq, &r.event);
            n += 1;
            Ok(true)
        })?;
        self.from_log += n;
        self.through = self.through.max(last);
        Ok(())
    }
}

/// Records started afresh on `batch`, the tree learners having learned the latest `speed.learner_history_rows`
/// rows of history up to its watermark, none from before the drift window a retraining on the fly trained on
/// (read from the master dataset, in sequence order, so that every start on the same version gives the same
/// learners).
pub(super) fn fresh_records(spec: &Spec, batch: &Published) -> Result<Records> {
    let mut records = Records::new(spec, &batch.artifact);
    let (n, w) = (spec.speed.learner_history_rows, batch.manifest.watermark);
    let after = w.saturating_sub(n).max(batch.manifest.trained_since.unwrap_or(0));
    if n == 0 || records.extra.iter().all(|t| matches!(t.learner, OnlineLearner::NaiveBayes(_))) {
        return Ok(records);
    }
    let started = std::time::Instant::now();
    let encoder = &batch.artifact.encoder;
    let mut x = vec![0.0; encoder.dim()];
    let mut learned = 0u64;
    master::for_each_event_after(spec, after, |seq, e| {
        if let Some(t) = e.target.as_ref().filter(|_| seq <= w) {
            encoder.encode_row(&e, &mut x);
            records.learn_history(&x, t);
            learned += 1;
        }
        Ok(())
    })?;
    tracing::info!(
        rows = learned,
        seconds = started.elapsed().as_secs_f64(),
        "online learners learned the latest history"
    );
    Ok(records)
}

impl Learner {
    /// Adopts the registry's current batch version when it differs from the one the state is built on (a new
    /// version, or a rollback), on this thread: ingest waits. Returns whether it did.
    pub fn poll_batch(&mut self) -> Result<bool> {
        match self.version_to_adopt()? {
            Some(published) => {
                self.adoption.running = None;
                self.adopt(published, false)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The registry's current version, loaded and checked, when the state is built on another.
    pub(super) fn version_to_adopt(&self) -> Result<Option<Published>> {
        let registry = Registry::open(&self.spec.paths.registry);
        match registry.current_version()? {
            Some(v) if v != self.batch.manifest.version => {
                let published = registry.load(&v)?;
                published.artifact.validate(&self.spec)?;
                let w = published.manifest.watermark;
                if w > self.intake.last_seq {
                    // The master dataset holds events this speed layer did not write: jumping over them would lose
                    // the ones it holds that are not archived yet.
                    return Err(Error::AheadOfLog {
                        version: v,
                        watermark: w,
                        last_seq: self.intake.last_seq,
                        current: self.batch.manifest.version.clone(),
                    });
                }
                Ok(Some(published))
            }
            _ => Ok(None),
        }
    }

    /// [`Learner::poll_batch`] without stopping ingest: the new version's state is built on a thread of its own
    /// from the events accepted so far while this one goes on answering and learning on the old version; each
    /// call takes a finished build, has it learn the events accepted meanwhile (on another round of the thread
    /// while they are many, here once they are few) and switches to it. Returns whether it switched.
    pub fn poll_batch_in_background(&mut self) -> Result<bool> {
        if let Some(a) = self.adoption.running.take_if(|a| a.job.is_finished()) {
            let built = a.job.join().unwrap_or_else(|_| Err(Error::Panicked("adoption")));
            let current = Registry::open(&self.spec.paths.registry).current_version()?;
            match built {
                Err(e) => {
                    // Tried again after a pause that doubles with each failure in a row (5 s to 5 min): a build
                    // that cannot succeed must not take a core every tick.
                    self.adoption.failures += 1;
                    self.adoption.backoff = (self.adoption.backoff * 2).clamp(5_000, 300_000);
                    self.adoption.retry_ms = now_millis() + self.adoption.backoff;
                    tracing::error!(version = %a.version, error = %e, retry_in_ms = self.adoption.backoff, "building the state of a batch version failed");
                }
                Ok(b) if current.as_deref() != Some(a.version.as_str()) => {
                    tracing::info!(version = %a.version, current = ?current, "the version being adopted is no longer the registry's current one");
                    drop(b);
                }
                Ok(mut b) => {
                    let behind = self.intake.last_seq.saturating_sub(b.through);
                    if behind <= CATCH_UP_HERE || a.rounds >= CATCH_UP_ROUNDS {
                        let started = std::time::Instant::now();
                        b.learn_log(&self.spec, &self.intake.log.view(), b.through, self.intake.last_seq)?;
                        self.switch(b);
                        self.adoption.backoff = 0;
                        let seconds = started.elapsed().as_secs_f64();
                        tracing::info!(
                            events = behind,
                            seconds,
                            rounds = a.rounds,
                            "caught up and switched on the learner thread"
                        );
                        self.checkpoint()?;
                        return Ok(true);
                    }
                    let (spec, view, last, from) =
                        (self.spec.clone(), self.intake.log.view(), self.intake.last_seq, b.through);
                    let job = spawn_adoption(move || b.learn_log(&spec, &view, from, last).map(|()| b))?;
                    let rounds = a.rounds + 1;
                    self.adoption.running = Some(Adoption { version: a.version, keep_after: from, job, rounds });
                    return Ok(false);
                }
            }
        }
        if self.adoption.running.is_some() || now_millis() < self.adoption.retry_ms {
            return Ok(false);
        }
        let Some(published) = self.version_to_adopt()? else { return Ok(false) };
        let version = published.manifest.version.clone();
        let (spec, view, archived, last) =
            (self.spec.clone(), self.intake.log.view(), self.archive.through, self.intake.last_seq);
        let keep_after = published.manifest.watermark.max(archived);
        let live = self.live.is_some();
        let job = spawn_adoption(move || {
            fail::fail_point!("learner::adoption_build", |_| Err(Error::Inconsistent(
                "injected: the build failed".into()
            )));
            Built::through(&spec, published, live, archived, &view, last, None)
        })?;
        tracing::info!(version = %version, through = last, "adopting a batch version in the background");
        self.adoption.running = Some(Adoption { version, keep_after, job, rounds: 0 });
        self.checkpoints.dirty = true;
        Ok(false)
    }

    /// Rebuilds the realtime view and the warm-started model on `published` from every event after its watermark
    /// (archived ones read back from the master dataset, the rest from the log), then switches to them at once.
    pub(super) fn adopt(&mut self, published: Published, seed_ids: bool) -> Result<()> {
        let seed = seed_ids.then_some((&mut self.intake.dedup, now_millis()));
        let (view, live) = (self.intake.log.view(), self.live.is_some());
        let b = Built::through(&self.spec, published, live, self.archive.through, &view, self.intake.last_seq, seed)?;
        self.switch(b);
        if seed_ids {
            // The seeded ids come from the master dataset, which no replay of the log reads again: a run must hold
            // them before the checkpoint does, or a crash before the next flush forgets them.
            let retired = self.intake.dedup.flush(self.intake.last_seq, now_millis(), self.worker.is_none())?;
            self.intake.retired.extend(retired);
            self.checkpoints.dirty = true;
        }
        self.checkpoint()?;
        Ok(())
    }

    /// Switches to a state built on a new batch version through the last event accepted.
    pub(super) fn switch(&mut self, b: Built) {
        let Built {
            published,
            live_batch,
            model,
            realtime,
            mut records,
            updates,
            refused,
            from_master,
            from_log,
            started,
            ..
        } = b;
        let w = published.manifest.watermark;
        realtime.set_applied(self.intake.last_seq);
        self.views.generation += 1;
        let stats = SpeedStats {
            refused_updates: self.learning.stats.refused_updates + refused,
            ..self.learning.stats.clone()
        };
        let new_side = side(
            self.views.generation,
            &published,
            realtime,
            SpeedModel {
                model: model.model.clone(),
                updates,
                seq: self.intake.last_seq,
                stats: stats.clone(),
                windows: Arc::new(records.statuses()),
                served: Arc::new(super::learning::served(&model.model, updates, &records, self.intake.last_seq)),
                frozen: self.freeze.quality.frozen.clone(),
                retrain: self.retraining.status.clone(),
            },
        );
        tracing::info!(
            version = %published.manifest.version,
            watermark = w,
            from_master,
            from_log,
            updates,
            seconds = started.elapsed().as_secs_f64(),
            "warm-started the speed layer on the batch version"
        );
        self.views.side = new_side;
        self.learning.model = model;
        // The blend's record since it started is of what it answered live; the replay above re-scored events it
        // had already counted.
        let old = &self.learning.records.blend;
        (records.blend.scored, records.blend.errors, records.blend.loss) = (old.scored, old.errors, old.loss);
        self.learning.records = records;
        self.learning.copy_served(self.intake.last_seq);
        // The good states kept were of the old version's encoding, and the speed model is compared with a new
        // batch model.
        self.freeze.clear();
        self.freeze.quality.restart_gap();
        if self.spec.speed.freeze.enabled {
            self.keep_good(self.intake.last_seq, self.learning.model.clone());
        }
        self.learning.updates = updates;
        self.learning.stats = stats;
        self.batch = published;
        self.views.need_full = true;
        self.learning.need_write = true;
        self.checkpoints.dirty = true;
        if let (Some(live), Some(batch)) = (&self.live, live_batch) {
            live.store(Some(Arc::new(LiveState { batch, speed: Some(self.views.side.clone()) })));
        }
    }
}
