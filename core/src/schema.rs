//! Records as the layers see them: one [`Event`] at a time (speed and serving layers) or [`Columns`] of many
//! (batch layer). Both expose their feature cells through [`RowSource`], which is all the encoder and the views read.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rejection::type_name;
pub use crate::rejection::Rejection;
use crate::spec::{FeatureKind, Spec, Task};

/// One feature value of one record; `None` is a missing value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cell {
    /// A numeric feature.
    Num(Option<f64>),
    /// A categorical feature.
    Cat(Option<String>),
    /// A boolean feature.
    Bool(Option<bool>),
}

/// A borrowed view of a [`Cell`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    /// A numeric feature.
    Num(Option<f64>),
    /// A categorical feature.
    Cat(Option<&'a str>),
    /// A boolean feature.
    Bool(Option<bool>),
}

impl Cell {
    /// Borrows the cell.
    pub fn as_ref(&self) -> CellRef<'_> {
        match self {
            Cell::Num(v) => CellRef::Num(*v),
            Cell::Cat(v) => CellRef::Cat(v.as_deref()),
            Cell::Bool(v) => CellRef::Bool(*v),
        }
    }
}

/// The label of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// A class label (classification).
    Class(String),
    /// A real value (regression).
    Value(f64),
}

/// Anything the encoder and the views can read a row from.
pub trait RowSource {
    /// The cell of feature `index` (spec order).
    fn cell(&self, index: usize) -> CellRef<'_>;
}

/// One validated record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique event id.
    pub id: String,
    /// Entity key.
    pub key: String,
    /// Event time, milliseconds since the Unix epoch.
    pub time: i64,
    /// Feature cells, in spec order.
    pub features: Vec<Cell>,
    /// The label, if the event carries one.
    pub target: Option<Target>,
}

impl RowSource for Event {
    fn cell(&self, index: usize) -> CellRef<'_> {
        self.features[index].as_ref()
    }
}

/// Which parts of a record must be present when parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live event: id, key and time are required; the target is optional.
    Event,
    /// A prediction request: only features are read; id, key, time and target may be present and are ignored.
    Predict,
}

fn text_id(field: &str, v: Option<&Value>, max_bytes: usize, setting: &str) -> Result<String, Rejection> {
    match v {
        None | Some(Value::Null) => Err(Rejection::new(field, "is missing")),
        Some(Value::String(s)) if s.is_empty() => Err(Rejection::new(field, "is empty")),
        Some(Value::String(s)) => Ok(bounded(field, s, max_bytes, setting)?.to_string()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(Rejection::new(field, format!("must be a string or an integer, got {}", type_name(other)))),
    }
}

/// Refuses a string longer than the spec allows: ids, keys and values are kept in memory, in the views and in the
/// archive, and one hostile record must not be able to fill them.
fn bounded<'a>(field: &str, s: &'a str, max_bytes: usize, setting: &str) -> Result<&'a str, Rejection> {
    if s.len() > max_bytes {
        return Err(Rejection::new(
            field,
            format!("is {} bytes long; at most {max_bytes} are allowed (`{setting}`)", s.len()),
        ));
    }
    Ok(s)
}

/// Parses a numeric JSON value, refusing non-finite numbers and strings such as "NaN".
fn number(field: &str, v: &Value) -> Result<f64, Rejection> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(Rejection::new(field, format!("{n} is not a finite number"))),
        },
        other => Err(Rejection::new(field, format!("must be a number, got {}", type_name(other)))),
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Num(Some(v)) => write!(f, "{v}"),
            Cell::Cat(Some(v)) => write!(f, "{v}"),
            Cell::Bool(Some(v)) => write!(f, "{v}"),
            _ => write!(f, "null"),
        }
    }
}

