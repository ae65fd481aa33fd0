//! Writes the speed layer's checkpoint: the manifest, the realtime view files (full, delta, and their compaction)
//! and the online learners' file. Only the speed layer writes them; their formats and readers are
//! `lambda_stores::checkpoint`'s, since the serving layer, the batch layer's retention and `lambda-ml status` read
//! them too, and the batch layer must not compile this crate (HTTP, NATS).

use std::path::{Path, PathBuf};

use lambda_core::error::{Error, Result};
use lambda_models::online::Tracked;
use lambda_stores::checkpoint::{
    learners_dir, manifest_path, views_dir, Checkpoint, ViewFile, ViewHead, WeighedAt, LEARNERS, MANIFEST, VIEWS,
};
use lambda_stores::realtime::{Chunk, Realtime};
use lambda_stores::state::{self, DocumentWriter};
use lambda_stores::views::ViewTable;

/// The file name of the online learners as of the event of sequence `seq`, in `generation`.
pub fn learners_name(generation: u64, seq: u64) -> String {
    format!("l{generation:06}-{seq:020}.learners")
}

/// Writes the online learners with the blend as of the same event (synced, then renamed into place); returns
/// its size.
pub fn write_learners(state: &Path, name: &str, learners: &[Tracked], weighed: &WeighedAt) -> Result<u64> {
    let mut w = DocumentWriter::create(&learners_dir(state).join(name), LEARNERS)?;
    w.frame(&state::encode(learners)?)?;
    w.frame(&state::encode(weighed)?)?;
    fail::fail_point!("checkpoint::learners_before_rename", |_| Err(state::injected(&learners_dir(state).join(name))));
    w.finish()
}

