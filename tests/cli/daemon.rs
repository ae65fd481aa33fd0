//! The speed daemon as its own process: killed with `kill -9` at random moments of an HTTP replay and restarted
//! each time, it ends with every acknowledged event exactly once in the model updates, the views and the master
//! dataset; a SIGTERM stops it after a final checkpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_stores::checkpoint;

fn events(range: std::ops::Range<u64>) -> String {
    range.map(|i| event_line("d", i)).collect::<Vec<_>>().join("\n")
}

#[test]
fn acknowledged_events_survive_20_kill_9_during_an_http_replay_exactly_once() {
    const TOTAL: u64 = 50_000;
    const PER_REQUEST: u64 = 100;
    const KILLS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    // Small archive files, so that kills land inside archiving too. This stream's amounts lie outside history's
    // range on one event in twenty, right at the freeze's limit: the test counts every update, so no freeze.
    let text = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("[speed]\n", "[speed]\narchive_max_rows = 4000\n")
        .replace("[serving]\n", "[speed.freeze]\nenabled = false\n\n[serving]\n");
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "1000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", sp]);
    let spec = Spec::from_file(&spec_path).unwrap();

    let port = free_port();
    let args = ["speed", "--spec", sp, "--listen", &format!("127.0.0.1:{port}")];
    let base = format!("http://127.0.0.1:{port}");
    let mut rng = 0x5eed_u64;
    let mut moments: Vec<u64> = (0..KILLS).map(|_| splitmix(&mut rng) % (TOTAL - 10 * PER_REQUEST)).collect();
    moments.sort_unstable();
    let acked = Arc::new(AtomicU64::new(0));
    // The client may run at most a little past the next kill moment, so that every kill lands during the replay.
    let allowed = Arc::new(AtomicU64::new(moments[0] + 5 * PER_REQUEST));
    let client = {
        let (acked, base, allowed) = (acked.clone(), base.clone(), allowed.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut next = 0;
            let mut answers: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            while next < TOTAL {
                if next >= allowed.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let body = events(next..next + PER_REQUEST);
                // At-least-once delivery: a request without an answer is sent again after the restart.
                let reply = agent.post(&format!("{base}/v1/events")).send(&body);
                match reply {
                    Ok(mut r) if r.status().as_u16() == 200 => {
                        let v: serde_json::Value =
                            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                        let (a, d) = (v["accepted"].as_u64().unwrap(), v["duplicates"].as_u64().unwrap());
                        assert_eq!(a + d, PER_REQUEST, "{v}");
                        answers.insert(next, (a, d));
                        next += PER_REQUEST;
                        acked.store(next, Ordering::SeqCst);
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            answers
        })
    };
    let mut daemon = start(&args, port, "/health/live");
    for (k, at) in moments.iter().enumerate() {
        wait_for(Duration::from_secs(120), || acked.load(Ordering::SeqCst) >= *at);
        // A little more at random, so that kills fall inside requests, archiving and checkpoints alike.
        std::thread::sleep(Duration::from_millis(splitmix(&mut rng) % 40));
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        assert!(acked.load(Ordering::SeqCst) < TOTAL, "kill {k} came after the replay ended");
        allowed.store(moments.get(k + 1).map_or(TOTAL, |m| m + 5 * PER_REQUEST), Ordering::SeqCst);
        daemon = start(&args, port, "/health/live");
    }
    let answers = client.join().unwrap();
    let duplicates: u64 = answers.values().map(|(_, d)| d).sum();
    sigterm_and_wait(&mut daemon);
    drop(daemon);
    // A finite replay of nothing archives everything the log still holds.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    run_ok(&["speed", "--spec", sp, "--source", &format!("file:{}", empty.display()), "--once"]);

    assert_exactly_once(&spec, 1000, TOTAL, "d");
    eprintln!("{KILLS} kills, {duplicates} events re-sent and recognised");
}

#[test]
fn sigterm_stops_after_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let spec = Spec::from_file(std::path::Path::new(&sp)).unwrap();
    let port = free_port();
    let mut daemon = start(&["speed", "--spec", &sp, "--listen", &format!("127.0.0.1:{port}")], port, "/health/live");
    let (status, ack) = post(&format!("{}/v1/events", daemon.base), &events(0..50));
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(50)), "{ack}");
    sigterm_and_wait(&mut daemon);
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    assert_eq!((c.last_seq, c.stats.accepted), (1050, 50));
}