impl Spec {
    /// Validates one JSON record against the schema. Unknown fields are rejected so that a misspelt feature is not
    /// silently taken as missing.
    pub fn parse_record(&self, value: &Value, mode: Mode) -> Result<Event, Rejection> {
        let obj = match value {
            Value::Object(o) => o,
            other => return Err(Rejection::new("$", format!("must be a JSON object, got {}", type_name(other)))),
        };
        self.parse_object(obj, mode)
    }

    fn parse_object(&self, obj: &Map<String, Value>, mode: Mode) -> Result<Event, Rejection> {
        let d = &self.dataset;
        for name in obj.keys() {
            let known = name == &d.time_column
                || name == &d.key_column
                || name == &d.id_column
                || name == &d.target
                || self.features.iter().any(|f| &f.name == name);
            if !known {
                return Err(Rejection::new(name.clone(), "is not in the pipeline spec"));
            }
        }
        let (id, key, time) = match mode {
            Mode::Event => {
                let id = text_id(&d.id_column, obj.get(&d.id_column), d.max_id_bytes, "dataset.max_id_bytes")?;
                let key = text_id(&d.key_column, obj.get(&d.key_column), d.max_key_bytes, "dataset.max_key_bytes")?;
                let time = match obj.get(&d.time_column) {
                    None | Some(Value::Null) => return Err(Rejection::new(&d.time_column, "is missing")),
                    Some(v) => d.time_window.parse(d.time_format, v).map_err(|m| Rejection::new(&d.time_column, m))?,
                };
                (id, key, time)
            }
            Mode::Predict => (String::new(), String::new(), 0),
        };
        let mut features = Vec::with_capacity(self.features.len());
        for f in &self.features {
            let v = obj.get(&f.name).filter(|v| !v.is_null());
            if v.is_none() && f.required {
                return Err(Rejection::new(&f.name, "is required and missing"));
            }
            let cell = match (f.kind, v) {
                (FeatureKind::Numeric, None) => Cell::Num(None),
                (FeatureKind::Numeric, Some(v)) => Cell::Num(Some(number(&f.name, v)?)),
                (FeatureKind::Categorical, None) => Cell::Cat(None),
                (FeatureKind::Categorical, Some(Value::String(s))) => {
                    Cell::Cat(Some(bounded(&f.name, s, d.max_value_bytes, "dataset.max_value_bytes")?.to_string()))
                }
                (FeatureKind::Categorical, Some(Value::Number(n))) if n.is_i64() || n.is_u64() => {
                    Cell::Cat(Some(n.to_string()))
                }
                (FeatureKind::Categorical, Some(other)) => {
                    return Err(Rejection::new(&f.name, format!("must be a string, got {}", type_name(other))))
                }
                (FeatureKind::Boolean, None) => Cell::Bool(None),
                (FeatureKind::Boolean, Some(Value::Bool(b))) => Cell::Bool(Some(*b)),
                (FeatureKind::Boolean, Some(other)) => {
                    return Err(Rejection::new(&f.name, format!("must be true or false, got {}", type_name(other))))
                }
            };
            features.push(cell);
        }
        let target = match mode {
            Mode::Predict => None,
            Mode::Event => match obj.get(&d.target).filter(|v| !v.is_null()) {
                None => None,
                Some(v) => Some(self.parse_target(v)?),
            },
        };
        Ok(Event { id, key, time, features, target })
    }

    fn parse_target(&self, v: &Value) -> Result<Target, Rejection> {
        let field = &self.dataset.target;
        match self.dataset.task {
            Task::Regression => Ok(Target::Value(number(field, v)?)),
            _ => match v {
                Value::String(s) if !s.is_empty() => Ok(Target::Class(
                    bounded(field, s, self.dataset.max_value_bytes, "dataset.max_value_bytes")?.into(),
                )),
                Value::Bool(b) => Ok(Target::Class(b.to_string())),
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Target::Class(n.to_string())),
                other => Err(Rejection::new(
                    field,
                    format!("must be a class label (string, integer or boolean), got {}", type_name(other)),
                )),
            },
        }
    }
}

/// A borrowed [`Target`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetRef<'a> {
    /// A class label.
    Class(&'a str),
    /// A real value.
    Value(f64),
}

