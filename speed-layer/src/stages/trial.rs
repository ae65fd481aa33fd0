//! The trial: a group's accepted events learned and judged on copies of the linear model, its counters and the
//! input's quality, committed only once the group is durable. The same additions in the same order as a replay
//! of the log, so that a restart ends bit for bit where the run does.

use std::collections::VecDeque;

use lambda_core::encoder::Encoder;
use lambda_core::schema::{Event, Target};
use lambda_core::spec::Spec;
use lambda_models::model::Prediction;
use lambda_models::online::AdaptiveLinear;
use lambda_models::quality::Quality;
use lambda_stores::checkpoint::SpeedStats;
use lambda_stores::registry::ModelArtifact;

use super::freeze::{Freeze, Turn};
use super::learning::{learn, Learning, Unlearnable};

/// What learning made of an accepted event: whether the model updated, and the speed and the batch model's
/// predictions made before it learned (none for an unlabelled event or a class the model does not have).
pub(super) type Learned = Option<(bool, Prediction, Prediction)>;

pub(super) struct Trial {
    /// The linear model as the group leaves it, once an event changed it.
    working: Option<AdaptiveLinear>,
    stats: SpeedStats,
    updates: u64,
    quality: Quality,
    /// Whether updates are frozen at this point of the group.
    pub(super) frozen: bool,
    turns: Vec<Turn>,
    /// The good states' linear models, taken when the verdict first turns (a freeze goes back to the oldest).
    goods: Option<VecDeque<(u64, AdaptiveLinear)>>,
}

impl Trial {
    pub(super) fn start(learning: &Learning, freeze: &Freeze, frozen: bool) -> Trial {
        Trial {
            working: None,
            stats: learning.stats.clone(),
            updates: 0,
            quality: freeze.quality.clone(),
            frozen,
            turns: Vec::new(),
            goods: None,
        }
    }

    /// Learns a labelled event on the working model (prequential: predicted first). `Err` names why it cannot be
    /// learned (a loss or an update that would not be finite); nothing changes then.
    pub(super) fn learn(
        &mut self,
        learning: &Learning,
        batch: &ModelArtifact,
        spec: &Spec,
        event: &Event,
        x: &mut Vec<f64>,
    ) -> Result<Learned, String> {
        let Some(target) = &event.target else { return Ok(None) };
        x.resize(batch.encoder.dim(), 0.0);
        batch.encoder.encode_row(event, x);
        let model = self.working.get_or_insert_with(|| learning.model.clone());
        let mut stats = self.stats.clone();
        let r = learn(model, batch, x, target, spec, &mut stats, self.frozen);
        if r.is_ok() {
            self.stats = stats;
        }
        match r {
            Ok(done) => Ok(Some(done)),
            Err(Unlearnable::UnknownClass) => Ok(None),
            Err(Unlearnable::NonFinite(why)) => Err(why),
        }
    }

    /// Counts an accepted event in the input's quality (and the gap between the models' losses on it).
    pub(super) fn accepted(&mut self, learning: &Learning, encoder: &Encoder, event: &Event, done: &Learned, seq: u64) {
        let unknown = matches!(&event.target, Some(Target::Class(c)) if learning.model.model.class_index(c).is_none());
        self.quality.push(false, encoder.outside_history(event), unknown);
        if let (Some((_, ps, pb)), Some(target)) = (done, &event.target) {
            if let Some(gap) = learning.records.gap(ps, pb, target) {
                self.quality.observe_gap(gap, seq);
            }
        }
        self.updates += u64::from(matches!(done, Some((true, _, _))));
    }

    /// Counts a rejected record in the input's quality.
    pub(super) fn rejected(&mut self, key: u64) {
        self.quality.push_rejected(key);
    }

    /// Takes the input's verdict after the group's accepted event `after` (sequence number `seq`), as a replay of
    /// the log takes it after every event, so that bad records inside a large request freeze the updates where
    /// they come: a freeze goes back to the oldest good state, a resume keeps the working model as a good state.
    pub(super) fn judge(
        &mut self,
        spec: &Spec,
        learning: &Learning,
        freeze: &Freeze,
        seq: u64,
        now: i64,
        after: usize,
    ) {
        let limits = &spec.speed.freeze;
        if !limits.enabled {
            return;
        }
        let Some(frozen) = self.quality.judge(limits, seq, now) else { return };
        let goods = self.goods.get_or_insert_with(|| freeze.good.iter().map(|g| (g.seq, g.model.clone())).collect());
        if frozen {
            if let Some((_, m)) = goods.pop_front() {
                self.working = Some(m);
            }
            goods.clear();
            let why = self.quality.frozen.as_ref().map(|z| z.reason.clone()).unwrap_or_default();
            self.turns.push(Turn { after, seq, resume: None, why });
        } else {
            let m = self.working.get_or_insert_with(|| learning.model.clone()).clone();
            if goods.len() == 3 {
                goods.pop_front();
            }
            goods.push_back((seq, m.clone()));
            self.turns.push(Turn { after, seq, resume: Some(m), why: String::new() });
        }
        self.frozen = frozen;
    }

    /// Commits the trial once the group is durable; returns the turns, for the other learners to take where they
    /// came.
    pub(super) fn commit(self, learning: &mut Learning, freeze: &mut Freeze) -> Vec<Turn> {
        if let Some(m) = self.working {
            learning.model = m;
        }
        learning.updates += self.updates;
        freeze.quality = self.quality;
        let s = &mut learning.stats;
        (s.labelled, s.speed_loss_sum, s.batch_loss_sum) =
            (self.stats.labelled, self.stats.speed_loss_sum, self.stats.batch_loss_sum);
        self.turns
    }
}
