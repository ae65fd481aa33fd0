//! Reading Parquet with polars into core [`Columns`], checking every column against the spec first so that an
//! error names the file and the column.

use std::path::{Path, PathBuf};

use lambda_core::schema::{Codes, Column, ColumnBuilder, Columns, Dictionary, Targets};
use lambda_core::spec::{FeatureKind, Spec, Task, SEQ_COLUMN};
use lambda_core::time::TimeFormat;
use lambda_stores::master::list_files;
use polars::prelude::*;

use crate::{Error, Result};

/// The master dataset as read by one batch run.
#[derive(Debug)]
pub struct MasterData {
    /// All rows, in file order.
    pub columns: Columns,
    /// Highest ingestion sequence number read: the watermark of this run.
    pub watermark: u64,
    /// Files read.
    pub files: usize,
    /// Rows dropped because their event id appeared earlier in ingestion order.
    pub duplicates: u64,
}

/// What a read needs: everything (master dataset) or only the features (forecast input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Sequence, id, key, time, features and target.
    All,
    /// Features only.
    Features,
}

/// What is wrong with a file of the master dataset (or a table to score), or with the dataset as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The folder holds no Parquet file.
    #[error("the master dataset has no Parquet files")]
    NoFiles,
    /// The files hold no row.
    #[error("the master dataset has no rows")]
    NoRows,
    /// More rows than one run reads.
    #[error("has {rows} rows; one batch run reads at most {max}")]
    TooManyRows {
        /// Rows found.
        rows: usize,
        /// The most one run reads.
        max: u32,
    },
    /// A file of no bytes.
    #[error("is an empty file, not Parquet")]
    EmptyFile,
    /// A file Parquet readers cannot read.
    #[error("is not readable Parquet: {0}")]
    NotParquet(#[source] PolarsError),
    /// A column the spec needs is not there.
    #[error("has no column `{column}` ({role})")]
    MissingColumn {
        /// The column.
        column: String,
        /// What the spec needs it for.
        role: &'static str,
    },
    /// A column whose type or values do not fit what the spec says of it.
    #[error("column `{column}` {why}")]
    Column {
        /// The column.
        column: String,
        /// What does not fit.
        why: String,
    },
    /// Nulls in a column that must be set on every row.
    #[error("column `{column}` has {nulls} null values; it must be set on every row")]
    Nulls {
        /// The column.
        column: String,
        /// How many.
        nulls: usize,
    },
    /// Infinite regression targets.
    #[error(
        "column `{column}` has {count} infinite values; a regression target must be a finite number (NaN or null \
         marks a row without a label)"
    )]
    Infinite {
        /// The target column.
        column: String,
        /// How many.
        count: usize,
    },
    /// A feature missing in every row.
    #[error(
        "column `{column}` is missing (null or not finite) in all {rows} rows; drop it from the spec's features or \
         fix the history"
    )]
    AllMissing {
        /// The feature.
        column: String,
        /// Rows read.
        rows: usize,
    },
    /// A feature of one value in every row.
    #[error(
        "column `{column}` has the same value in all {rows} rows where it is set, so no model can learn from it; \
         drop it from the spec's features or fix the history"
    )]
    Constant {
        /// The feature.
        column: String,
        /// Rows read.
        rows: usize,
    },
    /// Polars could not read or conform the data.
    #[error(transparent)]
    Polars(#[from] PolarsError),
    /// The file could not be opened, read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub(crate) fn input(path: &Path, problem: impl Into<Problem>) -> Error {
    Error::Input { path: path.to_path_buf(), problem: problem.into() }
}

fn args() -> ScanArgsParquet {
    ScanArgsParquet { hive_options: HiveOptions::new_disabled(), glob: false, ..Default::default() }
}

fn scan(paths: &[PathBuf]) -> PolarsResult<LazyFrame> {
    let refs: Vec<PlRefPath> = paths.iter().cloned().map(PlRefPath::try_from_pathbuf).collect::<PolarsResult<_>>()?;
    LazyFrame::scan_parquet_files(refs.into(), args())
}

