//! Per-key views as monoids. A [`KeyView`] holds the count, per-feature sum, sum of squares, min and max (numeric
//! and boolean features), label counts or target sums, and first and last event time of one key; [`ViewTable`]
//! maps keys to views. [`ViewTable::merge`] is associative and commutative with the empty table as identity, so
//! `batch ⊕ realtime` equals the aggregate over all events, whichever way the events were split.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::master::pq_err;
use crate::schema::{CellRef, RowSource, Target};
use crate::spec::{FeatureKind, Spec};

/// Count, sum, sum of squares, min and max of one value stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Non-missing values seen.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Their sum of squares.
    pub sum_sq: f64,
    /// Their minimum (`None` before the first value).
    pub min: Option<f64>,
    /// Their maximum.
    pub max: Option<f64>,
}

impl Stats {
    /// Adds one value.
    pub fn observe(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = Some(self.min.map_or(x, |m| m.min(x)));
        self.max = Some(self.max.map_or(x, |m| m.max(x)));
    }

    /// The monoid operation.
    pub fn merge(&mut self, o: &Stats) {
        self.count += o.count;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = opt(self.min, o.min, f64::min);
        self.max = opt(self.max, o.max, f64::max);
    }

    /// Mean of the values, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The aggregate of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyView {
    /// Events seen.
    pub count: u64,
    /// Stats per aggregated feature, in [`ViewTable::features`] order.
    pub features: Vec<Stats>,
    /// Events per class label (classification).
    pub labels: BTreeMap<String, u64>,
    /// Stats of the target (regression).
    pub target: Stats,
    /// Earliest event time.
    pub first_seen: Option<i64>,
    /// Latest event time.
    pub last_seen: Option<i64>,
    /// Highest ingestion sequence number.
    pub last_seq: u64,
}

impl KeyView {
    /// The monoid operation.
    pub fn merge(&mut self, o: &KeyView) {
        self.count += o.count;
        if self.features.len() < o.features.len() {
            self.features.resize(o.features.len(), Stats::default());
        }
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
        for (label, n) in &o.labels {
            *self.labels.entry(label.clone()).or_default() += n;
        }
        self.target.merge(&o.target);
        self.first_seen = opt(self.first_seen, o.first_seen, i64::min);
        self.last_seen = opt(self.last_seen, o.last_seen, i64::max);
        self.last_seq = self.last_seq.max(o.last_seq);
    }
}

/// Per-key views of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ViewTable {
    /// Names of the aggregated features (numeric and boolean ones, spec order).
    pub features: Vec<String>,
    /// Indices of those features in the spec.
    pub feature_index: Vec<usize>,
    /// Views by key.
    pub keys: BTreeMap<String, KeyView>,
}

