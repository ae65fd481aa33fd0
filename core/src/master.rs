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

use crate::error::{Error, Result};
use crate::publish::sync_dir;
use crate::schema::{Cell, Event, Target};
use crate::spec::{FeatureKind, Spec, Task, SEQ_COLUMN};

pub(crate) fn pq_err(path: &Path, e: impl ToString) -> Error {
    Error::Parquet { path: path.to_path_buf(), message: e.to_string() }
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
    RecordBatch::try_new(schema(spec), columns).map_err(|e| Error::Data(e.to_string()))
}

/// Writes one record batch as a Parquet file (snappy) under a temporary name, syncs it, and renames it into place.
pub fn write_batch_atomically(path: &Path, batch: &RecordBatch) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| pq_err(&tmp, e))?;
    writer.write(batch).map_err(|e| pq_err(&tmp, e))?;
    let file = writer.into_inner().map_err(|e| pq_err(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
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

/// Whether a file name is a complete data file (not hidden, not temporary).
fn is_data_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    !name.starts_with('.') && name.ends_with(".parquet")
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
                if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
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

/// Highest ingestion sequence number in the master dataset (0 when empty).
pub fn max_seq(root: &Path) -> Result<u64> {
    let mut max = 0;
    for path in list_files(root)? {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(&path, e))?;
        let Some(index) = builder.schema().fields().iter().position(|f| f.name() == SEQ_COLUMN) else {
            return Err(pq_err(&path, format!("has no `{SEQ_COLUMN}` column")));
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

    #[test]
    fn write_list_and_max_seq() {
        let spec = Spec::from_toml(crate::spec::tests::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(max_seq(dir.path()).unwrap(), 0);
        let e = Event {
            id: "1".into(),
            key: "k".into(),
            time: 0,
            features: vec![Cell::Num(Some(1.0)), Cell::Cat(None), Cell::Bool(Some(true))],
            target: Some(Target::Class("1".into())),
        };
        write_events(&spec, &partition(dir.path(), 0).join("a.parquet"), &[(7, &e), (9, &e)]).unwrap();
        write_events(&spec, &partition(dir.path(), 86_400_000).join("b.parquet"), &[(3, &e)]).unwrap();
        fs::write(dir.path().join("date=1970-01-01/.c.parquet.tmp-1"), b"partial").unwrap();
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(max_seq(dir.path()).unwrap(), 9);
        assert_eq!(read_batches(&files[0]).unwrap()[0].num_rows(), 2);
    }

    #[test]
    fn empty_or_garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        fs::write(&p, b"").unwrap();
        let err = max_seq(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.parquet"), "{err}");
        fs::write(&p, b"not parquet at all").unwrap();
        assert!(read_batches(&p).unwrap_err().to_string().contains("x.parquet"));
    }
}