/// The cast expression that turns a column of type `dt` into what the spec wants, or why it cannot. Any width of
/// integer or float, dictionary (pandas' `category`) and large strings are accepted, so that files written by
/// pyarrow, pandas, Spark and polars read alike.
fn conform(name: &str, dt: &DataType, want: Want) -> std::result::Result<Expr, String> {
    let c = col(name);
    let e = match want {
        Want::Seq if dt.is_integer() => c.strict_cast(DataType::UInt64),
        Want::Text if dt.is_string() => c,
        Want::Text if dt.is_integer() => c.cast(DataType::String),
        // pandas' `category` columns reach Parquet as dictionaries that polars reads as categoricals.
        Want::Text | Want::Label if dt.is_categorical() || dt.is_enum() => c.cast(DataType::String),
        Want::Time(_) => return time(c, dt, want),
        Want::Number if dt.is_primitive_numeric() => c.cast(DataType::Float64),
        Want::Label if dt.is_string() => c,
        Want::Label if dt.is_integer() || dt.is_bool() => c.cast(DataType::String),
        // pandas writes an integer label column with missing values as floats (1.0, NaN): read as `labels` does.
        Want::Label if dt.is_float() => c.cast(DataType::Float64),
        Want::Bool if dt.is_bool() => c,
        Want::Seq => return Err(format!("has type {dt}, expected an unsigned integer ingestion sequence")),
        Want::Text => return Err(format!("has type {dt}, expected a string or an integer")),
        Want::Number => return Err(format!("has type {dt}, expected a number")),
        Want::Label => return Err(format!("has type {dt}, expected a class label (string, integer or boolean)")),
        Want::Bool => return Err(format!("has type {dt}, expected a boolean")),
    };
    Ok(e.alias(name))
}

/// Event times as integer milliseconds: timestamps of any unit and time zone and dates are converted; epoch
/// numbers are scaled from the unit the file's plan found (`Unit`).
fn time(c: Expr, dt: &DataType, want: Want) -> std::result::Result<Expr, String> {
    let Want::Time(unit) = want else { unreachable!("time() is called for time columns") };
    let e = match dt {
        DataType::Datetime(_, tz) => {
            c.cast(DataType::Datetime(TimeUnit::Milliseconds, tz.clone())).cast(DataType::Int64)
        }
        DataType::Date => c.cast(DataType::Datetime(TimeUnit::Milliseconds, None)).cast(DataType::Int64),
        dt if dt.is_integer() => match unit {
            Unit::Seconds => c.strict_cast(DataType::Int64) * lit(1000i64),
            Unit::Millis => c.strict_cast(DataType::Int64),
            // Divided exactly in `Builder::append` (`FilePlan::time_divisor`): polars' integer floor division
            // needs a feature we do not build, and floats would round nanoseconds.
            Unit::Micros | Unit::Nanos => c.strict_cast(DataType::Int64),
        },
        // Fractions of a millisecond are cut.
        dt if dt.is_float() => (c.cast(DataType::Float64) * lit(unit.to_ms())).cast(DataType::Int64),
        _ => {
            return Err(format!(
                "has type {dt}, expected a timestamp, a date or an epoch number (seconds, milliseconds, \
                 microseconds or nanoseconds)"
            ))
        }
    };
    Ok(e)
}

