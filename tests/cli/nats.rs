//! NATS JetStream as the event log: events published with `lambda-ml publish` are taken by the speed layer's
//! durable consumer exactly once across `kill -9` of the speed layer and a restart of the NATS server, and a poison
//! message goes to the dead letters and is acked, never redelivered. The tests start their own nats-server (see
//! `crate::common::nats_server_bin`) on a free loopback port with a store in a temporary folder.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use lambda_core::spec::Spec;
use lambda_stores::checkpoint;

/// History rows the batch model is trained on (the speed layer's sequence numbers start after them).
const HISTORY: u64 = 1000;

fn line(i: u64) -> String {
    event_line("n", i)
}

/// A pipeline in `dir` with a published linear model on 1,000 history rows; the freeze is off so that every
/// labelled event is one update. Returns the spec's path.
fn pipeline(dir: &Path) -> String {
    let spec_path = spec_in(dir);
    pin_families(&spec_path, &["linear"]);
    let text = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("[serving]\n", "[speed.freeze]\nenabled = false\n\n[serving]\n");
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap().to_string();
    let stream = dir.join("stream.ndjson");
    run_ok(&["generate", "--spec", &sp, "--rows", "1000", "--stream-rows", "0", "--stream", stream.to_str().unwrap()]);
    run_ok(&["batch", "--spec", &sp]);
    sp
}

/// Publishes events `range` with `lambda-ml publish`; returns what it printed.
fn publish(dir: &Path, sp: &str, url: &str, range: std::ops::Range<u64>) -> String {
    let file = dir.join(format!("publish-{}-{}.ndjson", range.start, range.end));
    std::fs::write(&file, range.map(line).collect::<Vec<_>>().join("\n")).unwrap();
    run_ok(&["publish", "--spec", sp, "--nats", url, file.to_str().unwrap()])
}

fn last_seq(base: &str) -> u64 {
    get(&format!("{base}/v1/status")).1["last_seq"].as_u64().unwrap_or(0)
}

