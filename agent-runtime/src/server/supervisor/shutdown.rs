//! Shutdown (SIGTERM/SIGINT): SIGTERM every worker, SIGKILL what is left after
//! `--timeout-graceful` + [`KILL_MARGIN`], exit once all are gone or [`KILL_WAIT`] later.

use std::time::Instant;

use rand::Rng;

use super::{Action, KILL_MARGIN, KILL_WAIT, Phase, Supervisor};

impl<R: Rng> Supervisor<R> {
    pub(super) fn shut_down(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::CloseListener];
        let pids: Vec<i32> = self.workers.keys().copied().collect();
        for pid in pids {
            actions.extend(self.retire(pid));
        }
        let kill_at = now + self.config.timeout_graceful + KILL_MARGIN;
        self.phase = Phase::Draining { kill_at };
        if self.workers.is_empty() {
            actions.push(self.finish());
        } else {
            actions.push(Action::WakeAt(kill_at));
        }
        actions
    }

    pub(super) fn deadline(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Draining { kill_at } if now >= kill_at => {
                let mut actions = Vec::new();
                for pid in self.workers.keys() {
                    tracing::warn!(
                        event = "worker_killed",
                        pid = *pid,
                        reason = "graceful timeout"
                    );
                    actions.push(Action::Kill { pid: *pid });
                }
                let give_up_at = now + KILL_WAIT;
                self.phase = Phase::Killing { give_up_at };
                actions.push(Action::WakeAt(give_up_at));
                actions
            }
            Phase::Killing { give_up_at } if now >= give_up_at => vec![self.finish()],
            // Woken early: wait on.
            Phase::Draining { kill_at: at } | Phase::Killing { give_up_at: at } => {
                vec![Action::WakeAt(at)]
            }
            Phase::Running | Phase::Done => Vec::new(),
        }
    }

    pub(super) fn finish(&mut self) -> Action {
        self.phase = Phase::Done;
        Action::Exit
    }
}
