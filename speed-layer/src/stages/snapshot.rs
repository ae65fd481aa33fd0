//! The freeze's snapshot files: a good online state (the linear model, its adaptive update's state, the other
//! learners) written for a restart to learn the logged events after it again. Only the speed layer writes and
//! reads them; the checkpoint's manifest names the one in use.

use std::path::{Path, PathBuf};

use lambda_models::online::{AdaptiveLinear, OnlineLearner};
use lambda_stores::checkpoint;
use lambda_stores::state::{self, DocumentWriter, Kind};

use crate::Result;

/// The good online states' format.
pub(super) const GOOD: Kind = Kind { magic: *b"LMGS", version: 1, name: "good online state" };

/// The folder of the good online states' files.
pub(super) fn goods_dir(state: &Path) -> PathBuf {
    checkpoint::dir(state).join("good")
}

/// The file name of the good state taken after the event of sequence `seq`, in `generation`.
pub(super) fn good_name(generation: u64, seq: u64) -> String {
    format!("g{generation:06}-{seq:020}.good")
}

/// Writes a good online state (synced, then renamed into place); returns its size.
pub(super) fn write_good(state: &Path, name: &str, model: &AdaptiveLinear, learners: &[OnlineLearner]) -> Result<u64> {
    let path = goods_dir(state).join(name);
    let mut w = DocumentWriter::create(&path, GOOD)?;
    w.frame(&state::encode(&model.model)?)?;
    w.frame(&state::encode(&model.state)?)?;
    w.frame(&state::encode(learners)?)?;
    fail::fail_point!("checkpoint::good_before_rename", |_| Err(state::injected(&path).into()));
    Ok(w.finish()?)
}

/// Reads a good online state written by [`write_good`].
pub(super) fn read_good(state: &Path, name: &str) -> Result<(AdaptiveLinear, Vec<OnlineLearner>)> {
    let path = goods_dir(state).join(name);
    let (_, frames) = state::read_document(&path, GOOD)?;
    let [model, online, learners] = frames.as_slice() else {
        let message = format!("{} records, expected 3", frames.len());
        return Err(lambda_core::Error::Format { path, message }.into());
    };
    let model = AdaptiveLinear { model: state::decode(&path, model)?, state: state::decode(&path, online)? };
    Ok((model, state::decode(&path, learners)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lambda_models::model::{Family, LinearModel};
    use lambda_models::online::NagState;

    #[test]
    fn a_good_state_round_trips_through_its_file_and_a_missing_one_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(goods_dir(dir.path())).unwrap();
        let mut linear = LinearModel::zeros(Family::Logistic, vec!["no".into(), "yes".into()], 3);
        linear.weights = vec![0.5, -0.25, 2.0];
        let state = NagState::warm(&linear, vec![1.0, 2.0, 0.5], None, 10.0);
        let model = AdaptiveLinear { model: linear, state };
        write_good(dir.path(), &good_name(1, 9), &model, &[]).unwrap();
        assert_eq!(read_good(dir.path(), &good_name(1, 9)).unwrap(), (model, Vec::new()));
        let missing = goods_dir(dir.path()).join(good_name(1, 3));
        match read_good(dir.path(), &good_name(1, 3)) {
            Err(crate::Error::Core(lambda_core::Error::Io { path, .. })) => assert_eq!(path, missing),
            other => panic!("expected the missing file named, got {other:?}"),
        }
    }
}