/// The unit of an epoch-number time column in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn to_ms(self) -> f64 {
        match self {
            Unit::Seconds => 1e3,
            Unit::Millis => 1.0,
            Unit::Micros => 1e-3,
            Unit::Nanos => 1e-6,
        }
    }

    /// The unit `dataset.time_format` names, if it names one.
    fn named(format: TimeFormat) -> Option<Unit> {
        match format {
            TimeFormat::EpochS => Some(Unit::Seconds),
            TimeFormat::EpochMs => Some(Unit::Millis),
            TimeFormat::EpochUs => Some(Unit::Micros),
            TimeFormat::EpochNs => Some(Unit::Nanos),
            TimeFormat::Auto | TimeFormat::Rfc3339 => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Seq,
    Text,
    Time(Unit),
    Number,
    Label,
    Bool,
}

/// A column the spec wants: its name, kind and what it is, for errors.
struct Wanted {
    name: String,
    want: Want,
    role: &'static str,
}

fn wanted(spec: &Spec, need: Need) -> Vec<Wanted> {
    let d = &spec.dataset;
    let w = |name: &str, want, role| Wanted { name: name.to_string(), want, role };
    let mut out = Vec::new();
    if need == Need::All {
        out.push(w(SEQ_COLUMN, Want::Seq, "the speed layer's ingestion sequence"));
        out.push(w(&d.id_column, Want::Text, "`dataset.id_column`"));
        out.push(w(&d.key_column, Want::Text, "`dataset.key_column`"));
        out.push(w(&d.time_column, Want::Time(Unit::Millis), "`dataset.time_column`"));
    }
    for f in &spec.features {
        let want = match f.kind {
            FeatureKind::Numeric => Want::Number,
            FeatureKind::Categorical => Want::Text,
            FeatureKind::Boolean => Want::Bool,
        };
        out.push(w(&f.name, want, if f.required { "a required feature" } else { "an optional feature" }));
    }
    if need == Need::All {
        let want = if d.task == Task::Regression { Want::Number } else { Want::Label };
        out.push(w(&d.target, want, "`dataset.target`"));
    }
    out
}

/// The type a conformed column has, for a column that is not in a file.
fn conformed_type(want: Want) -> DataType {
    match want {
        Want::Seq => DataType::UInt64,
        Want::Text | Want::Label => DataType::String,
        Want::Time(_) => DataType::Int64,
        Want::Number => DataType::Float64,
        Want::Bool => DataType::Boolean,
    }
}

/// How one file's columns become the spec's.
#[derive(Debug, Clone)]
struct FilePlan {
    exprs: Vec<Expr>,
    /// Whether the file carries ingestion sequence numbers (the speed layer's archives). A file without them is
    /// history from another writer: its rows count as ingested before any speed-layer event.
    sequenced: bool,
    /// Optional features the file has no column for (added to the spec after it was written).
    absent: Vec<String>,
    /// What the file's integer times are divided by to make milliseconds (1000 for microseconds).
    time_divisor: i64,
}

/// `name=value` folders between the master dataset's root and a file (Hive-style partitions, as Spark, pyarrow
/// and polars write them), values percent-decoded; Hive's name for a missing value reads as null.
fn partitions(root: &Path, path: &Path) -> Vec<(String, Option<String>)> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut out = Vec::new();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        let part = part.as_os_str().to_string_lossy();
        if let Some((k, v)) = part.split_once('=') {
            let v = percent_decode(v);
            out.push((percent_decode(k), (v != "__HIVE_DEFAULT_PARTITION__").then_some(v)));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A partition folder's value as a column of the wanted kind.
fn partition_value(name: &str, value: Option<&str>, want: Want) -> std::result::Result<Expr, String> {
    let null = || lit(NULL).cast(conformed_type(want)).alias(name);
    let Some(v) = value else { return Ok(null()) };
    let e = match want {
        Want::Text | Want::Label => lit(v.to_string()),
        Want::Number => lit(v.parse::<f64>().map_err(|_| format!("partition folder value {v:?} is not a number"))?),
        Want::Bool => {
            lit(v.parse::<bool>().map_err(|_| format!("partition folder value {v:?} is not true or false"))?)
        }
        Want::Time(_) | Want::Seq => return Err("is a partition folder; it must be a column of the file".into()),
    };
    Ok(e.alias(name))
}

/// The unit of an epoch-number time column in a history file: the one `dataset.time_format` names, else the one
/// that puts the file's latest time inside `dataset.time_window`.
fn epoch_unit(spec: &Spec, path: &Path, name: &str, dt: &DataType) -> Result<Unit> {
    let d = &spec.dataset;
    if let Some(u) = Unit::named(d.time_format) {
        return Ok(u);
    }
    let latest = scan(std::slice::from_ref(&path.to_path_buf()))
        .and_then(|lf| lf.select([col(name).cast(DataType::Float64).max()]).collect())
        .and_then(|df| Ok(df.column(name)?.f64()?.get(0)))
        .map_err(|e| input(path, e))?;
    let Some(latest) = latest else { return Ok(Unit::Millis) };
    let units = [Unit::Seconds, Unit::Millis, Unit::Micros, Unit::Nanos];
    let ms = |u: Unit| latest * u.to_ms();
    if let Some(u) =
        units.into_iter().find(|&u| (d.time_window.from as f64..d.time_window.until as f64).contains(&ms(u)))
    {
        return Ok(u);
    }
    let read: Vec<String> = units
        .iter()
        .zip(["seconds", "milliseconds", "microseconds", "nanoseconds"])
        .map(|(&u, n)| format!("{} as {n}", lambda_core::time::show(ms(u) as i64)))
        .collect();
    let why = format!(
        "({dt}) holds epoch numbers whose latest, {latest}, is a plausible time in no unit ({}); the window is {} \
         (`dataset.time_window`), or name the unit in `dataset.time_format`",
        read.join(", "),
        d.time_window
    );
    Err(input(path, Problem::Column { column: name.to_string(), why }))
}

/// Checks each file's columns and builds its select expressions. Files may differ in types (an Int32 in one and
/// an Int64 in another), in layout (partition folders) and in optional features they lack.
fn plan(spec: &Spec, files: &[PathBuf], need: Need) -> Result<Vec<FilePlan>> {
    let want = wanted(spec, need);
    let mut plans = Vec::with_capacity(files.len());
    for path in files {
        let meta = std::fs::metadata(path).map_err(|e| input(path, e))?;
        if meta.len() == 0 {
            return Err(input(path, Problem::EmptyFile));
        }
        let mut lf = scan(std::slice::from_ref(path)).map_err(|e| input(path, Problem::NotParquet(e)))?;
        let schema = lf.collect_schema().map_err(|e| input(path, Problem::NotParquet(e)))?;
        let folders = partitions(&spec.paths.master, path);
        let sequenced = need == Need::All && schema.get(SEQ_COLUMN).is_some();
        let mut exprs = Vec::with_capacity(want.len());
        let mut absent = Vec::new();
        let mut time_divisor = 1;
        for w in &want {
            let e = match schema.get(&w.name) {
                Some(dt) => {
                    let mut want = w.want;
                    if let Want::Time(_) = want {
                        // The speed layer archives milliseconds; history from elsewhere may be in any unit.
                        if !sequenced && dt.is_primitive_numeric() {
                            let unit = epoch_unit(spec, path, &w.name, dt)?;
                            if dt.is_integer() {
                                time_divisor = match unit {
                                    Unit::Micros => 1_000,
                                    Unit::Nanos => 1_000_000,
                                    _ => 1,
                                };
                            }
                            want = Want::Time(unit);
                        }
                    }
                    conform(&w.name, dt, want)
                        .map_err(|why| input(path, Problem::Column { column: w.name.clone(), why }))?
                }
                None => match folders.iter().find(|(k, _)| k == &w.name) {
                    Some((_, v)) => partition_value(&w.name, v.as_deref(), w.want)
                        .map_err(|why| input(path, Problem::Column { column: w.name.clone(), why }))?,
                    None if matches!(w.want, Want::Seq) => lit(0u64).cast(DataType::UInt64).alias(SEQ_COLUMN),
                    // In history only: a table to score that lacks a feature is more likely the wrong table.
                    None if need == Need::All && w.role == "an optional feature" => {
                        absent.push(w.name.clone());
                        lit(NULL).cast(conformed_type(w.want)).alias(&w.name)
                    }
                    None => return Err(input(path, Problem::MissingColumn { column: w.name.clone(), role: w.role })),
                },
            };
            exprs.push(e);
        }
        plans.push(FilePlan { exprs, sequenced, absent, time_divisor });
    }
    Ok(plans)
}

/// Reads the given Parquet files into a DataFrame of conformed columns.
pub fn read_frame(spec: &Spec, files: &[PathBuf], need: Need) -> Result<DataFrame> {
    let plans = plan(spec, files, need)?;
    let place = files.first().cloned().unwrap_or_default();
    let frames = files
        .iter()
        .zip(plans)
        .map(|(f, p)| scan(std::slice::from_ref(f)).map(|lf| lf.select(p.exprs)))
        .collect::<PolarsResult<Vec<_>>>();
    frames
        .and_then(|lfs| concat(lfs, UnionArgs::default()))
        .and_then(LazyFrame::collect)
        .map_err(|e| input(if files.len() == 1 { &place } else { &spec.paths.master }, e))
}

fn nulls(path: &Path, df: &DataFrame, name: &str) -> Result<()> {
    let n = df.column(name).map_err(|e| input(path, e))?.null_count();
    if n > 0 {
        return Err(input(path, Problem::Nulls { column: name.to_string(), nulls: n }));
    }
    Ok(())
}

/// Appends conformed DataFrames (one file at a time) into [`Columns`]: numbers into flat buffers, strings into
/// dictionary codes, so that no row costs a `String`.
struct Builder {
    need: Need,
    seqs: Vec<u64>,
    keys: Dictionary,
    times: Vec<i64>,
    features: Vec<ColumnBuilder>,
    classes: Dictionary,
    values: Vec<f64>,
    non_finite: usize,
    /// The current file's [`FilePlan::time_divisor`].
    time_divisor: i64,
}

impl Builder {
    fn new(spec: &Spec, need: Need) -> Builder {
        Builder {
            need,
            seqs: Vec::new(),
            keys: Dictionary::default(),
            times: Vec::new(),
            features: spec.features.iter().map(|f| ColumnBuilder::new(f.kind)).collect(),
            classes: Dictionary::default(),
            values: Vec::new(),
            non_finite: 0,
            time_divisor: 1,
        }
    }

    /// Appends the rows of `df` (read from `path`) for which `keep` says so.
    fn append(&mut self, spec: &Spec, df: &DataFrame, path: &Path, keep: &dyn Fn(usize) -> bool) -> Result<()> {
        let pe = |e: PolarsError| input(path, e);
        let n = df.height();
        let d = &spec.dataset;
        if self.need == Need::All {
            for name in [SEQ_COLUMN, &d.id_column, &d.key_column, &d.time_column] {
                nulls(path, df, name)?;
            }
            let seqs = df.column(SEQ_COLUMN).and_then(|c| c.u64().cloned()).map_err(pe)?;
            self.seqs.extend(seqs.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(0)));
            let keys = df.column(&d.key_column).and_then(|c| c.str().cloned()).map_err(pe)?;
            for (r, k) in keys.iter().enumerate() {
                if keep(r) {
                    self.keys.push(k);
                }
            }
            let times = df.column(&d.time_column).and_then(|c| c.i64().cloned()).map_err(pe)?;
            let divisor = self.time_divisor;
            self.times.extend(
                times.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(0).div_euclid(divisor)),
            );
            match d.task {
                Task::Regression => {
                    let values = df.column(&d.target).and_then(|c| c.f64().cloned()).map_err(pe)?;
                    let infinite = values.iter().flatten().filter(|x| x.is_infinite()).count();
                    if infinite > 0 {
                        return Err(input(path, Problem::Infinite { column: d.target.clone(), count: infinite }));
                    }
                    self.values.extend(
                        values.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, v)| v.unwrap_or(f64::NAN)),
                    );
                }
                _ => {
                    let c = df.column(&d.target).map_err(pe)?;
                    if c.dtype().is_float() {
                        // Whole numbers as integers (1.0 is the class "1"), NaN as unlabelled.
                        for (r, v) in c.f64().map_err(pe)?.iter().enumerate() {
                            if keep(r) {
                                let label = v.filter(|x| !x.is_nan()).map(|x| {
                                    if x.fract() == 0.0 && x.abs() < 9e15 {
                                        format!("{}", x as i64)
                                    } else {
                                        x.to_string()
                                    }
                                });
                                self.classes.push(label.as_deref());
                            }
                        }
                    } else {
                        for (r, v) in c.str().map_err(pe)?.iter().enumerate() {
                            if keep(r) {
                                self.classes.push(v.filter(|s| !s.is_empty()));
                            }
                        }
                    }
                }
            }
        } else {
            self.times.extend(std::iter::repeat_n(0, n));
        }
        for (f, b) in spec.features.iter().zip(&mut self.features) {
            let c = df.column(&f.name).map_err(pe)?;
            match b {
                ColumnBuilder::Num(v) => {
                    for (r, x) in c.f64().map_err(pe)?.iter().enumerate() {
                        if keep(r) {
                            v.push(match x {
                                Some(x) if x.is_finite() => x,
                                Some(_) => {
                                    self.non_finite += 1;
                                    f64::NAN
                                }
                                None => f64::NAN,
                            });
                        }
                    }
                }
                ColumnBuilder::Cat(v) => {
                    for (r, x) in c.str().map_err(pe)?.iter().enumerate() {
                        if keep(r) {
                            v.push(x);
                        }
                    }
                }
                ColumnBuilder::Bool(v) => {
                    v.extend(c.bool().map_err(pe)?.iter().enumerate().filter(|(r, _)| keep(*r)).map(|(_, x)| x));
                }
            }
        }
        Ok(())
    }

    fn finish(self, spec: &Spec, path: &Path) -> Columns {
        if self.non_finite > 0 {
            tracing::warn!(path = %path.display(), values = self.non_finite, "non-finite feature values read as missing");
        }
        let n = self.times.len();
        let (seqs, keys, targets) = match (self.need, spec.dataset.task) {
            (Need::All, Task::Regression) => (self.seqs, self.keys.finish(), Targets::Values(self.values)),
            (Need::All, _) => (self.seqs, self.keys.finish(), Targets::Classes(self.classes.finish())),
            (Need::Features, _) => (
                vec![0; n],
                Codes { codes: vec![Codes::NONE; n], values: Vec::new() },
                Targets::Values(vec![f64::NAN; n]),
            ),
        };
        let features = self.features.into_iter().map(ColumnBuilder::finish).collect();
        Columns { seqs, keys, times: self.times, features, targets }
    }
}