/// A daemon started with `args` whose stderr is kept, and `FAILPOINTS` set when given.
fn spawn_daemon(args: &[&str], failpoints: Option<&str>) -> std::process::Child {
    let mut command = std::process::Command::new(BIN);
    command.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    if let Some(f) = failpoints {
        command.env("FAILPOINTS", f);
    }
    command.spawn().unwrap()
}

/// Waits up to `limit` for `child` to end: its exit code and what it wrote to stderr.
fn ended(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the daemon was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pipeline with 1,000 events of history and a published model; its spec's path.
fn pipeline(dir: &std::path::Path) -> String {
    let spec_path = spec_in(dir);
    let sp = spec_path.to_str().unwrap().to_string();
    let stream = dir.join("stream.ndjson");
    run_ok(&["generate", "--spec", &sp, "--rows", "1000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", &sp]);
    sp
}

#[test]
fn a_backfill_beside_a_running_daemon_is_refused_naming_it_and_the_daemon_restarts_on_its_state() {
    // Regression: `speed --once` on the state folder of a running daemon was accepted; both wrote the same
    // sequence numbers into the log and the daemon could not start again.
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let spec = Spec::from_file(std::path::Path::new(&sp)).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = start(&["speed", "--spec", &sp, "--listen", &listen], port, "/health/live");
    assert_eq!(post(&format!("{}/v1/events", daemon.base), &events(0..50)).0, 200);
    let side = dir.path().join("side.ndjson");
    std::fs::write(&side, events(1000..1100)).unwrap();
    let source = format!("file:{}", side.display());
    let out = run(&["speed", "--spec", &sp, "--source", &source, "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backfill ran beside the daemon: {err}");
    assert!(err.contains(&format!("in use by process {}", daemon.child.id())) && err.contains("speed --spec"), "{err}");
    assert_eq!(post(&format!("{}/v1/events", daemon.base), &events(50..100)).0, 200);
    sigterm_and_wait(&mut daemon);
    // Once the daemon has stopped, the backfill runs, and the daemon starts again on what both accepted.
    run_ok(&["speed", "--spec", &sp, "--source", &source, "--once"]);
    let mut daemon = start(&["speed", "--spec", &sp, "--listen", &listen], port, "/health/live");
    let (status, ack) = post(&format!("{}/v1/events", daemon.base), &events(100..110));
    assert_eq!((status, ack["accepted"].as_u64()), (200, Some(10)), "{ack}");
    sigterm_and_wait(&mut daemon);
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    assert_eq!(c.stats.accepted, 210);
}

#[test]
fn a_panic_on_the_learner_thread_ends_the_daemon_non_zero_and_it_restarts_on_its_state() {
    // Regression: the learner thread died, `/health/live` stayed 200, and every ingest answered 500.
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    // The first request's group goes through; the second one panics on the learner thread.
    let child = spawn_daemon(
        &["speed", "--spec", &sp, "--listen", &listen],
        Some("learner::after_dead_letters=1*off->panic(injected)"),
    );
    wait_for(Duration::from_secs(30), || get(&format!("{base}/health/live")).0 == 200);
    assert_eq!(post(&format!("{base}/v1/events"), &events(0..50)).0, 200);
    let answer = agent().post(&format!("{base}/v1/events")).send(events(50..100));
    assert!(answer.map_or(true, |r| r.status() != 200), "the event that panicked was acknowledged");
    let (code, err) = ended(child, Duration::from_secs(20));
    assert_eq!(code, Some(70), "{err}");
    assert!(err.contains("speed-learner") && err.contains("injected"), "{err}");
    // Restarted without the fault, it holds the acknowledged events and takes new ones.
    let daemon = start(&["speed", "--spec", &sp, "--listen", &listen], port, "/health/live");
    let (status, ack) = post(&format!("{}/v1/events", daemon.base), &events(0..60));
    assert_eq!((status, ack["accepted"].as_u64(), ack["duplicates"].as_u64()), (200, Some(10), Some(50)), "{ack}");
}

#[test]
fn a_nats_source_that_cannot_be_reached_stops_the_daemon_with_its_reason() {
    // Regression: a source that failed was a log line, and the daemon went on taking HTTP alone.
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let (port, nowhere) = (free_port(), free_port());
    let source = format!("nats://127.0.0.1:{nowhere}/events");
    let child =
        spawn_daemon(&["speed", "--spec", &sp, "--source", &source, "--listen", &format!("127.0.0.1:{port}")], None);
    let (code, err) = ended(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("source nats://127.0.0.1:{nowhere}/events failed")), "{err}");
    assert!(err.contains("cannot connect to the NATS server"), "{err}");
}
