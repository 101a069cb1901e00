//! In-memory run store: one map per worker, lost on restart. The default when no durable store
//! is configured; good for development and for single-process deployments that accept losing
//! idempotency across restarts.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;

use super::{Begin, DurableStoreKind, RunId, RunRecord, RunStatus, RunStore, StoreError};

/// See the module docs.
#[derive(Debug, Default)]
pub struct MemoryRunStore {
    // A std mutex: no await happens while it is held.
    runs: Mutex<HashMap<String, RunRecord>>,
}

impl MemoryRunStore {
    fn with_runs<T>(&self, f: impl FnOnce(&mut HashMap<String, RunRecord>) -> T) -> T {
        // A panic while holding the lock cannot leave a record half-written (each closure
        // replaces whole records), so a poisoned map is still consistent.
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut runs)
    }

    fn finish(
        &self,
        run_id: &RunId,
        status: RunStatus,
        output: Option<Value>,
        error: Option<String>,
    ) -> Result<RunRecord, StoreError> {
        self.with_runs(|runs| {
            let record = runs
                .get_mut(run_id.as_str())
                .ok_or_else(|| StoreError::NotFound(run_id.to_string()))?;
            if record.status != RunStatus::Running {
                return Err(StoreError::NotRunning {
                    run_id: run_id.to_string(),
                    status: record.status,
                });
            }
            record.status = status;
            record.output = output;
            record.error = error;
            record.updated_at = Utc::now();
            Ok(record.clone())
        })
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Memory
    }

    async fn begin(
        &self,
        run_id: &RunId,
        input: &Value,
        instance_id: &str,
    ) -> Result<Begin, StoreError> {
        let now = Utc::now();
        Ok(self.with_runs(|runs| match runs.get_mut(run_id.as_str()) {
            Some(existing) if existing.status == RunStatus::Completed => {
                Begin::AlreadyCompleted(existing.clone())
            }
            Some(existing) if existing.status == RunStatus::Running => {
                Begin::StillRunning(existing.clone())
            }
            Some(failed) => {
                failed.status = RunStatus::Running;
                failed.input = input.clone();
                failed.output = None;
                failed.error = None;
                failed.instance_id = instance_id.to_owned();
                failed.updated_at = now;
                failed.attempts = failed.attempts.saturating_add(1);
                Begin::Started(failed.clone())
            }
            None => {
                let record = RunRecord {
                    run_id: run_id.to_string(),
                    status: RunStatus::Running,
                    input: input.clone(),
                    output: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                    instance_id: instance_id.to_owned(),
                    attempts: 1,
                };
                runs.insert(run_id.to_string(), record.clone());
                Begin::Started(record)
            }
        }))
    }

    async fn complete(&self, run_id: &RunId, output: &Value) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Completed, Some(output.clone()), None)
    }

    async fn fail(&self, run_id: &RunId, error: &str) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Failed, None, Some(error.to_owned()))
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.with_runs(|runs| runs.get(run_id.as_str()).cloned()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
