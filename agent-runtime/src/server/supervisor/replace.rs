//! Rolling replacement (SIGHUP, reload, recycling): the new worker first, the old one
//! stopped once the new one accepts, one worker at a time.

use std::time::Instant;

use rand::Rng;

use super::{Action, START_TIMEOUT, Supervisor, Then};
use crate::metrics::SlotState;

impl<R: Rng> Supervisor<R> {
    /// Queues every worker for replacement (SIGHUP, reload).
    pub(super) fn queue_all(&mut self) {
        let pids: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(p, _)| *p)
            .collect();
        for p in pids {
            if !self.queue.contains(&p) && self.current.as_ref().is_none_or(|r| r.old != p) {
                self.queue.push_back(p);
            }
        }
    }

    pub(super) fn tick(&mut self, slots: Vec<SlotState>, now: Instant) -> Vec<Action> {
        if self.restart_after.is_some_and(|t| now >= t) {
            self.restart_after = None;
            return self.refill(Some(slots), now);
        }
        self.tick_rest(&slots, now)
    }

    /// The tick after any refill: queue the workers asking to be recycled, then advance the
    /// replacement under way or start the next one.
    pub(super) fn tick_rest(&mut self, slots: &[SlotState], now: Instant) -> Vec<Action> {
        let state = |slot: usize| slots.get(slot).copied().unwrap_or(SlotState::Empty);
        let asking: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring && state(w.slot) == SlotState::RecycleRequested)
            .map(|(p, _)| *p)
            .collect();
        for p in asking {
            let busy = self.queue.contains(&p)
                || self
                    .current
                    .as_ref()
                    .is_some_and(|r| r.old == p || r.new == p);
            if !busy {
                self.queue.push_back(p);
            }
        }
        if let Some(r) = &self.current {
            let (old, new) = (r.old, r.new);
            if matches!(
                state(r.new_slot),
                SlotState::Ready | SlotState::RecycleRequested
            ) {
                self.current = None;
                let actions = self.retire(old);
                tracing::info!(event = "worker_replaced", old_pid = old, new_pid = new);
                return actions;
            }
            if now.duration_since(r.since) > START_TIMEOUT {
                tracing::error!(event = "worker_start_timeout", pid = new);
                self.current = None;
                return vec![Action::Kill { pid: new }];
            }
            return Vec::new();
        }
        while let Some(old) = self.queue.pop_front() {
            if self.workers.get(&old).is_none_or(|w| w.retiring) {
                continue;
            }
            match self.take_slot() {
                Some(slot) => return vec![self.spawn(slot, Then::Replace { old })],
                None => self.queue.push_front(old),
            }
            break;
        }
        Vec::new()
    }

    /// Asks a worker to drain and exit.
    pub(super) fn retire(&mut self, pid: i32) -> Vec<Action> {
        match self.workers.get_mut(&pid) {
            Some(w) => {
                w.retiring = true;
                vec![Action::Terminate { pid }]
            }
            None => Vec::new(),
        }
    }
}
