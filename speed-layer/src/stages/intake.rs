//! Intake: an ingest call's records checked against the model, de-duplicated, given sequence numbers, and made
//! durable (dead letters, then the log) before anything is applied.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use lambda_core::schema::Event;
use lambda_core::spec::Spec;
use lambda_stores::checkpoint::{SourcePosition, SourceState};
use lambda_stores::registry::now_millis;
use serde::Serialize;

use super::dead_letters::{rejected_key, DeadLetters};
use super::dedup::{id_hash, Dedup};
use super::log::{GroupMark, Log, Record};
use crate::ingest::Incoming;
use crate::Result;

use super::learning::Predicted;
use super::trial::Trial;
use super::Learner;

/// Intake: sequence numbers, de-duplication by id and by source position, the dead letters and the log. What it
/// holds is durable before anything is applied.
pub(super) struct Intake {
    pub(super) log: Log,
    pub(super) dedup: Dedup,
    pub(super) dead: DeadLetters,
    /// Number of the last dead letter written.
    pub(super) dead_n: u64,
    /// Which messages of each external event log are held (see [`SourceState`]).
    pub(super) sources: BTreeMap<u64, SourceState>,
    /// Highest sequence number given (and applied).
    pub(super) last_seq: u64,
    /// Id runs the next checkpoint no longer lists.
    pub(super) retired: Vec<PathBuf>,
    /// Slowest write (and merge) of an id run since start (milliseconds).
    pub(super) flush_max_ms: f64,
}

impl Intake {
    pub(super) fn new(
        log: Log,
        dedup: Dedup,
        dead: DeadLetters,
        dead_n: u64,
        sources: BTreeMap<u64, SourceState>,
        last_seq: u64,
    ) -> Intake {
        Intake { log, dedup, dead, dead_n, sources, last_seq, retired: Vec::new(), flush_max_ms: 0.0 }
    }
}

/// What one ingest call did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RejectedLine {
    /// Line (or array position), 1-based.
    pub line: usize,
    /// Why it was rejected.
    pub error: String,
}

pub(super) fn filter_budget(spec: &Spec) -> usize {
    spec.speed.dedup_filter_mb.saturating_mul(1 << 20)
}

/// A rejected record on its way to the dead letters.
struct Dead {
    line: usize,
    error: String,
    raw: String,
    /// The sequence number of the last event accepted before it.
    after_seq: u64,
    /// Its key for the input's quality.
    key: u64,
}

/// An accepted event on its way to the log, with what the trial made of it.
struct Accepted {
    request: usize,
    id: u128,
    record: Record,
    predicted: Predicted,
    /// Whether updates were frozen when it came.
    frozen: bool,
}

/// A group of requests in flight: what intake decided of each record. Nothing of it is applied before
/// [`Intake::commit`] made it durable.
struct Group {
    now: i64,
    /// The sequence number before the group's first.
    after: u64,
    reports: Vec<IngestReport>,
    dead: Vec<Dead>,
    accepted: Vec<Accepted>,
    ids: HashSet<u128>,
    sources: Vec<SourcePosition>,
    /// Keys of the records rejected since the last accepted one, logged with the next (or the last) one.
    rejected_keys: Vec<u64>,
}

impl Group {
    fn new(now: i64, after: u64, requests: usize) -> Group {
        Group {
            now,
            after,
            reports: vec![IngestReport::default(); requests],
            dead: Vec::new(),
            accepted: Vec::new(),
            ids: HashSet::new(),
            sources: Vec::new(),
            rejected_keys: Vec::new(),
        }
    }

    /// The sequence number the next accepted event gets.
    fn next_seq(&self) -> u64 {
        self.after + 1 + self.accepted.len() as u64
    }

    fn reject(&mut self, request: usize, line: usize, error: String, raw: String, key: u64) {
        self.rejected_keys.push(key);
        let after_seq = self.next_seq() - 1;
        self.reports[request].rejected.push(RejectedLine { line, error: error.clone() });
        self.dead.push(Dead { line, error, raw, after_seq, key });
    }

