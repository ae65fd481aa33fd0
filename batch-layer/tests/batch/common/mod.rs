//! Helpers shared by the batch-layer tests: a spec's text, write events into the master dataset, read the
//! registry's pointer.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use lambda_core::schema::Event;
use lambda_core::spec::Spec;
use lambda_stores::master::{partition, write_events};
use lambda_stores::registry::Registry;

/// Writes `(sequence number, event)` rows as one master-dataset file named `name`.
pub fn write(spec: &Spec, rows: &[(u64, Event)], name: &str) {
    let refs: Vec<(u64, &Event)> = rows.iter().map(|(s, e)| (*s, e)).collect();
    write_events(spec, &partition(&spec.paths.master, 0).join(name), &refs).unwrap();
}

/// The registry's current version, if any.
pub fn current(spec: &Spec) -> Option<String> {
    Registry::open(&spec.paths.registry).current_version().unwrap()
}

/// A pipeline spec's text: the `task`, the features as (name, type), paths beside the spec, then `batch` (lines of
/// the `[batch]` table, which comes last so that callers can append to it).
pub fn spec_text(task: &str, features: &[(&str, &str)], batch: &str) -> String {
    let mut text = format!(
        "name = \"t\"\n[dataset]\ntime_column = \"ts\"\nkey_column = \"user\"\nid_column = \"id\"\ntarget = \"label\"\n\
         task = \"{task}\"\n"
    );
    for (name, kind) in features {
        text += &format!("[[features]]\nname = \"{name}\"\ntype = \"{kind}\"\n");
    }
    text += "[paths]\nmaster = \"master\"\nregistry = \"registry\"\nviews = \"views\"\nstate = \"state\"\n[batch]\n";
    text + batch
}

/// The file (or folder) and the problem of an error about the master dataset or a table to score; panics on any
/// other error.
pub fn problem(e: lambda_batch::Error) -> (std::path::PathBuf, lambda_batch::read::Problem) {
    match e {
        lambda_batch::Error::Input { path, problem } => (path, problem),
        e => panic!("not an error of the input: {e:?}"),
    }
}
