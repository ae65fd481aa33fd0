//! All speed-layer state, owned by one thread: the incremental model, the realtime buckets, the write-ahead log,
//! the events waiting to be archived, and the ids seen since the batch watermark.
//!
//! Every change goes through [`Learner::apply`], both live and when replaying the log after a restart, so a
//! restarted learner ends in the same state as one that never stopped.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use lambda_core::master;
use lambda_core::registry::{now_millis, ModelArtifact, Published, Registry};
use lambda_core::schema::{Event, Mode};
use lambda_core::snapshot::{self, Bucket, SpeedSnapshot, SpeedStats};
use lambda_core::spec::Spec;
use lambda_core::views::ViewTable;
use serde::Serialize;

use crate::ingest::Incoming;
use crate::wal::{Entry, Wal};
use crate::{Error, Result};

/// What one ingest call did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// Events accepted (durable in the log).
    pub accepted: u64,
    /// Events whose id was already accepted; ignored.
    pub duplicates: u64,
    /// Records rejected, with their line and reason.
    pub rejected: Vec<RejectedLine>,
    /// Sequence number of the first accepted event.
    pub first_seq: Option<u64>,
    /// Sequence number of the last accepted event.
    pub last_seq: Option<u64>,
}

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedLine {
    /// Line (or array position), 1-based.
    pub line: usize,
    /// Why it was rejected.
    pub error: String,
}

/// The speed layer's state.
pub struct Learner {
    spec: Spec,
    wal: Wal,
    dead_letters: File,
    dead_letter_path: PathBuf,
    batch: Published,
    model: ModelArtifact,
    base_version: String,
    base_watermark: u64,
    last_seq: u64,
    archived_through: u64,
    checkpointed_seq: u64,
    updates: u64,
    stats: SpeedStats,
    sealed: Vec<Bucket>,
    open: ViewTable,
    pending: Vec<(u64, Event)>,
    ids: HashSet<String>,
    recovered: Vec<(u64, u64)>,
}

