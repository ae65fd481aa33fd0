//! NATS JetStream as the event log in front of the speed layer: a durable pull consumer whose messages are acked
//! only once their events are durable in the speed layer's own log, and a publisher that sets `Nats-Msg-Id` to each
//! event's id so that the stream's duplicate window drops a producer's retries.
//!
//! Exactly once: every accepted event is logged with its stream sequence number ([`SourcePosition`]), and the
//! checkpoint keeps which messages of each stream are held ([`lambda_stores::checkpoint::SourceState`]: exact, since
//! JetStream redelivers what a crashed reader had in hand after the ack timeout, behind newer messages), so a
//! message redelivered after a crash (logged, not yet acked) is counted as a duplicate and acked, ids or not. The
//! consumer's ack floor, read now and then, travels with the positions so that the held set stays bounded by the
//! messages not yet acked. A group that could not be made durable is retried whole before any later one. A message that fails validation (a poison message) goes to the dead letters with its reason and
//! is acked: it is never redelivered forever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::{FutureExt, StreamExt};
use lambda_stores::checkpoint::SourcePosition;
use serde_json::Value;

use crate::ingest::{parse_line, Incoming, SourceReport};
use crate::{Error, Speed};

/// Where to read or write events: `nats://[USER:PASS@]HOST:PORT/STREAM[?subject=S&durable=D&batch=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSource {
    /// The server, `nats://HOST:PORT` (with credentials when the URL has them).
    pub server: String,
    /// The JetStream stream.
    pub stream: String,
    /// The subject events are published on and the consumer filters on; the stream's name when not given.
    pub subject: Option<String>,
    /// The durable consumer's name.
    pub durable: String,
    /// Most messages taken into one request to the learner.
    pub batch: usize,
}

/// The durable consumer's name when the URL names none.
pub const DEFAULT_DURABLE: &str = "lambda-speed";

impl NatsSource {
    /// Parses a `nats://` URL.
    pub fn parse(url: &str) -> std::result::Result<NatsSource, String> {
        let usage = "expected nats://HOST:PORT/STREAM[?subject=SUBJECT&durable=NAME&batch=N]";
        let rest = url.strip_prefix("nats://").ok_or_else(|| format!("{url:?} is not a nats:// URL; {usage}"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| format!("{url:?} names no stream; {usage}"))?;
        if authority.is_empty() {
            return Err(format!("{url:?} names no server; {usage}"));
        }
        let (stream, query) = path.split_once('?').unwrap_or((path, ""));
        if stream.is_empty() {
            return Err(format!("{url:?} names no stream; {usage}"));
        }
        if stream.chars().any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')) {
            return Err(format!("{stream:?} is not a valid stream name (no spaces, `.`, `*`, `>`, `/`)"));
        }
        let mut source = NatsSource {
            server: format!("nats://{authority}"),
            stream: stream.to_string(),
            subject: None,
            durable: DEFAULT_DURABLE.to_string(),
            batch: 4096,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "subject" if !v.is_empty() => source.subject = Some(v.to_string()),
                "durable" if !v.is_empty() && !v.contains(['.', '*', '>', ' ']) => source.durable = v.to_string(),
                "batch" => {
                    source.batch = v
                        .parse()
                        .ok()
                        .filter(|b| (1..=100_000).contains(b))
                        .ok_or_else(|| format!("batch={v:?} in {url:?}: expected a number from 1 to 100000"))?
                }
                _ => return Err(format!("{pair:?} in {url:?} is not understood; {usage}")),
            }
        }
        Ok(source)
    }

    /// The subject to publish on.
    pub fn publish_subject(&self) -> &str {
        self.subject.as_deref().unwrap_or(&self.stream)
    }

    /// The URL without credentials, for messages.
    pub fn display(&self) -> String {
        let host = self.server.rsplit('@').next().unwrap_or(&self.server).trim_start_matches("nats://");
        format!("nats://{host}/{}", self.stream)
    }
}

/// What went wrong talking to NATS.
fn nats_error(what: &str, source: &NatsSource, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Nats { what: what.to_string(), stream: source.display(), source: Box::new(e) }
}

async fn connect(source: &NatsSource, name: &str) -> crate::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(source.server.as_str())
        .await
        .map_err(|e| nats_error("cannot connect to the NATS server", source, e))
}

