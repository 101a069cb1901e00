//! The pre-fork supervisor's decisions: which worker to start, replace, stop or kill, and
//! when to exit, as a state machine without I/O.
//!
//! [`Supervisor::on`] takes one [`Event`] (a worker exited, a signal, a tick carrying the
//! slot states read from the shared metrics file, a deadline) and the current time, and
//! returns the [`Action`]s to carry out (start a worker in a slot, SIGTERM or SIGKILL a
//! process, wake at a deadline, exit). It reads no clock, starts and signals no process and
//! touches no file, so every decision is unit-tested without processes; it only logs what
//! it decided. The executor in [`super::prefork`] turns OS events into events and carries
//! out the actions.
//!
//! The decisions:
//! - Start `--workers` workers. A worker that dies is replaced at once; more than
//!   [`CRASH_LIMIT`] unexpected exits within [`CRASH_WINDOW`] pause restarts for
//!   [`CRASH_PAUSE`] (each further exit in the window extends the pause; the first tick after
//!   it starts what is missing, at most `--workers` at once), so a worker that cannot start
//!   does not turn into a fork loop.
//! - Replacing (SIGHUP, a `--reload` change, a worker whose slot asks for recycling after its
//!   request budget of `--max-requests` + a random jitter up to `--max-requests-jitter`) is
//!   rolling, one worker at a time: start the new worker, wait until its slot says it
//!   accepts, then SIGTERM the old one, which drains. A new worker that dies first puts the
//!   old one back at the head of the queue; one that does not accept within
//!   [`START_TIMEOUT`] is killed.
//! - SIGTERM/SIGINT: close the listening socket, SIGTERM every worker, wait up to
//!   `--timeout-graceful` + [`KILL_MARGIN`], SIGKILL what is left, wait up to [`KILL_WAIT`]
//!   more for the exits, exit. From then on no worker is started and signals, reloads and
//!   ticks change nothing.
//!
//! Starting a worker is the one action whose outcome the machine needs (the pid, or a
//! failure): an [`Action::Spawn`] always ends its batch, and the executor reports
//! [`Event::Spawned`] or [`Event::SpawnFailed`] before any other event. The machine then
//! goes on where it stopped (the next initial worker, the rest of a refill and of the tick
//! that started it), so a failed start ends a refill as it would in a loop.
//!
//! The crash pause is a fixed one, not an exponential backoff (the `backoff` crate): a pod
//! whose workers keep dying is for Kubernetes to restart, the supervisor only has to keep
//! the rate of forks bounded.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::RunArgs;
use crate::metrics::SlotState;

mod replace;
mod shutdown;
#[cfg(test)]
mod tests;

/// A new worker that is not accepting after this long is given up on (SIGKILL).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// More unexpected exits than this within [`CRASH_WINDOW`] pause restarts for [`CRASH_PAUSE`].
pub const CRASH_LIMIT: usize = 5;
/// See [`CRASH_LIMIT`].
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// See [`CRASH_LIMIT`].
pub const CRASH_PAUSE: Duration = Duration::from_secs(1);
/// Shutdown: added to `--timeout-graceful` before SIGKILL, so that the workers' own cut at
/// `--timeout-graceful` comes first.
pub const KILL_MARGIN: Duration = Duration::from_secs(1);
/// Shutdown: how long to wait for the exits after SIGKILL before exiting anyway.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// What the supervisor is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Workers to keep running (`--workers`).
    pub workers: usize,
    /// Slots of the shared metrics file: enough for every worker and its replacement.
    pub slots: usize,
    /// Requests after which a worker asks to be recycled (`--max-requests`, 0 = never).
    pub max_requests: u64,
    /// Up to this many more, drawn per worker (`--max-requests-jitter`).
    pub max_requests_jitter: u64,
    /// `--timeout-graceful`.
    pub timeout_graceful: Duration,
}

impl Config {
    /// The supervisor's part of the run options.
    pub fn from_args(args: &RunArgs) -> Self {
        let workers = args.workers as usize;
        Self {
            workers,
            slots: workers * 2 + 2,
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            timeout_graceful: args.timeout_graceful,
        }
    }
}

/// A signal the supervisor handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: replace every worker, one at a time.
    Hup,
    /// SIGTERM: shut down.
    Term,
    /// SIGINT: shut down.
    Int,
}

impl Signal {
    /// The signal's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The supervisor is ready to start its workers (once, first).
    Start,
    /// The worker of an [`Action::Spawn`] runs.
    Spawned { slot: usize, pid: i32 },
    /// The worker of an [`Action::Spawn`] could not be started.
    SpawnFailed { slot: usize },
    /// A worker process ended (`status` as the OS reported it).
    Exited { pid: i32, status: String },
    /// A signal arrived.
    Signal(Signal),
    /// `--reload`: files changed (debounced).
    Reload,
    /// Periodic look at the workers: the state of every slot of the metrics file.
    Tick { slots: Vec<SlotState> },
    /// The time of the last [`Action::WakeAt`] has come.
    Deadline,
}

