//! Hostile input: the poison events that once stopped the daemon or every later batch run, plus 10,000 fuzzed
//! records and bodies, leave a speed layer that restarts and a master dataset that `batch` still trains on.

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_speed::ingest::{parse_body, parse_line};
use lambda_speed::Learner;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

const FIELDS: &[&str] =
    &["event_id", "user_id", "ts", "amount", "country", "mobile", "session_seconds", "converted", "colour"];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |x| x.is_finite()).prop_map(Value::from),
        prop_oneof![Just(1e200), Just(-1e308), Just(5e-324), Just(-0.0), Just(1e-300)].prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![Just("NaN"), Just("inf"), Just("yes"), Just("maybe"), Just(""), Just("1e999")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid(i: u64) -> Value {
    let country = ["fr", "de", "us"][(i % 3) as usize];
    json!({"event_id": format!("f{i}"), "user_id": format!("user-{:04}", i % 50), "ts": 1_769_904_000_000u64 + i,
           "amount": 10.0 + (i % 70) as f64, "country": country, "mobile": i % 2 == 1,
           "session_seconds": 30 + i % 90, "converted": if i.is_multiple_of(3) { "yes" } else { "no" }})
}

/// A record: a valid event with one field replaced or removed, or an object of random fields.
fn record() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..1_000_000, 0..FIELDS.len(), any_json(), any::<bool>()).prop_map(|(i, f, v, drop)| {
            let mut e = valid(i);
            if drop {
                e.as_object_mut().unwrap().remove(FIELDS[f]);
            } else {
                e[FIELDS[f]] = v;
            }
            e
        }),
        1 => prop::collection::btree_map(prop::sample::select(FIELDS), any_json(), 0..9)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => any_json(),
    ]
}

#[test]
fn poison_and_10000_fuzzed_records_leave_a_daemon_that_restarts_and_a_history_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "2000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();
    let mut learner = Learner::open(spec.clone(), None).unwrap();

    // The poison that once stopped a restart or every later batch run.
    let mut poison = Vec::new();
    for (field, v) in [
        ("converted", json!("maybe")),
        ("amount", json!(1e200)),
        ("amount", json!(-1e308)),
        ("session_seconds", json!(1e300)),
        ("amount", json!("NaN")),
        ("converted", json!(1.5)),
        ("user_id", json!({"nested": true})),
        // Past `dataset.max_id_bytes` (it was accepted before there was a limit), then at the limit.
        ("event_id", json!("x".repeat(100_000))),
        ("event_id", json!("y".repeat(spec.dataset.max_id_bytes))),
    ] {
        let mut e = valid(poison.len() as u64 + 5_000_000);
        e[field] = v;
        poison.push(parse_line(&spec, poison.len() + 1, &e.to_string()));
    }
    let r = learner.ingest(poison).unwrap();
    assert_eq!(r.accepted, 1, "only the id at the limit is a valid event: {r:?}");
    assert!(r.rejected.iter().any(|x| x.line == 8 && x.error.contains("`dataset.max_id_bytes`")), "{r:?}");
    assert!(r.rejected.iter().any(|x| x.error.contains("\"maybe\" is not one of the model's classes")), "{r:?}");

    // 10,000 fuzzed records, 100 to a request, and 500 fuzzed bodies.
    let mut runner = TestRunner::deterministic();
    let strategy = record();
    let mut accepted = r.accepted;
    for _ in 0..100 {
        let batch: Vec<_> = (0..100)
            .map(|i| parse_line(&spec, i + 1, &strategy.new_tree(&mut runner).unwrap().current().to_string()))
            .collect();
        let r = learner.ingest(batch).unwrap();
        accepted += r.accepted;
    }
    let body = prop::collection::vec(any::<u8>(), 0..300);
    for _ in 0..500 {
        let bytes = body.new_tree(&mut runner).unwrap().current();
        if let Ok(items) = parse_body(&spec, &String::from_utf8_lossy(&bytes)) {
            accepted += learner.ingest(items).unwrap().accepted;
        }
    }
    assert!(accepted > 1000, "the fuzzer should also make valid events: {accepted}");
    let m = learner.model();
    assert!(m.weights.iter().chain(&m.bias).all(|w| w.is_finite()));
    learner.archive_all().unwrap();
    let before = learner.side();
    let seq = before.seq();
    let views = before.realtime.to_table();
    drop((learner, before));

    // The daemon restarts into the same state...
    let learner = Learner::open(spec.clone(), None).unwrap();
    assert_eq!(learner.last_seq(), seq);
    assert_eq!(learner.side().realtime.to_table(), views);
    assert_eq!(learner.stats().accepted, accepted);
    drop(learner);
    // ...and the nightly run still trains on the history plus everything the speed layer archived.
    let out = run_ok(&["batch", "--spec", sp, "--force"]);
    assert!(out.contains("published v000002"), "{out}");
    assert!(out.contains(&format!("watermark {seq}")), "{out}");
}