    fn accept(
        &mut self,
        request: usize,
        id: u128,
        event: Event,
        source: Option<SourcePosition>,
        done: Predicted,
        frozen: bool,
    ) {
        let rejected_before = std::mem::take(&mut self.rejected_keys);
        let mark = GroupMark { rejected_before, ..GroupMark::default() };
        self.ids.insert(id);
        self.sources.extend(source);
        let record = Record { seq: self.next_seq(), ingest_ms: self.now, event, mark, source };
        self.accepted.push(Accepted { request, id, record, predicted: done, frozen });
    }
}

impl Intake {
    /// Whether a message of an external event log is held already: a redelivery.
    fn held(&self, group: &Group, p: &SourcePosition) -> bool {
        self.sources.get(&p.source).is_some_and(|s| s.contains(p.seq))
            || group.sources.iter().any(|g| (g.source, g.seq) == (p.source, p.seq))
    }

    /// Whether an event of this id was accepted already (in the window, or earlier in the group).
    fn known(&self, group: &Group, id: u128) -> Result<bool> {
        Ok(group.ids.contains(&id) || self.dedup.contains(id)?)
    }

    /// Makes the group durable: its rejections in the dead letters, then its events in the log.
    fn commit(&mut self, group: &mut Group) -> Result<()> {
        if let Some(last) = group.accepted.last_mut() {
            last.record.mark.rejected_after = std::mem::take(&mut group.rejected_keys);
            last.record.mark.last = true;
        }
        if !group.dead.is_empty() {
            let alone = group.accepted.is_empty();
            let mut text = String::new();
            for (i, d) in group.dead.iter().enumerate() {
                let n = self.dead_n + 1 + i as u64;
                let line = serde_json::json!({"received_ms": group.now, "line": d.line, "error": d.error,
                    "raw": d.raw, "n": n, "after_seq": d.after_seq, "alone": alone, "key": format!("{:016x}", d.key)});
                text.push_str(&line.to_string());
                text.push('\n');
            }
            self.dead.append(&text)?;
            self.dead_n += group.dead.len() as u64;
        }
        fail::fail_point!("learner::after_dead_letters");
        let records: Vec<Record> = group.accepted.iter().map(|a| a.record.clone()).collect();
        self.log.append(&records)?;
        for p in &group.sources {
            self.sources.entry(p.source).or_insert_with(|| SourceState::new(p.source)).insert(p);
        }
        Ok(())
    }
}

impl Learner {
    /// [`Learner::ingest`] for several requests at once, with one sync of the log for all (group commit). Each
    /// record is screened (redelivery, validation, duplicate id), then tried on copies of the models and judged
    /// with the input's quality (the trial); the group is made durable, and only then applied.
    pub fn ingest_many(&mut self, requests: Vec<Vec<Incoming>>) -> Result<Vec<IngestReport>> {
        let now = now_millis();
        let mut group = Group::new(now, self.intake.last_seq, requests.len());
        let mut trial = Trial::start(&self.learning, &self.freeze, self.freeze.frozen());
        let mut x = std::mem::take(&mut self.learning.x);
        for (request, items) in requests.into_iter().enumerate() {
            for item in items {
                let (line, error, raw, key) = match item {
                    Incoming::Rejected { line, error, raw } => {
                        let key = rejected_key(&raw);
                        (line, error, raw, key)
                    }
                    Incoming::Accepted { line, event, raw, source } => {
                        if source.as_ref().is_some_and(|p| self.intake.held(&group, p)) {
                            group.reports[request].duplicates += 1;
                            continue;
                        }
                        if let Err(e) = self.learning.check(&self.spec, &self.batch.artifact.encoder, &event) {
                            (line, e, raw.to_string(), rejected_key(&event.id))
                        } else {
                            let id = id_hash(&event.id);
                            if self.intake.known(&group, id)? {
                                group.reports[request].duplicates += 1;
                                continue;
                            }
                            match trial.learn(&self.learning, &self.batch.artifact, &self.spec, &event, &mut x) {
                                Err(why) => (line, format!("refused: {why}"), raw.to_string(), rejected_key(&event.id)),
                                Ok(done) => {
                                    let seq = group.next_seq();
                                    let frozen = trial.frozen;
                                    trial.accepted(&self.learning, &self.batch.artifact.encoder, &event, &done, seq);
                                    let predicted = done.map(|(_, ps, pb)| (ps, pb));
                                    group.accept(request, id, event, source, predicted, frozen);
                                    let after = group.accepted.len() - 1;
                                    trial.judge(&self.spec, &self.learning, &self.freeze, seq, now, after);
                                    continue;
                                }
                            }
                        }
                    }
                };
                trial.rejected(key);
                group.reject(request, line, error, raw, key);
            }
        }
        self.learning.x = x;
        self.intake.commit(&mut group)?;
        self.apply_group(group, trial)
    }

