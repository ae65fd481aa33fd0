//! `lambda-ml publish --http`: NDJSON events posted to a speed layer's `/v1/events`, `batch` lines per request and
//! `in_flight` requests at once, each waiting for its acknowledgement (the events durable) before the next; a 503
//! (the learner busy) is retried after a pause. The counterpart of `--nats` for producers that speak HTTP, and the
//! benchmark's HTTP publisher.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Totals of an HTTP publish, as the speed layer acknowledged them.
#[derive(Debug, Default)]
pub struct HttpReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub requests: u64,
}

pub fn http(
    base: &str,
    lines: impl Iterator<Item = std::io::Result<String>> + Send,
    batch: usize,
    in_flight: usize,
) -> Result<HttpReport> {
    let url = format!("{}/v1/events", base.trim_end_matches('/'));
    let lines = Mutex::new(lines.enumerate());
    let total = Mutex::new(HttpReport::default());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..in_flight.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    loop {
                        let mut body = String::new();
                        let mut n = 0;
                        {
                            let mut it = lines.lock().map_err(|_| anyhow::anyhow!("a publisher thread failed"))?;
                            while n < batch.max(1) {
                                let Some((i, line)) = it.next() else { break };
                                let line = line.with_context(|| format!("cannot read line {}", i + 1))?;
                                if line.trim().is_empty() {
                                    continue;
                                }
                                body.push_str(&line);
                                body.push('\n');
                                n += 1;
                            }
                        }
                        if n == 0 {
                            return Ok(());
                        }
                        let v = post(&agent, &url, &body)?;
                        let mut t = total.lock().map_err(|_| anyhow::anyhow!("a publisher thread failed"))?;
                        t.accepted += v["accepted"].as_u64().unwrap_or(0);
                        t.duplicates += v["duplicates"].as_u64().unwrap_or(0);
                        t.rejected += v["rejected"].as_array().map_or(0, |r| r.len() as u64);
                        t.requests += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a publisher thread panicked"))??;
        }
        Ok(())
    })?;
    total.into_inner().map_err(|_| anyhow::anyhow!("a publisher thread failed"))
}

/// Posts until acknowledged: 200, or 422 when every record of the body was rejected (they are in the dead
/// letters); a 503 is retried, anything else is an error.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<serde_json::Value> {
    loop {
        let mut r = agent
            .post(url)
            .header("content-type", "application/x-ndjson")
            .send(body)
            .with_context(|| format!("cannot post to {url}"))?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        match status {
            200 | 422 => return serde_json::from_str(&text).with_context(|| format!("{url} answered {text:?}")),
            503 => std::thread::sleep(Duration::from_millis(50)),
            _ => bail!("{url} answered {status}: {text}"),
        }
    }
}
