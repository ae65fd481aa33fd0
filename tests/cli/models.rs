//! The champion/challenger gate and version management from the command line: `batch` exits with 3 and names the
//! reason when it keeps its winner back, `models list` shows why, `models promote` and `models rollback` move
//! `CURRENT` by hand.

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_stores::registry::Registry;

#[test]
fn a_held_back_challenger_exits_3_is_listed_with_its_reason_and_can_be_promoted_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let sp = spec_path.to_str().unwrap();
    let spec = Spec::from_file(&spec_path).unwrap();
    let registry = Registry::open(&spec.paths.registry);
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "3000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    let out = run_ok(&["batch", "--spec", sp]);
    assert!(out.contains("published v000001") && out.contains("no champion yet"), "{out}");

    // The same history again: nothing new to judge on, and the champion saw the holdout.
    let out = run(&["batch", "--spec", sp]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("not published") && stdout.contains("batch.min_improvement"), "{stdout}");
    assert!(stdout.contains("kept as v000002") && stdout.contains("models promote"), "{stdout}");
    assert_eq!(registry.current_version().unwrap().as_deref(), Some("v000001"));

    let list = run_ok(&["models", "list", "--spec", sp]);
    let line = |v: &str| list.lines().find(|l| l.starts_with(v)).unwrap_or_default().to_string();
    assert!(line("v000001").ends_with("current"), "{list}");
    assert!(line("v000002").contains("held back:") && line("v000002").contains("whole holdout"), "{list}");

    // By hand: promote the held-back version, then roll back to the previous published one.
    let out = run_ok(&["models", "promote", "--spec", sp, "v000002"]);
    assert!(out.contains("v000001 -> v000002"), "{out}");
    assert_eq!(registry.current_version().unwrap().as_deref(), Some("v000002"));
    let out = run_ok(&["models", "rollback", "--spec", sp]);
    assert!(out.contains("v000002 -> v000001"), "{out}");
    assert_eq!(registry.current_version().unwrap().as_deref(), Some("v000001"));

    // --force publishes past the gate and says so; a version that does not exist is refused.
    let out = run_ok(&["batch", "--spec", sp, "--force"]);
    assert!(out.contains("published v000003") && out.contains("--force"), "{out}");
    let out = run(&["models", "promote", "--spec", sp, "v000009"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("v000009"));
    assert_eq!(registry.current_version().unwrap().as_deref(), Some("v000003"));
    // Nothing older than v000001 to roll back to.
    run_ok(&["models", "rollback", "--spec", sp, "--to", "v000001"]);
    let out = run(&["models", "rollback", "--spec", sp]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no published version older than v000001"));
}

#[test]
fn the_registry_keeps_its_newest_versions_the_current_the_rollback_target_and_the_speed_layer_s_base_and_sweeps_crashed_writes(
) {
    // Regression: registry versions, their views, `.staging/` and temporary files were never removed.
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    pin_families(&spec_path, &["linear"]);
    let text = std::fs::read_to_string(&spec_path).unwrap().replace("[batch]\n", "[batch]\nkeep_versions = 2\n");
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap();
    let spec = Spec::from_file(&spec_path).unwrap();
    let registry = Registry::open(&spec.paths.registry);
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "2000", "--stream-rows", "50", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", sp]);
    // A speed layer's state built on v000001.
    run_ok(&["speed", "--spec", sp, "--source", &format!("file:{}", stream.display()), "--once"]);
    let versions = || {
        let mut v: Vec<String> = std::fs::read_dir(spec.paths.registry.join("versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let views = |v: &str| lambda_stores::views::batch_view_path(&spec, v).exists();
    for _ in 0..3 {
        run_ok(&["batch", "--spec", sp, "--force"]);
    }
    assert_eq!(versions(), ["v000001", "v000003", "v000004"]);
    // What writers that crashed left behind, and a temporary file of a writer still running (this test).
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let staging = spec.paths.registry.join(format!(".staging/v000042-{dead}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.json"), "{").unwrap();
    // A version whose removal a crash cut short.
    let half_removed = spec.paths.registry.join(format!("versions/.v000001.tmp-{dead}-0"));
    std::fs::create_dir_all(&half_removed).unwrap();
    std::fs::write(half_removed.join("model.json"), "{").unwrap();
    let crashed = [
        spec.paths.registry.join(format!(".CURRENT.tmp-{dead}-3")),
        spec.paths.views.join(format!(".batch-v000042.parquet.tmp-{dead}-0")),
    ];
    let running = spec.paths.registry.join(format!(".CURRENT.tmp-{}-7", std::process::id()));
    for f in crashed.iter().chain([&running]) {
        std::fs::write(f, "x").unwrap();
    }
    run_ok(&["batch", "--spec", sp, "--force"]);
    // The newest two (v000004, v000005; v000004 is also where a rollback goes) and the speed layer's base.
    assert_eq!(versions(), ["v000001", "v000004", "v000005"]);
    assert_eq!(
        ["v000001", "v000002", "v000003", "v000004", "v000005"].map(views),
        [true, false, false, true, true],
        "the batch views go with their versions"
    );
    assert!(
        !staging.exists() && !half_removed.exists() && crashed.iter().all(|f| !f.exists()),
        "what crashed writers left is removed"
    );
    assert!(running.exists(), "a running writer's temporary file is left alone");
    let out = run_ok(&["models", "rollback", "--spec", sp]);
    assert!(out.contains("v000005 -> v000004"), "{out}");
    assert_eq!(registry.current_version().unwrap().as_deref(), Some("v000004"));
}