/// Writes the manifest atomically; returns its size.
pub fn write(state: &Path, c: &Checkpoint) -> Result<u64> {
    fail::fail_point!("checkpoint::before_manifest", |_| Err(state::injected(&manifest_path(state))));
    let mut frames = vec![state::encode(c)?];
    if let Some(online) = &c.online {
        frames.push(state::encode(online)?);
        if let Some(learners) = &c.learners {
            frames.push(state::encode(learners)?);
            if let Some(windows) = &c.windows {
                frames.push(state::encode(windows)?);
                if let Some(blend) = &c.blend {
                    frames.push(state::encode(blend)?);
                    if let Some(quality) = &c.quality {
                        frames.push(state::encode(quality)?);
                        if let Some(retrain) = &c.retrain {
                            frames.push(state::encode(retrain)?);
                            if let Some(freeze) = &c.freeze {
                                frames.push(state::encode(freeze)?);
                                if let Some(sources) = &c.sources {
                                    frames.push(state::encode(sources)?);
                                    if let Some(file) = &c.learner_file {
                                        frames.push(state::encode(file)?);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    state::write_document(&manifest_path(state), MANIFEST, &frames)
}

fn view_name(generation: u64, seq: u64, full: bool) -> String {
    format!("g{generation:06}-{seq:020}.{}", if full { "full" } else { "delta" })
}

/// Writes every key of `realtime` as a full view file at `seq`.
pub fn write_full(state: &Path, generation: u64, seq: u64, realtime: &Realtime) -> Result<ViewFile> {
    let name = view_name(generation, seq, true);
    let mut w = DocumentWriter::create(&views_dir(state).join(&name), VIEWS)?;
    w.frame(&state::encode(&ViewHead { generation, seq, full: true, features: realtime.features().to_vec() })?)?;
    realtime.for_each_chunk(|chunk| w.frame(&state::encode(&chunk)?))?;
    fail::fail_point!("checkpoint::full_before_rename", |_| Err(state::injected(&views_dir(state).join(&name))));
    let bytes = w.finish()?;
    Ok(ViewFile { name, seq, bytes, full: true })
}

/// Writes the changed keys as a delta view file at `seq`.
pub fn write_delta(state: &Path, generation: u64, seq: u64, features: &[String], chunks: &[Chunk]) -> Result<ViewFile> {
    let name = view_name(generation, seq, false);
    let mut w = DocumentWriter::create(&views_dir(state).join(&name), VIEWS)?;
    w.frame(&state::encode(&ViewHead { generation, seq, full: false, features: features.to_vec() })?)?;
    for chunk in chunks {
        w.frame(&state::encode(chunk)?)?;
    }
    let bytes = w.finish()?;
    Ok(ViewFile { name, seq, bytes, full: false })
}

/// Merges a full view file and the deltas after it into one full file at the last one's sequence number, without
/// the live view: shard by shard (files hold their shards in order), a later file's row for a key replacing an
/// earlier one. `template` gives the features and the class order. Memory: one shard at a time.
pub fn compact(state: &Path, generation: u64, template: &ViewTable, files: &[ViewFile]) -> Result<ViewFile> {
    let seq = files.last().map(|f| f.seq).ok_or_else(|| Error::Internal("nothing to compact"))?;
    struct Source {
        path: PathBuf,
        frames: state::FrameReader<std::io::BufReader<std::fs::File>>,
        next: Option<(usize, Chunk)>,
    }
    let advance = |src: &mut Source| -> Result<()> {
        src.next = match state::document_frame(&mut src.frames, VIEWS)? {
            Some(f) => {
                let chunk: Chunk = state::decode(&src.path, &f)?;
                let shard = chunk.rows.first().map(|r| lambda_stores::realtime::shard_of(&r.key)).unwrap_or(0);
                Some((shard, chunk))
            }
            None => None,
        };
        Ok(())
    };
    let mut sources = Vec::with_capacity(files.len());
    for f in files {
        let path = views_dir(state).join(&f.name);
        let (_, mut frames) = state::open_document(&path, VIEWS)?;
        let head: ViewHead = match state::document_frame(&mut frames, VIEWS)? {
            Some(h) => state::decode(&path, &h)?,
            None => return Err(Error::Format { path, message: "no header record".into() }),
        };
        if head.features != template.features {
            return Err(Error::Format { path, message: format!("aggregates features {:?}", head.features) });
        }
        let mut src = Source { path, frames, next: None };
        advance(&mut src)?;
        sources.push(src);
    }
    let name = view_name(generation, seq, true);
    let mut w = DocumentWriter::create(&views_dir(state).join(&name), VIEWS)?;
    w.frame(&state::encode(&ViewHead { generation, seq, full: true, features: template.features.clone() })?)?;
    for shard in 0..lambda_stores::realtime::SHARDS {
        let mut table = template.empty_like();
        for src in sources.iter_mut() {
            while let Some((s, chunk)) = src.next.as_ref().filter(|(s, _)| *s == shard) {
                debug_assert_eq!(*s, shard);
                for row in &chunk.rows {
                    table.put_packed(row, &chunk.classes);
                }
                advance(src)?;
            }
        }
        if !table.is_empty() {
            let rows = (0..table.len() as u32).map(|s| table.packed(s)).collect();
            w.frame(&state::encode(&Chunk { classes: table.classes().to_vec(), rows })?)?;
        }
    }
    if let Some(src) = sources.iter().find(|s| s.next.is_some()) {
        return Err(Error::Format { path: src.path.clone(), message: "holds shards out of order".into() });
    }
    let bytes = w.finish()?;
    Ok(ViewFile { name, seq, bytes, full: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::schema::{Cell, Event, Target};
    use lambda_core::spec::Spec;
    use lambda_models::blend::Blend;
    use lambda_models::model::LinearModel;
    use lambda_models::online::NagState;
    use lambda_stores::checkpoint::{
        base_version, read, read_reusing, read_view_file, FreezeRecord, LearnerFile, RetrainStatus, SourceState,
        SpeedModel, SpeedStats,
    };
    use lambda_stores::state::Kind;

    fn spec() -> Spec {
        Spec::from_toml(lambda_core::spec::SAMPLE, Path::new("s.toml"), Path::new("/")).unwrap()
    }

    fn manifest(online: Option<NagState>) -> Checkpoint {
        let model = LinearModel::zeros(lambda_models::model::Family::Logistic, vec!["a".into(), "b".into()], 2);
        Checkpoint {
            generation: 1,
            base_version: "v000001".into(),
            base_watermark: 0,
            last_seq: 9,
            archived_through: 0,
            updates: 9,
            stats: SpeedStats::default(),
            views: vec![],
            dedup_runs: vec![],
            dedup_through: 9,
            written_ms: 1,
            model,
            online,
            learners: None,
            windows: None,
            blend: None,
            quality: None,
            retrain: None,
            freeze: None,
            sources: None,
            learner_file: None,
            learners_weighed: None,
        }
    }

    /// One of each online learner, each having learned one event.
    fn learners(classes: &[String]) -> Vec<Tracked> {
        let encoder = lambda_core::encoder::Encoder {
            features: vec![lambda_core::encoder::FeatureEncoder::Boolean { name: "b".into() }],
            target: None,
        };
        let mut learners = Vec::new();
        for name in lambda_models::online::LEARNERS {
            let mut l = lambda_models::online::OnlineLearner::new(name, classes, &encoder, None).unwrap();
            assert!(l.learn(&[1.0, 0.0], &Target::Class("b".into())));
            learners.push(Tracked::new(l, window_of(classes)));
        }
        learners
    }

    #[test]
    fn learners_in_a_file_of_their_own_are_read_with_the_manifest_reused_while_listed_and_unreadable_ones_stop_the_read(
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(learners_dir(dir.path())).unwrap();
        let classes: Vec<String> = vec!["a".into(), "b".into()];
        let kept = learners(&classes);
        let name = learners_name(1, 7);
        // The blend as of the learners' event: weights and a linear model other than the manifest's newer ones.
        let mut weights = lambda_models::blend::Weights::batch_only(lambda_models::blend::component_names(
            lambda_models::online::LEARNERS,
        ));
        weights.weights.iter_mut().for_each(|w| *w = 0.0);
        weights.weights[2] = 1.0;
        let mut linear = manifest(None).model;
        linear.weights[0] = 0.5;
        let weighed = WeighedAt { seq: 7, linear, updates: 7, weights };
        assert!(write_learners(dir.path(), &name, &kept, &weighed).unwrap() > 0);
        let window = window_of(&classes);
        let c = Checkpoint {
            learners: Some(Vec::new()),
            windows: Some([window.clone(), window]),
            retrain: Some(RetrainStatus::default()),
            quality: Some(lambda_models::quality::Quality::new(5)),
            blend: Some(Blend::new(
                lambda_models::blend::component_names(lambda_models::online::LEARNERS),
                window_of(&classes),
            )),
            freeze: Some(FreezeRecord::default()),
            sources: Some(Vec::new()),
            learner_file: Some(LearnerFile { name: name.clone(), seq: 7 }),
            ..manifest(Some(NagState { scale: vec![1.0, 1.0], grad_sq: vec![0.0; 3], norm: 0.0, seen: 0.0 }))
        };
        write(dir.path(), &c).unwrap();
        let back = read(dir.path()).unwrap().unwrap();
        assert_eq!(
            back,
            Checkpoint { learners: Some(kept.clone()), learners_weighed: Some(weighed.clone()), ..c.clone() }
        );
        // Another process's serving layer weighs the file's learners with the weights their records gave then.
        let served = SpeedModel::of(&back).served;
        assert_eq!(served.at, weighed);
        assert_eq!(served.learners, kept.iter().map(|t| t.learner.clone()).collect::<Vec<_>>());
        assert_ne!(served.at.weights, c.blend.as_ref().unwrap().weights, "the manifest's weights are not the file's");
        // A follower that read it keeps its learners while the manifest lists the same file: not read again.
        std::fs::remove_file(learners_dir(dir.path()).join(&name)).unwrap();
        let again = read_reusing(dir.path(), Some(&back)).unwrap().unwrap();
        assert_eq!((again.learners, again.learners_weighed), (Some(kept.clone()), Some(weighed)));
        // A file of the build before (the learners alone) serves them with the manifest's blend.
        let old = Kind { version: 1, ..LEARNERS };
        state::write_document(&learners_dir(dir.path()).join(&name), old, &[state::encode(&kept).unwrap()]).unwrap();
        let back = read(dir.path()).unwrap().unwrap();
        assert_eq!(back.learners_weighed, None);
        assert_eq!(SpeedModel::of(&back).served.at.weights, c.blend.as_ref().unwrap().weights);
        std::fs::remove_file(learners_dir(dir.path()).join(&name)).unwrap();
        // Read afresh, a missing or damaged file is an error that names it: learners started afresh would be
        // written down as the state by the next checkpoint.
        for damage in [None, Some(&b"LMOL garbage"[..])] {
            if let Some(bytes) = damage {
                std::fs::write(learners_dir(dir.path()).join(&name), bytes).unwrap();
            }
            match read(dir.path()) {
                Err(Error::Unreadable { what, .. }) => assert!(what.contains(&name), "{what}"),
                other => panic!("expected Unreadable, got {other:?}"),
            }
        }
    }

    fn window_of(classes: &[String]) -> lambda_models::prequential::Window {
        lambda_models::prequential::Window::new(10, classes.to_vec(), 1.0)
    }

    #[test]
    fn the_records_round_trip_an_old_manifest_reads_without_them_and_one_that_cannot_be_decoded_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lambda_stores::checkpoint::dir(dir.path())).unwrap();
        let c = manifest(Some(NagState { scale: vec![1.0, 2.5], grad_sq: vec![0.5, 0.25, 1.0], norm: 3.0, seen: 2.0 }));
        write(dir.path(), &c).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), c);
        let classes: Vec<String> = vec!["a".into(), "b".into()];
        let learners = learners(&classes);
        let names: Vec<&str> = learners.iter().map(|t| t.learner.name()).collect();
        let window = window_of(&classes);
        let with_learners = Checkpoint { learners: Some(learners.clone()), ..c.clone() };
        write(dir.path(), &with_learners).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), with_learners);
        // Batch, speed, then one per learner.
        let weighed: Vec<f64> =
            [0.5, 0.25, 0.25].into_iter().chain(std::iter::repeat_n(0.0, names.len() - 1)).collect();
        let on_batch: Vec<f64> = [1.0].into_iter().chain(std::iter::repeat_n(0.0, names.len() + 1)).collect();
        let mut blend = Blend::new(lambda_models::blend::component_names(names), window.clone());
        blend.weights.weights = weighed.clone();
        let everything = Checkpoint {
            windows: Some([window.clone(), window]),
            blend: Some(blend),
            quality: Some(lambda_models::quality::Quality::new(5)),
            retrain: Some(RetrainStatus::default()),
            freeze: Some(FreezeRecord { snapshot: Some(3), goods: vec![3, 9], dead_letters: 4 }),
            sources: Some(vec![SourceState { source: 7, through: 12, held: vec![(14, 20), (22, 22)] }]),
            ..with_learners.clone()
        };
        write(dir.path(), &everything).unwrap();
        let back = read(dir.path()).unwrap().unwrap();
        assert_eq!(back, everything);
        assert_eq!(SpeedModel::of(&back).served.at.weights.weights, weighed);
        // Written before the blend: its weights start on the batch model.
        assert_eq!(SpeedModel::of(&with_learners).served.at.weights.weights, on_batch);
        // A record in a layout another build wrote is an error naming it, not a record dropped with those after it.
        let mut frames = vec![
            state::encode(&c).unwrap(),
            state::encode(everything.online.as_ref().unwrap()).unwrap(),
            state::encode(everything.learners.as_ref().unwrap()).unwrap(),
            vec![0xff; 3],
        ];
        frames.push(state::encode(everything.blend.as_ref().unwrap()).unwrap());
        state::write_document(&manifest_path(dir.path()), MANIFEST, &frames).unwrap();
        match read(dir.path()) {
            Err(Error::Unreadable { what, .. }) => assert!(what.starts_with("the windowed records"), "{what}"),
            other => panic!("expected Unreadable, got {other:?}"),
        }
        assert_eq!(base_version(dir.path()).unwrap().as_deref(), Some(c.base_version.as_str()));
        let mut frames = vec![vec![0xff; 3]];
        frames.extend(frames.clone());
        state::write_document(&manifest_path(dir.path()), MANIFEST, &frames).unwrap();
        assert!(read(dir.path()).is_err(), "the first record must be read");
        // What the build before the adaptive update wrote: one record, format version 1.
        let old = Kind { version: 1, ..MANIFEST };
        state::write_document(&manifest_path(dir.path()), old, &[state::encode(&c).unwrap()]).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), manifest(None));
    }

    #[test]
    fn compacting_a_full_file_and_its_deltas_equals_the_live_view() {
        let s = spec();
        let dir = tempfile::tempdir().unwrap();
        let rt = Realtime::new(ViewTable::new(&s), 0);
        let mut files = Vec::new();
        for i in 1..=2000u64 {
            // A new class appears late, so that chunks of one shard carry different class lists.
            let label = if i > 1500 { "late" } else { ["a", "b"][(i % 2) as usize] };
            let e = Event {
                id: format!("e{i}"),
                key: format!("k{}", (i * 7919) % 300),
                time: i as i64,
                features: vec![Cell::Num(Some(i as f64)), Cell::Cat(None), Cell::Bool(Some(i.is_multiple_of(3)))],
                target: Some(Target::Class(label.into())),
            };
            rt.observe(&e.key, e.time, i, &e, e.target.as_ref());
            if i == 400 {
                files.push(write_full(dir.path(), 1, i, &rt).unwrap());
            } else if i % 250 == 0 {
                files.push(write_delta(dir.path(), 1, i, rt.features(), &rt.take_changed()).unwrap());
            }
        }
        let merged = compact(dir.path(), 1, &ViewTable::new(&s), &files).unwrap();
        assert!(merged.full && merged.seq == 2000);
        let back = Realtime::new(ViewTable::new(&s), 0);
        read_view_file(dir.path(), &merged, &back).unwrap();
        assert_eq!(back.to_table(), rt.to_table());
    }
}