impl ViewTable {
    /// An empty table for `spec`: the identity of [`ViewTable::merge`].
    pub fn new(spec: &Spec) -> ViewTable {
        let picked: Vec<(usize, String)> = spec
            .features
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind != FeatureKind::Categorical)
            .map(|(i, f)| (i, f.name.clone()))
            .collect();
        ViewTable {
            feature_index: picked.iter().map(|(i, _)| *i).collect(),
            features: picked.into_iter().map(|(_, n)| n).collect(),
            keys: BTreeMap::new(),
        }
    }

    /// Folds one record into the table.
    pub fn observe<R: RowSource + ?Sized>(&mut self, key: &str, time: i64, seq: u64, row: &R, target: Option<&Target>) {
        let n = self.features.len();
        let view = match self.keys.get_mut(key) {
            Some(v) => v,
            None => self.keys.entry(key.to_string()).or_default(),
        };
        if view.features.len() < n {
            view.features.resize(n, Stats::default());
        }
        view.count += 1;
        for (stats, &i) in view.features.iter_mut().zip(&self.feature_index) {
            match row.cell(i) {
                CellRef::Num(Some(x)) => stats.observe(x),
                CellRef::Bool(Some(b)) => stats.observe(if b { 1.0 } else { 0.0 }),
                _ => {}
            }
        }
        match target {
            Some(Target::Class(c)) => match view.labels.get_mut(c) {
                Some(n) => *n += 1,
                None => {
                    view.labels.insert(c.clone(), 1);
                }
            },
            Some(Target::Value(y)) => view.target.observe(*y),
            None => {}
        }
        view.first_seen = Some(view.first_seen.map_or(time, |t| t.min(time)));
        view.last_seen = Some(view.last_seen.map_or(time, |t| t.max(time)));
        view.last_seq = view.last_seq.max(seq);
    }

    /// The monoid operation: folds `other` into `self`.
    pub fn merge(&mut self, other: &ViewTable) {
        if self.features.is_empty() && self.keys.is_empty() {
            self.features.clone_from(&other.features);
            self.feature_index.clone_from(&other.feature_index);
        }
        for (k, v) in &other.keys {
            match self.keys.get_mut(k) {
                Some(mine) => mine.merge(v),
                None => {
                    self.keys.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// The view of one key as a JSON document for the API.
    pub fn key_json(&self, key: &str) -> Option<serde_json::Value> {
        let v = self.keys.get(key)?;
        let features: serde_json::Map<String, serde_json::Value> = self
            .features
            .iter()
            .zip(&v.features)
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({"count": s.count, "sum": s.sum, "sum_sq": s.sum_sq, "min": s.min, "max": s.max, "mean": s.mean()}),
                )
            })
            .collect();
        let mut doc = serde_json::json!({
            "key": key,
            "count": v.count,
            "features": features,
            "first_seen": v.first_seen,
            "last_seen": v.last_seen,
            "last_seq": v.last_seq,
        });
        if !v.labels.is_empty() {
            doc["labels"] = serde_json::json!(v.labels);
        }
        if v.target.count > 0 {
            doc["target"] = serde_json::json!({"count": v.target.count, "sum": v.target.sum, "sum_sq": v.target.sum_sq,
                "min": v.target.min, "max": v.target.max, "mean": v.target.mean()});
        }
        Some(doc)
    }

    /// Writes the table as one Parquet file, one row per key, atomically (temporary name, then rename).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let labels: Vec<String> = {
            let mut all: Vec<&String> = self.keys.values().flat_map(|v| v.labels.keys()).collect();
            all.sort();
            all.dedup();
            all.into_iter().cloned().collect()
        };
        let mut fields = vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("count", DataType::UInt64, false),
            Field::new("first_seen", DataType::Int64, true),
            Field::new("last_seen", DataType::Int64, true),
            Field::new("last_seq", DataType::UInt64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(self.keys.keys())),
            Arc::new(UInt64Array::from_iter_values(self.keys.values().map(|v| v.count))),
            Arc::new(Int64Array::from_iter(self.keys.values().map(|v| v.first_seen))),
            Arc::new(Int64Array::from_iter(self.keys.values().map(|v| v.last_seen))),
            Arc::new(UInt64Array::from_iter_values(self.keys.values().map(|v| v.last_seq))),
        ];
        let stat_columns =
            |prefix: &str, get: &dyn Fn(&KeyView) -> Stats, fields: &mut Vec<Field>, columns: &mut Vec<ArrayRef>| {
                let stats: Vec<Stats> = self.keys.values().map(get).collect();
                fields.push(Field::new(format!("{prefix}.count"), DataType::UInt64, false));
                columns.push(Arc::new(UInt64Array::from_iter_values(stats.iter().map(|s| s.count))));
                fields.push(Field::new(format!("{prefix}.sum"), DataType::Float64, false));
                columns.push(Arc::new(Float64Array::from_iter_values(stats.iter().map(|s| s.sum))));
                fields.push(Field::new(format!("{prefix}.sum_sq"), DataType::Float64, false));
                columns.push(Arc::new(Float64Array::from_iter_values(stats.iter().map(|s| s.sum_sq))));
                fields.push(Field::new(format!("{prefix}.min"), DataType::Float64, true));
                columns.push(Arc::new(Float64Array::from_iter(stats.iter().map(|s| s.min))));
                fields.push(Field::new(format!("{prefix}.max"), DataType::Float64, true));
                columns.push(Arc::new(Float64Array::from_iter(stats.iter().map(|s| s.max))));
            };
        for (i, name) in self.features.iter().enumerate() {
            let get = move |v: &KeyView| v.features.get(i).copied().unwrap_or_default();
            stat_columns(&format!("feature.{name}"), &get, &mut fields, &mut columns);
        }
        stat_columns("target", &|v: &KeyView| v.target, &mut fields, &mut columns);
        for label in &labels {
            fields.push(Field::new(format!("label.{label}"), DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::from_iter_values(
                self.keys.values().map(|v| v.labels.get(label).copied().unwrap_or(0)),
            )));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns).map_err(|e| pq_err(path, e))?;
        crate::master::write_batch_atomically(path, &batch)
    }

    /// Reads a table written by [`ViewTable::write_parquet`] for `spec`.
    pub fn read_parquet(spec: &Spec, path: &Path) -> Result<ViewTable> {
        let mut table = ViewTable::new(spec);
        for batch in crate::master::read_batches(path)? {
            let col = |name: &str| -> Result<&ArrayRef> {
                batch.column_by_name(name).ok_or_else(|| pq_err(path, format!("view has no column `{name}`")))
            };
            let u64s = |name: &str| -> Result<UInt64Array> {
                col(name)?
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not UInt64")))
            };
            let i64s = |name: &str| -> Result<Int64Array> {
                col(name)?
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not Int64")))
            };
            let f64s = |name: &str| -> Result<Float64Array> {
                col(name)?
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| pq_err(path, format!("`{name}` is not Float64")))
            };
            let stats = |prefix: &str| -> Result<Vec<Stats>> {
                let (c, s, q, lo, hi) = (
                    u64s(&format!("{prefix}.count"))?,
                    f64s(&format!("{prefix}.sum"))?,
                    f64s(&format!("{prefix}.sum_sq"))?,
                    f64s(&format!("{prefix}.min"))?,
                    f64s(&format!("{prefix}.max"))?,
                );
                Ok((0..c.len())
                    .map(|r| Stats {
                        count: c.value(r),
                        sum: s.value(r),
                        sum_sq: q.value(r),
                        min: lo.is_valid(r).then(|| lo.value(r)),
                        max: hi.is_valid(r).then(|| hi.value(r)),
                    })
                    .collect())
            };
            let keys = col("key")?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| pq_err(path, "`key` is not Utf8"))?;
            let (count, first, last, seq) =
                (u64s("count")?, i64s("first_seen")?, i64s("last_seen")?, u64s("last_seq")?);
            let per_feature: Vec<Vec<Stats>> =
                table.features.iter().map(|n| stats(&format!("feature.{n}"))).collect::<Result<_>>()?;
            let target = stats("target")?;
            let label_cols: Vec<(String, UInt64Array)> = batch
                .schema()
                .fields()
                .iter()
                .filter_map(|f| f.name().strip_prefix("label.").map(str::to_string))
                .map(|l| Ok((l.clone(), u64s(&format!("label.{l}"))?)))
                .collect::<Result<_>>()?;
            for r in 0..batch.num_rows() {
                let view = KeyView {
                    count: count.value(r),
                    features: per_feature.iter().map(|s| s[r]).collect(),
                    labels: label_cols
                        .iter()
                        .filter(|(_, c)| c.value(r) > 0)
                        .map(|(l, c)| (l.clone(), c.value(r)))
                        .collect(),
                    target: target[r],
                    first_seen: first.is_valid(r).then(|| first.value(r)),
                    last_seen: last.is_valid(r).then(|| last.value(r)),
                    last_seq: seq.value(r),
                };
                table.keys.insert(keys.value(r).to_string(), view);
            }
        }
        Ok(table)
    }
}