impl Target {
    /// Borrows the label.
    pub fn borrow(&self) -> TargetRef<'_> {
        match self {
            Target::Class(c) => TargetRef::Class(c),
            Target::Value(v) => TargetRef::Value(*v),
        }
    }
}

impl TargetRef<'_> {
    /// An owned copy.
    pub fn to_target(self) -> Target {
        match self {
            TargetRef::Class(c) => Target::Class(c.to_string()),
            TargetRef::Value(v) => Target::Value(v),
        }
    }
}

/// Strings stored once each: per row a code into `values` (or [`Codes::NONE`]), as Parquet and Arrow dictionary
/// columns store them. Ten million rows of a 20-level column cost 40 MB, not a string each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    /// Per row, the index of its value in `values`.
    pub codes: Vec<u32>,
    /// The distinct values, in order of first appearance.
    pub values: Vec<String>,
}

impl Codes {
    /// The code of a missing value.
    pub const NONE: u32 = u32::MAX;

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The value at `row`.
    pub fn get(&self, row: usize) -> Option<&str> {
        self.values.get(self.codes[row] as usize).map(String::as_str)
    }

    /// Rows at the given indices (the dictionary is kept whole).
    pub fn take(&self, rows: &[usize]) -> Codes {
        Codes { codes: rows.iter().map(|&r| self.codes[r]).collect(), values: self.values.clone() }
    }

    /// Rows per code (missing rows not counted).
    pub fn counts(&self) -> Vec<u64> {
        let mut n = vec![0u64; self.values.len()];
        for &c in &self.codes {
            if let Some(x) = n.get_mut(c as usize) {
                *x += 1;
            }
        }
        n
    }

    /// Codes the given values.
    pub fn collect<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> Codes {
        let mut b = Dictionary::default();
        for v in values {
            b.push(v);
        }
        b.finish()
    }
}

/// Builds [`Codes`] one value at a time.
#[derive(Default)]
pub struct Dictionary {
    codes: Codes,
    index: hashbrown::HashTable<u32>,
}

impl Dictionary {
    /// The code of `value`, adding it to the dictionary when new.
    pub fn code(&mut self, value: &str) -> u32 {
        let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
        let values = &mut self.codes.values;
        if let Some(&c) = self.index.find(hash, |&c| values[c as usize] == value) {
            return c;
        }
        let c = values.len() as u32;
        values.push(value.to_string());
        self.index.insert_unique(hash, c, |&c| xxhash_rust::xxh3::xxh3_64(values[c as usize].as_bytes()));
        c
    }

