//! History written by other tools: pyarrow, pandas and Spark layouts and types in one master dataset, files
//! without the speed layer's sequence numbers, partition folders, Spark's markers, a schema that grew, epoch times
//! in any unit. Fixtures are written with arrow-rs in the shapes those writers produce.

use std::path::Path;
use std::sync::Arc;

use crate::common::{current, problem, write};
use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, Int8Type};
use lambda_batch::read::Problem;
use lambda_core::schema::{Cell, CellRef, Event, Target, TargetRef};
use lambda_core::spec::Spec;

/// 2025-11-26T08:00:00Z in milliseconds: every file's first row is at this time.
const T: i64 = 1_764_144_000_000;
const N: usize = 120;

fn spec(dir: &Path, time_format: &str) -> Spec {
    let text = crate::common::spec_text(
        "binary_classification",
        &[("amount", "numeric"), ("country", "categorical"), ("mobile", "boolean"), ("device", "categorical")],
        "alphas = [0.1, 1.0]\nfamilies = [\"linear\", \"decision_tree\"]\n",
    )
    .replace("task = ", &format!("time_format = \"{time_format}\"\ntask = "));
    Spec::from_toml(&text, &dir.join("spec.toml"), dir).unwrap()
}

fn amount(i: usize) -> f64 {
    ((i * 37) % 101) as f64
}