/// The batch view file of a model version: `views/batch-<version>.parquet`.
pub fn batch_view_path(spec: &Spec, version: &str) -> std::path::PathBuf {
    spec.paths.views.join(format!("batch-{version}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Cell, Event};
    use proptest::prelude::*;

    fn spec() -> Spec {
        Spec::from_toml(crate::spec::tests::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            (
                0u8..4,
                -1000i64..1000,
                prop::option::of(-100.0f64..100.0),
                prop::option::of(any::<bool>()),
                prop::option::of(0u8..3),
            ),
            0..40,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (k, t, x, b, y))| Event {
                    id: format!("e{i}"),
                    key: format!("k{k}"),
                    time: t,
                    features: vec![Cell::Num(x), Cell::Cat(Some("c".into())), Cell::Bool(b)],
                    target: y.map(|y| Target::Class(y.to_string())),
                })
                .collect()
        })
    }

    fn table(s: &Spec, events: &[Event], first_seq: u64) -> ViewTable {
        let mut t = ViewTable::new(s);
        for (i, e) in events.iter().enumerate() {
            t.observe(&e.key, e.time, first_seq + i as u64, e, e.target.as_ref());
        }
        t
    }

    /// Equal up to float rounding in sums; counts, min, max and labels exactly.
    fn assert_close(a: &ViewTable, b: &ViewTable) {
        assert_eq!(a.keys.keys().collect::<Vec<_>>(), b.keys.keys().collect::<Vec<_>>());
        for (k, va) in &a.keys {
            let vb = &b.keys[k];
            assert_eq!(
                (va.count, &va.labels, va.first_seen, va.last_seen, va.last_seq),
                (vb.count, &vb.labels, vb.first_seen, vb.last_seen, vb.last_seq)
            );
            for (x, y) in va.features.iter().zip(&vb.features) {
                assert_eq!((x.count, x.min, x.max), (y.count, y.min, y.max));
                assert!((x.sum - y.sum).abs() <= 1e-9 * (1.0 + x.sum.abs()));
                assert!((x.sum_sq - y.sum_sq).abs() <= 1e-9 * (1.0 + x.sum_sq.abs()));
            }
        }
    }

    proptest! {
        #[test]
        fn merge_is_associative_with_identity(a in events(), b in events(), c in events()) {
            let s = spec();
            let (ta, tb, tc) = (table(&s, &a, 0), table(&s, &b, 100), table(&s, &c, 200));
            let mut left = ta.clone();
            left.merge(&tb);
            left.merge(&tc);
            let mut bc = tb.clone();
            bc.merge(&tc);
            let mut right = ta.clone();
            right.merge(&bc);
            assert_close(&left, &right);
            let mut with_identity = ta.clone();
            with_identity.merge(&ViewTable::new(&s));
            prop_assert_eq!(&with_identity, &ta);
        }

        #[test]
        fn split_and_merge_equals_one_pass(all in events(), cut in 0usize..40) {
            let s = spec();
            let cut = cut.min(all.len());
            let mut merged = table(&s, &all[..cut], 0);
            merged.merge(&table(&s, &all[cut..], cut as u64));
            assert_close(&merged, &table(&s, &all, 0));
        }
    }

    #[test]
    fn parquet_round_trip() {
        let s = spec();
        let evs = vec![
            Event {
                id: "1".into(),
                key: "a".into(),
                time: 5,
                features: vec![Cell::Num(Some(2.0)), Cell::Cat(None), Cell::Bool(Some(true))],
                target: Some(Target::Class("x".into())),
            },
            Event {
                id: "2".into(),
                key: "b".into(),
                time: 7,
                features: vec![Cell::Num(None), Cell::Cat(None), Cell::Bool(None)],
                target: None,
            },
            Event {
                id: "3".into(),
                key: "a".into(),
                time: 1,
                features: vec![Cell::Num(Some(-1.0)), Cell::Cat(None), Cell::Bool(Some(false))],
                target: Some(Target::Class("y".into())),
            },
        ];
        let t = table(&s, &evs, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views/v.parquet");
        t.write_parquet(&path).unwrap();
        assert_eq!(ViewTable::read_parquet(&s, &path).unwrap(), t);
        let a = t.key_json("a").unwrap();
        assert_eq!(a["count"], 2);
        assert_eq!(a["features"]["amount"]["mean"], 0.5);
        assert_eq!(a["labels"]["y"], 1);
        assert!(t.key_json("zzz").is_none());
    }
}
