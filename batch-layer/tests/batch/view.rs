//! The batch view aggregated by polars against the speed layer's row-by-row fold of the same events.

use std::path::Path;

use lambda_batch::view::batch_view;
use lambda_core::schema::{Cell, Columns, Event, Target};
use lambda_core::spec::Spec;
use lambda_stores::views::{Stats, ViewTable};
use proptest::prelude::*;

fn spec(task: &str) -> Spec {
    let text =
        crate::common::spec_text(task, &[("amount", "numeric"), ("country", "categorical"), ("mobile", "boolean")], "");
    Spec::from_toml(&text, Path::new("s.toml"), Path::new("/")).unwrap()
}

fn row_fold(spec: &Spec, events: &[Event], first_seq: u64) -> ViewTable {
    let mut t = ViewTable::new(spec);
    for (i, e) in events.iter().enumerate() {
        t.observe(&e.key, e.time, first_seq + i as u64, e, e.target.as_ref());
    }
    t
}

fn polars_view(spec: &Spec, events: &[Event], first_seq: u64) -> ViewTable {
    let columns = Columns::from_events(spec, events.iter().enumerate().map(|(i, e)| (first_seq + i as u64, e)));
    batch_view(spec, &columns).unwrap()
}

/// The same stats up to the order of the additions: counts, min, max and scale exactly, sums within a
/// compensated sum's rounding of the sequential one.
fn assert_same_stats(a: &Stats, b: &Stats, what: &str) {
    let (na, sa, qa, lo_a, hi_a, ea) = a.parts();
    let (nb, sb, qb, lo_b, hi_b, eb) = b.parts();
    if na == 0 {
        assert_eq!(nb, 0, "{what}");
        return;
    }
    assert_eq!((na, lo_a, hi_a, ea), (nb, lo_b, hi_b, eb), "{what}");
    let m = Stats::scaled(lo_a.abs().max(hi_a.abs()), ea);
    let n = na as f64;
    assert!((sa - sb).abs() <= 1e-12 * n * m, "{what}: sums {sa} and {sb}");
    assert!((qa - qb).abs() <= 1e-12 * n * m * m, "{what}: sums of squares {qa} and {qb}");
    assert!(a.is_finite() && b.is_finite(), "{what}");
}

fn assert_same_view(by_polars: &ViewTable, by_rows: &ViewTable) {
    let keys = |t: &ViewTable| t.keys().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(keys(by_polars), keys(by_rows), "slots in order of first appearance");
    assert_eq!(by_polars.classes(), by_rows.classes(), "class columns in order of first appearance");
    for ((key, a), (_, b)) in by_polars.iter().zip(by_rows.iter()) {
        assert_eq!(
            (a.count, &a.labels, a.first_seen, a.last_seen, a.last_seq),
            (b.count, &b.labels, b.first_seen, b.last_seen, b.last_seq),
            "key {key:?}"
        );
        assert_eq!(a.features.len(), b.features.len());
        for (i, (x, y)) in a.features.iter().zip(&b.features).enumerate() {
            assert_same_stats(x, y, &format!("key {key:?}, feature {i}"));
        }
        assert_same_stats(&a.target, &b.target, &format!("key {key:?}, target"));
    }
}

/// Events whose amounts reach far past the scale limit (the `1e200` that once overflowed squares) and whose keys
/// and labels may be missing.
fn hostile_events(regression: bool) -> impl Strategy<Value = Vec<Event>> {
    let amount = prop_oneof![
        4 => prop::option::of(-100.0f64..100.0),
        1 => prop::option::of(prop_oneof![Just(1e200), Just(-3e300), Just(2f64.powi(450)), Just(2f64.powi(449))]),
    ];
    prop::collection::vec(
        (0u8..5, -1000i64..1000, amount, prop::option::of(any::<bool>()), prop::option::of(0u8..3)),
        0..60,
    )
    .prop_map(move |rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (k, t, x, b, y))| Event {
                id: format!("e{i}"),
                // Key 4 stands for a row without a key.
                key: if k == 4 { String::new() } else { format!("k{k}") },
                time: t,
                features: vec![Cell::Num(x), Cell::Cat(Some("c".into())), Cell::Bool(b)],
                target: y.map(|y| {
                    if regression {
                        Target::Value(f64::from(y) * 1e160)
                    } else {
                        Target::Class(format!("class{y}"))
                    }
                }),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn the_polars_view_equals_the_row_by_row_fold(events in hostile_events(false)) {
        let s = spec("multiclass_classification");
        assert_same_view(&polars_view(&s, &events, 7), &row_fold(&s, &events, 7));
    }

    #[test]
    fn the_polars_view_equals_the_row_by_row_fold_for_regression(events in hostile_events(true)) {
        let s = spec("regression");
        assert_same_view(&polars_view(&s, &events, 7), &row_fold(&s, &events, 7));
    }
}

#[test]
fn a_large_history_aggregates_as_the_row_fold_does() {
    // Enough rows and keys for polars to group on both threads.
    let s = spec("binary_classification");
    let events: Vec<Event> = (0..200_000u64)
        .map(|i| Event {
            id: format!("e{i}"),
            key: format!("k{}", (i * 7919) % 3001),
            time: (i as i64 * 37) % 100_000,
            features: vec![
                Cell::Num((i % 13 != 0).then(|| (i as f64 * 0.37).sin() * 1e6)),
                Cell::Cat(None),
                Cell::Bool((i % 5 != 0).then_some(i % 3 == 0)),
            ],
            target: (i % 11 != 0).then(|| Target::Class(if i % 4 == 0 { "yes" } else { "no" }.into())),
        })
        .collect();
    let by_polars = polars_view(&s, &events, 1);
    assert_eq!(by_polars.len(), 3001);
    assert_same_view(&by_polars, &row_fold(&s, &events, 1));
    // The same history gives the same view, bit for bit.
    assert_eq!(polars_view(&s, &events, 1), by_polars);
}

#[test]
fn a_key_column_of_empty_strings_and_missing_keys_share_one_key() {
    let s = spec("binary_classification");
    let event = |id: &str, key: &str, x: f64| Event {
        id: id.into(),
        key: key.into(),
        time: 1,
        features: vec![Cell::Num(Some(x)), Cell::Cat(None), Cell::Bool(None)],
        target: None,
    };
    let events = [event("1", "", 1.0), event("2", "a", 2.0), event("3", "", 4.0)];
    let mut columns = Columns::from_events(&s, events.iter().enumerate().map(|(i, e)| (i as u64, e)));
    // The second blank key as a row without a key, as a null-free reader never makes but a sparse one may.
    columns.keys.codes[2] = lambda_core::schema::Codes::NONE;
    let view = batch_view(&s, &columns).unwrap();
    assert_eq!(view.len(), 2);
    let blank = view.get("").unwrap();
    assert_eq!((blank.count, blank.features[0].sum()), (2, 5.0));
}
