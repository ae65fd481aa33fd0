//! The Open Inference Protocol (KServe V2) of `up`, spoken by Triton's own HTTP client (`tritonclient[http]` from
//! PyPI, see `crate::common::clients_python`): what it reads back equals `/v1/predict` on the same records.

use crate::common::*;
use serde_json::Value;

#[test]
fn tritons_client_reads_the_same_predictions_as_v1_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = up_on_generated(dir.path());
    let host = server.base.trim_start_matches("http://").to_string();
    let got: Value = serde_json::from_str(&client("kserve.py", &[&host, "quickstart"])).unwrap();
    assert_eq!(
        (got["live"].as_bool(), got["ready"].as_bool(), got["model_ready"].as_bool()),
        (Some(true), Some(true), Some(true)),
        "{got}"
    );
    assert_eq!(got["unknown_model_ready"].as_bool(), Some(false));
    assert_eq!(got["versions"], serde_json::json!(["v000001"]));
    assert_eq!(got["inputs"][1], serde_json::json!(["country", "BYTES"]));
    assert_eq!(got["id"], "r-1");
    let records = r#"[{"amount": 20.0, "country": "fr", "mobile": true, "session_seconds": 30.0},
                      {"amount": 80.0, "country": "us", "mobile": false, "session_seconds": 300.0}]"#;
    let (status, v1) = post(&format!("{}/v1/predict", server.base), records);
    assert_eq!(status, 200, "{v1}");
    let classes: Vec<&str> = got["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for r in 0..2 {
        let p = &v1["predictions"][r];
        assert_eq!(got["label"][r], p["label"], "{got} {v1}");
        for (k, c) in classes.iter().enumerate() {
            let a = got["probabilities"][r][k].as_f64().unwrap();
            let b = p["probabilities"][c].as_f64().unwrap();
            assert!((a - b).abs() < 1e-12, "row {r} class {c}: {a} against {b}");
        }
    }
    let error = got["error"].as_str().expect("the client saw the error");
    assert!(error.contains("`colour` is not a feature"), "{error}");
    drop(server);
}
