//! Intake: an ingest call's records checked against the model, de-duplicated, given sequence numbers, and made
//! durable (dead letters, then the log) before anything is applied.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;

use lambda_core::schema::Target;
use lambda_core::spec::Spec;
use lambda_models::online::AdaptiveLinear;
use lambda_stores::checkpoint::{SourcePosition, SourceState};
use lambda_stores::registry::now_millis;
use serde::Serialize;

use super::dead_letters::{rejected_key, DeadLetters};
use crate::dedup::{id_hash, Dedup};
use crate::ingest::Incoming;
use crate::log::{GroupMark, Log, Record};
use crate::Result;

use super::freeze::Turn;
use super::learning::{learn, Predicted, Unlearnable};
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

impl Learner {
    /// [`Learner::ingest`] for several requests at once, with one sync of the log for all (group commit).
    pub fn ingest_many(&mut self, requests: Vec<Vec<Incoming>>) -> Result<Vec<IngestReport>> {
        let now = now_millis();
        let mut reports = Vec::with_capacity(requests.len());
        // Rejections: line, reason, raw text, the sequence number accepted before it, its key.
        let mut dead: Vec<(usize, String, String, u64, u64)> = Vec::new();
        let mut accepted: Vec<(usize, u128, Record, Predicted, bool)> = Vec::new();
        let mut group_ids: HashSet<u128> = HashSet::new();
        let mut group_sources: Vec<SourcePosition> = Vec::new();
        let mut working: Option<AdaptiveLinear> = None;
        // Learning runs on copies, committed only once the log is synced; the same additions in the same order as a
        // replay, so that a restart ends bit for bit where this run does.
        let mut stats = self.learning.stats.clone();
        let mut updates = 0u64;
        let mut x = std::mem::take(&mut self.learning.x);
        let encoder = &self.batch.artifact.encoder;
        let target_field = &self.spec.dataset.target;
        // The input's verdict is taken after every accepted record, as a replay of the log takes it, so that bad
        // records inside a large request freeze the updates where they come, not at the request's end.
        let judging = self.spec.speed.freeze.enabled;
        let mut quality = self.freeze.quality.clone();
        let mut frozen = self.frozen();
        let mut turns: Vec<Turn> = Vec::new();
        // The good states' linear models, taken when the verdict first turns (a freeze goes back to the oldest).
        let mut goods: Option<VecDeque<(u64, AdaptiveLinear)>> = None;
        // Keys of the records rejected since the last accepted one, logged with the next (or the last) one.
        let mut rejected_keys: Vec<u64> = Vec::new();
        for (request, items) in requests.into_iter().enumerate() {
            let mut report = IngestReport::default();
            for item in items {
                let (line, error, raw, key) = match item {
                    Incoming::Rejected { line, error, raw } => {
                        let key = rejected_key(&raw);
                        (line, error, raw, key)
                    }
                    Incoming::Accepted { line, event, raw, source } => {
                        // A redelivery from an event log: this position or an earlier one is already held.
                        if let Some(p) = source {
                            let held = self.intake.sources.get(&p.source).is_some_and(|s| s.contains(p.seq));
                            if held || group_sources.iter().any(|g| (g.source, g.seq) == (p.source, p.seq)) {
                                report.duplicates += 1;
                                continue;
                            }
                        }
                        let unknown = matches!(&event.target,
                            Some(Target::Class(c)) if self.learning.model.model.class_index(c).is_none());
                        let check = encoder.check_ranges(&event).map_err(|r| r.to_string()).and_then(|()| match &event
                            .target
                        {
                            Some(t @ Target::Value(_)) => {
                                encoder.check_target(target_field, t).map_err(|r| r.to_string())
                            }
                            Some(Target::Class(c))
                                if self.learning.model.model.class_index(c).is_none()
                                    && !self.spec.dataset.allow_new_classes =>
                            {
                                Err(format!(
                                    "field `{target_field}`: class {c:?} is not one of the model's classes {:?} \
                                         (set `dataset.allow_new_classes` to accept new classes)",
                                    self.learning.model.model.classes
                                ))
                            }
                            _ => Ok(()),
                        });
                        if let Err(e) = check {
                            (line, e, raw.to_string(), rejected_key(&event.id))
                        } else {
                            let h = id_hash(&event.id);
                            if group_ids.contains(&h) || self.intake.dedup.contains(h)? {
                                report.duplicates += 1;
                                continue;
                            }
                            let learned = match &event.target {
                                None => Ok(None),
                                Some(target) => {
                                    x.resize(encoder.dim(), 0.0);
                                    encoder.encode_row(&event, &mut x);
                                    let m = working.get_or_insert_with(|| self.learning.model.clone());
                                    let mut s = stats.clone();
                                    let r = learn(m, &self.batch.artifact, &x, target, &self.spec, &mut s, frozen);
                                    if r.is_ok() {
                                        stats = s;
                                    }
                                    match r {
                                        Ok(done) => Ok(Some(done)),
                                        Err(Unlearnable::UnknownClass) => Ok(None),
                                        Err(Unlearnable::NonFinite(why)) => Err(why),
                                    }
                                }
                            };
                            match learned {
                                Err(why) => (line, format!("refused: {why}"), raw.to_string(), rejected_key(&event.id)),
                                Ok(done) => {
                                    let seq = self.intake.last_seq + 1 + accepted.len() as u64;
                                    quality.push(false, encoder.outside_history(&event), unknown);
                                    if let (Some((_, ps, pb)), Some(target)) = (&done, &event.target) {
                                        if let Some(gap) = self.learning.records.gap(ps, pb, target) {
                                            quality.observe_gap(gap, seq);
                                        }
                                    }
                                    updates += u64::from(matches!(done, Some((true, _, _))));
                                    group_ids.insert(h);
                                    let predicted = done.map(|(_, ps, pb)| (ps, pb));
                                    let rejected_before = std::mem::take(&mut rejected_keys);
                                    let mark = GroupMark { rejected_before, ..GroupMark::default() };
                                    if let Some(p) = source {
                                        group_sources.push(p);
                                    }
                                    let record = Record { seq, ingest_ms: now, event, mark, source };
                                    accepted.push((request, h, record, predicted, frozen));
                                    let limits = &self.spec.speed.freeze;
                                    let turn = if judging { quality.judge(limits, seq, now) } else { None };
                                    if let Some(freeze) = turn {
                                        let goods = goods.get_or_insert_with(|| {
                                            self.freeze.good.iter().map(|g| (g.seq, g.model.clone())).collect()
                                        });
                                        let after = accepted.len() - 1;
                                        if freeze {
                                            if let Some((_, m)) = goods.pop_front() {
                                                working = Some(m);
                                            }
                                            goods.clear();
                                            let why = quality.frozen.as_ref().map(|z| z.reason.clone());
                                            turns.push(Turn { after, seq, resume: None, why: why.unwrap_or_default() });
                                        } else {
                                            let m = working.get_or_insert_with(|| self.learning.model.clone()).clone();
                                            if goods.len() == 3 {
                                                goods.pop_front();
                                            }
                                            goods.push_back((seq, m.clone()));
                                            turns.push(Turn { after, seq, resume: Some(m), why: String::new() });
                                        }
                                        frozen = freeze;
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                };
                quality.push_rejected(key);
                rejected_keys.push(key);
                dead.push((line, error.clone(), raw, self.intake.last_seq + accepted.len() as u64, key));
                report.rejected.push(RejectedLine { line, error });
            }
            reports.push(report);
        }
        self.learning.x = x;
        if let Some((_, _, last, _, _)) = accepted.last_mut() {
            last.mark.rejected_after = rejected_keys;
            last.mark.last = true;
        }
        // Nothing is applied unless it is durable: dead letters first, then the log.
        if !dead.is_empty() {
            let alone = accepted.is_empty();
            let mut text = String::new();
            for (i, (line, error, raw, after_seq, key)) in dead.iter().enumerate() {
                let n = self.intake.dead_n + 1 + i as u64;
                let d = serde_json::json!({"received_ms": now, "line": line, "error": error, "raw": raw, "n": n,
                    "after_seq": after_seq, "alone": alone, "key": format!("{key:016x}")});
                text.push_str(&d.to_string());
                text.push('\n');
            }
            self.intake.dead.append(&text)?;
            self.intake.dead_n += dead.len() as u64;
        }
        fail::fail_point!("learner::after_dead_letters");
        let records: Vec<Record> = accepted.iter().map(|(_, _, r, _, _)| r.clone()).collect();
        self.intake.log.append(&records)?;
        for p in &group_sources {
            self.intake.sources.entry(p.source).or_insert_with(|| SourceState::new(p.source)).insert(p);
        }
        if let Some(m) = working {
            self.learning.model = m;
        }
        self.learning.updates += updates;
        self.freeze.quality = quality;
        self.learning.stats.labelled = stats.labelled;
        self.learning.stats.speed_loss_sum = stats.speed_loss_sum;
        self.learning.stats.batch_loss_sum = stats.batch_loss_sum;
        for report in &reports {
            self.learning.stats.rejected += report.rejected.len() as u64;
            self.learning.stats.duplicates += report.duplicates;
        }
        let any = !accepted.is_empty();
        let turned = !turns.is_empty();
        let mut turns = turns.into_iter().peekable();
        for (i, (_, _, r, predicted, frozen)) in accepted.iter().enumerate() {
            if let Some(target) = &r.event.target {
                let encoder = &self.batch.artifact.encoder;
                self.learning.x.resize(encoder.dim(), 0.0);
                encoder.encode_row(&r.event, &mut self.learning.x);
                let predicted = predicted.as_ref().map(|(ps, pb)| (ps, pb));
                let classes = &self.learning.model.model.classes;
                self.learning.records.observe(
                    classes,
                    &self.learning.x,
                    predicted,
                    target,
                    r.seq,
                    r.event.time,
                    !frozen,
                );
            }
            // The other learners turn where the linear model did (it is already the group's last: the good state's
            // model a freeze hands back was taken in the first pass).
            while let Some(t) = turns.next_if(|t| t.after == i) {
                self.turn(t.seq, t.resume, &t.why);
            }
        }
        for (request, h, r, _, _) in accepted {
            let report = &mut reports[request];
            report.first_seq.get_or_insert(r.seq);
            report.last_seq = Some(r.seq);
            report.accepted += 1;
            self.intake.dedup.insert(h, r.ingest_ms);
            self.archive.open_first_ms.get_or_insert(r.ingest_ms);
            self.views.side.realtime.observe(&r.event.key, r.event.time, r.seq, &r.event, r.event.target.as_ref());
            self.intake.last_seq = r.seq;
            self.learning.stats.accepted += 1;
        }
        if any {
            self.views.side.realtime.set_applied(self.intake.last_seq);
        }
        self.checkpoints.dirty = true;
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
        if any && self.next_good().is_some_and(|g| self.intake.last_seq >= g) {
            self.keep_good(self.intake.last_seq, self.learning.model.clone());
        }
        // Counted in events, not ticks, so that a fast replay starts a retraining where a live stream would.
        if let Err(e) = self.retrain_step(false) {
            tracing::error!(error = %e, "retraining on the fly could not start");
        }
        Ok(reports)
    }
}
