//! The dead letters: rejected records with their reason, appended and synced before the request is answered,
//! numbered so that a restart reads back, from the files' ends, the few written since its checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use lambda_stores::durable::{sync_dir, sync_file};

use super::dedup::id_hash;
use crate::{Error, Result};

/// Dead-letter files are rotated past this size; two old ones are kept.
const DEAD_LETTER_BYTES: u64 = 64 << 20;
/// The dead-letter file: rejected records with their reason, synced before the answer.
pub(crate) struct DeadLetters {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// Size past which the file is rotated ([`DEAD_LETTER_BYTES`]).
    limit: u64,
}

/// Bytes read at a time when a dead-letter file is read from its end.
const TAIL_CHUNK: u64 = 64 << 10;

impl DeadLetters {
    pub(crate) fn open(state: &Path) -> Result<DeadLetters> {
        DeadLetters::open_with_limit(state, DEAD_LETTER_BYTES)
    }

    fn open_with_limit(state: &Path, limit: u64) -> Result<DeadLetters> {
        let path = state.join("dead-letter.ndjson");
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        if !existed {
            sync_dir(state, "dead_letters.new_file")?;
        }
        let mut bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let whole = DeadLetters::whole_lines(&path)?;
        if whole < bytes {
            // A crash inside an append left part of a line, whose request was never answered: cut it, or the next
            // line would be glued to it and unreadable.
            let cut = file.set_len(whole).and_then(|()| sync_file(&file, "dead_letters.open_cut"));
            cut.map_err(|e| Error::io(&path, e))?;
            bytes = whole;
        }
        Ok(DeadLetters { path, file, bytes, limit })
    }

    /// The length of the file's whole lines: up to and with its last newline.
    fn whole_lines(path: &Path) -> Result<u64> {
        let mut whole = 0;
        chunks_back(path, &mut |start, chunk| match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                whole = start + i as u64 + 1;
                false
            }
            None => true,
        })?;
        Ok(whole)
    }

    pub(crate) fn append(&mut self, text: &str) -> Result<()> {
        if self.bytes > self.limit {
            self.rotate()?;
        }
        let written = self.file.write_all(text.as_bytes()).and_then(|()| sync_file(&self.file, "dead_letters.append"));
        if let Err(e) = written {
            // Lines of a failed append would be read back as counted after a crash: cut them (best effort; a
            // torn last line is skipped when read).
            let _ = self.file.set_len(self.bytes).and_then(|()| sync_file(&self.file, "dead_letters.cut_back"));
            return Err(Error::io(&self.path, e));
        }
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Calls `f` on the dead letters of the file at `path` from the last to the first, reading a chunk at a time
    /// from its end, until `f` returns false. Lines that do not parse (a torn last line) are skipped. Returns
    /// whether `f` stopped it.
    fn read_back(path: &Path, f: &mut dyn FnMut(DeadLetter) -> bool) -> Result<bool> {
        // The bytes of a line cut by the previous chunk's start.
        let mut carry: Vec<u8> = Vec::new();
        chunks_back(path, &mut |start, chunk| {
            let mut bytes = chunk.to_vec();
            bytes.extend_from_slice(&carry);
            let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            let cut = if start > 0 { lines.remove(0).to_vec() } else { Vec::new() };
            for line in lines.into_iter().rev() {
                if let Ok(d) = serde_json::from_slice::<DeadLetter>(line) {
                    if !f(d) {
                        return false;
                    }
                }
            }
            carry = cut;
            true
        })
    }

    /// The `n`-th rotated file.
    fn rotated(&self, n: u32) -> PathBuf {
        self.path.with_extension(format!("{n}.ndjson"))
    }

    /// The current file and the rotated ones, newest first.
    fn files(&self) -> [PathBuf; 3] {
        [self.path.clone(), self.rotated(1), self.rotated(2)]
    }

    /// The number of the last dead letter written (0: none numbered).
    pub(crate) fn last_n(&self) -> Result<u64> {
        for path in self.files() {
            let mut last = None;
            DeadLetters::read_back(&path, &mut |d| {
                last = Some(d.n);
                false
            })?;
            if let Some(n) = last {
                return Ok(n);
            }
        }
        Ok(0)
    }

    /// The numbered dead letters after `n`, oldest first, from the current file and, when it starts after
    /// `n + 1`, the rotated ones; and the number of the last one written (at least `n`). Reads from the ends of
    /// the files: a restart reads the few written since its checkpoint, not files of up to 64 MiB.
    fn after(&self, n: u64) -> Result<(Vec<DeadLetter>, u64)> {
        let mut newest_first: Vec<DeadLetter> = Vec::new();
        for path in self.files() {
            // A line at or before `n` (or unnumbered: older than the numbers) ends it; so does a file that
            // starts right after `n`.
            let reached = DeadLetters::read_back(&path, &mut |d| {
                if d.n <= n {
                    return false;
                }
                newest_first.push(d);
                true
            })?;
            if reached || newest_first.last().is_some_and(|d| d.n == n + 1) {
                break;
            }
        }
        let last = newest_first.first().map_or(n, |d| d.n.max(n));
        newest_first.reverse();
        Ok((newest_first, last))
    }

    /// The dead letters numbered after `n` of request groups that accepted nothing (the others' rejections are
    /// in the log with their events), oldest first; and the number of the last one written.
    pub(crate) fn alone_after(&self, n: u64) -> Result<(Vec<DeadLetter>, u64)> {
        let (after, last) = self.after(n)?;
        Ok((after.into_iter().filter(|d| d.alone).collect(), last))
    }

    fn rotate(&mut self) -> Result<()> {
        let old = |n: u32| self.rotated(n);
        if old(1).exists() {
            fs::rename(old(1), old(2)).map_err(|e| Error::io(old(2), e))?;
        }
        fs::rename(&self.path, old(1)).map_err(|e| Error::io(old(1), e))?;
        self.file =
            OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")), "dead_letters.rotate_dir")?;
        self.bytes = 0;
        Ok(())
    }
}

