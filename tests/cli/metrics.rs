//! `GET /metrics` on the serving and ingest addresses of `up`, read by the reference Prometheus parser (the Python
//! `prometheus_client` package, see `crate::common::clients_python`).

use crate::common::*;
use serde_json::Value;

/// The families the reference parser reads in `text`.
fn parse(text: &str) -> serde_json::Map<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = client("parse_metrics.py", &[file.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap().as_object().unwrap().clone()
}

fn text(url: &str) -> (u16, String, String) {
    let mut r = agent().get(url).call().unwrap();
    let kind = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (r.status().as_u16(), kind, r.body_mut().read_to_string().unwrap())
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &serde_json::Map<String, Value>, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families.get(family)?["samples"].as_array()?.iter().find_map(|s| {
        let l = s[1].as_object()?;
        (s[0] == name && labels.iter().all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v)))
            .then(|| s[2].as_f64())?
    })
}

#[test]
fn metrics_on_both_addresses_are_read_by_the_reference_parser_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ingest, stream) = up_on_generated(dir.path());
    let lines: Vec<String> = std::fs::read_to_string(&stream).unwrap().lines().map(str::to_string).collect();
    let good: Vec<&String> = lines.iter().filter(|l| l.contains("\"converted\"")).take(5).collect();
    for l in &good {
        assert_eq!(post(&format!("{ingest}/v1/events"), l).0, 200);
    }
    let record = r#"{"amount": 35.5, "country": "us", "mobile": false, "session_seconds": 80}"#;
    for _ in 0..3 {
        assert_eq!(post(&format!("{}/v1/predict", server.base), record).0, 200);
    }
    assert_eq!(post(&format!("{}/v1/predict", server.base), r#"{"amount": "lots"}"#).0, 422);
    assert_eq!(get(&format!("{}/v1/views/nobody", server.base)).0, 404);

    // The parser first (its first install takes a minute), then poll: the speed layer's counters reach the
    // metrics at its next status refresh.
    clients_python();
    let mut families = serde_json::Map::new();
    wait_for(std::time::Duration::from_secs(20), || {
        let (status, kind, body) = text(&format!("{}/metrics", server.base));
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        families = parse(&body);
        sample(&families, "lambda_speed_events", "lambda_speed_events_total", &[("outcome", "accepted")])
            == Some(good.len() as f64)
    });
    let requests = |route: &str, status: &str| {
        sample(&families, "lambda_http_requests", "lambda_http_requests_total", &[("route", route), ("status", status)])
    };
    assert_eq!(requests("/v1/predict", "200"), Some(3.0));
    assert_eq!(requests("/v1/predict", "422"), Some(1.0));
    assert_eq!(requests("/v1/views/{key}", "404"), Some(1.0), "one series per route, not per key");
    assert_eq!(families["lambda_http_request_duration_seconds"]["type"], "histogram");
    let count = sample(
        &families,
        "lambda_http_request_duration_seconds",
        "lambda_http_request_duration_seconds_count",
        &[("route", "/v1/predict"), ("status", "200")],
    );
    assert_eq!(count, Some(3.0));
    assert_eq!(
        sample(&families, "lambda_model_info", "lambda_model_info", &[("layer", "serving"), ("version", "v000001")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&families, "lambda_speed_last_seq", "lambda_speed_last_seq", &[]),
        Some(2000.0 + good.len() as f64)
    );
    assert!(sample(&families, "lambda_prequential_loss", "lambda_prequential_loss", &[("model", "batch")]).is_some());
    assert!(families.contains_key("lambda_window_metric") && families.contains_key("lambda_drift_state"));
    assert_eq!(families["lambda_speed_checkpoint_duration_seconds"]["type"], "histogram");

    // The ingest address has its own, the same process's figures, and counts its own requests.
    let (status, _, body) = text(&format!("{ingest}/metrics"));
    assert_eq!(status, 200);
    let own = parse(&body);
    let events = sample(
        &own,
        "lambda_http_requests",
        "lambda_http_requests_total",
        &[("service", "speed"), ("route", "/v1/events")],
    );
    assert_eq!(events, Some(good.len() as f64));
    drop(server);
}

/// Sends a request with `method` to `path` over a plain socket (clients refuse most made-up methods): the status.
fn raw_request(base: &str, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    write!(socket, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn made_up_http_methods_are_counted_as_other_and_add_no_series() {
    // Regression: the `method` label was copied from the request: 300 made-up methods added 5,719 lines.
    let dir = tempfile::tempdir().unwrap();
    let (server, _ingest, _stream) = up_on_generated(dir.path());
    let lines = || text(&format!("{}/metrics", server.base)).2.lines().count();
    let send = |range: std::ops::Range<u32>| {
        for i in range {
            for path in ["/v1/predict", "/nowhere"] {
                let status = raw_request(&server.base, &format!("FOO{i}"), path);
                assert!((400..500).contains(&status), "FOO{i} {path}: {status}");
            }
        }
    };
    send(0..3);
    lines();
    let before = lines();
    send(3..300);
    let after = text(&format!("{}/metrics", server.base)).2;
    assert_eq!(after.lines().count(), before);
    assert!(!after.contains("method=\"FOO"), "a made-up method became a label");
    let families = parse(&after);
    let other: f64 = families["lambda_http_requests"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == "lambda_http_requests_total" && s[1]["method"] == "other")
        .map(|s| s[2].as_f64().unwrap())
        .sum();
    assert_eq!(other, 600.0);
}
