//! The one error type of `lambda-core`.

use std::path::PathBuf;

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the shared core. Each variant names the thing that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline spec could not be read or is invalid.
    #[error("pipeline spec {path}: {message}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored JSON document (model, manifest, checkpoint) is malformed.
    #[error("{path}: malformed: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Parquet or Arrow data could not be read or written.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet or Arrow reader's error, or what does not fit the expected columns.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record does not match the schema.
    #[error("{0}")]
    Invalid(#[from] crate::rejection::Rejection),
    /// Data does not fit what was asked of it (empty data, a single class, mismatched dimensions).
    #[error("{0}")]
    Data(String),
    /// A model (read from a file, or handed over) fails its own checks: shapes that disagree, numbers that are
    /// not finite, a format this build does not read.
    #[error("{0}")]
    InvalidModel(String),
    /// A value could not be encoded for storage.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step was asked for in a state where it cannot happen (a bug: nothing was written).
    #[error("{0}")]
    Internal(&'static str),
    /// A folder is held by another process (its lock, [`lambda_stores::lock::FolderLock`]).
    #[error("{path}: the folder is in use by {holder}; stop that one first, or give this one a folder of its own")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it: process id, command line, since when.
        holder: String,
    },
    /// State that must be read cannot be: written by another build, or damaged. Nothing was changed.
    #[error(
        "{what} cannot be read, and nothing was changed ({source}). Restore the file, or start this folder \
             afresh with a build that wrote it"
    )]
    Unreadable {
        /// What could not be read, naming its file.
        what: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// Nothing has been published yet where something was expected.
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