/// The stream, created (file storage, the subject given or the stream's name) when it does not exist yet.
async fn stream_of(js: &jetstream::Context, source: &NatsSource) -> crate::Result<stream::Stream> {
    let config = stream::Config {
        name: source.stream.clone(),
        subjects: vec![source.publish_subject().to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(|e| nats_error("cannot open or create the stream", source, e))
}

/// Reads events from the stream until `stop` turns true, or, when `once`, until the consumer has nothing left.
pub async fn consume(
    speed: Arc<Speed>,
    source: NatsSource,
    once: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> crate::Result<SourceReport> {
    let client = connect(&source, "lambda-ml speed").await?;
    let js = jetstream::new(client);
    let mut stream = stream_of(&js, &source).await?;
    let created = stream.info().await.map_err(|e| nats_error("cannot read the stream", &source, e))?.created;
    // A stream deleted and made again under the same name numbers its messages afresh: it is another log.
    let log_id = xxhash_rust::xxh3::xxh3_64(format!("{}@{}", source.stream, created.unix_timestamp_nanos()).as_bytes());
    let config = consumer::pull::Config {
        durable_name: Some(source.durable.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: (source.batch * 8).max(1024) as i64,
        filter_subject: source.subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&source.durable, config)
        .await
        .map_err(|e| nats_error("cannot open or create the durable consumer", &source, e))?;
    tracing::info!(source = %source.display(), durable = %source.durable, "reading events from NATS JetStream");
    let spec = speed.spec().clone();
    let (groups, queue) = tokio::sync::mpsc::channel(1);
    let committer = tokio::spawn(commit(speed.clone(), log_id, queue, stop.clone()));
    let mut messages = None;
    // The consumer's ack floor: every message at or below it is acked, so never delivered again.
    let mut settled = 0u64;
    let mut floor_read = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if messages.is_none() {
            let pull = consumer
                .stream()
                .max_messages_per_batch(source.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            match pull {
                Ok(m) => messages = Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, source = %source.display(), "cannot pull from the consumer; retrying");
                    if wait_or_stop(&mut stop, Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some(pending) = messages.as_mut() else { continue };
        let idle = if once { Duration::from_millis(200) } else { Duration::from_secs(3600) };
        let first = tokio::select! {
            m = tokio::time::timeout(idle, pending.next()) => m,
            _ = stop.changed() => break,
        };
        let first = match first {
            Err(_) => {
                // Idle: when reading once, done when the consumer has nothing left to deliver or to ack.
                let info = consumer.info().await.map_err(|e| nats_error("cannot read the consumer", &source, e))?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break;
                }
                continue;
            }
            Ok(None) => {
                messages = None;
                continue;
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, source = %source.display(), "NATS pull interrupted; going on");
                continue;
            }
            Ok(Some(Ok(m))) => m,
        };
        // Whatever else has arrived joins the same request to the learner (one log sync for all), and so does
        // whatever arrives while the committer still has the group before: the busier the learner, the bigger
        // the groups, as group commit does for HTTP requests.
        let mut group = vec![first];
        let mut ended = false;
        let permit = loop {
            while group.len() < source.batch && !ended {
                match pending.next().now_or_never() {
                    Some(Some(Ok(m))) => group.push(m),
                    Some(Some(Err(e))) => {
                        tracing::warn!(error = %e, source = %source.display(), "NATS pull interrupted; going on");
                        break;
                    }
                    Some(None) => ended = true,
                    None => break,
                }
            }
            if group.len() >= source.batch || ended {
                break groups.reserve().await;
            }
            tokio::select! {
                biased;
                permit = groups.reserve() => break permit,
                m = pending.next() => match m {
                    Some(Ok(m)) => group.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, source = %source.display(), "NATS pull interrupted; going on");
                    }
                    None => ended = true,
                },
            }
        };
        if ended {
            messages = None;
        }
        let Ok(permit) = permit else { break };
        if floor_read.elapsed() >= Duration::from_secs(1) {
            floor_read = std::time::Instant::now();
            match consumer.info().await {
                Ok(info) => settled = settled.max(info.ack_floor.stream_sequence),
                Err(e) => tracing::warn!(error = %e, "cannot read the consumer's ack floor"),
            }
        }
        let items: Vec<Incoming> = group.iter().map(|m| incoming(&spec, log_id, settled, m)).collect();
        permit.send((group, items, settled));
    }
    drop(groups);
    committer.await.map_err(|_| Error::Panicked("NATS committer"))?
}

/// Hands each group to the learner in the order received and acks its messages once it is durable. A group the
/// learner refuses for now (busy, failing storage) is tried again, whole, before any later one.
async fn commit(
    speed: Arc<Speed>,
    log_id: u64,
    mut groups: tokio::sync::mpsc::Receiver<(Vec<jetstream::Message>, Vec<Incoming>, u64)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> crate::Result<SourceReport> {
    let spec = speed.spec().clone();
    let mut total = SourceReport::default();
    while let Some((group, mut items, settled)) = groups.recv().await {
        let report = loop {
            match speed.ingest(items).await {
                Ok(r) => break r,
                Err(e @ (Error::Busy(_) | Error::Storage(_))) => {
                    tracing::warn!(error = %e, "events from NATS wait for the learner");
                    if wait_or_stop(&mut stop, Duration::from_millis(200)).await {
                        // Not acked: redelivered to the next reader.
                        return Ok(total);
                    }
                    items = group.iter().map(|m| incoming(&spec, log_id, settled, m)).collect();
                }
                Err(e) => return Err(e),
            }
        };
        total.accepted += report.accepted;
        total.duplicates += report.duplicates;
        total.rejected += report.rejected.len() as u64;
        // Durable in the log (and the rejected in the dead letters): now the stream may forget them.
        for m in &group {
            if let Err(e) = m.ack_with(AckKind::Ack).await {
                // Redelivered later, and then skipped as a duplicate.
                tracing::warn!(error = %e, "cannot ack a NATS message; it will be redelivered and skipped");
            }
        }
    }
    Ok(total)
}

/// Sleeps `d`; whether `stop` turned true meanwhile.
async fn wait_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One message as an event (validated) or a rejection; its line is its stream sequence number.
fn incoming(spec: &lambda_core::spec::Spec, log_id: u64, settled: u64, m: &jetstream::Message) -> Incoming {
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let line = usize::try_from(seq).unwrap_or(usize::MAX);
    match std::str::from_utf8(&m.payload) {
        Ok(text) => parse_line(spec, line, text.trim()).from_source(SourcePosition { source: log_id, seq, settled }),
        Err(e) => Incoming::Rejected {
            line,
            error: format!("NATS message {seq} is not UTF-8 text: {e}"),
            raw: String::from_utf8_lossy(&m.payload).into_owned(),
        },
    }
}

/// Totals of a publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages the stream stored.
    pub stored: u64,
    /// Messages the stream dropped as duplicates of an id in its duplicate window.
    pub duplicates: u64,
    /// Lines sent without `Nats-Msg-Id` (not JSON objects with the id field).
    pub without_id: u64,
}

/// Publishes each non-empty line of `lines` as one message, with `Nats-Msg-Id` set to the value of `id_field`
/// when the line is a JSON object that has it; at most `in_flight` messages wait for the stream's ack at once.
pub async fn publish(
    source: &NatsSource,
    id_field: &str,
    lines: impl Iterator<Item = std::io::Result<String>>,
    in_flight: usize,
) -> crate::Result<PublishReport> {
    let client = connect(source, "lambda-ml publish").await?;
    let js = jetstream::new(client);
    stream_of(&js, source).await?;
    let mut report = PublishReport::default();
    let mut waiting: VecDeque<(usize, jetstream::context::PublishAckFuture)> = VecDeque::new();
    let subject = source.publish_subject().to_string();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| Error::io(format!("line {}", i + 1), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let id = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => match o.get(id_field) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ Value::Number(_)) => Some(v.to_string()),
                _ => None,
            },
            _ => None,
        };
        let mut message = jetstream::message::PublishMessage::build().payload(line.into_bytes().into());
        match id {
            Some(id) => message = message.message_id(id),
            None => report.without_id += 1,
        }
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| nats_error(&format!("cannot publish line {}", i + 1), source, e))?;
        waiting.push_back((i + 1, ack));
        if waiting.len() >= in_flight.max(1) {
            take_ack(&mut waiting, &mut report, source).await?;
        }
    }
    while !waiting.is_empty() {
        take_ack(&mut waiting, &mut report, source).await?;
    }
    Ok(report)
}

