//! Background runs: `POST /runs` answers as soon as the run is recorded, and the run goes on
//! in this process as a stream whose events are logged (so `GET /runs/{run_id}/stream` follows
//! it from anywhere).
//!
//! A background run whose process dies (or drains and releases it) is not lost: every process
//! sweeps the shared store every stale-after / 3 (at least [`MIN_SWEEP`]) for background runs
//! that are running and stalled, and takes them over ([`crate::store::RunStore::begin_as`]
//! decides atomically, so one process does). The fencing of `complete` means a run that is taken
//! over is recorded completed once, by the attempt that owns it.

use std::time::Duration;

use super::{Attempt, RunError, Runs};
use crate::agent::AgentRequest;
use crate::store::{Begin, DurableStoreKind, Payload, RunRecord};

/// Shortest sweep period, whatever the stale-after.
pub const MIN_SWEEP: Duration = Duration::from_millis(200);

/// Stalled background runs taken at one sweep.
const SWEEP_BATCH: usize = 32;

/// What `POST /runs` did.
#[derive(Debug)]
pub enum Submitted {
    /// This request began the run (a new id, or the retry of a failed run): 202.
    Accepted(RunRecord),
    /// The run exists (running or completed): 200 with its record; nothing was started.
    Existing(RunRecord),
}

impl Runs {
    /// `POST /runs` (see the module docs).
    pub async fn submit(
        &self,
        mut request: AgentRequest,
        key: Option<&str>,
    ) -> Result<Submitted, RunError> {
        let run_id =
            super::resolve_run_id(request.run_id.as_deref(), key).map_err(RunError::BadRunId)?;
        request.run_id = Some(run_id.to_string());
        let input = Payload::of(&request);
        let begun = self
            .store
            .begin_as(&run_id, &input, &self.instance_id, true)
            .await
            .map_err(|e| {
                tracing::warn!(event = "run_begin_failed", run_id = %run_id, error = %e);
                RunError::Store(e)
            })?;
        match begun {
            Begin::Started(record, taken_over) => {
                self.note_started(&run_id, &record, taken_over.as_ref());
                let attempt = Attempt {
                    request,
                    run_id,
                    number: record.attempts,
                    taken_over: taken_over.is_some(),
                    background: true,
                };
                tokio::spawn(self.clone().drive(attempt, None, None));
                Ok(Submitted::Accepted(record))
            }
            Begin::AlreadyCompleted(record) | Begin::StillRunning(record) => {
                Ok(Submitted::Existing(record))
            }
        }
    }

    /// Sweeps for stalled background runs for the life of the process (shared stores only).
    pub fn start_sweeper(&self) {
        if self.store.kind() == DurableStoreKind::Memory {
            return;
        }
        let period = (self.store.stale_after() / 3).max(MIN_SWEEP);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                // Spread the processes' sweeps: 75-125 % of the period.
                let jitter = period.mul_f64(0.75 + rand::random::<f64>() / 2.0);
                tokio::time::sleep(jitter).await;
                if *this.wrap_up.borrow() {
                    return;
                }
                this.sweep().await;
            }
        });
    }

    /// Takes over the stalled background runs the store lists.
    async fn sweep(&self) {
        let ids = match self.store.stalled_background(SWEEP_BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(event = "run_sweep_failed", error = %e);
                return;
            }
        };
        for run_id in ids {
            match self.store.get(&run_id).await {
                Ok(Some(record)) => self.take_over(&record, true).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(event = "run_sweep_failed", run_id = %run_id, error = %e),
            }
        }
    }
}
