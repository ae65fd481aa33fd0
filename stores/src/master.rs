//! The master dataset on disk: append-only Parquet files under date partitions (`date=YYYY-MM-DD/`), each row an
//! accepted event with its ingestion sequence number ([`SEQ_COLUMN`]). Files are written under a temporary name and
//! renamed when complete, so a reader (the batch layer) sees whole files only.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::durable::{sync_dir, sync_file};
use crate::state::create_dir_synced;
use lambda_core::error::{Error, Result};
use lambda_core::schema::{Cell, Event, Target};
use lambda_core::spec::{FeatureKind, Spec, Task, SEQ_COLUMN};

pub(crate) fn pq_err(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Parquet { path: path.to_path_buf(), source: e.into() }
}

/// The Arrow schema of master-dataset files for `spec`.
pub fn schema(spec: &Spec) -> SchemaRef {
    let d = &spec.dataset;
    let mut fields = vec![
        Field::new(SEQ_COLUMN, DataType::UInt64, false),
        Field::new(&d.id_column, DataType::Utf8, false),
        Field::new(&d.key_column, DataType::Utf8, false),
        Field::new(&d.time_column, DataType::Int64, false),
    ];
    for f in &spec.features {
        let t = match f.kind {
            FeatureKind::Numeric => DataType::Float64,
            FeatureKind::Categorical => DataType::Utf8,
            FeatureKind::Boolean => DataType::Boolean,
        };
        fields.push(Field::new(&f.name, t, true));
    }
    let t = if d.task == Task::Regression { DataType::Float64 } else { DataType::Utf8 };
    fields.push(Field::new(&d.target, t, true));
    Arc::new(Schema::new(fields))
}

/// Events (with their sequence numbers) as one record batch of the master schema.
pub fn to_batch(spec: &Spec, rows: &[(u64, &Event)]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|(s, _)| *s))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, e)| e.id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, e)| e.key.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, e)| e.time))),
    ];
    for (i, f) in spec.features.iter().enumerate() {
        let col: ArrayRef = match f.kind {
            FeatureKind::Numeric => Arc::new(Float64Array::from_iter(rows.iter().map(|(_, e)| match &e.features[i] {
                Cell::Num(v) => *v,
                _ => None,
            }))),
            FeatureKind::Categorical => {
                Arc::new(StringArray::from_iter(rows.iter().map(|(_, e)| match &e.features[i] {
                    Cell::Cat(v) => v.as_deref(),
                    _ => None,
                })))
            }
            FeatureKind::Boolean => Arc::new(BooleanArray::from_iter(rows.iter().map(|(_, e)| match &e.features[i] {
                Cell::Bool(v) => *v,
                _ => None,
            }))),
        };
        columns.push(col);
    }
    let target: ArrayRef = if spec.dataset.task == Task::Regression {
        Arc::new(Float64Array::from_iter(rows.iter().map(|(_, e)| match &e.target {
            Some(Target::Value(v)) => Some(*v),
            _ => None,
        })))
    } else {
        Arc::new(StringArray::from_iter(rows.iter().map(|(_, e)| match &e.target {
            Some(Target::Class(c)) => Some(c.as_str()),
            _ => None,
        })))
    };
    columns.push(target);
    RecordBatch::try_new(schema(spec), columns)
        .map_err(|e| Error::Encode { what: "an archive's record batch", source: e.into() })
}

/// Rows per Parquet row group: bounds what a writer holds in memory.
const ROW_GROUP_ROWS: usize = 65_536;

/// A Parquet file being written under a hidden temporary name in its final folder; [`ParquetFile::finish`] syncs
/// it, renames it into place and syncs the folder, so a reader of the folder sees whole files only. Dropped
/// unfinished, it removes the temporary file.
pub struct ParquetFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<crate::state::SyncEvery>>,
    rows: u64,
}