async fn take_ack(
    waiting: &mut VecDeque<(usize, jetstream::context::PublishAckFuture)>,
    report: &mut PublishReport,
    source: &NatsSource,
) -> crate::Result<()> {
    if let Some((line, ack)) = waiting.pop_front() {
        let ack = ack.await.map_err(|e| nats_error(&format!("the stream did not take line {line}"), source, e))?;
        if ack.duplicate {
            report.duplicates += 1;
        } else {
            report.stored += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_the_stream_and_the_consumer_and_bad_ones_say_what_is_wrong() {
        let s = NatsSource::parse("nats://u:p@127.0.0.1:4222/EVENTS?subject=events.in&durable=d1&batch=64").unwrap();
        assert_eq!(s.server, "nats://u:p@127.0.0.1:4222");
        assert_eq!(
            (s.stream.as_str(), s.subject.as_deref(), s.durable.as_str(), s.batch),
            ("EVENTS", Some("events.in"), "d1", 64)
        );
        assert_eq!(s.display(), "nats://127.0.0.1:4222/EVENTS", "no credentials in messages");
        let plain = NatsSource::parse("nats://localhost:4222/EVENTS").unwrap();
        assert_eq!((plain.publish_subject(), plain.durable.as_str()), ("EVENTS", DEFAULT_DURABLE));
        for (url, says) in [
            ("http://localhost/EVENTS", "not a nats:// URL"),
            ("nats://localhost:4222", "names no stream"),
            ("nats://localhost:4222/", "names no stream"),
            ("nats:///EVENTS", "names no server"),
            ("nats://localhost/ev.ents", "not a valid stream name"),
            ("nats://localhost/EVENTS?batch=0", "batch=\"0\""),
            ("nats://localhost/EVENTS?queue=x", "not understood"),
        ] {
            let e = NatsSource::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