/// Something to do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker owning `slot` that asks to be recycled after `request_budget`
    /// requests (0 = never); report [`Event::Spawned`] or [`Event::SpawnFailed`] at once.
    Spawn { slot: usize, request_budget: u64 },
    /// The slot's process is gone: mark it exited in the metrics file (before the slot is
    /// handed to a new worker).
    MarkExited { slot: usize },
    /// SIGTERM: drain and exit.
    Terminate { pid: i32 },
    /// SIGKILL.
    Kill { pid: i32 },
    /// Close the supervisor's copy of the listening socket.
    CloseListener,
    /// Send [`Event::Deadline`] at this time (replaces an earlier wake-up).
    WakeAt(Instant),
    /// Shutdown complete: exit with status 0.
    Exit,
}

#[derive(Debug)]
struct Worker {
    slot: usize,
    /// Sent SIGTERM; its exit is expected.
    retiring: bool,
}

/// A rolling replacement under way: `new` started, `old` still serving.
#[derive(Debug)]
struct Replacement {
    old: i32,
    new: i32,
    new_slot: usize,
    since: Instant,
}

/// A start whose outcome is awaited, and what to go on with then.
#[derive(Debug)]
struct Pending {
    slot: usize,
    then: Then,
}

#[derive(Debug)]
enum Then {
    /// Start `left` more initial workers.
    Initial { left: usize },
    /// Go on refilling, then with the rest of the tick that started the refill, if any.
    Refill { tick: Option<Vec<SlotState>> },
    /// The new worker replaces `old`.
    Replace { old: i32 },
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Running,
    /// SIGTERM sent to every worker; SIGKILL at `kill_at`.
    Draining {
        kill_at: Instant,
    },
    /// SIGKILL sent; exit at `give_up_at` at the latest.
    Killing {
        give_up_at: Instant,
    },
    Done,
}

/// The supervisor's state. `R` draws the request budget jitter.
#[derive(Debug)]
pub struct Supervisor<R> {
    config: Config,
    rng: R,
    phase: Phase,
    free_slots: VecDeque<usize>,
    workers: BTreeMap<i32, Worker>,
    /// Workers waiting to be replaced, in order.
    queue: VecDeque<i32>,
    current: Option<Replacement>,
    pending: Option<Pending>,
    /// Times of the unexpected exits within [`CRASH_WINDOW`].
    crashes: VecDeque<Instant>,
    /// Restarts are paused until then.
    restart_after: Option<Instant>,
    /// Workers that died and are not replaced yet.
    missing: usize,
}

impl<R: Rng> Supervisor<R> {
    /// A supervisor with no worker yet (send [`Event::Start`]).
    pub fn new(config: Config, rng: R) -> Self {
        Self {
            free_slots: (0..config.slots).collect(),
            config,
            rng,
            phase: Phase::Running,
            workers: BTreeMap::new(),
            queue: VecDeque::new(),
            current: None,
            pending: None,
            crashes: VecDeque::new(),
            restart_after: None,
            missing: 0,
        }
    }

