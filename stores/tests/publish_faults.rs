//! Publication interrupted at its dangerous points (fail points; a test binary of its own, since they are
//! process-wide): `CURRENT` stays on the complete old version, and the next publication becomes current whole.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

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