/// Runs `lambda-ml args`, failing the test if it has not ended within `limit`; returns its standard output.
fn run_within(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("lambda-ml {args:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "lambda-ml {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nats_events_are_taken_exactly_once_across_kill_9_of_the_speed_layer() {
    const TOTAL: u64 = 20_000;
    const CHUNK: u64 = 1000;
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let spec = Spec::from_file(Path::new(&sp)).unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let url = nats.url("EVENTS", "?batch=100");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let args = ["speed", "--spec", &sp, "--listen", &format!("127.0.0.1:{port}"), "--source", &url];
    let mut rng = 0x7a75_u64;
    let mut moments: Vec<u64> = (0..KILLS).map(|_| splitmix(&mut rng) % (TOTAL - 3 * CHUNK)).collect();
    moments.sort_unstable();
    // The producer publishes a chunk at a time, at most a little past the next kill moment, so that every kill
    // lands while the stream still holds events for the speed layer.
    let allowed = Arc::new(AtomicU64::new(moments[0] + 2 * CHUNK));
    let producer = {
        let (dir, sp, url, allowed) = (dir.path().to_path_buf(), sp.clone(), url.clone(), allowed.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            while next < TOTAL {
                if next >= allowed.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let out = publish(&dir, &sp, &url, next..next + CHUNK);
                assert!(out.contains(&format!(": {CHUNK} stored, 0 dropped")), "{out}");
                next += CHUNK;
            }
        })
    };
    let mut daemon = start(&args, port, "/health/live");
    for (k, at) in moments.iter().enumerate() {
        wait_for(Duration::from_secs(120), || last_seq(&base) >= HISTORY + at);
        std::thread::sleep(Duration::from_millis(splitmix(&mut rng) % 40));
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        allowed.store(moments.get(k + 1).map_or(TOTAL, |m| m + 2 * CHUNK), Ordering::SeqCst);
        daemon = start(&args, port, "/health/live");
    }
    producer.join().unwrap();
    // Messages the killed daemons had in hand come again after the ack timeout (30 s).
    wait_for(Duration::from_secs(180), || last_seq(&base) == HISTORY + TOTAL);
    sigterm_and_wait(&mut daemon);
    drop(daemon);

    // A producer's retry of events the stream already holds is dropped by the stream's duplicate window.
    let out = publish(dir.path(), &sp, &url, 0..CHUNK);
    assert!(out.contains(": 0 stored, 1000 dropped as duplicates"), "{out}");
    // The consumer has nothing left: a run to the end of the stream takes nothing and archives the log.
    let out = run_within(&["speed", "--spec", &sp, "--source", &url, "--once"], Duration::from_secs(60));
    assert!(out.contains(": 0 accepted, 0 duplicates, 0 rejected"), "{out}");
    assert_exactly_once(&spec, HISTORY, TOTAL, "n");
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    eprintln!("{KILLS} kills, {} redeliveries recognised", c.stats.duplicates);
}

#[test]
fn a_nats_server_restart_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let spec = Spec::from_file(Path::new(&sp)).unwrap();
    let mut nats = Nats::start(&dir.path().join("nats"));
    let url = nats.url("EVENTS", "?subject=events.in&durable=speed-1&batch=50");
    publish(dir.path(), &sp, &url, 0..8000);
    // One process: serving reads what the consumer took, at the same base URL.
    let (port, ingest) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let ingest_listen = format!("127.0.0.1:{ingest}");
    let mut up = start(
        &["up", "--spec", &sp, "--listen", &listen, "--ingest-listen", &ingest_listen, "--source", &url],
        port,
        "/health/ready",
    );
    let ingest_base = format!("http://{ingest_listen}");
    wait_for(Duration::from_secs(60), || last_seq(&ingest_base) >= HISTORY + 1000);
    nats.restart();
    assert!(last_seq(&ingest_base) < HISTORY + 8000, "the restart came after the stream was read");
    publish(dir.path(), &sp, &url, 8000..10_000);
    wait_for(Duration::from_secs(120), || last_seq(&ingest_base) == HISTORY + 10_000);
    // Visible to a reader of the serving layer.
    let (status, _) = post(&format!("{}/v1/predict?min_seq={}", up.base, HISTORY + 10_000), r#"{"amount": 3.5}"#);
    assert_eq!(status, 200);
    sigterm_and_wait(&mut up);
    drop(up);
    let out = run_within(&["speed", "--spec", &sp, "--source", &url, "--once"], Duration::from_secs(60));
    assert!(out.contains(": 0 accepted"), "{out}");
    assert_exactly_once(&spec, HISTORY, 10_000, "n");
}

#[test]
fn a_poison_message_goes_to_the_dead_letters_and_is_acked_never_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let sp = pipeline(dir.path());
    let spec = Spec::from_file(Path::new(&sp)).unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let url = nats.url("EVENTS", "");
    let mut lines: Vec<String> = (0..20).map(line).collect();
    lines.insert(5, "this is not JSON".into());
    lines.insert(10, r#"{"event_id": "p1", "user_id": "u", "ts": "yesterday", "amount": 1.0}"#.into());
    lines.insert(15, r#"{"event_id": "p2", "user_id": "u", "ts": 1769904000000, "amount": "NaN"}"#.into());
    lines.push(r#"[1, 2, 3]"#.into());
    let file = dir.path().join("mixed.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run_ok(&["publish", "--spec", &sp, "--nats", &url, file.to_str().unwrap()]);
    assert!(out.contains("24 stored, 0 dropped as duplicates by the stream, 2 without an id"), "{out}");

    // The run ends only when the consumer has nothing left to deliver or to ack.
    let out = run_within(&["speed", "--spec", &sp, "--source", &url, "--once"], Duration::from_secs(60));
    assert!(out.contains(": 20 accepted, 0 duplicates, 4 rejected"), "{out}");
    let dead = std::fs::read_to_string(spec.paths.state.join("dead-letter.ndjson")).unwrap();
    let letters: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 4, "{dead}");
    // Each names what was wrong; its line is the message's stream sequence number.
    let reasons: Vec<(u64, String)> =
        letters.iter().map(|l| (l["line"].as_u64().unwrap(), l["error"].as_str().unwrap().to_string())).collect();
    assert_eq!(reasons.iter().map(|r| r.0).collect::<Vec<_>>(), vec![6, 11, 16, 24]);
    assert!(reasons[0].1.contains("invalid JSON"), "{reasons:?}");
    assert!(reasons[1].1.contains("ts"), "{reasons:?}");
    assert!(reasons[2].1.contains("amount"), "{reasons:?}");
    // Acked: a second run finds nothing, and the dead letters are not written twice.
    let out = run_within(&["speed", "--spec", &sp, "--source", &url, "--once"], Duration::from_secs(60));
    assert!(out.contains(": 0 accepted, 0 duplicates, 0 rejected"), "{out}");
    assert_eq!(std::fs::read_to_string(spec.paths.state.join("dead-letter.ndjson")).unwrap(), dead);
    let c = checkpoint::read(&spec.paths.state).unwrap().unwrap();
    assert_eq!((c.stats.accepted, c.stats.rejected), (20, 4));

    // A server that is not there, and a URL that is not one, are errors that say so.
    let nowhere = format!("nats://127.0.0.1:{}/EVENTS", free_port());
    let out = run(&["speed", "--spec", &sp, "--source", &nowhere, "--once"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the NATS server"), "{out:?}");
    let out = run(&["publish", "--spec", &sp, "--nats", "nats://127.0.0.1:4222", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no stream"), "{out:?}");
}