impl ParquetFile {
    /// Starts a file (snappy) of the given schema that will become `path`; missing folders are created and synced.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<ParquetFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir_synced(dir)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = crate::state::temp_name(dir, &name);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(crate::state::SyncEvery::new(file), schema, Some(props))
            .map_err(|e| pq_err(&tmp, e))?;
        Ok(ParquetFile { path: path.to_path_buf(), tmp, writer: Some(writer), rows: 0 })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self.writer.as_mut().ok_or_else(|| pq_err(&self.tmp, "already finished"))?;
        w.write(batch).map_err(|e| pq_err(&self.tmp, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes, syncs and renames the file into place.
    pub fn finish(mut self) -> Result<()> {
        let w = self.writer.take().ok_or_else(|| pq_err(&self.tmp, "already finished"))?;
        let file = w.into_inner().map_err(|e| pq_err(&self.tmp, e))?.into_inner();
        sync_file(&file, "master.file").map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        fail::fail_point!("master::before_rename", |_| Err(crate::state::injected(&self.tmp)));
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        fail::fail_point!("master::after_rename", |_| Err(crate::state::injected(&self.path)));
        sync_dir(self.path.parent().unwrap_or(Path::new(".")), "master.dir")
    }
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes one record batch as a Parquet file (snappy) under a temporary name, syncs it, and renames it into place.
pub fn write_batch_atomically(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut f = ParquetFile::create(path, batch.schema())?;
    f.write(batch)?;
    f.finish()
}

/// Writes events as one master-dataset file at `path`.
pub fn write_events(spec: &Spec, path: &Path, rows: &[(u64, &Event)]) -> Result<()> {
    write_batch_atomically(path, &to_batch(spec, rows)?)
}

/// Reads every record batch of one Parquet file.
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| pq_err(path, e))?;
    reader.map(|b| b.map_err(|e| pq_err(path, e))).collect()
}

/// Whether a file or folder is metadata or work in progress rather than data: hidden (`.`: our temporary files,
/// `.crc` sums) or `_` (Spark's `_SUCCESS` and `_temporary/`, Hive's and Delta's logs).
fn is_skipped(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.starts_with('.') || name.starts_with('_')
}

/// Whether a file name is a complete data file (not hidden, not temporary).
fn is_data_file(path: &Path) -> bool {
    !is_skipped(path) && path.extension().is_some_and(|e| e == "parquet")
}

/// Every complete Parquet file under `root`, recursively, sorted by path.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => return Ok(out),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ft.is_dir() {
                if !is_skipped(&path) {
                    stack.push(path);
                }
            } else if is_data_file(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Highest ingestion sequence number in the master dataset (0 when empty). Files without the sequence column are
/// history from other writers, ingested before any speed-layer event.
pub fn max_seq(root: &Path) -> Result<u64> {
    let mut max = 0;
    for path in list_files(root)? {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(&path, e))?;
        let Some(index) = builder.schema().fields().iter().position(|f| f.name() == SEQ_COLUMN) else {
            continue;
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let reader = builder.with_projection(mask).build().map_err(|e| pq_err(&path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| pq_err(&path, e))?;
            let col = batch.column(0);
            let seqs = col
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| pq_err(&path, format!("`{SEQ_COLUMN}` is {}, expected UInt64", col.data_type())))?;
            if let Some(m) = arrow::compute::max(seqs) {
                max = max.max(m);
            }
        }
    }
    Ok(max)
}

/// The name of a speed-layer archive file holding sequence numbers `first..=last`.
pub fn archive_name(first: u64, last: u64) -> String {
    format!("speed-{first:012}-{last:012}.parquet")
}

/// `(first, last)` of a speed archive file name made by [`archive_name`].
pub fn archive_range(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
    let mut parts = name.strip_prefix("speed-")?.split('-');
    let range = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(range)
}