    /// Applies a group made durable: the trial's models and counters, the other learners and the turns where they
    /// came, the ids and the realtime view; checkpoints when the input's verdict turned.
    fn apply_group(&mut self, group: Group, trial: Trial) -> Result<Vec<IngestReport>> {
        let Group { now, mut reports, accepted, .. } = group;
        let turns = trial.commit(&mut self.learning, &mut self.freeze);
        for report in &reports {
            self.learning.stats.rejected += report.rejected.len() as u64;
            self.learning.stats.duplicates += report.duplicates;
        }
        let any = !accepted.is_empty();
        let turned = !turns.is_empty();
        let mut turns = turns.into_iter().peekable();
        for (i, a) in accepted.iter().enumerate() {
            let r = &a.record;
            if let Some(target) = &r.event.target {
                let encoder = &self.batch.artifact.encoder;
                let l = &mut self.learning;
                l.x.resize(encoder.dim(), 0.0);
                encoder.encode_row(&r.event, &mut l.x);
                let predicted = a.predicted.as_ref().map(|(ps, pb)| (ps, pb));
                let classes = &l.model.model.classes;
                l.records.observe(classes, &l.x, predicted, target, r.seq, r.event.time, !a.frozen);
            }
            // The other learners turn where the linear model did (it is already the group's last: the good state's
            // model a freeze hands back was taken in the trial).
            while let Some(t) = turns.next_if(|t| t.after == i) {
                self.turn(t.seq, t.resume, &t.why);
            }
        }
        for Accepted { request, id, record: r, .. } in accepted {
            let report = &mut reports[request];
            report.first_seq.get_or_insert(r.seq);
            report.last_seq = Some(r.seq);
            report.accepted += 1;
            self.intake.dedup.insert(id, r.ingest_ms);
            self.archive.open_first_ms.get_or_insert(r.ingest_ms);
            self.views.side.realtime.observe(&r.event.key, r.event.time, r.seq, &r.event, r.event.target.as_ref());
            self.intake.last_seq = r.seq;
            self.learning.stats.accepted += 1;
        }
        if any {
            self.views.side.realtime.set_applied(self.intake.last_seq);
        }
        self.checkpoints.dirty = true;
        // Serving's copy of the models with the blend's weights, after every group that learned: the blend weighs
        // what it answers with, and answers with models that learned every applied event. A copy is small beside
        // the group's sync, and groups grow when copies keep the thread busy. (A turn's restore is copied by the
        // checkpoint that follows it.)
        if any {
            self.learning.copy_served(self.intake.last_seq);
        }
        // Rejections after the group's last accepted record are in the window now.
        if self.judge_input(now) || turned {
            // A replay after a crash learns exactly what this run learned only from a state past the turn.
            self.learning.need_write = true;
            self.publish_model();
            self.checkpoint()?;
        } else {
            self.publish_model();
        }
        // A group the verdict found clean ends with a good state when one is due (a replay takes it at the
        // group's last event: a group that froze or resumed was checkpointed, so no replay goes through it).
        if any && self.freeze.next_good().is_some_and(|g| self.intake.last_seq >= g) {
            self.keep_good(self.intake.last_seq, self.learning.model.clone());
        }
        // Counted in events, not ticks, so that a fast replay starts a retraining where a live stream would.
        if let Err(e) = self.retrain_step(false) {
            tracing::error!(error = %e, "retraining on the fly could not start");
        }
        Ok(reports)
    }
}