fn label(i: usize) -> i64 {
    i64::from(amount(i) > 50.0)
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// pyarrow from a table: large strings, dictionary strings, a time zone-aware microsecond timestamp, float32, an
/// integer label; written before `device` was added to the spec.
fn pyarrow(path: &Path, from: usize) {
    let r = from..from + N;
    write_parquet(
        path,
        vec![
            ("id", Arc::new(LargeStringArray::from_iter_values(r.clone().map(|i| format!("e{i}")))) as ArrayRef),
            (
                "user",
                Arc::new(
                    r.clone()
                        .map(|i| ["u0", "u1", "u2", "u3", "u4", "u5", "u6"][i % 7])
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        r.clone().map(|i| (T + (i - from) as i64 * 60_000) * 1000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            ("amount", Arc::new(Float32Array::from_iter_values(r.clone().map(|i| amount(i) as f32)))),
            ("country", Arc::new(r.clone().map(|i| ["fr", "de"][i % 2]).collect::<DictionaryArray<Int8Type>>())),
            ("mobile", Arc::new(r.clone().map(|i| (i % 5 != 0).then_some(i % 3 == 0)).collect::<BooleanArray>())),
            ("label", Arc::new(Int64Array::from_iter_values(r.map(label)))),
        ],
    );
}

/// pandas: an integer id, a naive nanosecond timestamp, float amounts with NaN, a float label with NaN (an integer
/// column with missing values), and its index column.
fn pandas(path: &Path, from: usize) {
    let r = from..from + N;
    write_parquet(
        path,
        vec![
            ("id", Arc::new(Int64Array::from_iter_values(r.clone().map(|i| i as i64))) as ArrayRef),
            ("user", Arc::new(StringArray::from_iter_values(r.clone().map(|i| format!("u{}", i % 7))))),
            (
                "ts",
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    r.clone().map(|i| (T + (i - from) as i64 * 60_000) * 1_000_000),
                )),
            ),
            (
                "amount",
                Arc::new(Float64Array::from_iter_values(
                    r.clone().map(|i| if i == from { f64::NAN } else { amount(i) }),
                )),
            ),
            ("country", Arc::new(StringArray::from_iter_values(r.clone().map(|i| ["fr", "de"][i % 2])))),
            ("mobile", Arc::new(BooleanArray::from_iter(r.clone().map(|i| Some(i % 3 == 0))))),
            ("device", Arc::new(StringArray::from_iter_values(r.clone().map(|i| ["ios", "android"][i % 2])))),
            (
                "label",
                Arc::new(Float64Array::from_iter_values(r.clone().map(|i| {
                    if i == from + 1 {
                        f64::NAN
                    } else {
                        label(i) as f64
                    }
                }))),
            ),
            ("__index_level_0__", Arc::new(Int64Array::from_iter_values(r.map(|i| i as i64)))),
        ],
    );
}

/// Spark: a `country=…` partition folder instead of the column, epoch seconds, int32 keys, amounts and labels.
fn spark(path: &Path, from: usize) {
    let r = from..from + N;
    let i32s = |f: &dyn Fn(usize) -> i32| Arc::new(Int32Array::from_iter_values(r.clone().map(f))) as ArrayRef;
    write_parquet(
        path,
        vec![
            ("id", Arc::new(StringArray::from_iter_values(r.clone().map(|i| format!("e{i}")))) as ArrayRef),
            ("user", i32s(&|i| (i % 7) as i32)),
            ("ts", Arc::new(Int64Array::from_iter_values(r.clone().map(|i| T / 1000 + (i - from) as i64 * 60)))),
            ("amount", i32s(&|i| amount(i) as i32)),
            ("mobile", Arc::new(BooleanArray::from_iter(r.clone().map(|i| Some(i % 3 == 0))))),
            ("device", Arc::new(StringArray::from_iter_values(r.clone().map(|_| "web")))),
            ("label", i32s(&|i| label(i) as i32)),
        ],
    );
}

/// Speed-layer archive rows (with sequence numbers) for ids `from..from + n`.
fn archived(from: usize, n: usize) -> Vec<(u64, Event)> {
    (from..from + n)
        .enumerate()
        .map(|(k, i)| {
            let event = Event {
                id: format!("e{i}"),
                key: format!("u{}", i % 7),
                time: T + 86_400_000 + k as i64 * 1000,
                features: vec![
                    Cell::Num(Some(amount(i))),
                    Cell::Cat(Some(["fr", "de"][i % 2].into())),
                    Cell::Bool(Some(i % 3 == 0)),
                    Cell::Cat(Some(["ios", "android"][i % 2].into())),
                ],
                target: Some(Target::Class(label(i).to_string())),
            };
            (k as u64 + 1, event)
        })
        .collect()
}

#[test]
fn history_written_by_pyarrow_pandas_and_spark_reads_as_one_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "auto");
    let m = &s.paths.master;
    pyarrow(&m.join("pyarrow/part-0.parquet"), 0);
    pandas(&m.join("pandas/history.parquet"), 1000);
    spark(&m.join("spark/country=fr/part-00000-3f1c.snappy.parquet"), 2000);
    // Spark's markers, an unfinished task's output and checksums are not data.
    std::fs::write(m.join("spark/_SUCCESS"), b"").unwrap();
    std::fs::create_dir_all(m.join("spark/_temporary/0")).unwrap();
    std::fs::write(m.join("spark/_temporary/0/part-00001.parquet"), b"half written").unwrap();
    std::fs::write(m.join("spark/country=fr/.part-00000-3f1c.snappy.parquet.crc"), b"crc").unwrap();
    // The speed layer archived 50 events, 10 of them with ids the pyarrow history already holds.
    write(&s, &archived(110, 50), "speed-000000000001-000000000050.parquet");

    let data = lambda_batch::read::read_master(&s).unwrap();
    let c = &data.columns;
    assert_eq!((data.files, data.watermark, data.duplicates), (4, 50, 10));
    assert_eq!(c.len(), 3 * N + 40);
    // History first (pandas, pyarrow, spark: path order), then the archive; every file's first row is at T
    // whatever its time type and unit.
    let first_rows = [0, N, 2 * N];
    for r in first_rows {
        assert_eq!(c.times[r], T, "row {r}");
        assert_eq!(c.times[r + 1], T + 60_000, "row {r}");
    }
    assert_eq!(c.seqs[..3 * N], vec![0; 3 * N][..]);
    assert_eq!(c.seqs[3 * N], 11, "the archive's rows whose ids came earlier in history are dropped");
    let feature = |f: usize, r: usize| c.features[f].get(r);
    // pandas (rows 0..N): integer ids, float labels (1.0 is the class "1", NaN unlabelled), NaN amounts missing.
    assert_eq!(c.targets.get(0), Some(TargetRef::Class(if label(1000) == 1 { "1" } else { "0" })));
    assert!(c.targets.get(1).is_none(), "pandas' NaN label is an unlabelled row");
    assert_eq!(feature(0, 0), CellRef::Num(None), "row 1000 has a NaN amount");
    assert_eq!(feature(3, 0), CellRef::Cat(Some("ios")));
    // pyarrow (rows N..2N): float32 amounts, dictionary strings, no `device` column: missing, not an error.
    assert_eq!(feature(0, N + 1), CellRef::Num(Some(amount(1))));
    assert_eq!(feature(1, N + 1), CellRef::Cat(Some("de")));
    assert_eq!(feature(3, N + 1), CellRef::Cat(None));
    assert_eq!(feature(2, N), CellRef::Bool(None), "pyarrow's null boolean");
    // Spark (rows 2N..3N): country from the partition folder, int32 keys as text, int32 amounts.
    assert_eq!(feature(1, 2 * N + 3), CellRef::Cat(Some("fr")));
    assert_eq!(c.keys.get(2 * N + 3), Some((2003 % 7).to_string().as_str()));
    assert_eq!(feature(0, 2 * N + 3), CellRef::Num(Some(amount(2003))));

    let manifest = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!((manifest.watermark, manifest.training_rows), (50, (3 * N + 40 - 1) as u64));
    let view = lambda_stores::views::ViewTable::read_parquet(
        &s,
        &lambda_stores::views::batch_view_path(&s, &manifest.version),
    )
    .unwrap();
    assert_eq!(view.iter().map(|(_, v)| v.count).sum::<u64>(), (3 * N + 40) as u64);
}

