//! The check that a stream survives a rolling update: a client streams a long answer through the
//! Service while the Deployment rolls, resumes with `Last-Event-ID` whenever its pod drains (a
//! `resume` event) or its connection breaks, and must get every event exactly once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{E2e, INSTANCE_HEADER, small_resources};

/// Words of the streamed answer: the echo agent sends one a second.
const WORDS: usize = 60;

/// One server-sent event.
#[derive(Debug, Clone, Default)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// Splits complete events off the front of `buf`.
fn take_events(buf: &mut String) -> Vec<Sse> {
    let mut out = Vec::new();
    while let Some(at) = buf.find("\n\n") {
        let block: String = buf.drain(..at + 2).collect();
        let mut sse = Sse::default();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                sse.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("event:") {
                sse.event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            }
        }
        if sse.id.is_some() || sse.event.is_some() || !data.is_empty() {
            sse.data = serde_json::from_str(&data).unwrap_or(Value::Null);
            out.push(sse);
        }
    }
    out
}

/// The number of an event id `<run_id>:<n>`.
fn seq(e: &Sse) -> u64 {
    e.id.as_deref()
        .and_then(|id| id.rsplit_once(':'))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("an event without a number: {e:?}"))
}

impl E2e {
    pub(super) async fn streams_survive_a_rollout(&self) {
        let name = "e2e-streams";
        self.apply_json(&json!({
            "apiVersion": "fastagentic.io/v1alpha1",
            "kind": "FastAgentic",
            "metadata": {"name": name},
            "spec": {
                "image": self.runtime_image,
                "workers": 1,
                "replicas": 2,
                "redis": {"urlSecretRef": {"name": "e2e-stores", "key": "redis-url"}},
                "timeouts": {"gracefulShutdownSeconds": 6},
                "env": [
                    {"name": "FASTAGENTIC_DURABLE_STORE", "value": "redis"},
                    {"name": "FASTAGENTIC_ECHO_DELAY_MS", "value": (WORDS * 1000).to_string()},
                    {"name": "FASTAGENTIC_AGENT_TIMEOUT", "value": "10"},
                    {"name": "FASTAGENTIC_RUN_STALE_AFTER", "value": "90"},
                ],
                "resources": small_resources(),
            }
        }));
        self.ready_pods(name, 2).await;
        let base = self.service_url(name).await;
        self.wait_service(&base, name).await;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("an HTTP client");
        let message: String = (1..=WORDS)
            .map(|i| format!("w{i:02}"))
            .collect::<Vec<_>>()
            .join(" ");
        let run_id = format!("e2e-stream-{}", super::unique_suffix());
        let started = Instant::now();
        let mut events: Vec<Sse> = Vec::new();
        let mut served_by = Vec::new();
        let mut resumes = 0;
        let mut rolled = false;
        let mut last: Option<String> = None;
        'stream: loop {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the stream did not finish in 300 s; {} events, served by {served_by:?}",
                events.len()
            );
            let req = match &last {
                None => http
                    .post(format!("{base}/chat/stream"))
                    .json(&json!({"message": message, "run_id": run_id})),
                Some(id) => http
                    .get(format!("{base}/runs/{run_id}/stream"))
                    .header("Last-Event-ID", id),
            };
            let resp = match req.send().await {
                Ok(r) if r.status() == 200 => r,
                other => {
                    // The Service may still route to a pod that just closed its listener.
                    eprintln!("    resume attempt failed: {other:?}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            served_by.push(
                resp.headers()
                    .get(INSTANCE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned(),
            );
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                for e in take_events(&mut buf) {
                    match e.event.as_deref() {
                        Some("resume") => {
                            resumes += 1;
                            last = e.data["last_event_id"].as_str().map(str::to_owned);
                            continue 'stream;
                        }
                        Some("done") => {
                            events.push(e);
                            break 'stream;
                        }
                        _ => {}
                    }
                    last = e.id.clone().or(last);
                    events.push(e);
                    if !rolled && events.len() == 3 {
                        // The stream runs; roll the Deployment under it.
                        self.kubectl(&[
                            "patch",
                            "fa",
                            name,
                            "--type=merge",
                            "-p",
                            r#"{"spec":{"workers":2}}"#,
                        ]);
                        rolled = true;
                    }
                }
            }
            // The connection broke without a resume event: resume from what arrived.
            resumes += 1;
        }
        let deltas: Vec<&Sse> = events.iter().filter(|e| e.event.is_none()).collect();
        let seqs: Vec<u64> = deltas.iter().map(|e| seq(e)).collect();
        assert_eq!(
            seqs,
            (1..=WORDS as u64).collect::<Vec<_>>(),
            "every event once, in order; served by {served_by:?}"
        );
        let text: String = deltas
            .iter()
            .filter_map(|e| e.data["delta"].as_str())
            .collect();
        assert_eq!(text, message);
        assert!(
            events.iter().all(|e| e.event.as_deref() != Some("reset")),
            "{events:?}"
        );
        assert_eq!(events.last().map(seq), Some(WORDS as u64 + 1), "done last");
        assert!(
            resumes >= 1,
            "the rollout drained the stream's pod, so the client resumed at least once"
        );
        let record = self
            .get(&format!("{base}/runs/{run_id}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(record.body["status"], "completed", "{record:?}");
        assert_eq!(record.body["output"]["output"], json!(message));
        eprintln!(
            "    {WORDS} events in {:.0}s, {resumes} resume(s), served by {served_by:?}; run \
             attempts {}",
            started.elapsed().as_secs_f64(),
            record.body["attempts"]
        );
    }
}