    /// Appends a row.
    pub fn push(&mut self, value: Option<&str>) {
        let c = value.map_or(Codes::NONE, |v| self.code(v));
        self.codes.codes.push(c);
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The coded rows.
    pub fn finish(self) -> Codes {
        self.codes
    }
}

/// One feature column of a batch.
#[derive(Debug, Clone)]
pub enum Column {
    /// A numeric column; NaN is a missing value (non-finite values are read as missing).
    Num(Vec<f64>),
    /// A categorical column.
    Cat(Codes),
    /// A boolean column.
    Bool(Vec<Option<bool>>),
}

/// Whether two number slices hold the same bits (NaN equals NaN).
fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Numbers compare bit for bit, so that two columns with the same missing values (NaN) are equal.
impl PartialEq for Column {
    fn eq(&self, other: &Column) -> bool {
        match (self, other) {
            (Column::Num(a), Column::Num(b)) => same_bits(a, b),
            (Column::Cat(a), Column::Cat(b)) => a == b,
            (Column::Bool(a), Column::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Num(v) => v.len(),
            Column::Cat(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell at `row`.
    pub fn get(&self, row: usize) -> CellRef<'_> {
        match self {
            Column::Num(v) => CellRef::Num(Some(v[row]).filter(|x| !x.is_nan())),
            Column::Cat(v) => CellRef::Cat(v.get(row)),
            Column::Bool(v) => CellRef::Bool(v[row]),
        }
    }

    /// Rows at the given indices.
    pub fn take(&self, rows: &[usize]) -> Column {
        match self {
            Column::Num(v) => Column::Num(rows.iter().map(|&r| v[r]).collect()),
            Column::Cat(v) => Column::Cat(v.take(rows)),
            Column::Bool(v) => Column::Bool(rows.iter().map(|&r| v[r]).collect()),
        }
    }
}

/// A [`Column`] being built a row at a time.
pub enum ColumnBuilder {
    /// Numbers (NaN missing).
    Num(Vec<f64>),
    /// Categories, coded as they come.
    Cat(Dictionary),
    /// Booleans.
    Bool(Vec<Option<bool>>),
}

impl ColumnBuilder {
    /// An empty column of the given kind.
    pub fn new(kind: FeatureKind) -> ColumnBuilder {
        match kind {
            FeatureKind::Numeric => ColumnBuilder::Num(Vec::new()),
            FeatureKind::Categorical => ColumnBuilder::Cat(Dictionary::default()),
            FeatureKind::Boolean => ColumnBuilder::Bool(Vec::new()),
        }
    }

    /// The column.
    pub fn finish(self) -> Column {
        match self {
            ColumnBuilder::Num(v) => Column::Num(v),
            ColumnBuilder::Cat(d) => Column::Cat(d.finish()),
            ColumnBuilder::Bool(v) => Column::Bool(v),
        }
    }
}

/// The labels of a batch: class codes (classification) or values, NaN where a row has none (regression).
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class labels.
    Classes(Codes),
    /// Real values.
    Values(Vec<f64>),
}

/// Values compare bit for bit, as [`Column`]'s numbers do (NaN marks a row without a label).
impl PartialEq for Targets {
    fn eq(&self, other: &Targets) -> bool {
        match (self, other) {
            (Targets::Values(a), Targets::Values(b)) => same_bits(a, b),
            (Targets::Classes(a), Targets::Classes(b)) => a == b,
            _ => false,
        }
    }
}

impl Default for Targets {
    fn default() -> Self {
        Targets::Values(Vec::new())
    }
}

impl Targets {
    /// The label of `row`, if it has one.
    pub fn get(&self, row: usize) -> Option<TargetRef<'_>> {
        match self {
            Targets::Classes(c) => c.get(row).map(TargetRef::Class),
            Targets::Values(v) => Some(v[row]).filter(|x| !x.is_nan()).map(TargetRef::Value),
        }
    }

    /// Whether `row` has a label.
    pub fn is_set(&self, row: usize) -> bool {
        match self {
            Targets::Classes(c) => c.codes[row] != Codes::NONE,
            Targets::Values(v) => !v[row].is_nan(),
        }
    }

    /// Rows at the given indices.
    pub fn take(&self, rows: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(c.take(rows)),
            Targets::Values(v) => Targets::Values(rows.iter().map(|&r| v[r]).collect()),
        }
    }
}

/// A batch of records in columnar form, as read from the master dataset: numbers in flat buffers, strings as
/// dictionary codes. Event ids are not kept: the reader de-duplicates on them and has no other use for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// Ingestion sequence numbers.
    pub seqs: Vec<u64>,
    /// Entity keys.
    pub keys: Codes,
    /// Event times, milliseconds since the Unix epoch.
    pub times: Vec<i64>,
    /// Feature columns, in spec order.
    pub features: Vec<Column>,
    /// Labels.
    pub targets: Targets,
}

