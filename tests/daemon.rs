//! The speed daemon as its own process: acknowledged events survive a kill -9 (the log is replayed) and a SIGTERM
//! (a final checkpoint), and each lands in the master dataset exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use lambda_core::spec::Spec;

fn events(range: std::ops::Range<u64>) -> String {
    range
        .map(|i| {
            format!(
                r#"{{"event_id": "d{i}", "user_id": "user-{}", "ts": {}, "amount": {}.5, "country": "de", "mobile": {}, "converted": "{}"}}"#,
                i % 9,
                1_769_904_000_000u64 + i,
                i % 40,
                i % 2 == 0,
                if i % 3 == 0 { "yes" } else { "no" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn acknowledged_events_survive_kill_9_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "1000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();

    let port = free_port();
    let args = ["speed", "--spec", sp, "--listen", &format!("127.0.0.1:{port}")];
    let mut daemon = start(&args, port, "/health/live");
    let (status, ack) = post(&format!("{}/v1/events", daemon.base), &events(0..50));
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(50)), "{ack}");
    // kill -9 before any checkpoint could run (the interval is 2 s).
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    let mut daemon = start(&args, port, "/health/live");
    // A client that never saw its acks sends 40..50 again: they are recognised.
    let (status, ack) = post(&format!("{}/v1/events", daemon.base), &events(40..100));
    assert_eq!((status, ack["accepted"].as_u64(), ack["duplicates"].as_u64()), (200, Some(50), Some(10)), "{ack}");
    let pid = daemon.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");

    let (_, snap) = lambda_core::snapshot::load_current(&spec.paths.state).unwrap().unwrap();
    assert_eq!(snap.last_seq, 1000 + 100);
    assert_eq!(snap.stats.accepted, 100);
    let rows: usize = lambda_core::master::list_files(&spec.paths.master)
        .unwrap()
        .iter()
        .map(|f| lambda_core::master::read_batches(f).unwrap().iter().map(|b| b.num_rows()).sum::<usize>())
        .sum();
    assert_eq!(rows, 1000 + 100);
}
