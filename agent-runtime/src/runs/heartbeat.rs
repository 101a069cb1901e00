//! The heartbeat of a streaming attempt, which keeps a long stream from being taken over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::log_superseded;
use crate::store::{RunId, RunStore, StoreError};

/// Shortest heartbeat period, whatever the stale-after.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(10);

/// How often a streaming attempt sends a heartbeat: a third of the store's stale-after, so two
/// may be lost or late before the run counts as stalled.
pub(super) fn heartbeat_period(stale_after: Duration) -> Duration {
    (stale_after / 3).max(MIN_HEARTBEAT_PERIOD)
}

/// The heartbeat of one streaming attempt: its own task, so a slow store or a slow client never
/// holds up the other. Stopped (and waited for) before the attempt records its outcome, so no
/// heartbeat races the finish; dropped (a panicking stream task), it stops as well.
pub(super) struct Heartbeat {
    /// Dropping it stops the task.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Heartbeat {
    pub(super) fn start(store: Arc<dyn RunStore>, run_id: RunId, attempt: u32) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let period = heartbeat_period(store.stale_after());
        let task = tokio::spawn(async move {
            // The first tick is one period from now: `begin` has just stamped the record.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = ticks.tick() => {}
                }
                match store.heartbeat(&run_id, attempt).await {
                    Ok(()) => {}
                    Err(StoreError::Superseded { .. }) => {
                        // Every later heartbeat would be refused too: the run is another
                        // attempt's now. The stream goes on; its finish is refused as well.
                        log_superseded(&run_id, attempt, "heartbeat");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(event = "run_heartbeat_failed", run_id = %run_id, attempt, error = %e);
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the heartbeat and waits for one in flight to finish.
    pub(super) async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Begin;
    use serde_json::json;

    #[test]
    fn heartbeats_come_every_third_of_the_stale_after() {
        assert_eq!(
            heartbeat_period(Duration::from_secs(300)),
            Duration::from_secs(100)
        );
        assert_eq!(
            heartbeat_period(Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_period(Duration::from_millis(1)),
            MIN_HEARTBEAT_PERIOD
        );
    }

    fn id(name: &str) -> RunId {
        match RunId::parse(name) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_heartbeat_keeps_a_long_attempt_from_being_taken_over() {
        use crate::store::MemoryRunStore;
        let stale = Duration::from_millis(300);
        let store: Arc<dyn RunStore> = Arc::new(MemoryRunStore::new(stale));
        let run = id("long");
        let begun = store.begin(&run, &json!({}), "a").await;
        assert!(matches!(begun, Ok(Begin::Started(_, None))), "{begun:?}");
        let heartbeat = Heartbeat::start(store.clone(), run.clone(), 1);
        for _ in 0..4 {
            tokio::time::sleep(stale / 2).await;
            let again = store.begin(&run, &json!({}), "b").await;
            assert!(
                matches!(&again, Ok(Begin::StillRunning(r)) if r.attempts == 1),
                "{again:?}"
            );
        }
        heartbeat.stop().await;
        tokio::time::sleep(stale + stale / 2).await;
        let taken = store.begin(&run, &json!({}), "b").await;
        assert!(
            matches!(&taken, Ok(Begin::Started(r, Some(_))) if r.attempts == 2),
            "without heartbeats the run is stalled: {taken:?}"
        );

        // Attempt 1's heartbeat is refused now: it stops by itself, changing nothing.
        let before = store.get(&run).await.ok().flatten();
        let superseded = Heartbeat::start(store.clone(), run.clone(), 1);
        tokio::time::sleep(stale).await;
        assert!(superseded.task.is_finished(), "stops once superseded");
        assert_eq!(store.get(&run).await.ok().flatten(), before);

        // Any other failure is retried at the next tick.
        let unknown = Heartbeat::start(store.clone(), id("unknown"), 1);
        tokio::time::sleep(stale).await;
        assert!(!unknown.task.is_finished(), "keeps trying after an error");
        unknown.stop().await;
    }
}