impl Columns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Row `row` as a [`RowSource`].
    pub fn row(&self, row: usize) -> ColumnsRow<'_> {
        ColumnsRow { columns: self, row }
    }

    /// The label of `row`.
    pub fn target(&self, row: usize) -> Option<TargetRef<'_>> {
        self.targets.get(row)
    }

    /// Row `row` as an owned [`Event`] (its id is not kept: empty).
    pub fn event(&self, row: usize) -> Event {
        Event {
            id: String::new(),
            key: self.keys.get(row).unwrap_or_default().to_string(),
            time: self.times[row],
            features: self
                .features
                .iter()
                .map(|c| match c.get(row) {
                    CellRef::Num(v) => Cell::Num(v),
                    CellRef::Cat(v) => Cell::Cat(v.map(str::to_string)),
                    CellRef::Bool(v) => Cell::Bool(v),
                })
                .collect(),
            target: self.target(row).map(TargetRef::to_target),
        }
    }

    /// Rows at the given indices, in that order.
    pub fn take(&self, rows: &[usize]) -> Columns {
        Columns {
            seqs: rows.iter().map(|&r| self.seqs[r]).collect(),
            keys: self.keys.take(rows),
            times: rows.iter().map(|&r| self.times[r]).collect(),
            features: self.features.iter().map(|c| c.take(rows)).collect(),
            targets: self.targets.take(rows),
        }
    }

    /// Builds columns from events (seq numbers given alongside).
    pub fn from_events<'a>(spec: &Spec, events: impl IntoIterator<Item = (u64, &'a Event)>) -> Columns {
        let mut seqs = Vec::new();
        let mut times = Vec::new();
        let mut keys = Dictionary::default();
        let mut classes = Dictionary::default();
        let mut values = Vec::new();
        let mut features: Vec<ColumnBuilder> = spec.features.iter().map(|f| ColumnBuilder::new(f.kind)).collect();
        for (seq, e) in events {
            seqs.push(seq);
            times.push(e.time);
            keys.push(Some(&e.key));
            match &e.target {
                Some(Target::Class(c)) => {
                    classes.push(Some(c));
                    values.push(f64::NAN);
                }
                Some(Target::Value(v)) => {
                    classes.push(None);
                    values.push(*v);
                }
                None => {
                    classes.push(None);
                    values.push(f64::NAN);
                }
            }
            for (col, cell) in features.iter_mut().zip(&e.features) {
                // Events are parsed against the same spec, so kinds line up; anything else is missing.
                match (col, cell) {
                    (ColumnBuilder::Num(v), Cell::Num(x)) => v.push(x.filter(|x| x.is_finite()).unwrap_or(f64::NAN)),
                    (ColumnBuilder::Cat(v), Cell::Cat(x)) => v.push(x.as_deref()),
                    (ColumnBuilder::Bool(v), Cell::Bool(x)) => v.push(*x),
                    (ColumnBuilder::Num(v), _) => v.push(f64::NAN),
                    (ColumnBuilder::Cat(v), _) => v.push(None),
                    (ColumnBuilder::Bool(v), _) => v.push(None),
                }
            }
        }
        let targets = if spec.dataset.task == Task::Regression {
            Targets::Values(values)
        } else {
            Targets::Classes(classes.finish())
        };
        Columns {
            seqs,
            keys: keys.finish(),
            times,
            features: features.into_iter().map(ColumnBuilder::finish).collect(),
            targets,
        }
    }
}

/// One row of [`Columns`].
#[derive(Debug, Clone, Copy)]
pub struct ColumnsRow<'a> {
    columns: &'a Columns,
    row: usize,
}