    /// Whether the supervisor still serves (no shutdown began): only then do signals,
    /// reloads and ticks matter.
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Worker processes alive, retiring ones included.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Decides what to do about `event`, which happened at `now`.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let running = self.is_running();
        match event {
            Event::Start if running => self.start_initial(self.config.workers),
            Event::Spawned { slot, pid } => self.start_ended(slot, Some(pid), now),
            Event::SpawnFailed { slot } => self.start_ended(slot, None, now),
            Event::Exited { pid, status } => self.exited(pid, &status, now),
            Event::Signal(Signal::Hup) if running => {
                tracing::info!(
                    event = "rolling_restart",
                    reason = "SIGHUP",
                    workers = self.workers.len()
                );
                self.queue_all();
                Vec::new()
            }
            Event::Reload if running => {
                self.queue_all();
                Vec::new()
            }
            Event::Signal(Signal::Term | Signal::Int) if running => self.shut_down(now),
            Event::Tick { slots } if running => self.tick(slots, now),
            Event::Deadline => self.deadline(now),
            // Once shutdown began, nothing starts or replaces workers any more.
            Event::Start | Event::Signal(_) | Event::Reload | Event::Tick { .. } => Vec::new(),
        }
    }

    /// Workers not asked to exit.
    fn live(&self) -> usize {
        self.workers.values().filter(|w| !w.retiring).count()
    }

    /// A slot for a new worker, if one may start.
    fn take_slot(&mut self) -> Option<usize> {
        if !self.is_running() {
            return None;
        }
        let slot = self.free_slots.pop_front();
        if slot.is_none() {
            tracing::error!(
                event = "worker_spawn_failed",
                error = "no free metrics slot"
            );
        }
        slot
    }

    /// Starts a worker in `slot`; the machine waits for the outcome, then goes on with `then`.
    fn spawn(&mut self, slot: usize, then: Then) -> Action {
        let request_budget = if self.config.max_requests > 0 {
            self.config.max_requests + self.rng.random_range(0..=self.config.max_requests_jitter)
        } else {
            0
        };
        self.pending = Some(Pending { slot, then });
        Action::Spawn {
            slot,
            request_budget,
        }
    }

    /// The start in `slot` ended with `pid` (or failed): go on with what was waiting for it.
    fn start_ended(&mut self, slot: usize, pid: Option<i32>, now: Instant) -> Vec<Action> {
        let Some(pending) = self.pending.take_if(|p| p.slot == slot) else {
            return Vec::new();
        };
        match pid {
            Some(pid) => {
                let worker = Worker {
                    slot,
                    retiring: false,
                };
                self.workers.insert(pid, worker);
            }
            None => self.free_slots.push_back(slot),
        }
        match (pending.then, pid) {
            (Then::Initial { left }, Some(_)) => self.start_initial(left),
            (Then::Initial { left }, None) => {
                self.missing += 1;
                self.start_initial(left)
            }
            (Then::Refill { tick }, Some(_)) => {
                self.missing = self.missing.saturating_sub(1);
                self.refill(tick, now)
            }
            // A failed start ends the refill; the next exit or pause end tries again.
            (Then::Refill { tick }, None) => self.refill_done(tick, now),
            (Then::Replace { old }, Some(new)) => {
                self.current = Some(Replacement {
                    old,
                    new,
                    new_slot: slot,
                    since: now,
                });
                Vec::new()
            }
            (Then::Replace { old }, None) => {
                self.queue.push_front(old);
                Vec::new()
            }
        }
    }

    /// Starts the first workers, one after the other; one that cannot start counts as missing.
    fn start_initial(&mut self, mut left: usize) -> Vec<Action> {
        while left > 0 {
            left -= 1;
            if let Some(slot) = self.take_slot() {
                return vec![self.spawn(slot, Then::Initial { left })];
            }
            self.missing += 1;
        }
        Vec::new()
    }

    /// Starts workers for those that died, one at a time, then goes on with `tick`.
    fn refill(&mut self, tick: Option<Vec<SlotState>>, now: Instant) -> Vec<Action> {
        if self.missing > 0
            && self.live() < self.config.workers
            && let Some(slot) = self.take_slot()
        {
            return vec![self.spawn(slot, Then::Refill { tick })];
        }
        self.refill_done(tick, now)
    }

    fn refill_done(&mut self, tick: Option<Vec<SlotState>>, now: Instant) -> Vec<Action> {
        if self.live() >= self.config.workers {
            self.missing = 0;
        }
        match tick {
            Some(slots) => self.tick_rest(&slots, now),
            None => Vec::new(),
        }
    }

    fn exited(&mut self, pid: i32, status: &str, now: Instant) -> Vec<Action> {
        let Some(w) = self.workers.remove(&pid) else {
            return Vec::new();
        };
        let mut actions = vec![Action::MarkExited { slot: w.slot }];
        self.free_slots.push_back(w.slot);
        if w.retiring {
            tracing::info!(event = "worker_retired", pid, slot = w.slot, status = %status);
        } else {
            tracing::warn!(event = "worker_exited", pid, slot = w.slot, status = %status);
            actions.extend(self.lost(pid, now));
        }
        if matches!(self.phase, Phase::Draining { .. } | Phase::Killing { .. })
            && self.workers.is_empty()
        {
            actions.push(self.finish());
        }
        actions
    }

    /// A worker died unexpectedly: replace it, unless it is the latest of too many.
    fn lost(&mut self, pid: i32, now: Instant) -> Vec<Action> {
        if let Some(r) = self.current.take_if(|r| r.new == pid) {
            // The replacement died before accepting: try again later.
            self.queue.push_front(r.old);
        }
        self.queue.retain(|p| *p != pid);
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.crashes.pop_front();
        }
        self.missing += 1;
        if self.crashes.len() > CRASH_LIMIT {
            tracing::error!(
                event = "worker_crash_loop",
                pause_ms = CRASH_PAUSE.as_millis() as u64
            );
            self.restart_after = Some(now + CRASH_PAUSE);
            Vec::new()
        } else {
            self.refill(None, now)
        }
    }
}