/// `(first, last)` of a speed archive file name `speed-<first>-<last>.parquet`.
fn archive_range(path: &std::path::Path) -> Option<(u64, u64)> {
    let name = path.file_stem()?.to_str()?;
    let mut parts = name.strip_prefix("speed-")?.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Learner {
    /// Opens the state under `spec.paths.state`: the last checkpoint, then the log after it. Without a checkpoint
    /// it warm-starts from the current batch model, which must exist.
    pub fn open(spec: Spec) -> Result<Learner> {
        let state = spec.paths.state.clone();
        std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
        let registry = Registry::open(&spec.paths.registry);
        let batch = registry.load_current(&spec)?.ok_or_else(|| {
            Error::State(format!(
                "no batch model is published in {}; run `lambda-ml batch --spec {}` first",
                spec.paths.registry.display(),
                spec.source.display()
            ))
        })?;
        let dead_letter_path = state.join("dead-letter.ndjson");
        let dead_letters = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dead_letter_path)
            .map_err(|e| Error::io(&dead_letter_path, e))?;
        let (wal, entries) = Wal::open(&state.join("wal.ndjson"))?;
        let checkpoint = snapshot::load_current(&state)?;
        let fresh = checkpoint.is_none();
        let mut learner = match checkpoint {
            Some((_, snap)) => Learner {
                model: (*snap.artifact).clone(),
                base_version: snap.base_version,
                base_watermark: snap.base_watermark,
                last_seq: snap.last_seq,
                archived_through: snap.archived_through,
                checkpointed_seq: snap.last_seq,
                updates: snap.updates,
                stats: snap.stats,
                sealed: snap.buckets,
                ..Learner::empty(&spec, wal, dead_letters, dead_letter_path, batch)
            },
            None => {
                let start = master::max_seq(&spec.paths.master)?.max(batch.manifest.watermark);
                Learner {
                    model: batch.artifact.clone(),
                    base_version: batch.manifest.version.clone(),
                    base_watermark: batch.manifest.watermark,
                    last_seq: start,
                    archived_through: start,
                    checkpointed_seq: start,
                    ..Learner::empty(&spec, wal, dead_letters, dead_letter_path, batch)
                }
            }
        };
        learner.model.validate(&spec)?;
        // Archive files written after the checkpoint, before a crash: their events are replayed but not rewritten.
        learner.recovered = master::list_files(&spec.paths.master)?
            .iter()
            .filter_map(|p| archive_range(p))
            .filter(|(first, _)| *first > learner.archived_through)
            .collect();
        learner.recovered.sort_unstable();
        let mut replayed = 0;
        for entry in &entries {
            if let Some(id) = event_id(&spec, &entry.event) {
                learner.ids.insert(id);
            }
            if entry.seq <= learner.last_seq {
                continue;
            }
            let event = spec.parse_record(&entry.event, Mode::Event).map_err(|r| Error::Corrupt {
                path: state.join("wal.ndjson"),
                message: format!("seq {}: {r}", entry.seq),
            })?;
            learner.apply(entry.seq, event);
            replayed += 1;
            if learner.recovered.iter().any(|(_, last)| *last == entry.seq) {
                learner.seal()?;
            }
        }
        if replayed > 0 {
            tracing::info!(replayed, last_seq = learner.last_seq, "replayed the log after the checkpoint");
        }
        if fresh || replayed > 0 {
            learner.checkpoint()?;
        }
        learner.poll_batch()?;
        Ok(learner)
    }

    fn empty(spec: &Spec, wal: Wal, dead_letters: File, dead_letter_path: PathBuf, batch: Published) -> Learner {
        Learner {
            spec: spec.clone(),
            wal,
            dead_letters,
            dead_letter_path,
            model: batch.artifact.clone(),
            base_version: batch.manifest.version.clone(),
            base_watermark: batch.manifest.watermark,
            batch,
            last_seq: 0,
            archived_through: 0,
            checkpointed_seq: 0,
            updates: 0,
            stats: SpeedStats::default(),
            sealed: Vec::new(),
            open: ViewTable::new(spec),
            pending: Vec::new(),
            ids: HashSet::new(),
            recovered: Vec::new(),
        }
    }

    /// Highest sequence number applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Accepts a batch of parsed records: rejections go to the dead-letter file, known ids are skipped, the rest
    /// get sequence numbers, are logged and synced, then applied.
    pub fn ingest(&mut self, items: Vec<Incoming>) -> Result<IngestReport> {
        let mut reports = self.ingest_many(vec![items])?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// [`Learner::ingest`] for several requests at once, with one sync of the log for all (group commit).
    pub fn ingest_many(&mut self, requests: Vec<Vec<Incoming>>) -> Result<Vec<IngestReport>> {
        let mut reports = Vec::with_capacity(requests.len());
        let mut dead = String::new();
        let mut accepted: Vec<(usize, u64, Event, serde_json::Value)> = Vec::new();
        let mut group_ids: HashSet<String> = HashSet::new();
        let received = now_millis();
        for (request, items) in requests.into_iter().enumerate() {
            let mut report = IngestReport::default();
            for item in items {
                let (line, error, raw) = match item {
                    Incoming::Rejected { line, error, raw } => (line, error, raw),
                    Incoming::Accepted { line, event, raw } => match self.model.encoder.check_ranges(&event) {
                        Err(r) => (line, r.to_string(), raw.to_string()),
                        Ok(()) => {
                            if self.ids.contains(&event.id) || !group_ids.insert(event.id.clone()) {
                                report.duplicates += 1;
                            } else {
                                let seq = self.last_seq + 1 + accepted.len() as u64;
                                accepted.push((request, seq, event, raw));
                            }
                            continue;
                        }
                    },
                };
                dead.push_str(
                    &serde_json::json!({"received_ms": received, "line": line, "error": error, "raw": raw}).to_string(),
                );
                dead.push('\n');
                report.rejected.push(RejectedLine { line, error });
            }
            self.stats.rejected += report.rejected.len() as u64;
            self.stats.duplicates += report.duplicates;
            reports.push(report);
        }
        if !dead.is_empty() {
            self.dead_letters.write_all(dead.as_bytes()).map_err(|e| Error::io(&self.dead_letter_path, e))?;
            self.dead_letters.sync_data().map_err(|e| Error::io(&self.dead_letter_path, e))?;
        }
        let entries: Vec<Entry> =
            accepted.iter().map(|(_, seq, _, raw)| Entry { seq: *seq, event: raw.clone() }).collect();
        // Nothing is applied unless it is durable.
        self.wal.append(&entries)?;
        for (request, seq, event, _) in accepted {
            let report = &mut reports[request];
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            report.accepted += 1;
            self.ids.insert(event.id.clone());
            self.apply(seq, event);
        }
        Ok(reports)
    }

    /// Predicts then learns one event (prequential), and folds it into the open bucket.
    fn apply(&mut self, seq: u64, event: Event) {
        if let Some(target) = &event.target {
            let x = self.model.encoder.encode(&event);
            let speed = self.model.model.predict(&x);
            let batch = self.batch.artifact.predict(&event);
            if let (Some(ls), Some(lb)) =
                (self.model.model.loss(&speed, target), self.batch.artifact.model.loss(&batch, target))
            {
                self.stats.labelled += 1;
                self.stats.speed_loss_sum += ls;
                self.stats.batch_loss_sum += lb;
            }
            if self.model.model.sgd_update(&x, target, self.spec.speed.learning_rate, self.spec.speed.l2) {
                self.updates += 1;
            }
        }
        self.open.observe(&event.key, event.time, seq, &event, event.target.as_ref());
        self.pending.push((seq, event));
        self.last_seq = seq;
        self.stats.accepted += 1;
    }

    /// Archives the open bucket's events into the master dataset and closes the bucket.
    fn seal(&mut self) -> Result<()> {
        let (Some((first, _)), Some((last, _))) = (self.pending.first(), self.pending.last()) else { return Ok(()) };
        let (first, last) = (*first, *last);
        if !self.recovered.contains(&(first, last)) {
            let dir = master::partition(&self.spec.paths.master, now_millis());
            let path = dir.join(format!("speed-{first:012}-{last:012}.parquet"));
            let rows: Vec<(u64, &Event)> = self.pending.iter().map(|(s, e)| (*s, e)).collect();
            master::write_events(&self.spec, &path, &rows)?;
        }
        let view = std::mem::replace(&mut self.open, ViewTable::new(&self.spec));
        self.sealed.push(Bucket { first_seq: first, last_seq: last, view: Arc::new(view) });
        self.pending.clear();
        self.archived_through = last;
        Ok(())
    }

    /// Whether anything happened since the last checkpoint.
    pub fn needs_checkpoint(&self) -> bool {
        self.last_seq != self.checkpointed_seq || !self.pending.is_empty()
    }

    /// Archives the open bucket, then publishes a checkpoint (which the serving layer also reads).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.seal()?;
        let version = snapshot::publish(&self.spec.paths.state, &self.snapshot())?;
        self.checkpointed_seq = self.last_seq;
        tracing::debug!(%version, last_seq = self.last_seq, "checkpoint");
        Ok(())
    }

    /// The current state as a snapshot, the open bucket included.
    pub fn snapshot(&self) -> SpeedSnapshot {
        let mut buckets = self.sealed.clone();
        if let (Some((first, _)), Some((last, _))) = (self.pending.first(), self.pending.last()) {
            buckets.push(Bucket { first_seq: *first, last_seq: *last, view: Arc::new(self.open.clone()) });
        }
        SpeedSnapshot {
            base_version: self.base_version.clone(),
            base_watermark: self.base_watermark,
            last_seq: self.last_seq,
            archived_through: self.archived_through,
            updates: self.updates,
            artifact: Arc::new(self.model.clone()),
            buckets,
            stats: self.stats.clone(),
        }
    }

    /// Adopts a newer batch model if one was published. Returns whether it did.
    pub fn poll_batch(&mut self) -> Result<bool> {
        let registry = Registry::open(&self.spec.paths.registry);
        match registry.current_version()? {
            Some(v) if v != self.base_version => {
                let published = registry
                    .load_current(&self.spec)?
                    .ok_or_else(|| Error::State("the current model vanished".into()))?;
                self.adopt(published)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Warm start: the new batch model becomes the incremental model, buckets the batch covers are dropped, and the
    /// logged events after its watermark are learned again.
    fn adopt(&mut self, published: Published) -> Result<()> {
        let w = published.manifest.watermark;
        if let Some(b) = self.sealed.iter().find(|b| b.first_seq <= w && b.last_seq > w) {
            tracing::warn!(
                first = b.first_seq,
                last = b.last_seq,
                watermark = w,
                "bucket straddles the batch watermark; kept whole"
            );
        }
        self.sealed.retain(|b| b.last_seq > w);
        self.model = published.artifact.clone();
        self.updates = 0;
        self.base_version = published.manifest.version.clone();
        self.base_watermark = w;
        let kept = self.wal.retain_after(w)?;
        self.ids.clear();
        for entry in &kept {
            if let Some(id) = event_id(&self.spec, &entry.event) {
                self.ids.insert(id);
            }
            if entry.seq > self.last_seq {
                continue;
            }
            if let Ok(event) = self.spec.parse_record(&entry.event, Mode::Event) {
                if let Some(target) = &event.target {
                    let x = self.model.encoder.encode(&event);
                    if self.model.model.sgd_update(&x, target, self.spec.speed.learning_rate, self.spec.speed.l2) {
                        self.updates += 1;
                    }
                }
            }
        }
        self.batch = published;
        tracing::info!(version = %self.base_version, watermark = w, replayed = self.updates, "warm-started from the new batch model");
        self.checkpoint()
    }
}

/// The id of a logged event, as the schema reads it.
fn event_id(spec: &Spec, event: &serde_json::Value) -> Option<String> {
    match event.get(&spec.dataset.id_column)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