/// Calls `f` on the chunks of the file at `path`, [`TAIL_CHUNK`] bytes each, from its end to its start, with each
/// chunk's offset, until `f` returns false; a missing file has none. Returns whether `f` stopped it.
fn chunks_back(path: &Path, f: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    let io = |e| Error::io(path, e);
    let mut end = file.metadata().map_err(io)?.len();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut chunk).map_err(io)?;
        if !f(start, &chunk) {
            return Ok(true);
        }
        end = start;
    }
    Ok(false)
}

/// What a restart reads back of a dead letter (older lines, without a number, are not read back).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct DeadLetter {
    /// Its number among all dead letters written.
    #[serde(default)]
    n: u64,
    /// The sequence number of the last event accepted before it.
    #[serde(default)]
    pub(crate) after_seq: u64,
    /// Whether its request group accepted nothing (so its rejections are not in the log).
    #[serde(default)]
    alone: bool,
    /// Its key for the input's quality ([`Quality::push_rejected`]), in hexadecimal.
    #[serde(default)]
    key: String,
}

impl DeadLetter {
    pub(crate) fn key(&self) -> u64 {
        u64::from_str_radix(&self.key, 16).unwrap_or(0)
    }
}

/// The key a rejected record is counted by in the input's quality: its event id, or its line when it has none.
pub(crate) fn rejected_key(id_or_line: &str) -> u64 {
    id_hash(id_or_line) as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lambda_stores::durable::recorder::Recorder;

    /// A dead letter as the learner writes it: every third one from a request group that accepted nothing.
    fn line(n: u64, raw_bytes: usize) -> String {
        let raw = "x".repeat(raw_bytes);
        let d = serde_json::json!({"received_ms": 1, "line": 1, "error": "bad", "raw": raw, "n": n,
            "after_seq": n, "alone": n.is_multiple_of(3), "key": format!("{n:016x}")});
        format!("{d}\n")
    }

    fn numbers(letters: &[DeadLetter]) -> Vec<u64> {
        letters.iter().map(|d| d.n).collect()
    }

    #[test]
    fn dead_letters_after_a_number_are_read_across_rotations_from_the_files_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = DeadLetters::open_with_limit(dir.path(), 2_000).unwrap();
        // Lines of 100 bytes to 150 KB: some longer than the chunk read from a file's end.
        let sizes = [10, 200_000, 10, 10, 70_000, 10, 10, 10];
        for n in 1..=60u64 {
            dead.append(&line(n, sizes[n as usize % sizes.len()])).unwrap();
        }
        assert!(dir.path().join("dead-letter.2.ndjson").exists(), "the test must rotate twice at least");
        // The oldest number still kept: the first line of the oldest rotated file.
        let oldest = std::fs::read_to_string(dir.path().join("dead-letter.2.ndjson")).unwrap();
        let oldest: u64 =
            serde_json::from_str::<serde_json::Value>(oldest.lines().next().unwrap()).unwrap()["n"].as_u64().unwrap();
        for n in (oldest - 1)..=60 {
            let (after, last) = dead.after(n).unwrap();
            assert_eq!(numbers(&after), ((n + 1)..=60).collect::<Vec<_>>(), "after {n}");
            assert_eq!(last, 60);
            let (alone, _) = dead.alone_after(n).unwrap();
            assert_eq!(
                numbers(&alone),
                ((n + 1)..=60).filter(|k| k.is_multiple_of(3)).collect::<Vec<_>>(),
                "after {n}"
            );
        }
        assert_eq!(dead.last_n().unwrap(), 60);
        // Reopened, and with the current file just rotated (empty), the number goes on from the older file.
        drop(dead);
        let mut dead = DeadLetters::open_with_limit(dir.path(), 2_000).unwrap();
        assert_eq!(dead.last_n().unwrap(), 60);
        dead.rotate().unwrap();
        assert_eq!(dead.last_n().unwrap(), 60);
        assert_eq!(numbers(&dead.after(58).unwrap().0), vec![59, 60]);
    }

    #[test]
    fn a_torn_last_dead_letter_is_skipped_and_cut_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = DeadLetters::open(dir.path()).unwrap();
        dead.append(&(line(1, 10) + &line(2, 10))).unwrap();
        let torn = line(3, 10);
        dead.append(&torn[..torn.len() / 2]).unwrap();
        assert_eq!(numbers(&dead.after(0).unwrap().0), vec![1, 2]);
        assert_eq!(dead.last_n().unwrap(), 2);
        // A restart cuts the torn line, so the next one is not glued to it.
        drop(dead);
        let mut dead = DeadLetters::open(dir.path()).unwrap();
        dead.append(&line(3, 10)).unwrap();
        assert_eq!(numbers(&dead.after(0).unwrap().0), vec![1, 2, 3]);
        assert_eq!(std::fs::read_to_string(dir.path().join("dead-letter.ndjson")).unwrap().lines().count(), 3);
    }

    #[test]
    fn power_loss_keeps_every_dead_letter_written_across_rotations() {
        for seed in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let r = Recorder::install(dir.path()).unwrap();
            let state = dir.path().join("state");
            std::fs::create_dir(&state).unwrap();
            r.settle().unwrap();
            // A new file, then appends past the limit: a rotation every few.
            for n in 1..=20u64 {
                let mut dead = DeadLetters::open_with_limit(&state, 1_000).unwrap();
                dead.append(&line(n, 300)).unwrap();
                drop(dead);
                r.cut(seed * 100 + n).unwrap();
                let dead = DeadLetters::open_with_limit(&state, 1_000).unwrap();
                assert_eq!(dead.last_n().unwrap(), n, "seed {seed}");
                let from = n.saturating_sub(5);
                assert_eq!(numbers(&dead.after(from).unwrap().0), ((from + 1)..=n).collect::<Vec<_>>(), "seed {seed}");
            }
            assert!(state.join("dead-letter.2.ndjson").exists());
        }
    }

    #[test]
    fn power_loss_after_a_failed_append_never_brings_its_lines_back() {
        // The sync fails after the data reached the disk: the cut back must reach it too.
        for seed in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let r = Recorder::install(dir.path()).unwrap();
            let mut dead = DeadLetters::open(dir.path()).unwrap();
            dead.append(&line(1, 10)).unwrap();
            r.fail_once("dead_letters.append", true);
            assert!(dead.append(&line(2, 10)).is_err());
            drop(dead);
            r.cut(seed).unwrap();
            let dead = DeadLetters::open(dir.path()).unwrap();
            assert_eq!(numbers(&dead.after(0).unwrap().0), vec![1]);
        }
    }

    #[test]
    fn power_loss_after_a_torn_line_was_cut_and_its_file_rotated_never_brings_it_back() {
        // The torn line lacks only its newline, so it reads as a dead letter where it is not the file's end.
        for seed in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut dead = DeadLetters::open(dir.path()).unwrap();
            for n in 1..=5 {
                dead.append(&line(n, 300)).unwrap();
            }
            let torn = line(6, 300);
            dead.append(&torn[..torn.len() - 1]).unwrap();
            drop(dead);
            let r = Recorder::install(dir.path()).unwrap();
            // The start cuts it; the client sends it again, and the file is rotated first.
            let mut dead = DeadLetters::open_with_limit(dir.path(), 1_000).unwrap();
            assert_eq!(dead.last_n().unwrap(), 5);
            dead.append(&torn).unwrap();
            assert!(dir.path().join("dead-letter.1.ndjson").exists());
            drop(dead);
            r.cut(seed).unwrap();
            let dead = DeadLetters::open_with_limit(dir.path(), 1_000).unwrap();
            assert_eq!(numbers(&dead.after(0).unwrap().0), (1..=6).collect::<Vec<_>>());
        }
    }

    #[test]
    fn unnumbered_dead_letters_of_an_older_version_end_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = DeadLetters::open(dir.path()).unwrap();
        dead.append("{\"received_ms\": 1, \"line\": 1, \"error\": \"bad\", \"raw\": \"x\"}\n").unwrap();
        assert_eq!(dead.last_n().unwrap(), 0);
        dead.append(&line(1, 10)).unwrap();
        assert_eq!(numbers(&dead.after(0).unwrap().0), vec![1]);
        assert_eq!(dead.last_n().unwrap(), 1);
    }
}