impl RowSource for ColumnsRow<'_> {
    fn cell(&self, index: usize) -> CellRef<'_> {
        self.columns.features[index].get(self.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn spec() -> Spec {
        Spec::from_toml(crate::spec::tests::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    #[test]
    fn valid_event_parses() {
        let e = spec()
            .parse_record(
                &json!({"id": "e1", "user": 7, "ts": 1764144000000i64, "amount": 2.5, "country": "fr", "mobile": true, "label": 1}),
                Mode::Event,
            )
            .unwrap();
        assert_eq!(e.key, "7");
        assert_eq!(e.time, 1_764_144_000_000);
        assert_eq!(e.features[0], Cell::Num(Some(2.5)));
        assert_eq!(e.target, Some(Target::Class("1".into())));
    }

    #[test]
    fn missing_optional_features_and_target_are_allowed() {
        let e = spec()
            .parse_record(&json!({"id": "e1", "user": "u", "ts": "2025-11-26T08:00:00Z", "amount": null}), Mode::Event)
            .unwrap();
        assert_eq!(e.features, vec![Cell::Num(None), Cell::Cat(None), Cell::Bool(None)]);
        assert_eq!(e.target, None);
        assert_eq!(e.time, 1_764_144_000_000);
    }

    #[test]
    fn bad_events_name_the_field() {
        let s = spec();
        let cases = [
            (json!([1, 2]), "$"),
            (json!({"user": "u", "ts": 1764144000000i64}), "id"),
            (json!({"id": "e", "ts": 1764144000000i64}), "user"),
            (json!({"id": "e", "user": "u"}), "ts"),
            (json!({"id": "e", "user": "u", "ts": "yesterday"}), "ts"),
            (json!({"id": "e", "user": "u", "ts": 1.5}), "ts"),
            (json!({"id": "e", "user": "u", "ts": 17956834}), "ts"),
            (json!({"id": "e", "user": "u", "ts": "2025-11-26T08:00:00"}), "ts"),
            (json!({"id": "e", "user": "u", "ts": 1764144000000i64, "amount": "NaN"}), "amount"),
            (json!({"id": "e", "user": "u", "ts": 1764144000000i64, "country": 1.5}), "country"),
            (json!({"id": "e", "user": "u", "ts": 1764144000000i64, "mobile": "yes"}), "mobile"),
            (json!({"id": "e", "user": "u", "ts": 1764144000000i64, "label": 0.5}), "label"),
            (json!({"id": "e", "user": "u", "ts": 1764144000000i64, "amonut": 3}), "amonut"),
            (json!({"id": "", "user": "u", "ts": 1764144000000i64}), "id"),
        ];
        for (value, field) in cases {
            let r = s.parse_record(&value, Mode::Event).unwrap_err();
            assert_eq!(r.field, field, "{value} -> {r}");
        }
    }

    #[test]
    fn ids_keys_and_string_values_past_their_byte_limit_are_rejected_with_the_limit_named() {
        let s = spec();
        let d = &s.dataset;
        let base = json!({"id": "e", "user": "u", "ts": 1764144000000i64, "country": "fr", "label": "1"});
        for (field, limit, setting) in [
            ("id", d.max_id_bytes, "max_id_bytes"),
            ("user", d.max_key_bytes, "max_key_bytes"),
            ("country", d.max_value_bytes, "max_value_bytes"),
            ("label", d.max_value_bytes, "max_value_bytes"),
        ] {
            // At the limit it passes; one byte (a two-byte character here) more is refused in both modes.
            let mut at = base.clone();
            at[field] = json!("é".repeat(limit / 2));
            s.parse_record(&at, Mode::Event).unwrap();
            let mut over = base.clone();
            over[field] = json!(format!("{}x", "é".repeat(limit / 2)));
            let r = s.parse_record(&over, Mode::Event).unwrap_err();
            assert_eq!(r.field, field);
            assert!(r.problem.contains(&format!("at most {limit}")) && r.problem.contains(setting), "{r}");
            if field == "country" {
                assert_eq!(s.parse_record(&over, Mode::Predict).unwrap_err().field, field);
            }
        }
    }

    #[test]
    fn required_feature_must_be_present() {
        let mut s = spec();
        s.features[0].required = true;
        let r = s.parse_record(&json!({"id": "e", "user": "u", "ts": 1764144000000i64}), Mode::Event).unwrap_err();
        assert_eq!(r.field, "amount");
    }

    #[test]
    fn predict_mode_needs_only_features() {
        let e = spec().parse_record(&json!({"amount": 1.0}), Mode::Predict).unwrap();
        assert_eq!(e.features[0], Cell::Num(Some(1.0)));
    }
}
