//! Archiving logged events into the master dataset.
//!
//! Events wait in the log until the open stretch holds `speed.archive_max_rows` events or its first event is
//! `speed.archive_max_age` old; then that stretch is streamed from the log into one Parquet file,
//! `master/date=<ingestion date of its first event>/speed-<first>-<last>.parquet`, written under a hidden name,
//! synced and renamed, so the batch layer always reads an exact prefix of the events in ingestion order. A file
//! whose name already covers a stretch (written just before a crash) is kept and not written again.

use std::path::PathBuf;

use lambda_core::schema::Event;
use lambda_core::spec::Spec;
use lambda_stores::master::{self, archive_name, archive_range, ParquetFile};

use super::log::LogView;
use crate::Result;

/// Events per record batch while streaming the log into Parquet.
const BATCH_ROWS: usize = 8192;
/// Bytes of strings per record batch: an Arrow string column holds at most 2 GiB, and events written before the
/// spec's byte limits (or under generous ones) may be long.
const BATCH_BYTES: usize = 64 << 20;

/// The string bytes an event adds to a record batch.
fn string_bytes(e: &Event) -> usize {
    let cells: usize = e
        .features
        .iter()
        .map(|c| match c {
            lambda_core::schema::Cell::Cat(Some(s)) => s.len(),
            _ => 8,
        })
        .sum();
    let target = match &e.target {
        Some(lambda_core::schema::Target::Class(c)) => c.len(),
        _ => 8,
    };
    e.id.len() + e.key.len() + cells + target
}

/// What [`seal`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// First sequence number in the file.
    pub first: u64,
    /// Last sequence number in the file.
    pub last: u64,
    /// The file.
    pub path: PathBuf,
    /// Whether the file was already there (written before a crash).
    pub recovered: bool,
}

/// Speed archive files already in the master dataset that start after `archived_through`, in order: what a crash
/// between writing a file and checkpointing left behind.
pub fn recovered_ranges(spec: &Spec, archived_through: u64) -> Result<Vec<(u64, u64, PathBuf)>> {
    let mut out: Vec<(u64, u64, PathBuf)> = master::list_files(&spec.paths.master)?
        .into_iter()
        .filter_map(|p| archive_range(&p).map(|(a, b)| (a, b, p)))
        .filter(|(a, _, _)| *a > archived_through)
        .collect();
    out.sort();
    Ok(out)
}

/// Removes archive files left half-written by a crash (hidden temporary names in the date partitions).
pub fn remove_partial_files(spec: &Spec) -> Result<()> {
    let root = &spec.paths.master;
    let Ok(partitions) = std::fs::read_dir(root) else { return Ok(()) };
    for partition in partitions {
        let partition = partition.map_err(|e| crate::Error::io(root, e))?.path();
        if !partition.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&partition).map_err(|e| crate::Error::io(&partition, e))?;
        for entry in entries {
            let path = entry.map_err(|e| crate::Error::io(&partition, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with(".speed-") && name.contains(".tmp-") {
                tracing::info!(path = %path.display(), "removing an archive file a crash left half-written");
                std::fs::remove_file(&path).map_err(|e| crate::Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Writes the logged events `after+1 ..= through` as one archive file. Returns `None` when there are none.
pub fn seal(spec: &Spec, log: &LogView, after: u64, through: u64) -> Result<Option<Sealed>> {
    if through <= after {
        return Ok(None);
    }
    let existing = recovered_ranges(spec, after)?;
    if let Some((first, last, path)) = existing.into_iter().find(|(a, _, _)| *a == after + 1) {
        return Ok(Some(Sealed { first, last, path, recovered: true }));
    }
    let mut file: Option<ParquetFile> = None;
    let mut rows: Vec<(u64, Event)> = Vec::with_capacity(BATCH_ROWS);
    let mut bytes = 0usize;
    let mut first_last: Option<(u64, u64)> = None;
    let mut path = PathBuf::new();
    let write = |rows: &mut Vec<(u64, Event)>, file: &mut Option<ParquetFile>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let refs: Vec<(u64, &Event)> = rows.iter().map(|(s, e)| (*s, e)).collect();
        if let Some(f) = file.as_mut() {
            f.write(&master::to_batch(spec, &refs)?)?;
        }
        rows.clear();
        Ok(())
    };
    let mut failure = None;
    log.replay(after, |r| {
        if r.seq > through {
            return Ok(false);
        }
        if file.is_none() {
            // The name is fixed by the stretch, which the log fixes: a retry after a crash writes the same file.
            path = master::partition(&spec.paths.master, r.ingest_ms).join(archive_name(r.seq, through));
            file = Some(ParquetFile::create(&path, master::schema(spec))?);
        }
        first_last = Some((first_last.map_or(r.seq, |(f, _)| f), r.seq));
        bytes += string_bytes(&r.event);
        rows.push((r.seq, r.event));
        if rows.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            bytes = 0;
            if let Err(e) = write(&mut rows, &mut file) {
                failure = Some(e);
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    write(&mut rows, &mut file)?;
    let (Some(f), Some((first, last))) = (file, first_last) else { return Ok(None) };
    if last != through || first != after + 1 {
        return Err(crate::Error::Inconsistent(format!(
            "the log holds events {first}..={last} where {}..={through} were expected",
            after + 1
        )));
    }
    f.finish()?;
    Ok(Some(Sealed { first, last, path, recovered: false }))
}
