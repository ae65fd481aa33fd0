//! The OpenAPI documents of both services (`GET /openapi.json`), read and fuzzed by schemathesis (from PyPI, see
//! `crate::common::clients_python`): requests generated from the documents, valid and invalid, never get a 5xx, and every
//! answer, each error included, fits the documented status codes, content types and schemas.

use std::process::Command;

use crate::common::*;

/// Runs schemathesis against `base`'s document; returns its report when it failed.
fn fuzz(base: &str, examples: &str) -> Option<String> {
    let python = clients_python();
    let st = python.with_file_name("st");
    // schemathesis keeps a cache folder in its working folder: not in the clone.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(st)
        .current_dir(scratch.path())
        .args(["run", &format!("{base}/openapi.json"), "--max-examples", examples, "--no-color"])
        // A fixed seed by default, so that a failure is found again; OPENAPI_SEED=N explores further.
        .args(["--seed", std::env::var("OPENAPI_SEED").as_deref().unwrap_or("7")])
        // Every check but one the API's design rules out: a request of a valid shape may still be refused for
        // what a schema cannot say (a time outside the spec's window, a value far outside history's range, a class
        // the model does not know, a tensor whose shape does not hold its data).
        .args(["--exclude-checks", std::env::var("OPENAPI_EXCLUDE").as_deref().unwrap_or("positive_data_acceptance")])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The failures and the summary; reproductions can hold megabytes of generated body.
    let from = text.find("FAILURES").unwrap_or(0);
    let report: Vec<String> = text[from..].lines().map(|l| l.chars().take(400).collect()).collect();
    (!out.status.success()).then(|| report.join("\n"))
}

#[test]
fn both_services_describe_their_routes_and_answer_a_schema_driven_fuzzer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = spec_in(dir.path());
    pin_families(&spec_path, &["linear"]);
    // The fuzzer asks for `min_seq` far ahead: answer 409 soon rather than after the default second.
    let text =
        std::fs::read_to_string(&spec_path).unwrap().replace("[serving]\n", "[serving]\nmin_seq_wait = \"20ms\"\n");
    std::fs::write(&spec_path, text).unwrap();
    let sp = spec_path.to_str().unwrap();
    let stream = dir.path().join("stream.ndjson");
    run_ok(&["generate", "--spec", sp, "--rows", "2000", "--stream-rows", "10", "--stream", stream.to_str().unwrap()]);
    let (server, ingest) = start_up(sp);

    // The serving address of `up` takes events too, so its document has the ingest routes; both documents carry
    // the pipeline's own event schema.
    let (status, doc) = get(&format!("{}/openapi.json", server.base));
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/v1/predict", "/v1/views/{key}", "/v1/models", "/v1/events", "/v2/models/{name}/infer", "/metrics"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not described");
    }
    let event = &doc["components"]["schemas"]["Event"];
    for field in ["event_id", "user_id", "ts", "amount", "country", "mobile", "session_seconds", "converted"] {
        assert!(event["properties"].get(field).is_some(), "{field} missing from {event}");
    }
    assert_eq!(event["additionalProperties"], false);
    let (status, speed_doc) = get(&format!("{ingest}/openapi.json"));
    assert_eq!(status, 200);
    assert!(speed_doc["paths"].get("/v1/events").is_some() && speed_doc["paths"].get("/v1/predict").is_none());
    assert_eq!(speed_doc["components"]["schemas"]["Event"], *event);

    // An error that is axum's, not a handler's, is in the same shape.
    let (status, body) = get(&format!("{}/v1/nowhere", server.base));
    assert_eq!((status, body["error"].as_str().is_some()), (404, true), "{body}");
    let (status, body) = get(&format!("{}/v1/views/k?min_seq=-1", server.base));
    assert_eq!((status, body["error"].as_str().is_some()), (400, true), "{body}");

    let examples = std::env::var("OPENAPI_EXAMPLES").unwrap_or_else(|_| "40".into());
    if let Some(report) = fuzz(&server.base, &examples) {
        panic!("schemathesis found failures on the serving address:\n{report}");
    }
    if let Some(report) = fuzz(&ingest, &examples) {
        panic!("schemathesis found failures on the speed layer's address:\n{report}");
    }
    // The fuzzer's events were judged one by one and the service still answers.
    let (status, _) = get(&format!("{}/health/ready", server.base));
    assert_eq!(status, 200);
    drop(server);
}