#[test]
fn a_history_file_added_later_is_read_by_the_next_run_and_leaves_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "auto");
    write(&s, &archived(0, 200), "speed-000000000001-000000000200.parquet");
    let first = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!((first.watermark, first.training_rows), (200, 200));
    // A backfill of older events lands beside the archive: it is history, ingested before any event.
    pyarrow(&s.paths.master.join("backfill/part-0.parquet"), 5000);
    assert_eq!(lambda_stores::master::max_seq(&s.paths.master).unwrap(), 200);
    let second = lambda_batch::run(&s, true).unwrap().manifest;
    assert_eq!((second.watermark, second.training_rows), (200, 200 + N as u64));
}

#[test]
fn epoch_numbers_in_no_plausible_unit_are_refused_with_their_readings_and_a_named_unit_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "auto");
    let file = s.paths.master.join("history/old.parquet");
    // Seconds since 2025 written as if they were the epoch's: 1970 in every unit.
    let ts = Arc::new(Int64Array::from_iter_values((0..N as i64).map(|i| 17_956_834 + i))) as ArrayRef;
    let columns = |ts: ArrayRef| {
        vec![
            ("id", Arc::new(StringArray::from_iter_values((0..N).map(|i| format!("e{i}")))) as ArrayRef),
            ("user", Arc::new(StringArray::from_iter_values((0..N).map(|i| format!("u{}", i % 7))))),
            ("ts", ts),
            ("amount", Arc::new(Float64Array::from_iter_values((0..N).map(amount)))),
            ("country", Arc::new(StringArray::from_iter_values((0..N).map(|i| ["fr", "de"][i % 2])))),
            ("mobile", Arc::new(BooleanArray::from_iter((0..N).map(|i| Some(i % 3 == 0))))),
            ("label", Arc::new(StringArray::from_iter_values((0..N).map(|i| label(i).to_string())))),
        ]
    };
    write_parquet(&file, columns(ts.clone()));
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("old.parquet"), "{path:?}");
    // The reason shows how each unit would read the latest time.
    assert!(
        matches!(&p, Problem::Column { column, why } if column == "ts"
            && why.contains("plausible time in no unit") && why.contains("1970-07-27T20:02:33Z as seconds")),
        "{p}"
    );
    assert_eq!(current(&s), None);
    // Named, the unit is taken as it is (the window only guides `auto`).
    let s = spec(dir.path(), "epoch_s");
    let data = lambda_batch::read::read_master(&s).unwrap();
    assert_eq!(data.columns.times[1], 17_956_835_000);
    // Integer micro- and nanoseconds (Spark's and pandas' `astype("int64")` of timestamps) are found by `auto`.
    let s = spec(dir.path(), "auto");
    for per_ms in [1_000i64, 1_000_000] {
        let ts = Arc::new(Int64Array::from_iter_values((0..N as i64).map(|i| (T + i * 250) * per_ms + per_ms / 2)));
        write_parquet(&file, columns(ts));
        let data = lambda_batch::read::read_master(&s).unwrap();
        assert_eq!(&data.columns.times[..3], &[T, T + 250, T + 500], "{per_ms} per millisecond");
    }
    // Milliseconds as float seconds (pandas' `time.time()` columns) keep the fraction to the millisecond.
    let secs = Arc::new(Float64Array::from_iter_values((0..N).map(|i| (T as f64 + i as f64 * 250.0) / 1000.0)));
    write_parquet(&file, columns(secs));
    let data = lambda_batch::read::read_master(&s).unwrap();
    assert_eq!(&data.columns.times[..3], &[T, T + 250, T + 500]);
}