/// Converts a conformed DataFrame into [`Columns`]. Non-finite feature values become missing values; non-finite
/// regression targets make the row unlabelled.
pub fn to_columns(spec: &Spec, df: &DataFrame, need: Need, path: &Path) -> Result<Columns> {
    let mut b = Builder::new(spec, need);
    b.append(spec, df, path, &|_| true)?;
    Ok(b.finish(spec, path))
}

/// Marks, in the order of `files`, every row whose event id appeared at a lower ingestion sequence number: a
/// replay that reached the master dataset twice, from two writers or across the speed layer's de-duplication
/// window, is counted once. Reads only the id and sequence columns. Also gives the duplicates' count, the
/// highest sequence number and each file's rows.
fn duplicate_rows(spec: &Spec, files: &[PathBuf], plans: &[FilePlan]) -> Result<(Vec<bool>, u64, u64, Vec<usize>)> {
    let id = spec.dataset.id_column.as_str();
    let mut frames: Vec<DataFrame> = Vec::with_capacity(files.len());
    for (path, p) in files.iter().zip(plans) {
        let df = scan(std::slice::from_ref(path))
            .and_then(|lf| lf.select(p.exprs.clone()).select([col(SEQ_COLUMN), col(id)]).collect())
            .map_err(|e| input(path, e))?;
        frames.push(df);
    }
    let columns: Vec<(UInt64Chunked, StringChunked)> = frames
        .iter()
        .zip(files)
        .map(|(df, path)| {
            let pe = |e: PolarsError| input(path, e);
            let seq = df.column(SEQ_COLUMN).and_then(|c| c.u64().cloned()).map_err(pe)?;
            let ids = df.column(id).and_then(|c| c.str().cloned()).map_err(pe)?;
            Ok((seq, ids))
        })
        .collect::<Result<_>>()?;
    let ids: Vec<&str> = columns.iter().flat_map(|(_, i)| i.iter().map(|v| v.unwrap_or(""))).collect();
    let seqs: Vec<u64> = columns.iter().flat_map(|(s, _)| s.iter().map(|v| v.unwrap_or(0))).collect();
    // Each id maps to its row of lowest sequence number so far; the other rows of that id are duplicates.
    let mut first: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(ids.len());
    let mut dropped = vec![false; ids.len()];
    let hash = |s: &str| xxhash_rust::xxh3::xxh3_64(s.as_bytes());
    let mut count = 0u64;
    for r in 0..ids.len() {
        let h = hash(ids[r]);
        match first.find_mut(h, |&o| ids[o as usize] == ids[r]) {
            Some(o) => {
                count += 1;
                if seqs[r] < seqs[*o as usize] {
                    dropped[*o as usize] = true;
                    *o = r as u32;
                } else {
                    dropped[r] = true;
                }
            }
            None => {
                first.insert_unique(h, r as u32, |&o| hash(ids[o as usize]));
            }
        }
    }
    let heights = frames.iter().map(DataFrame::height).collect();
    Ok((dropped, count, seqs.iter().copied().max().unwrap_or(0), heights))
}

