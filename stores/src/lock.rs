//! Exclusive locks on folders, held for a process's life.
//!
//! A lock is an advisory file lock on `<folder>/.lock` (`flock`): the system drops it when the process ends, however
//! it ends, so a crash never leaves a stale lock behind. The holder writes who it is into the file, so that a second
//! process that is refused can say which one holds the folder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use lambda_core::error::{Error, Result};

/// A folder's lock, held until dropped.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Takes the lock of `dir` (created if needed) or fails at once with [`Error::Locked`] naming the holder.
    pub fn try_acquire(dir: &Path) -> Result<FolderLock> {
        let (mut file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder's line is best effort: an empty or unreadable one still refuses the start.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "a process that has not said which".to_string() } else { holder.into() };
                return Err(Error::Locked { path, holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let me = holder_line();
        let written =
            file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| file.write_all(me.as_bytes()));
        written.map_err(|e| Error::io(&path, e))?;
        Ok(FolderLock { _file: file, path })
    }

    /// Waits for, then holds, the lock of `dir`.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let (file, path) = open(dir)?;
        file.lock().map_err(|e| Error::io(&path, e))?;
        Ok(FolderLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(dir: &Path) -> Result<(File, PathBuf)> {
    crate::state::create_dir_synced(dir)?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((file, path))
}

/// Who holds a lock, as a refused process reports it: process id, command line, since when.
fn holder_line() -> String {
    let command: Vec<String> = std::env::args().collect();
    let since = lambda_core::time::now_rfc3339();
    format!("process {} (`{}`), since {since}\n", std::process::id(), command.join(" "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_one_named_and_takes_the_lock_once_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::try_acquire(dir.path()).unwrap();
        match FolderLock::try_acquire(dir.path()) {
            Err(Error::Locked { path, holder }) => {
                assert_eq!(path, dir.path().join(".lock"));
                assert!(holder.contains(&format!("process {}", std::process::id())), "{holder}");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        FolderLock::try_acquire(dir.path()).unwrap();
    }
}
