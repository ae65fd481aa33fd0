//! The write-ahead log: every accepted event, with its ingestion sequence number, appended as one JSON line and
//! synced before the event is acknowledged. It keeps every event after the batch watermark, which is what a restart
//! replays after its checkpoint and what a warm start replays after a new batch model.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use lambda_core::publish::replace_file;
use serde_json::Value;

use crate::{Error, Result};

/// An append-only log file.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    file: File,
}

/// One logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Ingestion sequence number.
    pub seq: u64,
    /// The event as accepted.
    pub event: Value,
}

impl Wal {
    /// Opens (or creates) the log at `path`, dropping a torn last line left by a crash mid-write: such an event was
    /// never acknowledged.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Entry>)> {
        let entries = read(path)?;
        // Rewrite so that a torn tail does not glue onto the next append.
        let mut text = Vec::new();
        for e in &entries {
            text.extend_from_slice(line(e).as_bytes());
        }
        let existing = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if existing != text.len() as u64 {
            replace_file(path, &text)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok((Wal { path: path.to_path_buf(), file }, entries))
    }

    /// Appends entries and syncs them to disk.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for e in entries {
            buf.push_str(&line(e));
        }
        self.file.write_all(buf.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Keeps only the entries after `seq`, atomically.
    pub fn retain_after(&mut self, seq: u64) -> Result<Vec<Entry>> {
        let kept: Vec<Entry> = read(&self.path)?.into_iter().filter(|e| e.seq > seq).collect();
        let mut text = Vec::new();
        for e in &kept {
            text.extend_from_slice(line(e).as_bytes());
        }
        replace_file(&self.path, &text)?;
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(kept)
    }

    /// Every entry in the log.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        read(&self.path)
    }
}

fn line(e: &Entry) -> String {
    let mut s = serde_json::json!({"seq": e.seq, "event": e.event}).to_string();
    s.push('\n');
    s
}

fn read(path: &Path) -> Result<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    let mut lines = BufReader::new(file).lines().peekable();
    let mut n = 0;
    while let Some(l) = lines.next() {
        n += 1;
        let l = l.map_err(|e| Error::io(path, e))?;
        let parsed: Option<Entry> = serde_json::from_str::<Value>(&l)
            .ok()
            .and_then(|v| Some(Entry { seq: v.get("seq")?.as_u64()?, event: v.get("event")?.clone() }));
        match parsed {
            Some(e) => out.push(e),
            // Only the last line may be torn; anything else is corruption worth stopping for.
            None if lines.peek().is_none() => {
                tracing::warn!(path = %path.display(), line = n, "dropping torn last line of the log")
            }
            None => {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {n} is not a log entry"),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_reopen_retain_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.ndjson");
        let (mut wal, old) = Wal::open(&path).unwrap();
        assert!(old.is_empty());
        let es: Vec<Entry> = (1..=5).map(|s| Entry { seq: s, event: serde_json::json!({"n": s}) }).collect();
        wal.append(&es).unwrap();
        drop(wal);
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\": 6, \"ev").unwrap();
        let (mut wal, back) = Wal::open(&path).unwrap();
        assert_eq!(back, es);
        wal.append(&[Entry { seq: 6, event: serde_json::json!({"n": 6}) }]).unwrap();
        assert_eq!(wal.entries().unwrap().len(), 6);
        let kept = wal.retain_after(4).unwrap();
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
        wal.append(&[Entry { seq: 7, event: serde_json::json!({}) }]).unwrap();
        assert_eq!(wal.entries().unwrap().len(), 3);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.ndjson");
        std::fs::write(&path, "garbage\n{\"seq\":1,\"event\":{}}\n").unwrap();
        let err = Wal::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
