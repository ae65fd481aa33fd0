//! Atomic publication of versioned folders: write into a staging folder, fsync, rename into `versions/`, then swap
//! the `CURRENT` pointer by writing a temporary file and renaming it over the old one. A reader that follows
//! `CURRENT` sees a complete version or the previous one, never half of one. Old versions are kept for rollback.

use std::fs;
use std::path::{Path, PathBuf};

use crate::durable::sync_dir;
use crate::state::{replace_file, write_synced};
use lambda_core::error::{Error, Result};

/// A folder of versions named `<prefix><number>` with a `CURRENT` pointer.
#[derive(Debug, Clone)]
pub struct Publisher {
    root: PathBuf,
    prefix: &'static str,
}

const POINTER: &str = "CURRENT";

impl Publisher {
    /// A publisher rooted at `root`, naming versions `<prefix>000001`, `<prefix>000002`, ...
    pub fn new(root: impl Into<PathBuf>, prefix: &'static str) -> Self {
        Publisher { root: root.into(), prefix }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn versions_dir(&self) -> PathBuf {
        self.root.join("versions")
    }

    /// Folder of a version.
    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.versions_dir().join(version)
    }

    /// Published version names, oldest first.
    pub fn versions(&self) -> Result<Vec<String>> {
        let dir = self.versions_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out: Vec<(u64, String)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix(self.prefix).and_then(|n| n.parse::<u64>().ok()) {
                out.push((n, name));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, n)| n).collect())
    }

    /// The name the next publication will get.
    pub fn next_version(&self) -> Result<String> {
        let last = self
            .versions()?
            .last()
            .and_then(|v| v.strip_prefix(self.prefix).and_then(|n| n.parse::<u64>().ok()))
            .unwrap_or(0);
        Ok(format!("{}{:06}", self.prefix, last + 1))
    }

    /// Writes `files` as a new version and makes it current. Returns the version name.
    pub fn publish(&self, files: &[(&str, &[u8])]) -> Result<String> {
        let version = self.next_version()?;
        self.stage(&version, files)?;
        fail::fail_point!("publish::before_pointer", |_| Err(crate::state::injected(&self.root)));
        self.set_current(&version)?;
        Ok(version)
    }

    /// Writes `files` into `versions/<version>` without making it current.
    pub fn stage(&self, version: &str, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        let staging_root = self.root.join(".staging");
        crate::state::create_dir_synced(&staging_root)?;
        let staging = staging_root.join(format!("{version}-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        for (i, (name, bytes)) in files.iter().enumerate() {
            if i > 0 {
                fail::fail_point!("publish::between_files", |_| Err(crate::state::injected(&staging)));
            }
            write_synced(&staging.join(name), bytes)?;
        }
        sync_dir(&staging, "publish.staging_dir")?;
        let versions = self.versions_dir();
        crate::state::create_dir_synced(&versions)?;
        let target = versions.join(version);
        fs::rename(&staging, &target).map_err(|e| Error::io(&target, e))?;
        sync_dir(&versions, "publish.versions_dir")?;
        Ok(target)
    }

    /// Points `CURRENT` at `version` atomically.
    pub fn set_current(&self, version: &str) -> Result<()> {
        let dir = self.version_dir(version);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("{}: no such version", dir.display())));
        }
        replace_file(&self.root.join(POINTER), version.as_bytes())
    }

    /// The current version, if any has been published.
    pub fn current(&self) -> Result<Option<String>> {
        let path = self.root.join(POINTER);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Reads one file of a version.
    pub fn read(&self, version: &str, file: &str) -> Result<Vec<u8>> {
        let path = self.version_dir(version).join(file);
        fs::read(&path).map_err(|e| Error::io(path, e))
    }

    /// Removes every version not in `keep`, never the current one; returns the removed ones.
    ///
    /// Each goes to a temporary name first, durably, and is removed from there: a crash or power loss in the
    /// middle of a removal leaves a folder that [`Publisher::sweep`] removes, never a version with files missing.
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
        let current = self.current()?;
        let versions = self.versions_dir();
        let mut removed = Vec::new();
        let mut doomed = Vec::new();
        for v in self.versions()? {
            if !keep.contains(&v) && Some(&v) != current.as_ref() {
                let dir = self.version_dir(&v);
                let tmp = crate::state::temp_name(&versions, &v);
                fs::rename(&dir, &tmp).map_err(|e| Error::io(dir, e))?;
                doomed.push(tmp);
                removed.push(v);
            }
        }
        if doomed.is_empty() {
            return Ok(removed);
        }
        sync_dir(&versions, "publish.retain_dir")?;
        for tmp in doomed {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(tmp, e))?;
        }
        Ok(removed)
    }

    /// Removes the staging folders, temporary pointer files and half-removed versions of writers that crashed.
    pub fn sweep(&self) -> Result<Vec<PathBuf>> {
        let mut removed = crate::state::sweep_temp_files(&self.root)?;
        removed.extend(crate::state::sweep_temp_files(&self.root.join(".staging"))?);
        removed.extend(crate::state::sweep_temp_files(&self.versions_dir())?);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_and_current_follows() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new(dir.path(), "v");
        assert_eq!(p.current().unwrap(), None);
        assert_eq!(p.publish(&[("a", b"1")]).unwrap(), "v000001");
        assert_eq!(p.publish(&[("a", b"2")]).unwrap(), "v000002");
        assert_eq!(p.current().unwrap().as_deref(), Some("v000002"));
        assert_eq!(p.read("v000001", "a").unwrap(), b"1");
        p.set_current("v000001").unwrap();
        assert_eq!(p.read(&p.current().unwrap().unwrap(), "a").unwrap(), b"1");
        assert!(p.set_current("v000009").is_err());
        p.publish(&[("a", b"3")]).unwrap();
        p.set_current("v000001").unwrap();
        let removed = p.retain(&["v000003".to_string()].into()).unwrap();
        // The current version stays whatever `keep` says.
        assert_eq!(removed, ["v000002"]);
        assert_eq!(p.versions().unwrap(), vec!["v000001", "v000003"]);
    }
}