/// Rows read at once: a Parquet file of any size (Spark and pyarrow write large ones) is read this many rows at a
/// time, so that at most one slice's DataFrame is held beside the columns.
pub const READ_ROWS: usize = 1 << 20;

/// Reads the whole master dataset, [`READ_ROWS`] rows at a time, without the rows whose event id came earlier in
/// ingestion order.
pub fn read_master(spec: &Spec) -> Result<MasterData> {
    read_master_in(spec, READ_ROWS)
}

/// [`read_master`], `rows_per_read` rows at a time.
pub fn read_master_in(spec: &Spec, rows_per_read: usize) -> Result<MasterData> {
    let root = &spec.paths.master;
    let files = list_files(root)?;
    if files.is_empty() {
        return Err(input(root, Problem::NoFiles));
    }
    // History from other writers (no sequence numbers) comes first, in path order; then the speed layer's archives.
    let plans = plan(spec, &files, Need::All)?;
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| plans[i].sequenced);
    let files: Vec<PathBuf> = order.iter().map(|&i| files[i].clone()).collect();
    let plans: Vec<FilePlan> = order.iter().map(|&i| plans[i].clone()).collect();
    // The watermark counts dropped duplicates too: they were ingested.
    let (dropped, duplicates, watermark, heights) = duplicate_rows(spec, &files, &plans)?;
    if dropped.len() > u32::MAX as usize {
        return Err(input(root, Problem::TooManyRows { rows: dropped.len(), max: u32::MAX }));
    }
    let mut b = Builder::new(spec, Need::All);
    let mut offset = 0;
    let step = rows_per_read.clamp(1, u32::MAX as usize);
    for ((f, p), &height) in files.iter().zip(&plans).zip(&heights) {
        for first in (0..height).step_by(step) {
            let df = scan(std::slice::from_ref(f))
                .and_then(|lf| lf.slice(first as i64, step as u32).select(p.exprs.clone()).collect())
                .map_err(|e| input(f, e))?;
            let at = offset + first;
            b.time_divisor = p.time_divisor;
            b.append(spec, &df, f, &|r| !dropped[at + r])?;
        }
        offset += height;
    }
    let columns = b.finish(spec, root);
    if columns.is_empty() {
        return Err(input(root, Problem::NoRows));
    }
    // A feature that some files lack was added to the spec after they were written: missing in every row, it is
    // a schema that grew (read as missing until events carry it), not a broken column.
    let new: Vec<&str> = spec
        .features
        .iter()
        .map(|f| f.name.as_str())
        .filter(|name| plans.iter().any(|p| p.absent.iter().any(|a| a == name)))
        .collect();
    check_features(spec, &columns, root, &new)?;
    if duplicates > 0 {
        tracing::warn!(rows = duplicates, "dropped rows whose event id appeared earlier in ingestion order");
    }
    Ok(MasterData { columns, watermark, files: files.len(), duplicates })
}