/// The smallest and largest ingestion sequence number in a master file (`None` when it has no rows, or no sequence
/// column: history from another writer, ingested before any speed-layer event): from the name of a speed archive
/// file, else by reading the column.
pub fn seq_range(path: &Path) -> Result<Option<(u64, u64)>> {
    if let Some(r) = archive_range(path) {
        return Ok(Some(r));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(path, e))?;
    let Some(index) = builder.schema().fields().iter().position(|f| f.name() == SEQ_COLUMN) else {
        return Ok(None);
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder.with_projection(mask).build().map_err(|e| pq_err(path, e))?;
    let mut range: Option<(u64, u64)> = None;
    for batch in reader {
        let batch = batch.map_err(|e| pq_err(path, e))?;
        let seqs = cast_column(path, batch.column(0), SEQ_COLUMN, &DataType::UInt64)?;
        let seqs = seqs.as_any().downcast_ref::<UInt64Array>().ok_or_else(|| pq_err(path, "bad sequence column"))?;
        if let (Some(lo), Some(hi)) = (arrow::compute::min(seqs), arrow::compute::max(seqs)) {
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    Ok(range)
}

/// Casts a column to the type the master schema wants; timestamps and dates become milliseconds.
fn cast_column(path: &Path, col: &ArrayRef, name: &str, want: &DataType) -> Result<ArrayRef> {
    use arrow::compute::{cast, CastOptions};
    let opts = CastOptions { safe: false, ..Default::default() };
    let fail = |e: arrow::error::ArrowError| pq_err(path, format!("column `{name}` ({}): {e}", col.data_type()));
    match (col.data_type(), want) {
        (DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64, DataType::Int64) => {
            let ms = cast(col, &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)).map_err(fail)?;
            cast(&ms, &DataType::Int64).map_err(fail)
        }
        (have, want) if have == want => Ok(col.clone()),
        _ => arrow::compute::cast_with_options(col, want, &opts).map_err(fail),
    }
}

/// The rows of one record batch of a master file as events, with their sequence numbers.
pub fn events_of(spec: &Spec, path: &Path, batch: &RecordBatch) -> Result<Vec<(u64, Event)>> {
    let schema = schema(spec);
    let mut cols = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let optional = spec.features.iter().any(|f| &f.name == field.name() && !f.required);
        let col = match batch.column_by_name(field.name()) {
            Some(col) => cast_column(path, col, field.name(), field.data_type())?,
            // A feature added to the spec after the file was written.
            None if optional => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            None => return Err(pq_err(path, format!("has no column `{}`", field.name()))),
        };
        cols.push(col);
    }
    let u64s = |i: usize| cols[i].as_any().downcast_ref::<UInt64Array>();
    let strs = |i: usize| cols[i].as_any().downcast_ref::<StringArray>();
    let i64s = |i: usize| cols[i].as_any().downcast_ref::<Int64Array>();
    let f64s = |i: usize| cols[i].as_any().downcast_ref::<Float64Array>();
    let bools = |i: usize| cols[i].as_any().downcast_ref::<BooleanArray>();
    let bad = || pq_err(path, "columns do not have the master schema's types");
    let (seqs, ids, keys, times) =
        (u64s(0).ok_or_else(bad)?, strs(1).ok_or_else(bad)?, strs(2).ok_or_else(bad)?, i64s(3).ok_or_else(bad)?);
    let target_at = 4 + spec.features.len();
    let mut out = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        if seqs.is_null(r) || ids.is_null(r) || keys.is_null(r) || times.is_null(r) {
            return Err(pq_err(path, format!("row {r} lacks its sequence number, id, key or time")));
        }
        let mut features = Vec::with_capacity(spec.features.len());
        for (i, f) in spec.features.iter().enumerate() {
            let c = 4 + i;
            features.push(match f.kind {
                FeatureKind::Numeric => {
                    let a = f64s(c).ok_or_else(bad)?;
                    Cell::Num((a.is_valid(r) && a.value(r).is_finite()).then(|| a.value(r)))
                }
                FeatureKind::Categorical => {
                    let a = strs(c).ok_or_else(bad)?;
                    Cell::Cat(a.is_valid(r).then(|| a.value(r).to_string()))
                }
                FeatureKind::Boolean => {
                    let a = bools(c).ok_or_else(bad)?;
                    Cell::Bool(a.is_valid(r).then(|| a.value(r)))
                }
            });
        }
        let target = if spec.dataset.task == Task::Regression {
            let a = f64s(target_at).ok_or_else(bad)?;
            (a.is_valid(r) && a.value(r).is_finite()).then(|| Target::Value(a.value(r)))
        } else {
            let a = strs(target_at).ok_or_else(bad)?;
            (a.is_valid(r) && !a.value(r).is_empty()).then(|| Target::Class(a.value(r).to_string()))
        };
        out.push((
            seqs.value(r),
            Event {
                id: ids.value(r).to_string(),
                key: keys.value(r).to_string(),
                time: times.value(r),
                features,
                target,
            },
        ));
    }
    Ok(out)
}

