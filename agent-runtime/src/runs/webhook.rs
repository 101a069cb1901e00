//! The completion webhook of background runs (`--run-webhook-url`): when the attempt that owns a
//! background run records its outcome, it POSTs `{"event": "run.completed" | "run.failed",
//! "run": <the record>}` to the URL, with `Idempotency-Key: <run_id>:<attempt>` (the same on
//! every try, so a receiver can drop repeats) and the instance header. A try that fails (no
//! connection, no answer within [`TRY_TIMEOUT`], a status other than 2xx) is repeated after 1,
//! 2, 4 and 8 s; after [`TRIES`] tries the delivery is given up and logged
//! (`run_webhook_failed`). Delivery is at least once while the process lives: a process killed
//! between recording the outcome and delivering it does not deliver it.

use std::time::Duration;

use serde_json::json;

use crate::store::{RunRecord, RunStatus};

/// Tries of one delivery.
pub const TRIES: u32 = 5;
/// Time limit of one try.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the second try; doubled before each next one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where finished background runs are reported.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook POSTing to `url`.
    pub fn new(url: reqwest::Url) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TRY_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { url, client }
    }

    /// Delivers the outcome of a finished run (see the module docs); nothing for a run that is
    /// still running.
    pub async fn deliver(&self, record: &RunRecord, instance_id: &str) {
        let event = match record.status {
            RunStatus::Completed => "run.completed",
            RunStatus::Failed => "run.failed",
            RunStatus::Running => return,
        };
        let body = json!({"event": event, "run": record});
        let key = format!("{}:{}", record.run_id, record.attempts);
        let mut wait = FIRST_RETRY;
        let mut last_error = String::new();
        for tries in 1..=TRIES {
            let sent = self
                .client
                .post(self.url.clone())
                .header("idempotency-key", &key)
                .header(fastagentic_contract::header::INSTANCE, instance_id)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(
                        event = "run_webhook_delivered",
                        run_id = %record.run_id,
                        status = resp.status().as_u16(),
                        tries,
                    );
                    return;
                }
                Ok(resp) => last_error = format!("HTTP {}", resp.status().as_u16()),
                Err(e) => last_error = e.without_url().to_string(),
            }
            if tries < TRIES {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::warn!(
            event = "run_webhook_failed",
            run_id = %record.run_id,
            tries = TRIES,
            error = %last_error,
        );
    }
}
