//! Every sync that makes a write durable goes through here, under the name of its site (`"log.append"`,
//! `"master.dir"`, ...: [`SITES`]). In production it is the system call and nothing else. Under the `power-loss`
//! feature a test can install a [`recorder::Recorder`] over a folder: it then stands in for the disk, keeps what
//! each sync made durable and can cut the power, so that a missing sync loses data in a test as it would on a
//! machine (a killed process or a fail point leaves the page cache intact, and with it every write).
//!
//! Files are synced with `fdatasync`: it flushes the data and the size (what a later read needs), not the times.

use std::fs::File;
use std::io;
use std::path::Path;

use lambda_core::error::{Error, Result};

#[cfg(any(test, feature = "power-loss"))]
pub mod recorder;

/// Without the feature there is no recorder to ask.
#[cfg(not(any(test, feature = "power-loss")))]
mod recorder {
    pub(super) fn file_synced(_: &std::fs::File, _: &str) -> Option<std::io::Result<()>> {
        None
    }

    pub(super) fn dir_synced(_: &std::path::Path, _: &str) -> Option<std::io::Result<()>> {
        None
    }
}

/// Every site's name, so that a test can skip each one in turn (`bench/power-loss-mutants`).
///
/// Removals are not made durable where a power loss that undoes them costs nothing: a temporary file swept, an
/// empty log segment dropped at start, log segments retired; the next start finds them and removes them again.
pub const SITES: &[&str] = &[
    "state.write_synced",
    "state.replace_dir",
    "state.new_dir",
    "state.document_file",
    "state.document_dir",
    "publish.staging_dir",
    "publish.versions_dir",
    "publish.retain_dir",
    "master.file",
    "master.dir",
    "log.segment_file",
    "log.segment_dir",
    "log.open_cut",
    "log.append",
    "log.retry_cut",
    "log.cut_back",
    "dead_letters.new_file",
    "dead_letters.open_cut",
    "dead_letters.append",
    "dead_letters.cut_back",
    "dead_letters.rotate_dir",
];

/// Syncs a file's data to disk; `site` names the call ([`SITES`]).
pub fn sync_file(file: &File, site: &'static str) -> io::Result<()> {
    if let Some(done) = recorder::file_synced(file, site) {
        return done;
    }
    file.sync_data()
}

/// Writes a file's dirty pages out, to keep them from piling up during a big write: not a durability point (the
/// write's own sync at its end is), so it has no site and a recorder ignores it.
pub fn write_back(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Syncs a folder, so that the names created, renamed or removed in it are durable; `site` names the call.
pub fn sync_dir(path: &Path, site: &'static str) -> Result<()> {
    if let Some(done) = recorder::dir_synced(path, site) {
        return done.map_err(|e| Error::io(path, e));
    }
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| Error::io(path, e))
}