/// Calls `f` with every event of the master dataset whose sequence number is above `after`, in sequence order,
/// one file in memory at a time when files hold disjoint ranges (as the speed layer writes them). Returns how many.
pub fn for_each_event_after(spec: &Spec, after: u64, mut f: impl FnMut(u64, Event) -> Result<()>) -> Result<u64> {
    let mut files: Vec<(u64, u64, PathBuf)> = Vec::new();
    for path in list_files(&spec.paths.master)? {
        if let Some((lo, hi)) = seq_range(&path)? {
            if hi > after {
                files.push((lo, hi, path));
            }
        }
    }
    files.sort();
    let disjoint = files.windows(2).all(|w| w[0].1 < w[1].0);
    let mut n = 0;
    let mut emit = |rows: Vec<(u64, Event)>, n: &mut u64| -> Result<()> {
        for (seq, e) in rows {
            f(seq, e)?;
            *n += 1;
        }
        Ok(())
    };
    let mut pending: Vec<(u64, Event)> = Vec::new();
    for (_, _, path) in &files {
        let ours = archive_range(path).is_some();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(path, e))?;
        let groups = row_groups_after(builder.metadata(), after);
        let reader = builder.with_row_groups(groups).build().map_err(|e| pq_err(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| pq_err(path, e))?;
            let rows: Vec<(u64, Event)> =
                events_of(spec, path, &batch)?.into_iter().filter(|(s, _)| *s > after).collect();
            // The speed layer's own files are in sequence order: stream them a batch at a time.
            if ours && disjoint {
                emit(rows, &mut n)?;
            } else {
                pending.extend(rows);
            }
        }
        if disjoint && !pending.is_empty() {
            pending.sort_by_key(|(s, _)| *s);
            emit(std::mem::take(&mut pending), &mut n)?;
        }
    }
    pending.sort_by_key(|(s, _)| *s);
    emit(pending, &mut n)?;
    Ok(n)
}

/// The row groups of a file that may hold a sequence number above `after`: those whose `_ingest_seq` statistics say
/// so or that have none. Reading the latest rows of a large history file then decodes its last groups only.
fn row_groups_after(meta: &parquet::file::metadata::ParquetMetaData, after: u64) -> Vec<usize> {
    use parquet::file::statistics::Statistics;
    let column = meta.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == SEQ_COLUMN);
    (0..meta.num_row_groups())
        .filter(|&i| {
            let max = column.and_then(|c| match meta.row_group(i).column(c).statistics() {
                Some(Statistics::Int64(s)) => s.max_opt().and_then(|m| u64::try_from(*m).ok()),
                Some(Statistics::Int32(s)) => s.max_opt().and_then(|m| u64::try_from(*m).ok()),
                _ => None,
            });
            max.is_none_or(|m| m > after)
        })
        .collect()
}