/// How many distinct set values `column` has, counting no further than two.
fn distinct_up_to_two<T: PartialEq>(mut set: impl Iterator<Item = T>) -> usize {
    match set.next() {
        None => 0,
        Some(first) if set.any(|x| x != first) => 2,
        Some(_) => 1,
    }
}

/// Refuses a feature that no model can learn from: missing in every row, or the same value in every row. Either
/// is almost always a broken upstream column, and the spec should drop it rather than train around it.
fn check_features(spec: &Spec, columns: &Columns, root: &Path, new: &[&str]) -> Result<()> {
    for (f, column) in spec.features.iter().zip(&columns.features) {
        let distinct = match column {
            Column::Num(v) => distinct_up_to_two(v.iter().filter(|x| !x.is_nan())),
            Column::Cat(v) => distinct_up_to_two(v.codes.iter().filter(|&&c| c != Codes::NONE)),
            Column::Bool(v) => distinct_up_to_two(v.iter().flatten()),
        };
        if distinct == 0 && new.contains(&f.name.as_str()) {
            tracing::warn!(
                column = f.name,
                "a feature some master files lack is missing in every row; it is read as missing until events carry it"
            );
        } else if distinct == 0 {
            return Err(input(root, Problem::AllMissing { column: f.name.clone(), rows: columns.len() }));
        }
        if distinct == 1 {
            return Err(input(root, Problem::Constant { column: f.name.clone(), rows: columns.len() }));
        }
    }
    Ok(())
}
