//! Publication interrupted at its dangerous points (fail points; a test binary of its own, since they are
//! process-wide): `CURRENT` stays on the complete old version, and the next publication becomes current whole. And
//! by a power cut at each of its syncs (`power_loss_*`, on a recorder's disk).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use lambda_stores::durable::recorder::{power_cut, quiet_power_cuts, skipped_by_environment, Recorder};
use lambda_stores::publish::Publisher;

#[test]
fn interrupted_publication_leaves_current_untouched() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let p = Publisher::new(dir.path(), "v");
    p.publish(&[("model", b"complete"), ("manifest", b"m1")]).unwrap();
    // Interrupted between the files of the staging folder, and between its rename and the pointer swap.
    for point in ["publish::between_files", "publish::before_pointer"] {
        fail::cfg(point, "return").unwrap();
        assert!(p.publish(&[("model", b"new"), ("manifest", b"m2")]).is_err(), "{point}");
        fail::cfg(point, "off").unwrap();
        assert_eq!(p.current().unwrap().as_deref(), Some("v000001"), "{point}");
        assert_eq!(p.read("v000001", "model").unwrap(), b"complete");
    }
    // A later publication goes on from the highest version present and becomes current whole.
    let v = p.publish(&[("model", b"newer"), ("manifest", b"m3")]).unwrap();
    assert_eq!(p.current().unwrap(), Some(v.clone()));
    assert_eq!(p.read(&v, "model").unwrap(), b"newer");
    assert_eq!(p.read(&v, "manifest").unwrap(), b"m3");
    scenario.teardown();
}

/// A version and its files' contents.
type Version = (String, Vec<Vec<u8>>);

/// The version `CURRENT` names, or why it cannot be read.
fn served(p: &Publisher) -> Result<Option<Version>, String> {
    let Some(v) = p.current().map_err(|e| e.to_string())? else { return Ok(None) };
    let files: Result<Vec<_>, String> =
        ["model", "manifest"].iter().map(|f| p.read(&v, f).map_err(|e| e.to_string())).collect();
    Ok(Some((v.clone(), files?)))
}

fn whole(version: &str, files: &[(&str, &[u8])]) -> Option<Version> {
    Some((version.to_string(), files.iter().map(|(_, b)| b.to_vec()).collect()))
}

#[test]
fn power_loss_during_a_publication_serves_the_old_version_or_the_new_one_whole() {
    let scenario = fail::FailScenario::setup();
    quiet_power_cuts();
    let old: &[(&str, &[u8])] = &[("model", b"the old model"), ("manifest", b"m1")];
    let new: &[(&str, &[u8])] = &[("model", b"the new model, longer"), ("manifest", b"m2")];
    let next: &[(&str, &[u8])] = &[("model", b"the next model"), ("manifest", b"m3")];
    let mut sites = std::collections::BTreeSet::new();
    let skipped = skipped_by_environment();
    // Into a registry folder that does not exist yet, and over a published version.
    for first in [true, false] {
        let mut n = 1;
        loop {
            let mut crashed = false;
            for seed in 0..4 {
                let dir = tempfile::tempdir().unwrap();
                let p = Publisher::new(dir.path().join("registry"), "v");
                let r = Recorder::install(dir.path()).unwrap();
                let before = if first { None } else { whole(&p.publish(old).unwrap(), old) };
                let after = whole(if first { "v000001" } else { "v000002" }, new);
                r.crash_after(n);
                let published = catch_unwind(AssertUnwindSafe(|| p.publish(new).unwrap()));
                if let Err(panic) = &published {
                    let cut = power_cut(panic.as_ref()).expect("only the power cut crashes");
                    sites.insert(cut.site);
                    crashed = true;
                }
                r.cut(seed).unwrap();
                let got = served(&p).unwrap_or_else(|e| panic!("crash at sync {n}, seed {seed}: {e}"));
                match &published {
                    // Returned: the new version is durable.
                    Ok(v) => assert_eq!(got, whole(v, new), "after the publication returned, seed {seed}"),
                    Err(_) => assert!(got == before || got == after, "crash at sync {n} (seed {seed}): {got:?}"),
                }
                // The next publication goes on from whatever the crash left, and a cut after it keeps it.
                let v = p.publish(next).unwrap();
                r.cut(seed + 100).unwrap();
                assert_eq!(served(&p).unwrap(), whole(&v, next), "crash at sync {n}, seed {seed}");
            }
            if !crashed {
                break;
            }
            n += 1;
        }
    }
    scenario.teardown();
    // Each step of a publication was crashed at (but a skipped one, which is not there).
    let every =
        ["state.new_dir", "state.write_synced", "publish.staging_dir", "publish.versions_dir", "state.replace_dir"];
    assert!(every.iter().all(|s| sites.contains(s) || skipped.iter().any(|k| k == s)), "{sites:?}");
}

#[test]
fn power_loss_during_retention_leaves_every_listed_version_whole() {
    // Fail points are process-wide: this holds the other tests' off.
    let scenario = fail::FailScenario::setup();
    quiet_power_cuts();
    let published: Vec<[(&str, Vec<u8>); 2]> = (1..=3)
        .map(|i| [("model", format!("model {i}").into_bytes()), ("manifest", format!("m{i}").into_bytes())])
        .collect();
    for seed in 0..40 {
        for crash in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let p = Publisher::new(dir.path().join("registry"), "v");
            for files in &published {
                let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
                p.publish(&files).unwrap();
            }
            let r = Recorder::install(dir.path()).unwrap();
            let retained = if crash {
                r.crash_at("publish.retain_dir");
                catch_unwind(AssertUnwindSafe(|| p.retain(&Default::default()).unwrap())).is_ok()
            } else {
                assert_eq!(p.retain(&Default::default()).unwrap(), ["v000001", "v000002"]);
                true
            };
            r.cut(seed).unwrap();
            let listed = p.versions().unwrap();
            for v in &listed {
                let i: usize = v.trim_start_matches('v').parse().unwrap();
                for (name, bytes) in &published[i - 1] {
                    let got = p.read(v, name);
                    assert_eq!(got.ok().as_ref(), Some(bytes), "{v}/{name}, seed {seed}, crash {crash}");
                }
            }
            if retained {
                assert_eq!(listed, ["v000003"], "retention returned, seed {seed}");
            }
            assert_eq!(p.current().unwrap().as_deref(), Some("v000003"));
        }
    }
    scenario.teardown();
}