#[test]
fn a_missing_required_column_names_what_the_spec_calls_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "auto");
    let file = s.paths.master.join("history/part-0.parquet");
    let columns = || {
        vec![
            ("id", Arc::new(StringArray::from_iter_values((0..N).map(|i| format!("e{i}")))) as ArrayRef),
            ("ts", Arc::new(Int64Array::from_iter_values((0..N as i64).map(|i| T + i)))),
            ("amount", Arc::new(Float64Array::from_iter_values((0..N).map(amount)))),
            ("country", Arc::new(StringArray::from_iter_values((0..N).map(|i| ["fr", "de"][i % 2])))),
            ("mobile", Arc::new(BooleanArray::from_iter((0..N).map(|i| Some(i % 3 == 0))))),
            ("label", Arc::new(StringArray::from_iter_values((0..N).map(|i| label(i).to_string())))),
        ]
    };
    write_parquet(&file, columns());
    let (path, p) = problem(lambda_batch::run(&s, false).unwrap_err());
    assert!(path.ends_with("part-0.parquet"), "{path:?}");
    assert!(
        matches!(&p, Problem::MissingColumn { column, role } if column == "user" && *role == "`dataset.key_column`"),
        "{p}"
    );
    let mut with_user = columns();
    with_user.push(("user", Arc::new(StringArray::from_iter_values((0..N).map(|i| format!("u{}", i % 7))))));
    write_parquet(&file, with_user);
    // `device` is in no file yet (the spec grew): read as missing, and every family still trains.
    assert_eq!(lambda_batch::read::read_master(&s).unwrap().columns.len(), N);
    let mut every_family = s.clone();
    every_family.batch.families = lambda_core::spec::BatchSettings::default().families;
    let m = lambda_batch::run(&every_family, false).unwrap().manifest;
    assert_eq!(m.training_rows, N as u64);
    assert_eq!(m.leaderboard.iter().map(|e| e.algorithm.as_str()).collect::<std::collections::BTreeSet<_>>().len(), 5);
    let mut required = s.clone();
    required.features[3].required = true;
    let (path, p) = problem(lambda_batch::read::read_master(&required).unwrap_err());
    assert!(path.ends_with("part-0.parquet"), "{path:?}");
    assert!(
        matches!(&p, Problem::MissingColumn { column, role } if column == "device" && *role == "a required feature"),
        "{p}"
    );
}

#[test]
fn a_feature_added_to_the_spec_that_live_events_do_not_send_yet_does_not_stop_the_batch() {
    // History written before `device` was added; the speed layer then archived events without it (null columns).
    // The next batch refused the all-missing column, and every batch after it would have.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "auto");
    pyarrow(&s.paths.master.join("history/part-0.parquet"), 0);
    let mut rows = archived(1000, 30);
    rows.iter_mut().for_each(|(_, e)| e.features[3] = Cell::Cat(None));
    write(&s, &rows, "speed-000000000001-000000000030.parquet");
    let m = lambda_batch::run(&s, false).unwrap().manifest;
    assert_eq!((m.watermark, m.training_rows), (30, (N + 30) as u64));
}