/// `YYYY-MM-DD` (UTC) of a time in milliseconds since the Unix epoch.
pub fn date_of(millis: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = millis.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The partition folder of a date.
pub fn partition(root: &Path, millis: i64) -> PathBuf {
    root.join(format!("date={}", date_of(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_767_225_600_000), "2026-01-01");
        assert_eq!(date_of(951_782_400_000), "2000-02-29");
        assert_eq!(date_of(-1), "1969-12-31");
    }

    fn one_event() -> Event {
        Event {
            id: "1".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(Some(1.0)), Cell::Cat(None), Cell::Bool(Some(true))],
            target: Some(Target::Class("1".into())),
        }
    }

    #[test]
    fn write_list_and_max_seq() {
        let spec = Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(max_seq(dir.path()).unwrap(), 0);
        let e = one_event();
        write_events(&spec, &partition(dir.path(), 0).join("a.parquet"), &[(7, &e), (9, &e)]).unwrap();
        write_events(&spec, &partition(dir.path(), 86_400_000).join("b.parquet"), &[(3, &e)]).unwrap();
        fs::write(dir.path().join("date=1970-01-01/.c.parquet.tmp-1"), b"partial").unwrap();
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(max_seq(dir.path()).unwrap(), 9);
        assert_eq!(read_batches(&files[0]).unwrap()[0].num_rows(), 2);
    }

    #[test]
    fn history_from_other_writers_and_spark_markers_leave_the_sequence_and_the_replay_alone() {
        let spec = Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec;
        spec.paths.master = dir.path().to_path_buf();
        let e = one_event();
        write_events(
            &spec,
            &partition(dir.path(), 0).join("speed-000000000004-000000000005.parquet"),
            &[(4, &e), (5, &e)],
        )
        .unwrap();
        // A pyarrow file: the spec's columns without sequence numbers, and without the optional `mobile`.
        let batch = to_batch(&spec, &[(1, &e), (2, &e), (3, &e)]).unwrap();
        let keep: Vec<usize> =
            (1..batch.num_columns()).filter(|&i| batch.schema().field(i).name() != "mobile").collect();
        write_batch_atomically(&dir.path().join("history/part-0.parquet"), &batch.project(&keep).unwrap()).unwrap();
        fs::create_dir_all(dir.path().join("history/_temporary/0")).unwrap();
        fs::write(dir.path().join("history/_temporary/0/part-1.parquet"), b"half written").unwrap();
        fs::write(dir.path().join("history/_SUCCESS"), b"").unwrap();
        assert_eq!(list_files(dir.path()).unwrap().len(), 2);
        assert_eq!(max_seq(dir.path()).unwrap(), 5);
        let mut seen = Vec::new();
        for_each_event_after(&spec, 0, |seq, _| {
            seen.push(seq);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![4, 5]);
        // An archive written before `mobile` was added to the spec reads it as missing.
        let rows = events_of(&spec, Path::new("x"), &batch.project(&[0, 1, 2, 3, 4, 5, 7]).unwrap()).unwrap();
        assert_eq!(rows[0].1.features[2], Cell::Bool(None));
    }

    #[test]
    fn reading_after_a_sequence_number_skips_the_row_groups_before_it_and_misses_nothing() {
        let spec = Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let event = |i: u64| Event {
            id: format!("e{i}"),
            key: "k".into(),
            time: i as i64,
            features: vec![Cell::Num(Some(i as f64)), Cell::Cat(None), Cell::Bool(Some(true))],
            target: Some(Target::Class("1".into())),
        };
        // A history file as other writers make it (not named by its range): 1,000 rows in groups of 100.
        let events: Vec<Event> = (1..=1000).map(event).collect();
        let rows: Vec<(u64, &Event)> = events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
        let batch = to_batch(&spec, &rows).unwrap();
        let path = dir.path().join("history.parquet");
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().metadata().clone();
        assert_eq!(meta.num_row_groups(), 10);
        assert_eq!(row_groups_after(&meta, 850), vec![8, 9]);
        assert_eq!(row_groups_after(&meta, 900), vec![9]);
        assert_eq!(row_groups_after(&meta, 0).len(), 10);
        assert!(row_groups_after(&meta, 1000).is_empty());
        let mut spec = spec;
        spec.paths.master = dir.path().to_path_buf();
        for after in [0, 850, 900, 999, 1000] {
            let mut seen = Vec::new();
            for_each_event_after(&spec, after, |seq, e| {
                assert_eq!(e.id, format!("e{seq}"));
                seen.push(seq);
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, (after + 1..=1000).collect::<Vec<u64>>(), "after {after}");
        }
    }

    #[test]
    fn empty_or_garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        fs::write(&p, b"").unwrap();
        match max_seq(dir.path()) {
            Err(Error::Parquet { path, .. }) => assert_eq!(path, p),
            other => panic!("expected the file named, got {other:?}"),
        }
        fs::write(&p, b"not parquet at all").unwrap();
        match read_batches(&p) {
            Err(Error::Parquet { path, .. }) => assert_eq!(path, p),
            other => panic!("expected the file named, got {other:?}"),
        }
    }
}
